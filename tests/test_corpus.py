"""Sentence splitting and streaming documents from .txt / .jsonl files, folders and globs."""

import json
from pathlib import Path

import pytest

from bertkit.data.corpus import CorpusStats, iter_documents, split_sentences

FIXTURES = Path(__file__).parent / "fixtures" / "corpus"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("It rained. We stayed in! Did you?", ["It rained.", "We stayed in!", "Did you?"]),
        ("Mr. Darcy met Dr. Watson today. They talked.", ["Mr. Darcy met Dr. Watson today.", "They talked."]),
        ("Use tools, e.g. hammers. Then rest.", ["Use tools, e.g. hammers.", "Then rest."]),
        ("Pi is 3.14159 roughly. It is irrational.", ["Pi is 3.14159 roughly.", "It is irrational."]),
        ("J. R. R. Tolkien wrote it. Fine.", ["J. R. R. Tolkien wrote it.", "Fine."]),
        ("“Stop!” she cried. “Now.” He left.", ["“Stop!” she cried.", "“Now.”", "He left."]),
        ('He said "Go." Then "Run." Done', ['He said "Go."', 'Then "Run."', "Done"]),
        ("no capital. after this", ["no capital. after this"]),
    ],
)
def test_split_sentences(text, expected):
    assert split_sentences(text) == expected


def test_txt_documents_are_blank_line_blocks_and_wrapped_lines_join(tmp_path):
    (tmp_path / "a.txt").write_text(
        "First sentence here.\nSecond one, with Mr.\nSmith, is wrapped;\nover lines.\n\n\n"
        "Other doc\nwithout stop\n\nThird. Doc.\n",
        encoding="utf-8",
    )
    docs = list(iter_documents([str(tmp_path / "a.txt")]))
    assert docs == [
        ["First sentence here.", "Second one, with Mr. Smith, is wrapped; over lines."],
        ["Other doc without stop"],
        ["Third.", "Doc."],
    ]


def test_crlf_and_bom_are_handled(tmp_path):
    (tmp_path / "w.txt").write_bytes("\ufeffOne line.\r\nTwo line.\r\n\r\nNext.\r\n".encode())
    assert list(iter_documents([str(tmp_path)])) == [["One line.", "Two line."], ["Next."]]


def test_jsonl_text_field_and_errors(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps({"body": "Ab cd. Ef gh.\nIj kl."}) + "\n\n" + json.dumps({"body": "G."}) + "\n")
    assert list(iter_documents([str(path)], text_field="body")) == [["Ab cd.", "Ef gh.", "Ij kl."], ["G."]]
    with pytest.raises(ValueError, match=r"d\.jsonl:1: .*'text'"):
        list(iter_documents([str(path)]))
    path.write_text('{"text": "ok."}\n{broken\n')
    with pytest.raises(ValueError, match=r"d\.jsonl:2: invalid JSON"):
        list(iter_documents([str(path)]))


def test_binary_and_non_utf8_files_are_skipped_and_counted(tmp_path):
    (tmp_path / "good.txt").write_text("Fine text.\n")
    (tmp_path / "latin1.txt").write_bytes("Caf\u00e9 au lait.\n".encode("latin-1"))
    (tmp_path / "blob.txt").write_bytes(bytes(range(256)))
    stats = CorpusStats()
    assert list(iter_documents([str(tmp_path)], stats=stats)) == [["Fine text."]]
    assert stats.files == 1 and sorted(Path(p).name for p in stats.skipped) == ["blob.txt", "latin1.txt"]
    assert stats.documents == 1 and stats.sentences == 1


def test_folders_globs_order_and_missing_input(tmp_path):
    for name in ("b.txt", "a.txt", "sub/c.txt", "skip.md"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text(f"{name}.\n")
    assert [d[0] for d in iter_documents([str(tmp_path)])] == ["a.txt.", "b.txt.", "sub/c.txt."]
    assert [d[0] for d in iter_documents([str(tmp_path / "*.txt"), str(tmp_path / "a.txt")])] == ["a.txt.", "b.txt."]
    with pytest.raises(FileNotFoundError, match="nothing-here"):
        list(iter_documents([str(tmp_path / "nothing-here*")]))


def test_long_documents_are_cut_to_bound_memory(tmp_path):
    (tmp_path / "long.txt").write_text("".join(f"Sentence {i}.\n" for i in range(25)))
    docs = list(iter_documents([str(tmp_path)], max_doc_sentences=10))
    assert [len(d) for d in docs] == [10, 10, 5]


def test_fixture_corpus_streams_many_documents():
    stats = CorpusStats()
    docs = list(iter_documents([str(FIXTURES)], stats=stats))
    assert stats.files == 4 and not stats.skipped and len(docs) == stats.documents > 100
    assert stats.sentences > 1000
