"""Dynamic int8: layer choice, per-channel accuracy, and sentence embeddings that stay close to fp32."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from bertkit import BertConfig, BertModel
from bertkit.infer.predictor import Predictor
from bertkit.infer.quantize import Int8Linear, Int8Recipe, quantize_int8

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "A man is playing a guitar on the stage while the crowd sings along.",
    "Stock markets fell sharply on Tuesday after the central bank raised interest rates.",
    "She said it was fine.",
    "Photosynthesis converts light energy into chemical energy stored in glucose molecules.",
    "Where is the nearest train station?",
    "The committee will publish its final report, with recommendations, early next year.",
    "I loved this movie so much!",
]


def test_per_channel_weights_are_more_accurate_than_one_scale_when_rows_differ():
    torch.manual_seed(0)
    linear = nn.Linear(64, 32)
    with torch.no_grad():
        linear.weight.mul_(torch.logspace(-2, 1, 32).unsqueeze(1))  # rows of very different magnitude
    x = torch.randn(50, 64)
    exact = linear(x)
    errors = {pc: (Int8Linear(linear, pc, False)(x) - exact).abs().mean().item() for pc in (True, False)}
    assert errors[True] < errors[False] / 2
    assert errors[True] < 0.02 * exact.abs().mean().item()


def test_seven_bit_weights_never_saturate_the_int16_pair_sums():
    torch.manual_seed(0)
    linear = nn.Linear(256, 8)
    with torch.no_grad():
        linear.weight.copy_(torch.where(torch.rand(8, 256) < 0.5, -1.0, 1.0))  # every weight at full range
    x = torch.rand(16, 256) * 10 - 0.01  # activations near the top of the uint8 grid
    exact = linear(x)
    error = (Int8Linear(linear, True, False, weight_bits=7)(x) - exact).abs().max().item()
    assert error < 0.01 * exact.abs().max().item()


def test_only_the_chosen_encoder_linears_are_replaced():
    model = BertModel(BertConfig.preset("tiny", vocab_size=50)).eval()
    replaced = quantize_int8(model, Int8Recipe(("qkv", "fc2")))
    assert replaced == ["layers.0.attn.qkv", "layers.0.ffn.fc2", "layers.1.attn.qkv", "layers.1.ffn.fc2"]
    assert isinstance(model.layers[0].ffn.fc1, nn.Linear) and isinstance(model.pooler, nn.Linear)
    with pytest.raises(ValueError, match="unknown quantisation targets"):
        Int8Recipe(("ffn",))
    with pytest.raises(ValueError, match="model.eval"):
        quantize_int8(BertModel(BertConfig.preset("tiny", vocab_size=50)))


def test_int8_embeddings_stay_close_to_fp32_on_minilm(minilm_dir):
    torch.set_num_threads(2)
    fp32 = Predictor(minilm_dir).embed(SENTENCES).vectors
    int8 = Predictor(minilm_dir, quantize="int8").embed(SENTENCES).vectors
    cos = (fp32 * int8).sum(1) / (np.linalg.norm(fp32, axis=1) * np.linalg.norm(int8, axis=1))
    assert cos.mean() >= 0.99 and cos.min() >= 0.98, cos
    assert not np.allclose(fp32, int8, atol=1e-4)  # the int8 path really ran
