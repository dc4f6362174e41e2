"""A tiny "pretrained" BERT (or RoBERTa, DistilBERT, ALBERT) and synthetic data sets for each task family,
learnable in seconds on a CPU.

Every task is decided by word identity (sentiment words, repeated sentences, names and cities, a colour in the
passage), so a 2-layer, 32-wide model trained from random weights (drawn wider than BERT's 0.02 so
the tanh pooler does not start on a plateau) gets well above chance in a few epochs. Each variant gets a
tokenizer of its own kind (WordPiece, byte-level BPE, SentencePiece unigram) whose pieces are the toy words.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from bertkit import BertConfig, BertForPreTraining, Tokenizer

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
POSITIVE = ["good", "great", "fine", "nice", "happy"]
NEGATIVE = ["bad", "awful", "poor", "sad", "ugly"]
FILLER = ["the", "a", "film", "movie", "show", "was", "is", "very", "so", "it", "this", "plot", "cast", "story",
          "really"]
PEOPLE = ["alice", "bob", "carol", "dave", "erin", "frank"]
CITIES = ["paris", "rome", "berlin", "madrid", "oslo", "vienna"]
VERBS = ["visited", "left", "saw", "loved", "met", "reached"]
COLOURS = ["red", "blue", "green", "yellow", "black", "white"]
THINGS = ["car", "house", "door", "hat", "boat", "kite"]
PUNCT = list(".,?") + ["what", "colour", "colors", "of", "and", "then"]
WORDS = sorted(set(POSITIVE + NEGATIVE + FILLER + PEOPLE + CITIES + VERBS + COLOURS + THINGS + PUNCT))


def make_pretrained(directory: Path, seed: int = 0) -> Path:
    """A random 2-layer BERT with MLM / NSP heads and its WordPiece vocabulary, saved as a checkpoint."""
    import torch

    directory.mkdir(parents=True, exist_ok=True)
    (directory / "vocab.txt").write_text("\n".join(SPECIALS + WORDS) + "\n", encoding="utf-8")
    config = BertConfig(vocab_size=len(SPECIALS) + len(WORDS), hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64, max_position_embeddings=512,
                        initializer_range=0.1)
    torch.manual_seed(seed)
    BertForPreTraining(config).save_pretrained(directory)
    Tokenizer.from_pretrained(directory).save_pretrained(directory)
    return directory


# The tokenizer scheme of each variant, and the vocabulary size that keeps every toy word one piece.
VARIANT_TOKENIZERS = {"bert": ("wordpiece", None), "distilbert": ("wordpiece", None), "roberta": ("bpe", 1000),
                      "albert": ("unigram", 200)}


def toy_tokenizer(arch: str, directory: Path) -> Tokenizer:
    """The variant's kind of tokenizer over the toy words: the word list as vocab.txt, or trained on toy text."""
    kind, size = VARIANT_TOKENIZERS[arch]
    if kind == "wordpiece":
        (directory / "vocab.txt").write_text("\n".join(SPECIALS + WORDS) + "\n", encoding="utf-8")
        return Tokenizer.from_pretrained(directory)
    rng = random.Random(0)
    corpus = directory / "toy_corpus.txt"
    corpus.write_text("".join(" ".join(rng.sample(WORDS, 8)) + "\n" for _ in range(400)), encoding="utf-8")
    tokenizer = Tokenizer.train([corpus], kind=kind, vocab_size=size, min_frequency=1)
    corpus.unlink()
    return tokenizer


def make_pretrained_variant(directory: Path, arch: str, seed: int = 0) -> Path:
    """A random 2-layer model of the variant (``BertConfig.preset("tiny", arch=...)`` made 32 wide) with its
    pretraining heads and its kind of tokenizer, saved in the variant's standard layout."""
    import torch

    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = toy_tokenizer(arch, directory)
    offset = tokenizer.pad_id + 1 if arch == "roberta" else 0  # RoBERTa's positions start past its padding id
    albert = {"embedding_size": 16} if arch == "albert" else {}
    config = BertConfig.preset("tiny", arch=arch, vocab_size=tokenizer.vocab_size, hidden_size=32,
                               num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                               pad_token_id=tokenizer.pad_id, max_position_embeddings=64 + offset,
                               initializer_range=0.1, **albert)
    torch.manual_seed(seed)
    BertForPreTraining(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def _review(rng: random.Random, positive: bool) -> str:
    words = rng.sample(FILLER, 4) + [rng.choice(POSITIVE if positive else NEGATIVE)]
    rng.shuffle(words)
    return " ".join(words)


def sentiment_rows(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    return [{"text": _review(rng, i % 2 == 0), "label": "pos" if i % 2 == 0 else "neg"} for i in range(n)]


def pair_rows(n: int, seed: int) -> list[dict]:
    """Pairs of reviews labelled by the second one's sentiment, so the pair text must be read (the first text
    carries a random, misleading sentiment word of its own)."""
    rng = random.Random(seed)
    return [{"text": _review(rng, rng.random() < 0.5), "pair": _review(rng, i % 2 == 0),
             "label": "yes" if i % 2 == 0 else "no"} for i in range(n)]


def score_rows(n: int, seed: int) -> list[dict]:
    """Regression: the number of positive words (0-3) among filler."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        k = rng.randint(0, 3)
        words = rng.sample(FILLER, 4) + rng.sample(POSITIVE, k)
        rng.shuffle(words)
        rows.append({"text": " ".join(words), "label": float(k)})
    return rows


def write_table(path: Path, rows: list[dict]) -> Path:
    """JSONL for .jsonl paths, TSV otherwise (header from the first row's keys)."""
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    else:
        keys = list(rows[0])
        lines = ["\t".join(keys)] + ["\t".join(str(r[k]) for k in keys) for r in rows]
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_conll(path: Path, n: int, seed: int) -> Path:
    """Sentences like "alice visited paris and bob": people are PER, cities LOC, the rest O."""
    rng = random.Random(seed)
    lines = ["-DOCSTART- -X- -X- O", ""]
    for _ in range(n):
        words = [rng.choice(PEOPLE), rng.choice(VERBS), rng.choice(CITIES)]
        words += rng.sample(FILLER, 2) + [rng.choice(CITIES if rng.random() < 0.5 else PEOPLE), "."]
        for word in words:
            tag = "B-PER" if word in PEOPLE else "B-LOC" if word in CITIES else "O"
            lines.append(f"{word} NN O {tag}")
        lines.append("")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_squad(path: Path, n: int, seed: int) -> Path:
    """Passages naming one colour among filler; the question asks for it."""
    rng = random.Random(seed)
    paragraphs = []
    for i in range(n):
        before, after = rng.sample(FILLER, rng.randint(1, 5)), rng.sample(FILLER, rng.randint(1, 5))
        colour, thing = rng.choice(COLOURS), rng.choice(THINGS)
        prefix = " ".join(before) + f" {thing} was "
        context = prefix + colour + " " + " ".join(after) + " ."
        qa = {"id": f"q{i}", "question": f"what colour was the {thing} ?",
              "answers": [{"text": colour, "answer_start": len(prefix)}]}
        paragraphs.append({"context": context, "qas": [qa]})
    path.write_text(json.dumps({"version": "1.1", "data": [{"title": "toys", "paragraphs": paragraphs}]}),
                    encoding="utf-8")
    return path
