"""RoBERTa, DistilBERT and ALBERT: parity with the reference in both directions, sizes, and bad input.

Each variant is a randomly initialised reference model with a small, unusual config (3 heads of 16,
an intermediate size of 80, ALBERT with E = 24 and 2 groups of 2 shared layers over 3 steps), saved in
its standard layout. bertkit loads it and must give the same outputs within 1e-5 (fp32, eval mode, a
right-padded batch with an attention mask); what bertkit then saves must load back into the reference
with no missing or unexpected tensor and give the same outputs again.
"""

import json

import pytest
import torch
import transformers

from bertkit import (
    BertConfig,
    BertForPreTraining,
    BertForQuestionAnswering,
    BertForSequenceClassification,
    BertForTokenClassification,
    BertModel,
)
from bertkit.checkpoint.io import CheckpointError

pytestmark = pytest.mark.usefixtures("one_torch_thread")

VOCAB = 97
TOL = 1e-5
REFERENCE_CONFIGS = {
    "roberta": lambda: transformers.RobertaConfig(
        vocab_size=VOCAB, hidden_size=48, num_hidden_layers=3, num_attention_heads=3, intermediate_size=80,
        max_position_embeddings=40, type_vocab_size=1, pad_token_id=1, bos_token_id=0, eos_token_id=2,
        layer_norm_eps=1e-5,
    ),
    "distilbert": lambda: transformers.DistilBertConfig(
        vocab_size=VOCAB, dim=48, n_layers=3, n_heads=3, hidden_dim=80, max_position_embeddings=40,
        activation="gelu",
    ),
    "albert": lambda: transformers.AlbertConfig(
        vocab_size=VOCAB, embedding_size=24, hidden_size=48, num_hidden_layers=3, num_hidden_groups=2,
        inner_group_num=2, num_attention_heads=3, intermediate_size=80, max_position_embeddings=40,
        type_vocab_size=3, hidden_act="gelu_new",
    ),
}
PREFIX = {"roberta": "Roberta", "distilbert": "DistilBert", "albert": "Albert"}
# ours -> the reference class with the same weights; RoBERTa's and DistilBERT's MLM model stands for
# pretraining (they have no sentence objective), ALBERT's pretraining model adds SOP.
CLASSES = [
    (BertModel, "Model", {}),
    (BertForPreTraining, "ForPreTraining", {}),
    (BertForSequenceClassification, "ForSequenceClassification", {"num_labels": 3}),
    (BertForTokenClassification, "ForTokenClassification", {"num_labels": 5}),
    (BertForQuestionAnswering, "ForQuestionAnswering", {}),
]

EXPECTED_OUTPUTS = {"Model": {"last_hidden_state"}, "ForPreTraining": {"logits"},
                    "ForSequenceClassification": {"logits"}, "ForTokenClassification": {"logits"},
                    "ForQuestionAnswering": {"start_logits", "end_logits"}}


def _reference_class(arch, suffix):
    if suffix == "ForPreTraining" and arch != "albert":
        suffix = "ForMaskedLM"
    return getattr(transformers, PREFIX[arch] + suffix)


def _batch(arch):
    """A right-padded batch: pad tokens and a zero mask after each row's length."""
    gen = torch.Generator().manual_seed(0)
    pad = 1 if arch == "roberta" else 0
    ids = torch.randint(3, VOCAB, (3, 17), generator=gen)
    mask = torch.ones_like(ids)
    for row, length in enumerate([17, 11, 6]):
        ids[row, length:], mask[row, length:] = pad, 0
    inputs = {"input_ids": ids, "attention_mask": mask}
    if arch == "albert":
        inputs["token_type_ids"] = torch.randint(0, 3, ids.shape, generator=gen)
    return inputs


def _ours(model, inputs):
    """Our outputs under the reference's names."""
    out = model(**inputs)
    if isinstance(model, BertModel):
        named = {"last_hidden_state": out.last_hidden_state, "pooler_output": out.pooler_output}
    elif isinstance(model, BertForPreTraining):
        named = {"logits": out.mlm_logits, "sop_logits": out.nsp_logits}
    elif isinstance(model, BertForQuestionAnswering):
        named = {"start_logits": out.start_logits, "end_logits": out.end_logits}
    else:
        named = {"logits": out.logits}
    return {k: v for k, v in named.items() if v is not None}


def _theirs(ref, inputs, names):
    out = ref(**inputs)
    return {name: out["prediction_logits" if name == "logits" and "prediction_logits" in out else name]
            for name in names}


