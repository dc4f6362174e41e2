"""The whole pretraining workflow in one offline command: corpus -> vocabulary -> shards -> BERT -> fill-mask.

With no corpus given, the text is Python's own documentation, which ships with every installation: the docstrings
of the standard library's modules, classes and functions (read from the source with ``ast``, never imported) and the
``pydoc_data.topics`` reference pages. Both are gathered in sorted order, so the corpus is the same on every run of
the same Python version. Each module and each topic is one document, written blank-line separated to
``corpus.txt``.

The recipe is that of ``bertkit pretrain --max-minutes`` (:data:`BUDGET_RECIPE`: masked-LM alone, here on packed
full sentences, no dropout) on a tiny model with its own peak learning rate and batch, run for a fixed number of steps
rather than a time budget so that every run of the demo gives the same model; the step count is sized, from CPU
seconds per step, to finish the whole command within five minutes on two quiet CPU cores (see benchmarks/RESULTS.md,
"The demo").

The demo folder (``demo.json`` marks it as one, so a rerun may replace it and nothing else is ever replaced)::

    corpus.txt  tokenizer/  shards/           the data, as `bertkit prepare` would write it
    config.json  model.safetensors  vocab.txt  the pretrained model (load it with BertForPreTraining.from_pretrained)
    metrics.jsonl  pretrain.json  report.html  loss.png  how training went
"""

from __future__ import annotations

import ast
import itertools
import json
import os
import shutil
import sysconfig
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from bertkit.data.corpus import text_files
from bertkit.data.prepare import prepare
from bertkit.data.shards import ShardSet
from bertkit.files import write_text
from bertkit.infer.fill_mask import fill_mask
from bertkit.model import BertForPreTraining
from bertkit.recipes.pretrain import BUDGET_RECIPE, PretrainSettings, build_model, run_pretraining
from bertkit.tokenizer import Tokenizer

MARKER = "demo.json"
# Phrasings the built-in corpus uses again and again ("number of bytes", "return true if the object", "does not
# exist"), so that it can answer them.
SENTENCES = (
    "return the number of [MASK] read from the file.",
    "the function returns a [MASK] of the arguments.",
    "if the file does not [MASK], an exception is raised.",
    "return true if the [MASK] is an instance of the class.",
)
# Parts of the standard library that are tests, demos or vendored code rather than documentation.
_SKIP_DIRS = {"test", "tests", "idlelib", "turtledemo", "lib2to3", "ensurepip", "site-packages", "dist-packages",
              "__pycache__", "config-3"}


@dataclass
class DemoSettings:
    """A demo run. ``corpus`` replaces the built-in text; ``max_corpus_chars`` shortens it (for quick checks)."""

    out_dir: str = "runs/demo"
    corpus: list[str] | None = None
    preset: str = "tiny"
    steps: int = 700
    vocab_size: int = 2000
    max_seq_len: int = 128
    batch_size: int = 64
    lr: float = 2e-3
    seed: int = 0
    max_corpus_chars: int | None = None
    sentences: tuple[str, ...] = field(default=SENTENCES)


# ---------------------------------------------------------------------------------------------------- corpus
def _docstrings(path: Path) -> list[str]:
    """Module, class and function docstrings of one source file, in source order (empty if it does not parse)."""
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (SyntaxError, UnicodeDecodeError, ValueError):
        return []
    kinds = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
    return [doc for node in ast.walk(tree) if isinstance(node, kinds) and (doc := ast.get_docstring(node))]


def _stdlib_sources() -> Iterator[Path]:
    root = Path(sysconfig.get_paths()["stdlib"])
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in _SKIP_DIRS and not d.startswith((".", "config-")))
        yield from (Path(folder) / f for f in sorted(files) if f.endswith(".py"))


def python_docs_corpus(max_chars: int | None = None) -> list[str]:
    """Documents of Python's bundled documentation: the ``pydoc`` topics, then one per standard-library module.

    Paragraphs of a document are joined by single newlines (the corpus reader splits documents at blank lines).
    """
    from pydoc_data.topics import topics

    texts = (topics[name] for name in sorted(topics))
    modules = ("\n".join(_docstrings(path)) for path in _stdlib_sources())
    documents, total = [], 0
    for text in itertools.chain(texts, modules):
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        if len(lines) < 2:
            continue
        documents.append("\n".join(lines))
        total += len(documents[-1])
        if max_chars is not None and total >= max_chars:
            break
    return documents


def write_corpus(documents: list[str], path: Path) -> Path:
    """One document per paragraph block, separated by blank lines; written atomically."""
    return write_text(path, "\n\n".join(documents) + "\n")


