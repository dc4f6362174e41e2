import json

import pytest

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
