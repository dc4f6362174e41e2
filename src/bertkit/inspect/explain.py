"""Look inside one forward pass: the sub-word split, the ids, every attention map and the embedding parts.

:func:`explain` runs a sentence (or a pair) through a checkpoint once and keeps what a reader wants to see:
the tokens with their token / segment / position ids, the (layers, heads, T, T) attention weights, the size
of each of the embeddings the model adds together, and, when the checkpoint has a masked-LM head, the
model's guesses for masked tokens. Any variant of the family works: DistilBERT has no segment embedding (and
is called without token types), RoBERTa's positions start past its padding id, and ALBERT's parts are E wide
(their sum is projected to the hidden size after LayerNorm). :func:`format_table` prints the ids for a
terminal; :func:`write_page` writes a self-contained HTML page (see :mod:`bertkit.inspect.page`).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bertkit.files import atomic_write
from bertkit.inspect.page import render_page
from bertkit.model import BertForPreTraining
from bertkit.tokenizer import Encoding, Tokenizer

GUESS_BATCH = 16  # masked copies of the input per forward pass when every token is masked in turn
SCHEME_NAMES = {"wordpiece": "WordPiece", "bpe": "Byte-level BPE", "unigram": "SentencePiece"}


@dataclass
class MaskGuess:
    """The masked-LM head's top candidates at one position, most probable first."""

    position: int
    token: str  # the input token at that position ("[MASK]" when the input had one there)
    candidates: list[tuple[str, float]]


@dataclass
class Explanation:
    """Everything the terminal table and the HTML page show; all per-token lists have length T."""

    model_dir: str
    text: str
    pair: str | None
    tokens: list[str]
    ids: list[int]
    type_ids: list[int]
    full_length: int  # tokens the input needs before truncation
    max_length: int  # the model's limit (max_position_embeddings less a position offset)
    attentions: np.ndarray  # (L, nh, T, T) float32, rows sum to 1
    embedding_norms: dict[str, np.ndarray]  # "token", "segment" (when the model has one), "position" -> (T,)
    guesses: list[MaskGuess] | None  # None: the checkpoint has no masked-LM head
    guess_mode: str = "mask"  # "mask": at the input's [MASK] tokens; "each": every token masked in turn
    position_ids: list[int] | None = None  # rows of the position table; None means 0 .. T-1
    special: list[bool] | None = None  # per token: a special token ([CLS], </s> ...) the tokenizer added
    continues: list[bool] | None = None  # per token: a piece that continues the previous word
    scheme: str = "WordPiece"  # the tokenizer's scheme, as the page names it
    model_type: str = "bert"

    @property
    def truncated(self) -> bool:
        return self.full_length > len(self.ids)

    def truncation_note(self) -> str:
        return (f"input truncated: it has {self.full_length} tokens but the model reads at most "
                f"{self.max_length}; the longest sequence was cut to fit")


