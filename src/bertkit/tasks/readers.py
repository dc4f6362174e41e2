"""Readers for fine-tuning data: tables (CSV / TSV / JSONL, GLUE layouts), SQuAD JSON and CoNLL column files.

Every reader returns plain example dataclasses and checks its input at the border: a missing column, an empty
text, an unknown label or a malformed line raises `TaskDataError` naming the file (and line) at fault.
Files may be gzip-compressed (name ending in ".gz"); a UTF-8 byte-order mark is ignored.
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import json
import logging
import sys
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

logger = logging.getLogger(__name__)
csv.field_size_limit(sys.maxsize)  # GLUE rows (MNLI parses) exceed the 128 KiB default


class TaskDataError(ValueError):
    """Bad fine-tuning data; the message names the file (and line) at fault."""


@dataclass(frozen=True)
class TextExample:
    """One classification / regression example; `label` is a class name, a float (regression) or None."""

    text: str
    pair: str | None = None
    label: str | float | None = None
    line: int = 0  # 1-based line in the source file, for messages


@dataclass(frozen=True)
class TaggingExample:
    """One sentence for token tagging: words and their IOB2 tags (None for unlabelled input)."""

    tokens: tuple[str, ...]
    tags: tuple[str, ...] | None = None
    line: int = 0  # line of the first word


@dataclass(frozen=True)
class Answer:
    """A gold answer: its text and the character offset where it starts in the context."""

    text: str
    answer_start: int


@dataclass(frozen=True)
class QAExample:
    """One extractive-QA question over its passage; unanswerable (SQuAD 2.0) questions have no answers."""

    id: str
    question: str
    context: str
    answers: tuple[Answer, ...] = ()
    is_impossible: bool = False
    title: str = ""


@dataclass(frozen=True)
class SquadReport:
    """What `read_squad` kept and skipped; `mismatches` describes the first few skipped answers."""

    questions: int = 0
    answerable: int = 0
    impossible: int = 0
    skipped_answers: int = 0
    skipped_questions: int = 0
    mismatches: tuple[str, ...] = ()


# --------------------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def open_text(path: str | Path) -> Iterator[IO[str]]:
    """Open a UTF-8 text file (gzip when the name ends in .gz); I/O and decoding errors name the file."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8-sig", newline="") as handle:
            yield handle
    except FileNotFoundError:
        raise TaskDataError(f"{path}: file not found") from None
    except UnicodeDecodeError as err:
        raise TaskDataError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    except (OSError, EOFError) as err:
        raise TaskDataError(f"{path}: cannot read ({err})") from None


def _base_suffix(path: Path) -> str:
    """'.tsv' for train.tsv and train.tsv.gz."""
    return Path(path.stem).suffix if path.suffix == ".gz" else path.suffix


# --------------------------------------------------------------------------------------------------------
# Tables: CSV, TSV, JSONL
# --------------------------------------------------------------------------------------------------------


def _rows(handle: IO[str], delimiter: str) -> Iterator[tuple[int, list[str]]]:
    """(first line number, fields) for every non-blank row. TSV is read without quote handling, as GLUE files
    need: their texts contain unbalanced double quotes."""
    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    reader = csv.reader(handle, delimiter=delimiter, quoting=quoting)
    previous_end = 0  # a quoted CSV field may span lines; a row starts after the previous one ends
    for fields in reader:
        if any(f.strip() for f in fields):
            yield previous_end + 1, fields
        previous_end = reader.line_num


def _column_index(path: Path, header: list[str], column: str | int | None) -> int | None:
    if column is None or isinstance(column, int):
        return column
    if column not in header:
        raise TaskDataError(f"{path}: no column {column!r} (columns found: {', '.join(header)})")
    return header.index(column)


def _make_example(path: Path, line: int, values: list[str | None], regression: bool) -> TextExample:
    """Validate one row's text, pair and label values (None = column not requested)."""
    text, pair, label = values
    if not text or not str(text).strip():
        raise TaskDataError(f"{path}:{line}: empty text")
    if pair is not None and not str(pair).strip():
        raise TaskDataError(f"{path}:{line}: empty pair text")
    if label is not None:
        label = str(label).strip()
        if not label:
            raise TaskDataError(f"{path}:{line}: empty label")
        if regression:
            try:
                label = float(label)
            except ValueError:
                raise TaskDataError(f"{path}:{line}: regression label {label!r} is not a number") from None
    return TextExample(text=str(text), pair=None if pair is None else str(pair), label=label, line=line)


