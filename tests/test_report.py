"""Training report (whole, partial and broken run folders) and the 2-D embedding projection."""

from __future__ import annotations

import base64
import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest

from bertkit.cli import main
from bertkit.inspect.projection import pca_2d, plot_embeddings
from bertkit.inspect.report import build_report
from bertkit.train.loop import Trainer
from pictures import assert_drawn_png
from train_toys import ToyRegressor, ToySource, held_out_loss, save_state_dict, toy_config


def _write_metrics(run: Path, steps: int = 30, eval_every: int = 10, torn: str | None = None) -> None:
    lines = []
    for step in range(1, steps + 1):
        lines.append({"step": step, "epoch": 0, "loss": 3.0 / step, "lr": 1e-4 * step / steps, "grad_norm": 1.0,
                      "tokens_per_s": 1000.0 + step, "elapsed": 0.5 * step})
        if eval_every and step % eval_every == 0:
            lines.append({"step": step, "eval_loss": 2.0 / step, "eval_accuracy": 0.5 + step / 100,
                          "elapsed": 0.5 * step})
    run.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(r) + "\n" for r in lines) + (torn or "")
    (run / "metrics.jsonl").write_text(text, encoding="utf-8")


def _embedded_images(page: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r'src="data:image/png;base64,([^"]+)"', page)]


def test_full_classification_run_gets_every_plot_embedded(tmp_path):
    _write_metrics(tmp_path)
    (tmp_path / "eval_details.json").write_text(json.dumps(
        {"step": 30, "labels": ["neg", "pos"], "confusion_matrix": [[40, 3], [5, 52]]}))
    path = build_report(tmp_path)
    assert path == tmp_path / "report.html"
    files = ["loss.png", "lr.png", "tokens_per_s.png", "eval_metrics.png", "confusion_matrix.png"]
    page = path.read_text(encoding="utf-8")
    assert _embedded_images(page) == [(tmp_path / f).read_bytes() for f in files]  # page order, byte-identical
    for image in _embedded_images(page):
        assert_drawn_png(image, 300, 250)
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)  # opens offline
    assert "last logged step</th><td class=\"num\">30<" in page and "accuracy</th><td class=\"num\">0.8<" in page


def test_tagging_details_give_per_entity_bars(tmp_path):
    _write_metrics(tmp_path, steps=5, eval_every=5)
    scores = {"PER": {"precision": 0.9, "recall": 0.8, "f1": 0.85, "support": 12},
              "LOC": {"precision": 0.7, "recall": 0.6, "f1": 0.65}}
    (tmp_path / "eval_details.json").write_text(json.dumps({"per_entity": scores}))
    build_report(tmp_path)
    assert_drawn_png((tmp_path / "entity_f1.png").read_bytes(), 400, 250)
    assert not (tmp_path / "confusion_matrix.png").exists()


def test_run_in_progress_reports_what_exists_and_skips_a_torn_last_line(tmp_path):
    _write_metrics(tmp_path, steps=4, eval_every=0, torn='{"step": 5, "loss": 0.6, "lr": 0.0')
    page = build_report(tmp_path).read_text(encoding="utf-8")
    assert "No evaluation lines yet" in page and "4 training, 0 evaluation" in page
    assert "last logged step</th><td class=\"num\">4<" in page
    assert not (tmp_path / "eval_metrics.png").exists() and len(_embedded_images(page)) == 3


def test_summary_names_the_saved_models_architecture(tmp_path):
    _write_metrics(tmp_path, steps=3, eval_every=0)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "roberta",
                                                      "architectures": ["RobertaForSequenceClassification"]}))
    page = build_report(tmp_path).read_text(encoding="utf-8")
    assert "model</th><td class=\"num\">roberta (RobertaForSequenceClassification)<" in page


def test_report_of_a_real_training_run(tmp_path):
    trainer = Trainer(ToyRegressor(), toy_config(tmp_path, max_steps=12, eval_every=4), ToySource(),
                      evaluate=held_out_loss, save_model=save_state_dict)
    trainer.fit()
    page = build_report(tmp_path).read_text(encoding="utf-8")
    assert "12 training, 3 evaluation" in page and len(_embedded_images(page)) == 3  # loss, lr, tokens/s
    assert not (tmp_path / "eval_metrics.png").exists()  # eval_loss is drawn on the loss plot


