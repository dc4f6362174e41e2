"""Every command meets bad input and a failing disk with one line on stderr, a non-zero exit and no traceback.

The table pairs a command with a bad input; the disk faults are injected where a file is written (the one atomic
writer, ``bertkit.files``), as a full disk (ENOSPC) or a read-only folder (EROFS) would raise them there.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bertkit import files
from bertkit.cli import main
from finetune_toys import make_pretrained, sentiment_rows, write_table

CORPUS = Path(__file__).parent / "fixtures" / "corpus"
SRC = Path(__file__).resolve().parents[1] / "src"

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    """A tiny pretrained model, a fine-tuned one, and the bad inputs of the table."""
    root = tmp_path_factory.mktemp("faults")
    make_pretrained(root / "model")
    write_table(root / "train.jsonl", sentiment_rows(16, 0))
    assert main(["finetune", "--task", "classify", "--model", str(root / "model"), "--train",
                 str(root / "train.jsonl"), "--out", str(root / "tuned"), "--max-steps", "1", "--batch-size", "8",
                 "--no-progress"]) == 0
    (root / "number.jsonl").write_text(json.dumps({"text": 12345, "label": "good"}) + "\n", encoding="utf-8")
    (root / "empty.jsonl").write_text("\n", encoding="utf-8")
    (root / "empty.txt").write_text("\n\n", encoding="utf-8")
    (root / "texts.txt").write_text("a good film\nan awful plot\n", encoding="utf-8")
    books = root / "books"
    books.mkdir()
    (books / "alice.txt").write_bytes((CORPUS / "alice_in_wonderland.txt").read_bytes()[:20_000])
    (books / "cp1252.txt").write_bytes("Caf\u00e9 \u201cquoted\u201d text.\n".encode("cp1252"))
    mismatched = root / "mismatched"
    mismatched.mkdir()
    for name in ("model.safetensors", "vocab.txt"):
        (mismatched / name).write_bytes((root / "model" / name).read_bytes())
    config = json.loads((root / "model" / "config.json").read_text(encoding="utf-8"))
    (mismatched / "config.json").write_text(json.dumps({**config, "hidden_size": 64}), encoding="utf-8")
    return root


# (case id, arguments with {root} for the fixture folder, exit status, text the one line must hold)
CASES = [
    ("pretrain-batch-size-0", "pretrain --data {root}/shards --out {root}/o --batch-size 0", 2, "--batch-size"),
    ("pretrain-negative-lr", "pretrain --data {root}/shards --out {root}/o --lr -1", 2, "--lr"),
    ("pretrain-nan-lr", "pretrain --data {root}/shards --out {root}/o --lr nan", 2, "--lr"),
    ("pretrain-mlm-prob-0", "pretrain --data {root}/shards --out {root}/o --mlm-prob 0", 2, "--mlm-prob"),
    ("pretrain-data-is-a-file", "pretrain --data {root}/texts.txt --out {root}/o", 2, "texts.txt"),
    ("pretrain-resume-nothing", "pretrain --data {root}/texts.txt --out {root}/new --resume", 2, "checkpoint"),
    ("pretrain-unknown-flag", "pretrain --data x --out y --bogus", 2, "--bogus"),
    ("distill-temperature-0", "distill --teacher {root}/model --data x --out y --temperature 0", 2,
     "--temperature"),
    ("distill-missing-teacher", "distill --teacher {root}/none --data {root}/none --out {root}/d", 2, "none"),
    ("finetune-epochs-0", "finetune --task classify --model {root}/model --train {root}/train.jsonl "
     "--out {root}/f --epochs 0", 2, "--epochs"),
    ("finetune-warmup-above-1", "finetune --task classify --model {root}/model --train {root}/train.jsonl "
     "--out {root}/f --warmup-ratio 2", 2, "--warmup-ratio"),
    ("finetune-number-as-text", "finetune --task classify --model {root}/model --train {root}/number.jsonl "
     "--out {root}/f", 2, "number.jsonl:1"),
    ("finetune-empty-jsonl", "finetune --task classify --model {root}/model --train {root}/empty.jsonl "
     "--out {root}/f", 2, "empty.jsonl"),
    ("predict-number-as-text", "predict --model {root}/tuned --input {root}/number.jsonl --output {root}/p.jsonl",
     2, "number.jsonl:1"),
    ("predict-batch-size-0", "predict --model {root}/tuned --input {root}/train.jsonl --output {root}/p.jsonl "
     "--batch-size 0", 2, "--batch-size"),
    ("evaluate-missing-data", "evaluate --model {root}/tuned --data {root}/none.tsv", 2, "none.tsv"),
    ("tokenizer-empty-corpus", "tokenizer train {root}/empty.txt --out {root}/t", 2, "empty.txt"),
    ("tokenizer-strict-cp1252", "tokenizer train {root}/books --out {root}/t --strict", 2, "cp1252.txt"),
    ("tokenizer-vocab-size-0", "tokenizer train {root}/books --out {root}/t --vocab-size 0", 2, "--vocab-size"),
    ("prepare-strict-cp1252", "prepare {root}/books --tokenizer {root}/model --out {root}/s --strict", 2,
     "cp1252.txt"),
    ("prepare-empty-corpus", "prepare {root}/empty.txt --tokenizer {root}/model --out {root}/s", 2, "empty"),
    ("prepare-max-seq-len-0", "prepare {root}/books --tokenizer {root}/model --out {root}/s --max-seq-len 0", 2,
     "--max-seq-len"),
    ("info-config-does-not-fit", "info {root}/mismatched", 2, "config.json"),
    ("info-missing-folder", "info {root}/none", 2, "none"),
    ("embed-missing-input", "embed --model {root}/model --input {root}/none.txt --output {root}/e.npy", 2,
     "none.txt"),
    ("embed-batch-size-0", "embed --model {root}/model --input {root}/texts.txt --output {root}/e.npy "
     "--batch-size 0", 2, "--batch-size"),
    ("fill-mask-top-k-0", "fill-mask hello --model {root}/model --top-k 0", 2, "--top-k"),
    ("explain-missing-model", "explain hello --model {root}/none --out {root}/x.html", 2, "none"),
    ("report-missing-run", "report {root}/none", 2, "none"),
]


def run_cli(argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str]:
    """Exit status and stderr of one command, whether it returned or argparse exited."""
    try:
        status = main(argv)
    except SystemExit as stop:
        status = stop.code
    return status, capsys.readouterr().err


@pytest.mark.parametrize(("argv", "status", "named"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_naming_the_cause(world, capsys, argv, status, named):
    code, err = run_cli(argv.format(root=world).split(), capsys)
    assert code == status, err
    assert err.count("\n") == 1 and err.endswith("\n"), err
    assert "Traceback" not in err and named in err


def test_a_real_process_prints_one_line_and_no_traceback(world):
    argv = ["finetune", "--task", "classify", "--model", str(world / "model"), "--train",
            str(world / "number.jsonl"), "--out", str(world / "f")]
    result = subprocess.run([sys.executable, "-m", "bertkit", *argv], capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(SRC)})
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "number.jsonl:1" in result.stderr and "Traceback" not in result.stderr


def test_tokenizer_train_and_prepare_skip_the_same_non_utf8_file_with_a_warning(world, capsys, caplog):
    assert main(["tokenizer", "train", str(world / "books"), "--out", str(world / "tok"), "--vocab-size", "200"]) == 0
    assert "cp1252.txt: skipped, not UTF-8 text" in caplog.text and "skipped 1 file(s)" in capsys.readouterr().out
    caplog.clear()
    assert main(["prepare", str(world / "books"), "--tokenizer", str(world / "tok"), "--out",
                 str(world / "shards-books"), "--max-seq-len", "32"]) == 0
    assert "cp1252.txt: skipped, not UTF-8 text" in caplog.text and "skipped 1 file(s)" in capsys.readouterr().out


# ------------------------------------------------------------------------------------------- disk faults
def fail_writes(monkeypatch: pytest.MonkeyPatch, number: int) -> None:
    """Every atomic write fails as the disk would: after the data went to the temporary file, at its flush."""
    def fsync_file(path):
        raise OSError(number, os.strerror(number), str(path))

    monkeypatch.setattr(files, "fsync_file", fsync_file)


DISK_CASES = {
    "embed": "embed --model {root}/model --input {root}/texts.txt --output {out}/e.npy",
    "tokenizer": "tokenizer train {root}/books --out {out} --vocab-size 200",
    "prepare": "prepare {root}/books --tokenizer {root}/model --out {out}/shards --max-seq-len 32",
    "predict": "predict --model {root}/tuned --input {root}/train.jsonl --output {out}/p.jsonl",
    "evaluate": "evaluate --model {root}/tuned --data {root}/train.jsonl --output {out}/m.json",
    "explain": "explain hello --model {root}/model --out {out}/x.html",
    "finetune": "finetune --task classify --model {root}/model --train {root}/train.jsonl --out {out}/run "
                "--max-steps 1 --batch-size 8 --no-progress",
}


@pytest.mark.parametrize("fault", [errno.ENOSPC, errno.EROFS], ids=["disk-full", "read-only"])
@pytest.mark.parametrize("command", list(DISK_CASES))
def test_a_failing_disk_is_one_line_and_leaves_no_temporary_file(world, tmp_path, monkeypatch, capsys, command,
                                                                  fault):
    out = tmp_path / "out"
    out.mkdir()
    fail_writes(monkeypatch, fault)
    code, err = run_cli(DISK_CASES[command].format(root=world, out=out).split(), capsys)
    assert code == 1, err
    lines = [line for line in err.splitlines() if ": WARNING: " not in line]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert {errno.ENOSPC: "disk full", errno.EROFS: "read-only"}[fault] in lines[0] and str(out) in lines[0]
    left = [p.name for p in out.rglob("*") if p.name.endswith(files.TEMP_SUFFIX) or ".tmp-" in p.name]
    assert left == []


def test_finetune_and_distill_refuse_a_folder_another_process_holds(world, tmp_path, capsys):
    out = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from bertkit.train.checkpointing import "
                               "RunLock; RunLock(sys.argv[1]).__enter__(); print('held', flush=True); time.sleep(60)",
                               str(out)], env={**os.environ, "PYTHONPATH": str(SRC)}, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        for argv in (f"finetune --task classify --model {world}/model --train {world}/train.jsonl --out {out}",
                     f"distill --teacher {world}/model --data {world}/none --out {out}"):
            code, err = run_cli(argv.split(), capsys)
            assert code == 1 and err.count("\n") == 1 and f"in use by process {holder.pid}" in err, err
    finally:
        holder.kill()
        holder.wait()