# --------------------------------------------------------------------------------------------------- the run
def _claim_folder(out: Path, settings: DemoSettings) -> None:
    """Create the demo folder, replacing a previous demo; refuse a folder that holds anything else."""
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not (out / MARKER).is_file():
            raise FileExistsError(f"{out}: folder exists and is not a demo run (no {MARKER}); refusing to "
                                  "overwrite it; choose another --out")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / MARKER, json.dumps({"settings": asdict(settings)}, indent=2) + "\n")


def _predictions(model: BertForPreTraining, tokenizer: Tokenizer, sentences: tuple[str, ...]) -> list[list[str]]:
    model.eval()
    with torch.no_grad():
        return [[c.token for c in fill_mask(model, tokenizer, s, top_k=5)[0]] for s in sentences]


def run_demo(settings: DemoSettings, echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Train a vocabulary and a small BERT on the demo corpus; show fill-mask before and after; return a summary."""
    out = Path(settings.out_dir)
    _claim_folder(out, settings)
    if settings.corpus:
        inputs = list(settings.corpus)
    else:
        echo("gathering Python's bundled documentation (stdlib docstrings, pydoc topics) ...")
        inputs = [str(write_corpus(python_docs_corpus(settings.max_corpus_chars), out / "corpus.txt"))]
    echo(f"training a WordPiece vocabulary of {settings.vocab_size} ...")
    tokenizer = Tokenizer.train(text_files(inputs)[0], vocab_size=settings.vocab_size)  # skips as prepare does
    tokenizer.save_pretrained(out / "tokenizer")
    echo("preparing shards (full sentences packed into sequences, for masked-LM alone) ...")
    manifest = prepare(inputs, str(out / "tokenizer"), str(out / "shards"), max_seq_len=settings.max_seq_len,
                       seed=settings.seed, arch="roberta")  # RoBERTa's packing, trained into a BERT model
    counts = manifest["counts"]
    echo(f"  {counts['documents']} documents, {counts['instances']} instances, {counts['tokens']} tokens")
    pretrain = PretrainSettings(
        data=str(out / "shards"), out_dir=str(out), tokenizer=str(out / "tokenizer"), arch="bert",
        preset=settings.preset, max_steps=settings.steps, batch_size=settings.batch_size, lr=settings.lr,
        **{k: v for k, v in BUDGET_RECIPE.items() if k not in ("batch_size", "lr")},
        seed=settings.seed, log_every=max(1, settings.steps // 30), eval_every=max(1, settings.steps // 4),
        save_every=settings.steps, keep_last=1, eval_holdout=min(500, counts["instances"] // 10),
    )  # fmt: skip
    before = _predictions(build_model(pretrain, ShardSet(pretrain.data)), tokenizer, settings.sentences)
    echo(f"pretraining a {settings.preset} BERT for {settings.steps} steps of {settings.batch_size} sequences ...")
    summary = run_pretraining(pretrain)
    after = _predictions(BertForPreTraining.from_pretrained(out), tokenizer, settings.sentences)
    _report(echo, settings, summary, before, after, out)
    result = {"settings": asdict(settings), "summary": summary, "before": before, "after": after}
    write_text(out / MARKER, json.dumps(result, indent=2) + "\n")
    return result


def _report(echo: Callable[[str], None], settings: DemoSettings, summary: dict[str, Any],
            before: list[list[str]], after: list[list[str]], out: Path) -> None:
    echo("\nfill-mask, top 5 (before training -> after training):")
    for sentence, b, a in zip(settings.sentences, before, after, strict=True):
        echo(f"  {sentence}\n    before: {' '.join(b)}\n    after:  {' '.join(a)}")
    initial = summary.get("initial_eval") or {}
    echo("\nheld-out evaluation (before -> after):")
    for key in ("mlm_accuracy", "perplexity"):
        if key in initial and f"eval_{key}" in summary:
            echo(f"  {key:<13} {initial[key]:10.4f} -> {summary[f'eval_{key}']:.4f}")
    echo(f"\nmodel:   {out}/ (config.json, model.safetensors, vocab.txt)")
    echo(f"metrics: {out / 'metrics.jsonl'}")
    report = summary.get("report")
    echo(f"report:  {report} (loss curve: {out / 'loss.png'})" if report else
         "report:  none (matplotlib is not installed: pip install 'bertkit[plots]')")
    data = [] if settings.corpus else ["corpus.txt"]
    echo(f"data:    {', '.join(str(out / d) for d in [*data, 'tokenizer', 'shards'])}")
    echo(f"try:     bertkit fill-mask \"{settings.sentences[0]}\" --model {out}")
