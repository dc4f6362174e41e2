"""bertkit.files: a write is all or nothing, flushed before the rename, and gets the mode of the user's umask."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from bertkit import files
from bertkit.tokenizer import Tokenizer
from finetune_toys import make_pretrained

CORPUS = Path(__file__).parent / "fixtures" / "corpus"


@pytest.fixture
def umask():
    """Set a umask for one test; the previous one comes back afterwards."""
    before = os.umask(0o022)
    yield lambda mask: os.umask(mask)
    os.umask(before)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002])
def test_a_written_file_gets_the_mode_the_umask_gives(tmp_path, umask, mask):
    umask(mask)
    assert mode(files.write_text(tmp_path / "a.txt", "x")) == 0o666 & ~mask
    assert mode(files.atomic_write(tmp_path / "b.bin", lambda tmp: tmp.write_bytes(b"x"))) == 0o666 & ~mask


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = files.write_text(tmp_path / "data.json", "old")

    def half_then_fail(tmp: Path) -> None:
        tmp.write_text("ne")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left") as caught:
        files.atomic_write(target, half_then_fail)
    assert caught.value.filename == str(target)  # the file asked for, not the temporary
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["data.json"]


def test_the_data_is_flushed_before_the_rename_and_the_folder_after(tmp_path, monkeypatch):
    events = []
    monkeypatch.setattr(files, "fsync_file", lambda path: events.append(("file", Path(path).name)))
    monkeypatch.setattr(files, "fsync_dir", lambda path: events.append(("folder", Path(path))))
    replace = os.replace
    monkeypatch.setattr(files.os, "replace", lambda a, b: (events.append(("rename", Path(b).name)), replace(a, b)))
    files.write_json(tmp_path / "x.json", {"a": 1})
    assert [e[0] for e in events] == ["file", "rename", "folder"]
    assert events[0][1].endswith(files.TEMP_SUFFIX) and events[2][1] == tmp_path


def test_tokenizer_files_and_onnx_exports_are_not_private(tmp_path, umask):
    from bertkit.infer.onnx_export import export_onnx, quantize_onnx
    from bertkit.infer.predictor import load_model

    umask(0o022)
    for kind in ("wordpiece", "bpe", "unigram"):
        Tokenizer.train([str(CORPUS / "alice_in_wonderland.txt")], kind=kind, vocab_size=300).save_pretrained(
            tmp_path / kind)
    model, _ = load_model(make_pretrained(tmp_path / "model"))
    export_onnx(model, tmp_path / "model.onnx")
    quantize_onnx(tmp_path / "model.onnx", tmp_path / "int8.onnx")
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert {p.name for p in written} >= {"vocab.txt", "vocab.json", "merges.txt", "spiece.model", "model.onnx",
                                         "int8.onnx"}
    assert {p.relative_to(tmp_path).as_posix(): oct(mode(p)) for p in written if mode(p) != 0o644} == {}
