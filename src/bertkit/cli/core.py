"""Core commands: ``info``, ``fill-mask``, ``embed`` and ``tokenizer train``."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bertkit.cli.common import UsageError
from bertkit.files import atomic_write

if TYPE_CHECKING:
    from bertkit.config import BertConfig

log = logging.getLogger("bertkit")


def _read_lines(path: str) -> list[str]:
    file = Path(path)
    if not file.is_file():
        raise UsageError(f"{file}: no such input file")
    try:
        return file.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise UsageError(f"{file}: not UTF-8 text (byte {e.start})") from None


# --- info, fill-mask, embed -----------------------------------------------------------------------


def cmd_info(args: argparse.Namespace) -> None:
    from bertkit.checkpoint import names
    from bertkit.checkpoint.io import find_weights, read_state_dict, standard_architecture
    from bertkit.config import BertConfig

    directory = Path(args.model)
    weights = find_weights(directory)
    config = BertConfig.from_json_file(directory / "config.json")
    state = read_state_dict(weights)
    _check_config_fits(directory / "config.json", config, state, weights)
    params = sum(t.numel() for k, t in state.items() if not k.endswith("position_ids"))
    heads = sorted({k.split(".")[0] for k in state if k.startswith(names.layout(config).head_roots)})
    info = {
        "directory": str(directory),
        "architecture": (config.extra.get("architectures") or [standard_architecture("BertModel", config)])[0],
        "model_type": config.model_type,
        "layers": config.num_hidden_layers,
        "hidden_size": config.hidden_size,
        **_variant_info(config),
        "heads": config.num_attention_heads,
        "intermediate_size": config.intermediate_size,
        "max_position_embeddings": config.max_position_embeddings,
        "max_sequence_length": config.max_sequence_length,
        "token_types": config.type_vocab_size,
        "vocab_size": config.vocab_size,
        "tokenizer": _tokenizer_info(directory),
        "parameters": params,
        "weights": weights.name,
        "head_tensors": heads,
    }
    width = max(map(len, info))
    for key, value in info.items():
        print(f"{key:<{width}}  {value}")


def _check_config_fits(path: Path, config: BertConfig, state: dict, weights: Path) -> None:
    """Refuse to describe weights with a config.json they do not fit (an encoder built on the meta device, so
    nothing is allocated, must load the file's encoder tensors strictly)."""
    import torch

    from bertkit.checkpoint.io import CheckpointError, load_standard_state
    from bertkit.model import BertModel

    with torch.device("meta"):
        encoder = BertModel(config)
    level = log.level
    log.setLevel(logging.ERROR)  # a pooler the file lacks is normal here; only a mismatch matters
    try:
        load_standard_state(encoder, state, strict=True, source=str(weights))
    except CheckpointError as err:
        lines = str(err).splitlines()
        raise UsageError(f"{path} does not describe {weights.name}: {lines[0].split(': ', 1)[-1].rstrip(':')} "
                         f"(first: {lines[1].strip() if len(lines) > 1 else '?'})") from None
    finally:
        log.setLevel(level)


def _variant_info(config: BertConfig) -> dict[str, Any]:
    """What sets a variant apart from BERT: ALBERT's embedding width and layer sharing, RoBERTa's first position."""
    if config.variant.shares_layers:
        return {"embedding_size": config.embedding_dim, "num_hidden_groups": config.num_hidden_groups,
                "inner_group_num": config.inner_group_num, "distinct_layers": config.num_distinct_layers}
    if config.variant.positions_after_padding:
        return {"position_offset": config.position_offset}
    return {}


def _tokenizer_info(directory: Path) -> str:
    """The tokenizer's kind, size and files, or why there is none to show."""
    from bertkit.tokenizer import Tokenizer

    try:
        tokenizer = Tokenizer.from_pretrained(directory)
    except FileNotFoundError:
        return "none (no vocab.txt, vocab.json + merges.txt or spiece.model)"
    except ValueError as e:
        return f"unreadable ({e})"
    return f"{tokenizer.kind} ({tokenizer.description}), {tokenizer.vocab_size} entries, {' + '.join(tokenizer.files)}"


def _load_tokenizer(directory: str):
    from bertkit.tokenizer import Tokenizer

    return Tokenizer.from_pretrained(directory)


def cmd_fill_mask(args: argparse.Namespace) -> None:
    from bertkit.infer.fill_mask import fill_mask
    from bertkit.model import BertForPreTraining

    model = BertForPreTraining.from_pretrained(args.model).eval()
    if any(k.startswith("mlm.") for k in model.load_report.fresh):
        raise UsageError(f"{args.model}: the checkpoint has no masked-LM head (cls.predictions.*); "
                         "fill-mask needs a model pretrained with MLM")
    tokenizer = _load_tokenizer(args.model)
    for mask_index, candidates in enumerate(fill_mask(model, tokenizer, args.text, args.top_k)):
        print(f"[MASK] #{mask_index + 1}")
        for c in candidates:
            print(f"  {c.token:<20} {c.probability:.4f}")


def cmd_embed(args: argparse.Namespace) -> None:
    from bertkit.infer.embed import embed_texts
    from bertkit.model import BertModel

    texts = _read_lines(args.input)
    if not texts:
        raise UsageError(f"{args.input}: empty input; write one text per line")
    model = BertModel.from_pretrained(args.model).eval()
    tokenizer = _load_tokenizer(args.model)
    limit = model.config.max_sequence_length
    too_long = [i + 1 for i, e in enumerate(tokenizer.encode_batch(texts)) if len(e.ids) > limit]
    if too_long:
        log.warning("%s: %d line(s) longer than %d tokens were truncated (first: line %d)",
                    args.input, len(too_long), limit, too_long[0])
    vectors = embed_texts(model, tokenizer, texts, pooling=args.pooling, batch_size=args.batch_size,
                          normalize=args.normalize, progress=len(texts) >= 1000)
    output = Path(args.output)
    atomic_write(output, lambda tmp: _save_npy(tmp, vectors))
    print(f"wrote {output}: {vectors.shape[0]} x {vectors.shape[1]} ({args.pooling} pooling)")
    if args.similarity:
        _print_similarities(texts, vectors)
    if args.plot:
        from bertkit.inspect.projection import plot_embeddings

        plot_embeddings(vectors, texts, args.plot, title=f"{Path(args.input).name}: {args.pooling} pooling, PCA")
        print(f"wrote {args.plot}: 2-D PCA projection of the {len(texts)} embeddings")


def _save_npy(path: Path, array) -> None:
    """``np.save`` to exactly ``path`` (given a name, it would append ``.npy``)."""
    import numpy as np

    with open(path, "wb") as f:
        np.save(f, array)


def _print_similarities(texts: list[str], vectors) -> None:
    """Each text's nearest neighbour by cosine similarity: a quick look at what the embeddings capture."""
    import numpy as np

    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True).clip(min=1e-12)
    sims = unit @ unit.T
    np.fill_diagonal(sims, -np.inf)
    for i, text in enumerate(texts):
        j = int(sims[i].argmax())
        print(f"{sims[i, j]:.3f}  {text[:50]!r:<54} ~ {texts[j][:50]!r}")


