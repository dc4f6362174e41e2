"""Raw text -> documents -> sentences, streamed with bounded memory.

A corpus is a list of files, folders or glob patterns. Two formats are read:

* ``.txt``: documents are separated by blank lines. Inside a document each line is either a sentence or a piece of a
  hard-wrapped paragraph; a line that does not end a sentence is joined to the next one, and the rule-based
  splitter below then cuts the text into sentences.
* ``.jsonl``: one JSON object per line; the field ``text_field`` holds one document (newlines inside it are treated
  like the lines of a ``.txt`` document).

Everything is a generator: at most one line (capped at ``MAX_LINE_CHARS``) and one document (capped at
``max_doc_sentences``) are held at a time, so memory does not grow with the corpus. Binary or non-UTF-8 files are
skipped with a warning naming each and recorded in :class:`CorpusStats`, because one bad file in a large crawl should
not stop a long run; ``strict=True`` refuses them instead. :func:`text_files` is that rule, for every command that
reads a folder of text.
"""

from __future__ import annotations

import codecs
import glob
import json
import logging
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

log = logging.getLogger("bertkit")

MAX_LINE_CHARS = 1 << 20  # a longer "line" (e.g. a file without newlines) is read in pieces of this size
_CHECK_BYTES = 1 << 20
SUFFIXES = (".txt", ".jsonl")

# Words that end in a period without ending a sentence (compared lower-cased, without the period).
# fmt: off
ABBREVIATIONS = frozenset({
    "mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "mt", "vs", "etc", "e.g", "i.e", "cf", "al", "fig",
    "figs", "no", "nos", "vol", "vols", "ch", "chap", "p", "pp", "ed", "eds", "est", "approx", "dept", "univ",
    "inc", "ltd", "co", "corp", "gen", "col", "capt", "lt", "sgt", "rev", "hon", "gov", "sen", "rep", "jan",
    "feb", "mar", "apr", "jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec", "u.s", "u.k", "a.m", "p.m",
})
# fmt: on
# A candidate boundary: terminal punctuation, optional closing quotes/brackets, whitespace, then something that can
# start a sentence (capital, digit, or an opening quote/bracket).
_BOUNDARY = re.compile(r"""[.!?]+["'”’)\]]*\s+(?=["'“‘(\[]*[A-Z0-9])""")
_LAST_WORD = re.compile(r"(\S+)$")
_ENDS_SENTENCE = re.compile(r"""[.!?]["'”’)\]]*$""")


@dataclass
class CorpusStats:
    """Counts gathered while streaming; ``skipped`` lists files that were not valid UTF-8 text."""

    files: int = 0
    bytes: int = 0
    documents: int = 0
    sentences: int = 0
    skipped: list[str] = field(default_factory=list)


def split_sentences(text: str) -> list[str]:
    """Cut a paragraph into sentences with a small rule set.

    A boundary is ``.``, ``!`` or ``?`` (plus closing quotes) followed by whitespace and a capital, digit or opening
    quote. It is rejected when the word before the period is a known abbreviation (``Mr.``, ``e.g.``) or a single
    initial (``J. R. R. Tolkien``). Decimals such as ``3.14`` never match because no whitespace follows the period.
    """
    sentences, start = [], 0
    for match in _BOUNDARY.finditer(text):
        piece = text[start : match.start() + 1]
        if match.group().startswith(".") and _is_abbreviation(piece):
            continue
        sentences.append(text[start : match.end()].strip())
        start = match.end()
    tail = text[start:].strip()
    if tail:
        sentences.append(tail)
    return [s for s in sentences if s]


def _is_abbreviation(text_to_period: str) -> bool:
    match = _LAST_WORD.search(text_to_period)
    if match is None:
        return False
    word = match.group(1).lstrip("\"'“‘([").rstrip(".").lower()
    return word in ABBREVIATIONS or (len(word) == 1 and word.isalpha())


def lines_to_sentences(lines: Iterable[str]) -> Iterator[str]:
    """Sentences of one document given its non-blank lines, joining hard-wrapped lines first."""
    pending = ""
    for line in lines:
        pending = f"{pending} {line}" if pending else line
        if _ENDS_SENTENCE.search(line) and not (line.endswith(".") and _is_abbreviation(line)):
            yield from split_sentences(pending)
            pending = ""
    if pending:
        yield from split_sentences(pending)