def _max_error(a, b, mask):
    """Largest difference, over real tokens only for per-token outputs (padded rows mean nothing)."""
    worst = 0.0
    for name in a:
        x, y = a[name], b[name]
        assert x.shape == y.shape, name
        diff = (x - y).abs()
        if diff.dim() >= 2 and diff.shape[:2] == mask.shape:
            diff = diff[mask.bool()]
        worst = max(worst, diff.max().item())
    return worst


@pytest.mark.parametrize("arch", list(REFERENCE_CONFIGS))
@pytest.mark.parametrize("ours_cls,suffix,kwargs", CLASSES, ids=[c[1] for c in CLASSES])
def test_reference_checkpoint_loads_at_parity_and_ours_loads_back(tmp_path, arch, ours_cls, suffix, kwargs):
    torch.manual_seed(0)
    ref_config = REFERENCE_CONFIGS[arch]()
    if "num_labels" in kwargs:
        ref_config.num_labels = kwargs["num_labels"]
    ref = _reference_class(arch, suffix)(ref_config).eval()
    ref.save_pretrained(tmp_path / "ref")
    ours = ours_cls.from_pretrained(tmp_path / "ref", **kwargs).eval()
    assert ours.config.model_type == arch
    assert not ours.load_report.fresh and not ours.load_report.unused
    inputs = _batch(arch)
    with torch.inference_mode():
        a = _ours(ours, inputs)
        b = _theirs(ref, inputs, a)
    expected = set(EXPECTED_OUTPUTS[suffix])
    if suffix == "Model" and arch != "distilbert":
        expected.add("pooler_output")
    if suffix == "ForPreTraining" and arch == "albert":
        expected.add("sop_logits")
    assert set(a) == expected
    assert _max_error(a, b, inputs["attention_mask"]) < TOL

    ours.save_pretrained(tmp_path / "ours")
    again, info = _reference_class(arch, suffix).from_pretrained(
        str(tmp_path / "ours"), output_loading_info=True, attn_implementation="eager"
    )
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    with torch.inference_mode():
        c = _theirs(again.eval(), inputs, a)
    assert _max_error(a, c, inputs["attention_mask"]) < TOL


def test_pretraining_heads_follow_the_sentence_task():
    assert BertForPreTraining(BertConfig.preset("tiny", arch="albert", vocab_size=50)).nsp is not None
    for arch in ("roberta", "distilbert"):
        model = BertForPreTraining(BertConfig.preset("tiny", arch=arch, vocab_size=60)).eval()
        assert model.nsp is None and model.bert.pooler is None
        ids = torch.randint(3, 60, (2, 9))
        labels = torch.full_like(ids, -100)
        labels[:, 2] = 7
        out = model(ids, mlm_labels=labels)
        assert out.nsp_logits is None and out.nsp_loss is None and torch.equal(out.loss, out.mlm_loss)
        with pytest.raises(ValueError, match=f"{arch} has no sentence-level objective"):
            model(ids, mlm_labels=labels, nsp_labels=torch.tensor([0, 1]))


def test_albert_sop_loss_uses_the_shared_head_and_labels():
    torch.manual_seed(0)
    model = BertForPreTraining(BertConfig.preset("tiny", arch="albert", vocab_size=50, embedding_size=16))
    ids = torch.randint(3, 50, (2, 8))
    labels = torch.full_like(ids, -100)
    labels[0, 1] = 5
    out = model(ids, mlm_labels=labels, nsp_labels=torch.tensor([0, 1]))
    assert out.nsp_logits.shape == (2, 2) and out.mlm_logits.shape == (1, 50)
    assert torch.allclose(out.loss, out.mlm_loss + out.nsp_loss)


def test_albert_layer_sharing_follows_the_reference_schedule():
    config = BertConfig(model_type="albert", vocab_size=50, hidden_size=32, num_attention_heads=2,
                        intermediate_size=40, embedding_size=8, num_hidden_layers=3, num_hidden_groups=2,
                        inner_group_num=2)
    model = BertModel(config)
    assert len(model.layers) == 4
    # 3 steps over 2 groups: steps 0 and 1 run group 0, step 2 runs group 1; each group is 2 layers.
    assert config.layer_schedule == (0, 1, 0, 1, 2, 3)
    out = model(torch.randint(3, 50, (1, 5)), output_hidden_states=True, output_attentions=True)
    assert len(out.hidden_states) == 7 and len(out.attentions) == 6
    assert out.last_hidden_state.shape == (1, 5, 32)


def test_token_types_given_to_distilbert_are_refused():
    model = BertModel(BertConfig.preset("tiny", arch="distilbert", vocab_size=50))
    ids = torch.randint(3, 50, (1, 6))
    with pytest.raises(ValueError, match="distilbert has no token types"):
        model(ids, token_type_ids=torch.zeros_like(ids))
    assert model(ids).pooler_output is None