def explain(
    model_dir: str | Path, text: str, pair: str | None = None, *, top_k: int = 5, max_guesses: int = 64
) -> Explanation:
    """Encode ``text`` (and ``pair``), run the encoder once with attention weights, and collect the views.

    ``max_guesses`` caps how many tokens are masked one at a time for the fill-mask view when the input
    holds no ``[MASK]`` (each one costs a forward pass over a copy of the input).
    """
    model = BertForPreTraining.from_pretrained(model_dir).eval()
    tokenizer = Tokenizer.from_pretrained(model_dir)
    config = model.config
    if tokenizer.vocab_size > config.vocab_size:
        raise ValueError(f"{model_dir}: vocab.txt has {tokenizer.vocab_size} entries but the model's "
                         f"vocab_size is {config.vocab_size}")
    full, encoding = _encode(tokenizer, text, pair, config.max_sequence_length)
    ids = torch.tensor([encoding.ids])
    types = torch.tensor([encoding.type_ids]) if config.has_token_types else None
    with torch.inference_mode():
        out = model.bert(ids, types, output_attentions=True)
        attentions = torch.cat(out.attentions).float().numpy()  # L x (1, nh, T, T) -> (L, nh, T, T)
        has_mlm = not any(name.startswith("mlm.") for name in model.load_report.fresh)
        guesses, mode = None, "mask"
        if has_mlm:
            guesses, mode = _mask_guesses(model, tokenizer, encoding, out.last_hidden_state[0], top_k, max_guesses)
    return Explanation(
        model_dir=str(model_dir), text=text, pair=pair, tokens=encoding.tokens, ids=encoding.ids,
        type_ids=encoding.type_ids, full_length=len(full), max_length=config.max_sequence_length,
        attentions=attentions, embedding_norms=embedding_norms(model.bert.embeddings, ids, types),
        guesses=guesses, guess_mode=mode, position_ids=model.bert.embeddings.position_ids(ids)[0].tolist(),
        special=[s is None for s in encoding.sequence_ids],
        continues=[bool(tokenizer.continuation_mask[i]) for i in encoding.ids],
        scheme=SCHEME_NAMES.get(tokenizer.kind, tokenizer.kind), model_type=config.model_type,
    )


def _encode(tokenizer: Tokenizer, text: str, pair: str | None, limit: int) -> tuple[Encoding, Encoding]:
    """The full encoding (to report its length) and the one the model reads, cut to ``limit`` if needed."""
    if not text.strip():
        raise ValueError("the sentence to explain is empty")
    full = tokenizer.encode(text, pair)
    if len(full) <= limit:
        return full, full
    return full, tokenizer.encode(text, pair, max_length=limit, truncation="longest_first")


def embedding_norms(
    embeddings: torch.nn.Module, ids: torch.Tensor, types: torch.Tensor | None
) -> dict[str, np.ndarray]:
    """L2 norm of each vector summed into a token's input: (1, T) ids -> name -> (T,).

    The norms show which part dominates the sum before LayerNorm, e.g. whether position
    information is large next to the word itself. "segment" is left out for a model without a segment
    table (DistilBERT); without ``types`` the model adds segment 0 everywhere, and so do the norms.
    Positions are the rows the model reads (RoBERTa's start past its padding id).
    """
    with torch.inference_mode():
        parts = {"token": embeddings.token.weight[ids[0]]}
        if embeddings.segment is not None:
            parts["segment"] = embeddings.segment.weight[types[0] if types is not None else torch.zeros_like(ids[0])]
        parts["position"] = embeddings.position.weight[embeddings.position_ids(ids)[0]]
        return {name: vectors.norm(dim=-1).float().numpy() for name, vectors in parts.items()}


def _mask_guesses(
    model: BertForPreTraining, tokenizer: Tokenizer, encoding: Encoding, hidden: torch.Tensor, top_k: int,
    max_guesses: int,
) -> tuple[list[MaskGuess], str]:
    """Top-k fill-mask candidates: at the input's [MASK] tokens, or at each token masked in turn.

    ``hidden``: (T, H) final hidden states of the unmasked input, reused when the input has [MASK] tokens.
    """
    ids = torch.tensor(encoding.ids)
    masked = (ids == tokenizer.mask_id).nonzero().flatten().tolist()
    if masked:
        logits = model.lm_logits(hidden[masked])  # (M, V)
        return _top(tokenizer, logits, masked, encoding.tokens, top_k), "mask"
    positions = [i for i, s in enumerate(encoding.sequence_ids) if s is not None][:max_guesses]
    types = torch.tensor(encoding.type_ids) if model.config.has_token_types else None
    rows = []
    for start in range(0, len(positions), GUESS_BATCH):
        chunk = positions[start:start + GUESS_BATCH]
        batch = ids.repeat(len(chunk), 1)  # (b, T): one copy per position, that position masked
        batch[torch.arange(len(chunk)), chunk] = tokenizer.mask_id
        states = model.bert(batch, None if types is None else types.expand_as(batch)).last_hidden_state  # (b, T, H)
        rows.append(model.lm_logits(states[torch.arange(len(chunk)), chunk]))
    logits = torch.cat(rows) if rows else hidden.new_zeros(0, model.config.vocab_size)
    return _top(tokenizer, logits, positions, encoding.tokens, top_k), "each"