def _table_examples(
    path: Path,
    header: list[str],
    rows: Iterable[tuple[int, list[str]]],
    columns: tuple[str | int | None, str | int | None, str | int | None],
    regression: bool,
) -> list[TextExample]:
    """Examples from delimited rows given (text, pair, label) column names or indices."""
    index = [_column_index(path, header, c) for c in columns]
    needed = max(i for i in index if i is not None) + 1
    examples = []
    for line, fields in rows:
        if len(fields) < needed:
            raise TaskDataError(f"{path}:{line}: {len(fields)} fields, expected at least {needed}")
        examples.append(_make_example(path, line, [None if i is None else fields[i] for i in index], regression))
    return examples


def read_table(
    path: str | Path,
    *,
    text_column: str | int = "text",
    pair_column: str | int | None = None,
    label_column: str | int | None = "label",
    regression: bool = False,
    has_header: bool = True,
) -> list[TextExample]:
    """Read a CSV (.csv) or TSV (.tsv, .txt) file, optionally gzipped.

    Columns are header names, or 0-based indices when `has_header` is False. `label_column=None` reads an
    unlabelled (test) file; `regression` parses labels as floats.
    """
    path = Path(path)
    delimiter = "," if _base_suffix(path) == ".csv" else "\t"
    with open_text(path) as handle:
        rows = _rows(handle, delimiter)
        header = next(rows, (0, None))[1] if has_header else []
        if header is None:
            raise TaskDataError(f"{path}: empty file")
        columns = (text_column, pair_column, label_column)
        examples = _table_examples(path, header, rows, columns, regression)
    if not examples:
        raise TaskDataError(f"{path}: no examples (no row below the header)" if has_header else f"{path}: empty file")
    return examples


def read_jsonl(
    path: str | Path,
    *,
    text_column: str = "text",
    pair_column: str | None = None,
    label_column: str | None = "label",
    regression: bool = False,
) -> list[TextExample]:
    """Read one JSON object per line (blank lines skipped); the column arguments name the keys."""
    path = Path(path)
    examples = []
    for line, record in _json_records(path):
        values = []
        for key in (text_column, pair_column, label_column):
            if key is not None and key not in record:
                raise TaskDataError(f"{path}:{line}: no key {key!r} (keys found: {', '.join(record)})")
            values.append(None if key is None else record[key])
        _check_json_types(path, line, record, (text_column, pair_column), (label_column,))
        examples.append(_make_example(path, line, values, regression))
    if not examples:
        raise TaskDataError(f"{path}: no examples (the file holds no JSON object)")
    return examples


def _check_json_types(path: Path, line: int, record: dict, texts: Iterable[str | None],
                      labels: Iterable[str | None] = ()) -> None:
    """Texts must be JSON strings and labels strings or numbers: a number where text belongs is a mistake in the
    file, not something to turn into the text "12345"."""
    for keys, allowed, what in ((texts, (str,), "a string"), (labels, (str, int, float), "a string or a number")):
        for key in keys:
            value = record.get(key) if key is not None else None
            if key is not None and key in record and (not isinstance(value, allowed) or isinstance(value, bool)):
                raise TaskDataError(f"{path}:{line}: {key!r} must be {what}, found {json.dumps(value)[:40]}")


def _json_records(path: Path) -> Iterator[tuple[int, dict]]:
    """(line number, object) for each non-blank line of a JSON-lines file; anything else names the line."""
    with open_text(path) as handle:
        for line, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            try:
                record = json.loads(raw)
            except json.JSONDecodeError as err:
                raise TaskDataError(f"{path}:{line}: invalid JSON ({err.msg})") from None
            if not isinstance(record, dict):
                raise TaskDataError(f"{path}:{line}: expected a JSON object, found {type(record).__name__}")
            yield line, record


def read_examples(path: str | Path, **columns: str | int | bool | None) -> list[TextExample]:
    """Read a table by its extension: .jsonl -> `read_jsonl`, .csv / .tsv / .txt -> `read_table`."""
    suffix = _base_suffix(Path(path))
    if suffix == ".jsonl":
        return read_jsonl(path, **columns)
    if suffix in (".csv", ".tsv", ".txt"):
        return read_table(path, **columns)
    raise TaskDataError(f"{path}: unknown table format {suffix!r} (expected .csv, .tsv, .txt or .jsonl)")


def check_labels(
    train_labels: Iterable[str], dev_examples: Iterable[TextExample | TaggingExample], path: str | Path
) -> None:
    """Raise if an evaluation example carries a label (or tag) that training never had: the model could not
    predict it and its id would be undefined."""
    known = set(train_labels)
    for example in dev_examples:
        labels = example.tags if isinstance(example, TaggingExample) else [example.label]
        for label in labels or ():
            if label is not None and label not in known:
                raise TaskDataError(
                    f"{path}:{example.line}: label {label!r} never seen in training "
                    f"(training labels: {', '.join(sorted(map(str, known)))})"
                )