def test_missing_or_empty_metrics_are_clear_errors(tmp_path, capsys):
    with pytest.raises(FileNotFoundError, match=r"no such run folder"):
        build_report(tmp_path / "absent")
    with pytest.raises(FileNotFoundError, match=r"no metrics\.jsonl"):
        build_report(tmp_path)
    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "lo')
    with pytest.raises(ValueError, match=r"metrics\.jsonl: no complete metric lines yet"):
        build_report(tmp_path)
    assert main(["report", str(tmp_path / "absent")]) == 2
    assert capsys.readouterr().err.strip() == f"bertkit report: error: {tmp_path / 'absent'}: no such run folder"


@pytest.mark.parametrize("details, key", [
    ({"confusion_matrix": [[1, 2], [3]]}, "'confusion_matrix' must be a square"),
    ({"confusion_matrix": [[1, 2], [3, 4]], "labels": ["a"]}, "'labels' must be a list of 2 names"),
    ({"per_entity": {"PER": {"precision": 0.5, "f1": 0.5}}}, r"per_entity\['PER'\] needs numeric"),
])
def test_malformed_eval_details_name_the_file_and_key(tmp_path, details, key):
    _write_metrics(tmp_path, steps=2, eval_every=0)
    (tmp_path / "eval_details.json").write_text(json.dumps(details))
    with pytest.raises(ValueError, match=r"eval_details\.json: " + key):
        build_report(tmp_path)


def test_missing_matplotlib_is_a_clear_error(tmp_path, monkeypatch, capsys):
    _write_metrics(tmp_path, steps=2, eval_every=0)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)  # makes the import fail
    with pytest.raises(ImportError, match=r"pip install 'bertkit\[plots\]'"):
        build_report(tmp_path)
    assert main(["report", str(tmp_path)]) == 2
    assert "needs matplotlib" in capsys.readouterr().err
    assert not (tmp_path / "report.html").exists()


def test_cli_writes_the_report(tmp_path, capsys):
    _write_metrics(tmp_path, steps=3, eval_every=0)
    assert main(["report", str(tmp_path)]) == 0
    assert capsys.readouterr().out.strip() == f"wrote {tmp_path / 'report.html'}"


# --- embedding projection ----------------------------------------------------------------------------


def test_pca_recovers_a_plane_hidden_in_high_dimensions():
    rng = np.random.default_rng(0)
    plane = rng.normal(size=(50, 2)) * [5.0, 1.0]  # variance mostly along the first axis
    rotation, _ = np.linalg.qr(rng.normal(size=(16, 16)))
    vectors = plane @ rotation[:2] + 3.0  # a rotated, shifted copy in 16-D
    coords = pca_2d(vectors)
    assert coords.shape == (50, 2)
    distances = lambda x: np.linalg.norm(x[:, None] - x[None], axis=-1)
    np.testing.assert_allclose(distances(coords), distances(plane), atol=1e-8)  # the plane, up to rotation
    assert coords[:, 0].var() > 10 * coords[:, 1].var()  # first axis carries the most variance
    np.testing.assert_array_equal(pca_2d(vectors), coords)


def test_pca_handles_one_vector_and_one_dimension_and_rejects_bad_input():
    assert pca_2d(np.ones((1, 8))).tolist() == [[0.0, 0.0]]
    line = pca_2d(np.arange(5.0)[:, None])
    assert np.allclose(line[:, 1], 0) and np.allclose(np.abs(line[:, 0]), [2, 1, 0, 1, 2])
    with pytest.raises(ValueError, match=r"\(N, D\)"):
        pca_2d(np.ones(4))
    with pytest.raises(ValueError, match="NaN"):
        pca_2d(np.array([[1.0, np.nan], [0.0, 1.0]]))


def test_plot_embeddings_writes_a_labelled_png(tmp_path):
    vectors = np.random.default_rng(1).normal(size=(6, 10))
    path = plot_embeddings(vectors, [f"sentence {i}" for i in range(6)], tmp_path / "out" / "plot.png", "demo")
    assert_drawn_png(path.read_bytes(), 400, 300)
    with pytest.raises(ValueError, match="6 vectors but 2 labels"):
        plot_embeddings(vectors, ["a", "b"], tmp_path / "bad.png")
