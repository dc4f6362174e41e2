"""Checkpoint directories: round trips, compatibility with the reference, and errors naming each tensor."""

import json

import pytest
import torch
import transformers
from safetensors.torch import load_file, save_file

from bertkit import (
    BertConfig,
    BertForPreTraining,
    BertForQuestionAnswering,
    BertForSequenceClassification,
    BertForTokenClassification,
    BertModel,
)
from bertkit.checkpoint.io import CheckpointError

CONFIG = BertConfig(vocab_size=120, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                    intermediate_size=100, max_position_embeddings=40)


def _ids():
    return torch.randint(5, 120, (2, 10), generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("cls", [BertModel, BertForPreTraining])
def test_save_then_load_is_bit_exact(tmp_path, cls):
    torch.manual_seed(0)
    model = cls(CONFIG)
    model.save_pretrained(tmp_path)
    again = cls.from_pretrained(tmp_path)
    for (name, a), (_, b) in zip(model.state_dict().items(), again.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


@pytest.mark.parametrize(
    "ours,theirs,kwargs",
    [
        (BertModel, "BertModel", {}),
        (BertForPreTraining, "BertForPreTraining", {}),
        (BertForSequenceClassification, "BertForSequenceClassification", {"num_labels": 3}),
        (BertForTokenClassification, "BertForTokenClassification", {"num_labels": 5}),
        (BertForQuestionAnswering, "BertForQuestionAnswering", {}),
    ],
)
def test_what_we_save_loads_in_transformers_with_equal_outputs(tmp_path, ours, theirs, kwargs):
    torch.manual_seed(0)
    model = ours(CONFIG, **kwargs).eval()
    model.save_pretrained(tmp_path)
    ref, info = getattr(transformers, theirs).from_pretrained(str(tmp_path), output_loading_info=True,
                                                              attn_implementation="eager", **kwargs)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    ids, types, mask = _padded_batch()
    extra = {"output_hidden_states": True, "output_attentions": True} if ours is BertModel else {}
    with torch.inference_mode():
        a = model(ids, token_type_ids=types, attention_mask=mask, **extra)
        b = ref.eval()(input_ids=ids, token_type_ids=types, attention_mask=mask, **extra)
    compared = 0
    for name, value in vars(a).items():
        if value is None:
            continue
        theirs_value = getattr(b, THEIR_NAMES.get(name, name))
        for x, y in zip(*((v,) if torch.is_tensor(v) else v for v in (value, theirs_value)), strict=True):
            _assert_equal_on_real_tokens(x, y, mask, name)
            compared += 1
    assert compared == {BertModel: 2 + 3 + 2, BertForPreTraining: 2}.get(ours, 1 + (ours is BertForQuestionAnswering))


THEIR_NAMES = {"mlm_logits": "prediction_logits", "nsp_logits": "seq_relationship_logits"}


def _padded_batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Two rows, the second padded after 6 tokens; two segments in each, so token types matter too."""
    ids = _ids()
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    ids[1, 6:] = 0
    types = torch.zeros_like(ids)
    types[0, 5:], types[1, 3:6] = 1, 1
    return ids, types, mask


def _assert_equal_on_real_tokens(ours: torch.Tensor, theirs: torch.Tensor, mask: torch.Tensor, name: str) -> None:
    """Equal within 1e-5 wherever a real token is the query; pad positions' own outputs are undefined."""
    assert ours.shape == theirs.shape, name
    if ours.dim() >= 3 and ours.shape[-2:] == (mask.shape[1], mask.shape[1]):  # attentions (B, nh, T, T)
        ours, theirs = ours.transpose(1, 2), theirs.transpose(1, 2)  # (B, T, nh, T): queries second
    if ours.dim() >= 2 and ours.shape[1] == mask.shape[1]:
        ours, theirs = ours[mask.bool()], theirs[mask.bool()]
    assert (ours - theirs).abs().max() < 1e-5, name


def test_backbone_checkpoint_gives_fresh_heads_and_says_so(tmp_path, caplog):
    BertModel(CONFIG).save_pretrained(tmp_path)
    model = BertForSequenceClassification.from_pretrained(tmp_path, num_labels=2)
    assert model.load_report.fresh == ["classifier.weight", "classifier.bias"]
    assert "initialised fresh" in caplog.text


def test_backbone_loads_from_pretraining_checkpoint_and_reports_unused_heads(tmp_path):
    full = BertForPreTraining(CONFIG)
    full.save_pretrained(tmp_path)
    backbone = BertModel.from_pretrained(tmp_path)
    assert any(k.startswith("cls.predictions") for k in backbone.load_report.unused)
    assert torch.equal(backbone.layers[1].attn.qkv.weight, full.bert.layers[1].attn.qkv.weight)


def _corrupt(tmp_path, edit):
    BertModel(CONFIG).save_pretrained(tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    edit(state)
    save_file(state, tmp_path / "model.safetensors")


def test_missing_unexpected_and_misshaped_tensors_are_each_listed(tmp_path):
    def edit(state):
        del state["encoder.layer.1.output.dense.weight"]
        state["encoder.layer.0.mystery"] = torch.zeros(3)
        state["embeddings.LayerNorm.bias"] = torch.zeros(7)

    _corrupt(tmp_path, edit)
    with pytest.raises(CheckpointError) as err:
        BertModel.from_pretrained(tmp_path)
    message = str(err.value)
    assert "3 tensor(s)" in message
    assert "missing: layers.1.ffn.fc2.weight" in message
    assert "unexpected: encoder.layer.0.mystery" in message
    assert "wrong shape: embeddings.LayerNorm.bias: file (7,), model (64,)" in message


def test_strict_false_reports_instead_of_raising(tmp_path):
    _corrupt(tmp_path, lambda s: s.pop("encoder.layer.0.attention.self.key.bias"))
    model = BertModel.from_pretrained(tmp_path, strict=False)
    assert model.load_report.missing == ["layers.0.attn.qkv.bias"]


def test_bin_with_tf_style_gamma_beta_names_is_read(tmp_path):
    torch.manual_seed(0)
    model = BertForPreTraining(CONFIG)
    model.save_pretrained(tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    state = {k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta"): v
             for k, v in state.items()}
    (tmp_path / "model.safetensors").unlink()
    torch.save(state, tmp_path / "pytorch_model.bin")
    again = BertForPreTraining.from_pretrained(tmp_path)
    assert torch.equal(again.mlm.norm.weight, model.mlm.norm.weight)


def test_sharded_safetensors_index_is_read(tmp_path):
    torch.manual_seed(0)
    model = BertModel(CONFIG)
    model.save_pretrained(tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    (tmp_path / "model.safetensors").unlink()
    keys = sorted(state)
    halves = {"a.safetensors": keys[: len(keys) // 2], "b.safetensors": keys[len(keys) // 2:]}
    for name, part in halves.items():
        save_file({k: state[k] for k in part}, tmp_path / name)
    index = {"weight_map": {k: name for name, part in halves.items() for k in part}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    again = BertModel.from_pretrained(tmp_path)
    assert torch.equal(again.embeddings.token.weight, model.embeddings.token.weight)


def test_missing_directory_and_missing_weights_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such checkpoint directory"):
        BertModel.from_pretrained(tmp_path / "nope")
    (tmp_path / "config.json").write_text(CONFIG.to_json_string())
    with pytest.raises(FileNotFoundError, match="no weights found"):
        BertModel.from_pretrained(tmp_path)


def test_truncated_weight_file_is_reported_and_a_failed_save_keeps_the_old_file(tmp_path, monkeypatch):
    model = BertModel(CONFIG)
    model.save_pretrained(tmp_path)
    good = (tmp_path / "model.safetensors").read_bytes()

    def explode(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("bertkit.checkpoint.io.save_file", explode)
    with pytest.raises(OSError, match="disk full"):
        model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").read_bytes() == good
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors"]
    monkeypatch.undo()
    (tmp_path / "model.safetensors").write_bytes(good[: len(good) // 2])
    with pytest.raises(CheckpointError, match="cannot read weights"):
        BertModel.from_pretrained(tmp_path)