def _top(tokenizer: Tokenizer, logits: torch.Tensor, positions: list[int], tokens: list[str],
         top_k: int) -> list[MaskGuess]:
    """(M, V) logits -> one MaskGuess per position; ids past the tokenizer's vocabulary (padding) are ignored."""
    probs = logits[:, :tokenizer.vocab_size].float().softmax(-1)
    top = probs.topk(min(top_k, probs.shape[-1]), dim=-1)
    return [
        MaskGuess(p, tokens[p], list(zip(tokenizer.convert_ids_to_tokens(i), v, strict=True)))
        for p, i, v in zip(positions, top.indices.tolist(), top.values.tolist(), strict=True)
    ]


def format_table(explanation: Explanation) -> str:
    """The sub-word split and a token / id / segment / position table, for a terminal."""
    e = explanation
    lines = [f"{e.scheme}: " + " ".join(e.tokens), ""]
    width = max(len("token"), *(len(t) for t in e.tokens))
    positions = e.position_ids or list(range(len(e.ids)))
    lines.append(f"{'#':>4}  {'token':<{width}}  {'id':>7}  {'segment':>7}  {'position':>8}")
    for i, (token, id_, type_id, position) in enumerate(zip(e.tokens, e.ids, e.type_ids, positions, strict=True)):
        lines.append(f"{i:>4}  {token:<{width}}  {id_:>7}  {type_id:>7}  {position:>8}")
    if e.truncated:
        lines += ["", "note: " + e.truncation_note()]
    if e.guesses is None:
        lines += ["", "note: the checkpoint has no masked-LM head; the page shows attention without fill-mask"]
    return "\n".join(lines)


def page_data(explanation: Explanation) -> dict[str, Any]:
    """The JSON the page's script reads. Attention travels as base64 uint16 (weight * 65535), row-major."""
    e = explanation
    quantised = np.round(np.clip(e.attentions, 0.0, 1.0) * 65535).astype("<u2")
    layers, heads = e.attentions.shape[:2]
    return {
        "model": "/".join(Path(e.model_dir).parts[-2:]),
        "text": e.text,
        "pair": e.pair,
        "tokens": e.tokens,
        "ids": e.ids,
        "typeIds": e.type_ids,
        "positions": e.position_ids or list(range(len(e.ids))),
        "special": e.special or [t.startswith("[") and t.endswith("]") for t in e.tokens],
        "continues": e.continues or [t.startswith("##") for t in e.tokens],
        "scheme": e.scheme,
        "modelType": e.model_type,
        "layers": int(layers),
        "heads": int(heads),
        "length": len(e.tokens),
        "attention": base64.b64encode(quantised.tobytes()).decode("ascii"),
        "norms": {name: [round(float(v), 4) for v in values] for name, values in e.embedding_norms.items()},
        "truncated": {"from": e.full_length, "to": len(e.tokens), "note": e.truncation_note()}
        if e.truncated else None,
        "mlm": None if e.guesses is None else {
            "mode": e.guess_mode,
            "guesses": [{"position": g.position, "token": g.token,
                         "candidates": [[t, round(p, 4)] for t, p in g.candidates]} for g in e.guesses],
        },
    }


def write_page(explanation: Explanation, path: str | Path) -> Path:
    """Write the self-contained HTML page (no external assets; opens offline) and return its path."""
    path = Path(path)
    html = render_page(page_data(explanation), title=f"bertkit explain: {explanation.text[:60]}")
    atomic_write(path, lambda tmp: Path(tmp).write_text(html, encoding="utf-8"))
    return path