def expand_inputs(inputs: Iterable[str]) -> list[str]:
    """Resolve files, folders and glob patterns to a sorted, de-duplicated file list.

    Folders are searched recursively for ``.txt`` and ``.jsonl``; a file named directly (or by a glob) is read as
    JSON lines when it ends in ``.jsonl`` and as plain text otherwise.
    """
    paths: list[str] = []
    for item in inputs:
        if os.path.isdir(item):
            for root, _, names in os.walk(item):
                paths.extend(os.path.join(root, n) for n in names if n.endswith(SUFFIXES))
        elif os.path.isfile(item):
            paths.append(item)
        else:
            matched = [p for p in glob.glob(item, recursive=True) if os.path.isfile(p)]
            if not matched:
                raise FileNotFoundError(f"corpus input {item!r} matches no file or folder")
            paths.extend(matched)
    return sorted(set(paths))


def is_utf8_text(path: str) -> bool:
    """True when the whole file decodes as UTF-8 and holds no NUL byte (a cheap binary test); read in 1 MiB pieces."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    try:
        with open(path, "rb") as f:
            while chunk := f.read(_CHECK_BYTES):
                if b"\0" in chunk:
                    return False
                decoder.decode(chunk)
            decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return False
    return True


def text_files(inputs: Iterable[str], *, strict: bool = False) -> tuple[list[str], list[str]]:
    """``(readable, skipped)``: the files of ``inputs`` (see :func:`expand_inputs`) split by :func:`is_utf8_text`.

    Each skipped file is named in a warning. With ``strict`` the first unreadable file is an error instead.

    Raises:
        ValueError: ``strict`` and a file is not UTF-8 text.
    """
    readable, skipped = [], []
    for path in expand_inputs(inputs):
        if is_utf8_text(path):
            readable.append(path)
        elif strict:
            raise ValueError(f"{path}: not UTF-8 text; convert it to UTF-8, or drop --strict to skip such files")
        else:
            log.warning("%s: skipped, not UTF-8 text", path)
            skipped.append(path)
    return readable, skipped


def _read_lines(path: str) -> Iterator[str]:
    with open(path, encoding="utf-8-sig") as f:
        yield from iter(lambda: f.readline(MAX_LINE_CHARS), "")


def _txt_documents(path: str) -> Iterator[list[str]]:
    block: list[str] = []
    for raw in _read_lines(path):
        line = raw.strip()
        if line:
            block.append(line)
        elif block:
            yield list(lines_to_sentences(block))
            block = []
    if block:
        yield list(lines_to_sentences(block))


def _jsonl_documents(path: str, text_field: str) -> Iterator[list[str]]:
    for number, raw in enumerate(_read_lines(path), start=1):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}:{number}: invalid JSON ({err.msg})") from None
        if not isinstance(record, dict) or not isinstance(record.get(text_field), str):
            found = type(record.get(text_field)).__name__ if isinstance(record, dict) else type(record).__name__
            raise ValueError(f"{path}:{number}: expected an object with a string field {text_field!r} (found "
                             f"{found})")
        lines = (line.strip() for line in record[text_field].splitlines())
        yield list(lines_to_sentences(line for line in lines if line))


def iter_documents(
    inputs: Iterable[str],
    *,
    text_field: str = "text",
    max_doc_sentences: int = 10_000,
    stats: CorpusStats | None = None,
    strict: bool = False,
) -> Iterator[list[str]]:
    """Yield documents (lists of sentence strings) from ``inputs`` in a deterministic order.

    Documents longer than ``max_doc_sentences`` are cut into consecutive pieces so memory stays bounded. ``stats``,
    when given, is updated in place (files read, bytes, documents, sentences, skipped files). Files that are not
    UTF-8 text are skipped, or refused with ``strict`` (see :func:`text_files`).
    """
    stats = stats if stats is not None else CorpusStats()
    readable, skipped = text_files(inputs, strict=strict)
    stats.skipped.extend(skipped)
    for path in readable:
        stats.files += 1
        stats.bytes += os.path.getsize(path)
        docs = _jsonl_documents(path, text_field) if path.endswith(".jsonl") else _txt_documents(path)
        for doc in docs:
            for start in range(0, len(doc), max_doc_sentences):
                piece = doc[start : start + max_doc_sentences]
                stats.documents += 1
                stats.sentences += len(piece)
                yield piece