def test_distilbert_sinusoidal_positions_are_the_reference_table_and_frozen():
    from transformers.models.distilbert.modeling_distilbert import _create_sinusoidal_embeddings

    config = BertConfig.preset("tiny", arch="distilbert", vocab_size=50, max_position_embeddings=20,
                               extra={"sinusoidal_pos_embds": True})
    position = BertModel(config).embeddings.position.weight
    expected = _create_sinusoidal_embeddings(20, 128, torch.empty(20, 128))
    assert not position.requires_grad and torch.allclose(position, expected, atol=1e-6)


def test_roberta_positions_count_real_tokens_from_the_offset():
    model = BertModel(BertConfig.preset("tiny", arch="roberta", vocab_size=50, max_position_embeddings=12))
    ids = torch.tensor([[0, 5, 6, 2, 1, 1], [1, 1, 0, 7, 8, 2]])  # right- and left-padded (pad id 1)
    assert model.embeddings.position_ids(ids).tolist() == [[2, 3, 4, 5, 1, 1], [1, 1, 2, 3, 4, 5]]
    with pytest.raises(ValueError, match="at most 10"):  # 12 positions, the first two reserved
        model(torch.full((1, 11), 5))


def test_packed_fast_path_equals_the_unpadded_run_for_every_variant():
    for arch in ("roberta", "distilbert", "albert"):
        torch.manual_seed(0)
        extra = {"embedding_size": 16} if arch == "albert" else {}
        config = BertConfig.preset("tiny", arch=arch, vocab_size=60, hidden_size=32, **extra)
        model = BertModel(config).eval()
        pad = config.pad_token_id
        short = torch.randint(3, 60, (1, 5))
        padded = torch.cat([short, torch.full((1, 3), pad)], dim=1)
        with torch.inference_mode():
            alone = model(short).last_hidden_state
            packed = model(padded, attention_mask=(padded != pad).long()).last_hidden_state
        assert torch.allclose(alone, packed[:, :5], atol=1e-5), arch


def _count_on_meta(build):
    with torch.device("meta"):
        return sum(p.numel() for p in build().parameters())


@pytest.mark.parametrize(
    "arch,reference,expected",
    [
        ("roberta", lambda: transformers.RobertaModel(transformers.RobertaConfig(
            max_position_embeddings=514, type_vocab_size=1, layer_norm_eps=1e-5)), 124_645_632),
        ("albert", lambda: transformers.AlbertModel(transformers.AlbertConfig(
            hidden_size=768, num_attention_heads=12, intermediate_size=3072)), 11_683_584),
        ("distilbert", lambda: transformers.DistilBertModel(transformers.DistilBertConfig()), 66_362_880),
    ],
)
def test_base_sizes_have_the_reference_parameter_counts(arch, reference, expected):
    ours = _count_on_meta(lambda: BertModel(BertConfig.preset("base", arch=arch)))
    assert ours == _count_on_meta(reference) == expected


def _save_roberta(tmp_path):
    transformers.RobertaForMaskedLM(REFERENCE_CONFIGS["roberta"]()).save_pretrained(tmp_path)


def test_roberta_weights_under_a_bert_config_name_the_architecture_found(tmp_path):
    _save_roberta(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "model_type": "bert"}))
    with pytest.raises(CheckpointError, match=r"roberta weights \(keys start with 'roberta\.'.*model_type 'bert'"):
        BertForPreTraining.from_pretrained(tmp_path)


def test_roberta_encoder_without_prefix_under_a_bert_config_is_recognised(tmp_path):
    transformers.RobertaModel(REFERENCE_CONFIGS["roberta"]()).save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "model_type": "bert"}))
    with pytest.raises(CheckpointError, match="roberta weights .*row 1, the padding index"):
        BertModel.from_pretrained(tmp_path)


def test_bert_weights_under_an_albert_config_are_refused(tmp_path):
    BertForPreTraining(BertConfig.preset("tiny", vocab_size=50)).save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "model_type": "albert"}))
    with pytest.raises(CheckpointError, match="these are bert weights"):
        BertModel.from_pretrained(tmp_path)


def test_roberta_checkpoint_loads_through_every_class_by_its_model_type(tmp_path):
    _save_roberta(tmp_path)
    assert BertModel.from_pretrained(tmp_path).config.position_offset == 2
    classifier = BertForSequenceClassification.from_pretrained(tmp_path, num_labels=2)
    assert classifier.load_report.fresh == ["bert.pooler.weight", "bert.pooler.bias", "classifier.weight",
                                            "classifier.bias"]