# --------------------------------------------------------------------------------------------------------
# GLUE
# --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GlueTask:
    """Where a GLUE task keeps its data. `labels` is the standard label list (None = regression, STS-B)."""

    folder: str
    text_column: str
    pair_column: str | None
    label_column: str
    labels: tuple[str, ...] | None
    dev_file: str = "dev.tsv"
    test_file: str = "test.tsv"


GLUE_TASKS: dict[str, GlueTask] = {
    "cola": GlueTask("CoLA", "sentence", None, "label", ("0", "1")),
    "sst2": GlueTask("SST-2", "sentence", None, "label", ("0", "1")),
    "mrpc": GlueTask("MRPC", "#1 String", "#2 String", "Quality", ("0", "1")),
    "rte": GlueTask("RTE", "sentence1", "sentence2", "label", ("entailment", "not_entailment")),
    "qnli": GlueTask("QNLI", "question", "sentence", "label", ("entailment", "not_entailment")),
    "qqp": GlueTask("QQP", "question1", "question2", "is_duplicate", ("0", "1")),
    "mnli": GlueTask(
        "MNLI",
        "sentence1",
        "sentence2",
        "gold_label",
        ("contradiction", "entailment", "neutral"),
        dev_file="dev_matched.tsv",
        test_file="test_matched.tsv",
    ),
    "stsb": GlueTask("STS-B", "sentence1", "sentence2", "score", None),
}
# CoLA train and dev files have no header row; these are their columns. Its test file has "index sentence".
_COLA_COLUMNS = ["source", "label", "original_label", "sentence"]


def glue_task(name: str) -> GlueTask:
    """The GlueTask for a name such as 'sst2' or 'SST-2' (case and dashes ignored)."""
    key = name.lower().replace("-", "").replace("_", "")
    if key not in GLUE_TASKS:
        raise TaskDataError(f"unknown GLUE task {name!r} (known: {', '.join(GLUE_TASKS)})")
    return GLUE_TASKS[key]


def glue_path(name: str, data_dir: str | Path, split: str) -> Path:
    """The file of a split ('train', 'dev', 'test') under a GLUE root or the task's own folder."""
    task = glue_task(name)
    files = {"train": "train.tsv", "dev": task.dev_file, "test": task.test_file}
    if split not in files:
        raise TaskDataError(f"unknown split {split!r} (expected train, dev or test)")
    folder = Path(data_dir) / task.folder
    return (folder if folder.is_dir() else Path(data_dir)) / files[split]


def read_glue(name: str, path: str | Path, *, has_labels: bool | None = None) -> list[TextExample]:
    """Read a GLUE TSV with the task's standard columns and check its labels against the task's label list.

    Args:
        name: sst2, cola, mrpc, rte, qnli, qqp, mnli or stsb.
        path: the TSV file (optionally .gz).
        has_labels: whether the file must carry labels; by default required unless the file name contains
            "test" (GLUE test splits are unlabelled).
    """
    task, path = glue_task(name), Path(path)
    with open_text(path) as handle:
        rows = _rows(handle, "\t")
        first = next(rows, None)
        if first is None:
            raise TaskDataError(f"{path}: empty file")
        header = first[1]
        if task.folder == "CoLA" and header[0] != "index":
            header, rows = _COLA_COLUMNS, _prepend(first, rows)
        labelled = has_labels if has_labels is not None else "test" not in path.name.lower()
        label_column = task.label_column if labelled else None
        columns = (task.text_column, task.pair_column, label_column)
        examples = _table_examples(path, header, rows, columns, regression=task.labels is None)
    for example in examples:
        if task.labels is not None and example.label is not None and example.label not in task.labels:
            raise TaskDataError(
                f"{path}:{example.line}: label {example.label!r} is not a {name} label "
                f"(expected one of {', '.join(task.labels)})"
            )
    return examples


def _prepend(first: tuple[int, list[str]], rows: Iterator[tuple[int, list[str]]]) -> Iterator:
    yield first
    yield from rows


# --------------------------------------------------------------------------------------------------------
# SQuAD
# --------------------------------------------------------------------------------------------------------


def _field(path: Path, record: dict, key: str, where: str) -> object:
    if not isinstance(record, dict) or key not in record:
        raise TaskDataError(f"{path}: {where}: missing key {key!r}")
    return record[key]


def _squad_answers(path: Path, qa: dict, context: str, where: str, mismatches: list[str]) -> tuple[Answer, ...]:
    """The answers of one question whose `answer_start` really points at their text; the others are
    described in `mismatches` and dropped."""
    kept = []
    for answer in _field(path, qa, "answers", where):
        text, start = _field(path, answer, "text", where), _field(path, answer, "answer_start", where)
        if isinstance(start, int) and context[start : start + len(text)] == text:
            kept.append(Answer(text=text, answer_start=start))
            continue
        found = context[start : start + len(text)] if isinstance(start, int) else None
        mismatches.append(f"{where}: answer {text!r} at {start} reads {found!r}")
    return tuple(kept)


