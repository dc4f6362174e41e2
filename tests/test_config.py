import json

import pytest
import transformers

from bertkit.config import BertConfig, ConfigError


@pytest.mark.parametrize(
    "name,layers,hidden,heads",
    [("tiny", 2, 128, 2), ("mini", 4, 256, 4), ("small", 4, 512, 8), ("medium", 8, 512, 8),
     ("base", 12, 768, 12), ("large", 24, 1024, 16)],
)
def test_presets_have_paper_shapes_and_4x_intermediate(name, layers, hidden, heads):
    c = BertConfig.preset(name)
    assert (c.num_hidden_layers, c.hidden_size, c.num_attention_heads) == (layers, hidden, heads)
    assert c.intermediate_size == 4 * hidden


def test_unknown_preset_is_rejected():
    with pytest.raises(ConfigError, match="unknown preset 'huge'"):
        BertConfig.preset("huge")


def test_config_json_round_trip_keeps_unknown_keys(tmp_path):
    data = BertConfig.preset("tiny").to_dict() | {"architectures": ["BertModel"], "my_note": {"a": 1}}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(data))
    config = BertConfig.from_json_file(path)
    assert config.extra == {"architectures": ["BertModel"], "my_note": {"a": 1}}
    assert json.loads(config.to_json_string()) == data


def test_wrong_type_is_rejected_with_the_key_and_file_named(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"hidden_size": "768"}))
    with pytest.raises(ConfigError, match=r"config.json: key 'hidden_size' should be int, got str"):
        BertConfig.from_json_file(path)


def test_bool_is_not_an_int(tmp_path):
    with pytest.raises(ConfigError, match="num_hidden_layers"):
        BertConfig.from_dict({"num_hidden_layers": True})


def test_invalid_json_and_missing_file_are_reported(tmp_path):
    with pytest.raises(ConfigError, match="no such config file"):
        BertConfig.from_json_file(tmp_path / "config.json")
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        BertConfig.from_json_file(tmp_path / "config.json")


def test_heads_must_divide_hidden():
    with pytest.raises(ConfigError, match="not divisible"):
        BertConfig(hidden_size=100, num_attention_heads=3)


def test_unknown_activation_is_rejected():
    with pytest.raises(ConfigError, match="hidden_act"):
        BertConfig(hidden_act="swish")


# --- the BERT family ---------------------------------------------------------------------------

def _through_file(tmp_path, reference_config):
    reference_config.save_pretrained(tmp_path)
    return BertConfig.from_json_file(tmp_path / "config.json")


def test_distilbert_config_json_is_read_and_written_in_its_own_key_names(tmp_path):
    ref = transformers.DistilBertConfig(dim=48, n_layers=3, n_heads=3, hidden_dim=80, activation="relu",
                                        dropout=0.05, seq_classif_dropout=0.3, qa_dropout=0.15)
    config = _through_file(tmp_path, ref)
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads) == (48, 3, 3)
    assert (config.intermediate_size, config.hidden_act, config.hidden_dropout_prob) == (80, "relu", 0.05)
    assert config.type_vocab_size == 0 and not config.has_pooler and config.sentence_task is None
    assert config.head_dropout("sequence") == 0.3 and config.head_dropout("span") == 0.15
    written = config.to_dict()
    assert not {"hidden_size", "num_hidden_layers", "type_vocab_size", "layer_norm_eps"} & set(written)
    back = transformers.DistilBertConfig(**written)
    assert (back.dim, back.n_layers, back.n_heads, back.hidden_dim, back.activation) == (48, 3, 3, 80, "relu")


def test_albert_and_roberta_config_json_keys_round_trip(tmp_path):
    albert = _through_file(tmp_path / "a", transformers.AlbertConfig(
        embedding_size=24, hidden_size=48, num_attention_heads=3, num_hidden_groups=2, inner_group_num=2,
        classifier_dropout_prob=0.25))
    assert (albert.embedding_dim, albert.num_hidden_groups, albert.inner_group_num) == (24, 2, 2)
    assert albert.sentence_task == "sop" and albert.head_dropout("sentence") == 0.25
    assert json.loads(albert.to_json_string()) == json.loads((tmp_path / "a" / "config.json").read_text())
    roberta = _through_file(tmp_path / "r", transformers.RobertaConfig(classifier_dropout=0.3))
    assert roberta.position_offset == 2 and roberta.sentence_task is None
    assert roberta.head_dropout("sequence") == roberta.head_dropout("token") == 0.3
    assert BertConfig().head_dropout("sequence") == 0.1 and BertConfig().position_offset == 0
    assert "embedding_size" not in roberta.to_dict()


def test_arch_presets_carry_each_variants_defaults():
    roberta = BertConfig.preset("base", arch="roberta")
    assert (roberta.vocab_size, roberta.pad_token_id, roberta.type_vocab_size) == (50265, 1, 1)
    assert (roberta.max_position_embeddings, roberta.layer_norm_eps, roberta.max_sequence_length) == (514, 1e-5, 512)
    distil = BertConfig.preset("base", arch="distilbert")
    assert (distil.num_hidden_layers, distil.type_vocab_size, distil.has_pooler) == (6, 0, False)
    albert = BertConfig.preset("base", arch="albert", num_hidden_groups=1)
    assert (albert.embedding_size, albert.hidden_act, albert.vocab_size, albert.model_type) == (
        128, "gelu_new", 30000, "albert")
    assert BertConfig.preset("tiny", model_type="roberta").model_type == "roberta"
    with pytest.raises(ConfigError, match="model_type 'xlnet' is not supported"):
        BertConfig.preset("tiny", arch="xlnet")


def test_unknown_model_type_is_named_with_the_file(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"model_type": "electra"}))
    with pytest.raises(ConfigError, match=r"config.json: model_type 'electra' is not supported"):
        BertConfig.from_json_file(path)


def test_settings_a_variant_cannot_store_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="ALBERT's"):
        BertConfig(embedding_size=128)
    with pytest.raises(ConfigError, match="ALBERT's"):
        BertConfig(model_type="roberta", num_hidden_groups=2)
    with pytest.raises(ConfigError, match="distilbert has type_vocab_size = 0"):
        BertConfig(model_type="distilbert", type_vocab_size=2)
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"model_type": "distilbert", "dim": 48, "hidden_size": 64}))
    with pytest.raises(ConfigError, match=r"config.json: 'dim' = 48 but 'hidden_size' = 64"):
        BertConfig.from_json_file(path)
