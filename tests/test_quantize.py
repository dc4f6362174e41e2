"""Dynamic int8: layer choice, per-channel weights, outlier channels kept exact, smoothing, and a recipe that
keeps a model with BERT-like activation outliers close to fp32."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from bertkit import BertConfig, BertModel
from bertkit.infer.predictor import Predictor
from bertkit.infer.quantize import (
    CALIBRATION_TEXTS,
    DEFAULT_RECIPE,
    ENGINES,
    Int8FeedForward,
    Int8Linear,
    Int8Recipe,
    fusable_activation,
    input_ranges,
    quantize_int8,
)
from bertkit.model.layer import ACTIVATIONS, FeedForward

# Held-out text for the MiniLM check, in paraphrase pairs (0-1, 2-3, ...): none of it overlaps CALIBRATION_TEXTS,
# so the int8 ranges are tested on activations they were not fitted to (the test asserts the disjointness).
HELD_OUT_PAIRS = [
    "A violinist tuned her instrument before the evening concert.",
    "Before the night's performance, the musician adjusted the strings of her violin.",
    "Heavy snowfall closed the mountain pass for three days.",
    "The road over the mountains was shut for several days because of deep snow.",
    "Our router keeps dropping the wireless connection every few minutes.",
    "The wifi at home disconnects constantly; the modem seems to be failing.",
    "Bake the bread at two hundred degrees until the crust turns golden.",
    "Leave the loaf in a hot oven until its outside is nicely browned.",
    "The goalkeeper saved a penalty in the last minute of extra time.",
    "In the dying seconds of overtime, the keeper stopped a spot kick.",
    "Researchers sequenced the genome of an ancient wheat variety.",
    "Scientists decoded the DNA of a very old strain of grain.",
]
ENGINES_HERE = [e for e in ENGINES if e in torch.backends.quantized.supported_engines]


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    pass


def relative_error(got: torch.Tensor, exact: torch.Tensor) -> float:
    return float((got - exact).detach().norm() / exact.detach().norm())


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


@pytest.mark.parametrize("engine", ENGINES_HERE)
def test_seven_bit_weights_never_saturate_the_int16_pair_sums(engine):
    torch.manual_seed(0)
    linear = nn.Linear(256, 8)
    with torch.no_grad():
        linear.weight.copy_(torch.where(torch.rand(8, 256) < 0.5, -1.0, 1.0))  # every weight at full range
    x = torch.rand(16, 256) * 10 - 0.01  # activations near the top of the uint8 grid
    exact = linear(x)
    error = (Int8Linear(linear, True, False, weight_bits=7, engine=engine)(x) - exact).abs().max().item()
    assert error < 0.01 * exact.abs().max().item()


def test_the_two_engines_compute_the_same_int8_product():
    if "fbgemm" not in ENGINES_HERE or "onednn" not in ENGINES_HERE:
        pytest.skip("needs both fbgemm and oneDNN")
    torch.manual_seed(0)
    linear, x = nn.Linear(96, 40), torch.randn(70, 96)
    outputs = [Int8Linear(linear, True, False, engine=engine)(x) for engine in ("fbgemm", "onednn")]
    assert torch.allclose(outputs[0], outputs[1], atol=1e-4)


@pytest.mark.parametrize("act", ["gelu", "gelu_new", "relu"])
def test_onednn_applies_the_activation_in_the_same_kernel(act):
    torch.manual_seed(0)
    linear, x = nn.Linear(64, 96), torch.randn(2, 30, 64)  # (B, T, H): the layout of an unpadded batch
    with torch.no_grad():
        exact = ACTIVATIONS[act](linear(x))
        fused = Int8Linear(linear, True, False, activation=act)(x)
        separate = ACTIVATIONS[act](Int8Linear(linear, True, False)(x))
    assert fused.shape == exact.shape
    assert torch.allclose(fused, separate, atol=1e-4)  # the same int8 product, then the same function
    assert relative_error(fused, exact) < 0.02
    assert fusable_activation(FeedForward(BertConfig.preset("tiny", vocab_size=50, hidden_act=act)).act) == act
    with pytest.raises(ValueError, match="cannot be fused"):
        Int8Linear(linear, True, False, engine="fbgemm", activation=act)


def test_smoothing_moves_an_input_outlier_channel_into_the_weights():
    torch.manual_seed(0)
    linear = nn.Linear(64, 48)
    x = torch.randn(200, 64)
    x[:, 3] *= 40  # one channel far larger than the rest, as in BERT's residual stream
    exact = linear(x)
    smooth = (x.abs().amax(0) ** 0.5 / linear.weight.detach().abs().amax(0) ** 0.5).clamp(min=1e-5)
    plain = relative_error(Int8Linear(linear, True, False)(x), exact)
    smoothed = relative_error(Int8Linear(linear, True, False, smooth=smooth)(x), exact)
    assert smoothed < plain / 3, (smoothed, plain)


def toy_ffn(outlier: int = 11) -> FeedForward:
    """A feed-forward block whose GELU output is ~40 in one channel and O(1) elsewhere."""
    torch.manual_seed(0)
    ffn = FeedForward(BertConfig.preset("tiny", vocab_size=50))
    with torch.no_grad():
        ffn.fc1.weight.normal_(0, 0.1)
        ffn.fc2.weight.normal_(0, 0.05)
        ffn.fc1.bias[outlier] = 40.0
    return ffn.eval()


def test_fc2_outlier_channels_are_added_back_exactly():
    ffn, x = toy_ffn(), torch.randn(300, 128)
    exact = ffn(x)
    plain_fc2 = copy.deepcopy(ffn)
    plain_fc2.fc2 = Int8Linear(ffn.fc2, True, False)
    split = Int8FeedForward(ffn, ffn.fc1, ffn.fc2, torch.tensor([11]), Int8Recipe())
    plain, kept = relative_error(plain_fc2(x), exact), relative_error(split(x), exact)
    assert kept < plain / 3, (kept, plain)
    assert kept < 0.01
    # the exact part alone: with every channel kept in fp32 the block is fp32 up to rounding
    everything = Int8FeedForward(ffn, ffn.fc1, ffn.fc2, torch.arange(ffn.fc2.in_features), Int8Recipe())
    assert relative_error(everything(x), exact) < 1e-5


def tiny_model_with_outliers() -> BertModel:
    """BERT-like outliers: a residual-stream channel with a large LayerNorm gain and a huge GELU channel."""
    torch.manual_seed(0)
    model = BertModel(BertConfig.preset("tiny", vocab_size=200, initializer_range=0.1)).eval()
    with torch.no_grad():
        model.embeddings.norm.weight[7] = 8.0
        for i, layer in enumerate(model.layers):
            layer.norm1.weight[7] = 8.0
            if i < len(model.layers) - 1:  # the output itself stays on an ordinary scale
                layer.norm2.weight[7] = 8.0
            layer.ffn.fc1.bias[11] = 40.0
    return model


def random_batch(seed: int, rows: int = 16, length: int = 24) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 200, (rows, length), generator=generator)
    lengths = torch.randint(4, length + 1, (rows,), generator=generator)
    return {"input_ids": ids, "attention_mask": (torch.arange(length) < lengths[:, None]).long()}


def test_calibration_finds_the_planted_channels():
    model = tiny_model_with_outliers()
    ranges = input_ranges(model, [random_batch(1)], ["layers.0.ffn.fc2", "layers.0.attn.qkv"])
    assert int(ranges["layers.0.ffn.fc2"].argmax()) == 11 and int(ranges["layers.0.attn.qkv"].argmax()) == 7
    quantize_int8(model, Int8Recipe(fp32_channels=2), [random_batch(1)])
    assert 11 in model.layers[0].ffn.channels.tolist() and len(model.layers[0].ffn.channels) == 2


def test_default_recipe_keeps_outlier_models_close_to_fp32():
    model, calibration, batch = tiny_model_with_outliers(), [random_batch(1)], random_batch(2, rows=64)

    def run(m: BertModel) -> torch.Tensor:
        with torch.inference_mode():
            return m(batch["input_ids"], None, batch["attention_mask"]).last_hidden_state

    exact = run(model)
    errors, cosines = {}, {}
    recipes = {"default": DEFAULT_RECIPE, "unsmoothed": Int8Recipe(smooth=None),
               "plain": Int8Recipe(fp32_channels=0, smooth=None),
               "stock": Int8Recipe(per_channel=False, reduce_range=True, weight_bits=8, fp32_channels=0, smooth=None,
                                   engine="fbgemm")}
    for name, recipe in recipes.items():
        quantized = copy.deepcopy(model)
        quantize_int8(quantized, recipe, calibration)
        got = run(quantized)
        errors[name] = relative_error(got, exact)
        mask = batch["attention_mask"].unsqueeze(-1).float()
        pooled, pooled_exact = (got * mask).sum(1) / mask.sum(1), (exact * mask).sum(1) / mask.sum(1)
        cosines[name] = torch.nn.functional.cosine_similarity(pooled, pooled_exact)
    assert cosines["default"].mean() >= 0.99 and cosines["default"].min() >= 0.98, cosines["default"]
    assert errors["default"] < errors["unsmoothed"] / 2, errors
    assert errors["unsmoothed"] < errors["plain"] < errors["stock"], errors


def test_only_the_chosen_encoder_linears_are_replaced():
    model = BertModel(BertConfig.preset("tiny", vocab_size=50)).eval()
    replaced = quantize_int8(model, Int8Recipe(("qkv", "fc2"), fp32_channels=0, smooth=None))
    assert replaced == ["layers.0.attn.qkv", "layers.0.ffn.fc2", "layers.1.attn.qkv", "layers.1.ffn.fc2"]
    assert isinstance(model.layers[0].ffn.fc1, nn.Linear) and isinstance(model.pooler, nn.Linear)
    assert isinstance(model.layers[0].ffn.fc2, Int8Linear)

    model = BertModel(BertConfig.preset("tiny", vocab_size=200)).eval()
    replaced = quantize_int8(model, DEFAULT_RECIPE, [random_batch(0)])
    assert len(replaced) == 4 * 2 and isinstance(model.layers[1].ffn, Int8FeedForward)
    assert isinstance(model.layers[1].ffn.fc1, Int8Linear) and isinstance(model.pooler, nn.Linear)


def test_bad_recipes_and_calls_are_rejected():
    with pytest.raises(ValueError, match="unknown quantisation targets"):
        Int8Recipe(("ffn",))
    with pytest.raises(ValueError, match="weight_bits"):
        Int8Recipe(weight_bits=4)
    with pytest.raises(ValueError, match="engine"):
        Int8Recipe(engine="mkl")
    with pytest.raises(ValueError, match="smooth"):
        Int8Recipe(smooth=2.0)
    with pytest.raises(ValueError, match="model.eval"):
        quantize_int8(BertModel(BertConfig.preset("tiny", vocab_size=50)))
    with pytest.raises(ValueError, match="calibration"):
        quantize_int8(BertModel(BertConfig.preset("tiny", vocab_size=50)).eval(), DEFAULT_RECIPE)
    assert DEFAULT_RECIPE.needs_calibration and not Int8Recipe(fp32_channels=0, smooth=None).needs_calibration
    assert not Int8Recipe(("out_proj",)).needs_calibration  # smoothing touches only qkv and fc1


def word_ngrams(text: str, n: int = 3) -> set[tuple[str, ...]]:
    words = text.lower().replace(",", " ").replace(".", " ").split()
    return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}


def test_int8_embeddings_stay_close_to_fp32_on_held_out_minilm_text(minilm_dir):
    calibration = set().union(*map(word_ngrams, CALIBRATION_TEXTS))
    assert not calibration & set().union(*map(word_ngrams, HELD_OUT_PAIRS))  # no shared 3-word run
    fp32 = Predictor(minilm_dir).embed(HELD_OUT_PAIRS).vectors
    int8 = Predictor(minilm_dir, quantize="int8").embed(HELD_OUT_PAIRS).vectors
    cos = (fp32 * int8).sum(1) / (np.linalg.norm(fp32, axis=1) * np.linalg.norm(int8, axis=1))
    assert cos.mean() >= 0.99 and cos.min() >= 0.98, cos
    assert not np.allclose(fp32, int8, atol=1e-4)  # the int8 path really ran

    def nearest(vectors: np.ndarray) -> list[int]:  # each sentence's nearest other sentence, by cosine
        unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
        similarity = unit @ unit.T - 2 * np.eye(len(unit))
        return similarity.argmax(1).tolist()

    partners = [i ^ 1 for i in range(len(HELD_OUT_PAIRS))]
    assert nearest(fp32) == partners  # the check can tell paraphrases apart at all
    assert nearest(int8) == partners  # and int8 still does