def read_squad(path: str | Path, *, require_answers: bool = True) -> tuple[list[QAExample], SquadReport]:
    """Read SQuAD v1.1 or v2.0 JSON (plain or .gz).

    An answer whose `answer_start` does not point at its text is skipped and counted; an answerable
    question left with no answer is skipped too, unless `require_answers` is False (questions to predict,
    whose "answers" may be empty or absent). The counts come back in the SquadReport and are logged.
    """
    path = Path(path)
    with open_text(path) as handle:
        try:
            data = json.load(handle)
        except json.JSONDecodeError as err:
            raise TaskDataError(f"{path}:{err.lineno}: invalid JSON ({err.msg})") from None
    counts: Counter[str] = Counter()
    mismatches: list[str] = []
    examples = []
    for article in _field(path, data, "data", "top level"):
        for paragraph in _field(path, article, "paragraphs", "article"):
            context = _field(path, paragraph, "context", "paragraph")
            for qa in _field(path, paragraph, "qas", "paragraph"):
                qid = str(_field(path, qa, "id", "question"))
                impossible = bool(qa.get("is_impossible", False))
                unread = impossible or (not require_answers and not qa.get("answers"))
                answers = () if unread else _squad_answers(path, qa, context, f"question {qid}", mismatches)
                counts["questions"] += 1
                if not impossible and not answers and require_answers:
                    counts["skipped_questions"] += 1
                    continue
                counts["impossible" if impossible else "answerable"] += 1
                question = _field(path, qa, "question", f"question {qid}")
                title = article.get("title", "")
                examples.append(QAExample(qid, question, context, answers, impossible, title))
    result = SquadReport(**counts, skipped_answers=len(mismatches), mismatches=tuple(mismatches[:10]))
    if mismatches:
        logger.warning("%s: skipped %d answers whose answer_start does not match their text", path, len(mismatches))
    return examples, result


def read_qa_jsonl(path: str | Path) -> list[QAExample]:
    """Questions to answer, one JSON object per line with "question" and "context" (and optionally "id";
    the line number otherwise)."""
    path = Path(path)
    examples = []
    for line, record in _json_records(path):
        _check_json_types(path, line, record, ("question", "context"))
        for key in ("question", "context"):
            if not str(record.get(key, "")).strip():
                raise TaskDataError(f"{path}:{line}: missing or empty {key!r}")
        examples.append(QAExample(str(record.get("id", line)), record["question"], record["context"]))
    if not examples:
        raise TaskDataError(f"{path}: no questions (the file holds no JSON object)")
    return examples


# --------------------------------------------------------------------------------------------------------
# CoNLL
# --------------------------------------------------------------------------------------------------------


def _check_tag(path: Path, line: int, tag: str) -> str:
    prefix, dash, kind = tag.partition("-")
    if tag != "O" and not (prefix in ("B", "I") and dash and kind):
        raise TaskDataError(f"{path}:{line}: tag {tag!r} is not O, B-TYPE or I-TYPE (BIO/IOB2 or IOB1)")
    return tag


def to_iob2(tags: Iterable[str]) -> list[str]:
    """IOB1 -> IOB2: an I-X that opens a chunk (after O or another type) becomes B-X. IOB2 is unchanged."""
    out: list[str] = []
    previous = "O"
    for tag in tags:
        opens = tag.startswith("I-") and (previous == "O" or previous[2:] != tag[2:])
        out.append("B-" + tag[2:] if opens else tag)
        previous = tag
    return out


def read_conll(path: str | Path) -> list[TaggingExample]:
    """Read a CoNLL column file: word in the first column, tag in the last, blank line between sentences,
    -DOCSTART- lines skipped. Tags in BIO/IOB2 or IOB1 come back as IOB2."""
    path = Path(path)
    examples: list[TaggingExample] = []
    words: list[str] = []
    tags: list[str] = []
    start = 0

    def flush() -> None:
        if words:
            examples.append(TaggingExample(tuple(words), tuple(to_iob2(tags)), start))
        words.clear()
        tags.clear()

    with open_text(path) as handle:
        for line, raw in enumerate(handle, start=1):
            fields = raw.split()
            if not fields:
                flush()
            elif fields[0] != "-DOCSTART-":
                if len(fields) < 2:
                    raise TaskDataError(f"{path}:{line}: expected a word and a tag, found {raw.strip()!r}")
                start = start if words else line
                words.append(fields[0])
                tags.append(_check_tag(path, line, fields[-1]))
    flush()
    return examples