# --- tokenizer train ------------------------------------------------------------------------------


def cmd_tokenizer_train(args: argparse.Namespace) -> None:
    from bertkit.data.corpus import text_files
    from bertkit.tokenizer import Tokenizer

    files, skipped = text_files(args.corpus, strict=args.strict)
    if not files:
        raise UsageError(f"no UTF-8 text file found in {' '.join(args.corpus)}")
    tokenizer = Tokenizer.train(files, kind=args.kind, vocab_size=args.vocab_size, min_frequency=args.min_frequency,
                                lowercase=False if args.cased else None)
    tokenizer.save_pretrained(args.out)
    written = " + ".join(str(Path(args.out) / name) for name in tokenizer.files)
    print(f"wrote {written}: {tokenizer.kind} vocabulary of {tokenizer.vocab_size} entries from {len(files)} file(s)"
          + (f"; skipped {len(skipped)} file(s) that are not UTF-8 text" if skipped else ""))


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="show a checkpoint's config, parameter count and vocabulary size")
    p.add_argument("model", help="checkpoint directory")
    p.set_defaults(handler=cmd_info)

    p = sub.add_parser("fill-mask", help="predict the tokens behind [MASK]")
    p.add_argument("text")
    p.add_argument("--model", required=True, help="checkpoint directory with an MLM head")
    p.add_argument("--top-k", type=int, default=5)
    p.set_defaults(handler=cmd_fill_mask)

    p = sub.add_parser("embed", help="sentence embeddings of a text file, one line per row of a .npy")
    p.add_argument("--model", required=True, help="checkpoint directory")
    p.add_argument("--input", required=True, help="UTF-8 text file, one text per line")
    p.add_argument("--output", required=True, help=".npy file to write")
    p.add_argument("--pooling", choices=("cls", "mean"), default="mean")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--normalize", action="store_true", help="L2-normalise each vector")
    p.add_argument("--similarity", action="store_true", help="print each line's nearest neighbour")
    p.add_argument("--plot", metavar="PNG", help="also write a labelled 2-D PCA scatter of the embeddings")
    p.set_defaults(handler=cmd_embed)

    tok = sub.add_parser("tokenizer", help="tokenizer tools").add_subparsers(dest="action", required=True)
    p = tok.add_parser("train", help="train a WordPiece, byte-level BPE or unigram vocabulary from text files")
    p.add_argument("corpus", nargs="+", help="files, folders or globs of .txt / .jsonl")
    p.add_argument("--kind", choices=("wordpiece", "bpe", "unigram"), default="wordpiece",
                   help="wordpiece (BERT, vocab.txt), bpe (RoBERTa, vocab.json + merges.txt) or unigram "
                        "(ALBERT, spiece.model)")
    p.add_argument("--vocab-size", type=int, default=None,
                   help="default: 30522 wordpiece, 50265 bpe, 30000 unigram")
    p.add_argument("--min-frequency", type=int, default=2, help="least count of a merge (wordpiece, bpe)")
    p.add_argument("--cased", action="store_true",
                   help="keep case and accents (default: lower-case for wordpiece and unigram; bpe is always cased)")
    p.add_argument("--strict", action="store_true", help="refuse a file that is not UTF-8 text (default: skip it "
                                                         "with a warning, as prepare does)")
    p.add_argument("--out", required=True, help="directory for the tokenizer files")
    p.set_defaults(handler=cmd_tokenizer_train)
