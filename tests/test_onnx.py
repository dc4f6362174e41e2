"""ONNX export: onnxruntime on the exported graph equals torch within 1e-4, behind the same Predictor calls."""

from __future__ import annotations

import onnx
import pytest
import torch

from bertkit.cli import main
from bertkit.infer.onnx_export import export_onnx, quantize_onnx
from bertkit.infer.predictor import Predictor, load_model
from bertkit.infer.torch_backend import TorchBackend
from infer_toys import make_model_dirs


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    torch.set_num_threads(1)
    return make_model_dirs(tmp_path_factory.mktemp("onnx"))


def batches():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 40, (3, 9), generator=g)
    padded = torch.ones_like(ids)
    padded[1, 4:], padded[2, 7:] = 0, 0
    types = torch.zeros_like(ids)
    types[:, 5:] = 1
    return [(ids, types, padded), (ids[:2, :6], types[:2, :6], torch.ones_like(ids[:2, :6]))]


@pytest.mark.parametrize("name", ["classify", "tag", "qa", "pretrained"])
def test_onnxruntime_outputs_equal_torch(dirs, name, tmp_path):
    from bertkit.infer.onnx_backend import OnnxBackend

    model, _ = load_model(dirs[name])
    path = export_onnx(model, tmp_path / "model.onnx")
    torch_backend, onnx_backend = TorchBackend(model), OnnxBackend(path, threads=1)
    assert onnx_backend.output_names == torch_backend.output_names
    for ids, types, mask in batches():  # padded (the packed path) and unpadded, other batch and length
        batch = {"input_ids": ids, "token_type_ids": types, "attention_mask": mask}
        expected, got = torch_backend.run(batch), onnx_backend.run(batch)
        for key in expected:
            assert got[key].shape == expected[key].shape
            assert torch.allclose(got[key], expected[key], atol=1e-4), key


def test_predictor_onnx_backend_matches_torch(dirs):
    texts = ["the film was good", "bad", "", "alice visited paris then rome and the plot was very nice"]
    torch_results = Predictor(dirs["classify"]).classify(texts)
    onnx_results = Predictor(dirs["classify"], backend="onnx", threads=1).classify(texts)
    for a, b in zip(torch_results, onnx_results, strict=True):
        assert a.label == b.label and abs(a.probabilities["pos"] - b.probabilities["pos"]) < 1e-4
    a = Predictor(dirs["pretrained"]).fill_mask(["the [MASK] was good"], top_k=3)[0].masks
    b = Predictor(dirs["pretrained"], backend="onnx").fill_mask(["the [MASK] was good"], top_k=3)[0].masks
    assert [c.token for c in a[0]] == [c.token for c in b[0]]


def test_cli_export_writes_the_file_the_onnx_backend_reads(dirs, capsys):
    assert main(["export", "onnx", str(dirs["tag"])]) == 0
    assert (dirs["tag"] / "model.onnx").is_file() and "wrote" in capsys.readouterr().out
    assert main(["export", "onnx", str(dirs["tag"])]) == 2  # exists: never overwritten silently
    text = "alice visited paris"
    got, expected = Predictor(dirs["tag"], backend="onnx").tag([text])[0], Predictor(dirs["tag"]).tag([text])[0]
    assert [(e.label, e.start, e.end) for e in got.entities] == [(e.label, e.start, e.end) for e in expected.entities]


def test_int8_onnx_quantises_only_the_recipe_layers(dirs, tmp_path):
    model, _ = load_model(dirs["classify"])
    path = export_onnx(model, tmp_path / "model.onnx")
    quantize_onnx(path, tmp_path / "int8.onnx")
    ops = [n.op_type for n in onnx.load(str(tmp_path / "int8.onnx")).graph.node]
    assert ops.count("MatMulInteger") == 3 * model.config.num_hidden_layers  # qkv, out_proj, fc1; not fc2 or heads
