"""Dynamic int8 quantisation of the encoder's linear layers, chosen layer type by layer type.

Dynamic quantisation stores each weight matrix as int8 and, at run time, quantises the layer's input
with one scale per call, multiplies in int8 and rescales to fp32. Our encoder feeds its linear layers the
packed (N, H) stack of a whole batch's real tokens, so that one input scale covers every token of the
batch: a single outlier token coarsens the grid for all of them.

Measured with ``benchmarks/quantize.py`` (all-MiniLM-L6-v2, 512 mixed sentences, mean pooling, cosine of
each int8 sentence embedding to its fp32 one; w = weight bits, a = activation bits):

    recipe                                      cos mean  cos min
    all linears, per-tensor, w8 a7 (stock)        0.933    0.863
    all linears, per-tensor, w8 a8                0.955    0.898
    all linears, per-channel, w8 a7               0.974    0.931
    all linears, per-channel, w8 a8               0.992    0.982   (can saturate, see below)
    all linears, per-channel, w7 a8               0.991    0.977
    qkv + out_proj + fc1, per-channel, w7 a8      0.995    0.986   <- default
    fc2 alone, per-channel, w7 a8                 0.996    0.992

Most of the stock recipe's loss comes from two choices, not from int8 weights as such: activations squeezed
into 7 bits (``reduce_range``) and one scale per weight matrix. With 8-bit activations a second problem
appears on CPUs without VNNI (AVX2 only, as here): the kernel multiplies uint8 activations by int8 weights
and adds pairs in int16, which saturates when both are near full range (255 * 127 * 2 > 32767); a test
with rows of very different scale shows errors 5x those of per-tensor weights. Keeping weights in 7 bits
([-63, 63]) removes the overflow for every input, at a small cost. Of the four layer types, quantising
the feed-forward output projection (``ffn.fc2``) costs the most on the worst sentence: its input is the
wide GELU output, dominated by a few large values, and one input scale covers the whole packed batch.

So the default recipe (:data:`DEFAULT_RECIPE`) quantises QKV, the attention output and ``ffn.fc1`` with
per-channel 7-bit weights and 8-bit activations, and keeps ``fc2``, the embeddings, pooler and heads fp32.
``Int8Recipe(targets=ALL_TARGETS)`` is faster and just within the target (min 0.977-0.982).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from torch import nn

ALL_TARGETS = ("qkv", "out_proj", "fc1", "fc2")


@dataclass(frozen=True)
class Int8Recipe:
    """Which encoder linears become int8, and how.

    targets: short names of the encoder's linear layers to quantise (see :data:`ALL_TARGETS`).
    per_channel: one weight scale per output row instead of one per matrix.
    reduce_range: quantise activations to 7 bits (torch's default on x86); 8 bits is more accurate.
    weight_bits: 7 keeps weights in [-63, 63], so the AVX2 kernel's int16 pair sums (255 * 63 * 2) cannot
        saturate with 8-bit activations; 8 uses [-127, 127] and can saturate on CPUs without VNNI.
    """

    targets: tuple[str, ...] = ("qkv", "out_proj", "fc1")
    per_channel: bool = True
    reduce_range: bool = False
    weight_bits: int = 7

    def __post_init__(self) -> None:
        unknown = set(self.targets) - set(ALL_TARGETS)
        if unknown:
            raise ValueError(f"unknown quantisation targets {sorted(unknown)}; choose from {ALL_TARGETS}")
        if self.weight_bits not in (7, 8):
            raise ValueError(f"weight_bits must be 7 or 8, got {self.weight_bits}")


DEFAULT_RECIPE = Int8Recipe()


class Int8Linear(nn.Module):
    """A linear layer with an int8 weight and dynamically quantised input; fp32 in, fp32 out.

    Runs on the fbgemm / x86 ``quantized::linear_dynamic`` kernel, which takes inputs of any leading
    shape (here the packed (N, H) token stack).
    """

    def __init__(self, linear: nn.Linear, per_channel: bool, reduce_range: bool, weight_bits: int = 7) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.reduce_range = reduce_range
        weight = linear.weight.detach().float()
        bias = None if linear.bias is None else linear.bias.detach().float()
        top = 2 ** (weight_bits - 1) - 1  # 63 or 127
        with warnings.catch_warnings():  # quantised-tensor constructors warn about a future API change
            warnings.simplefilter("ignore")
            if per_channel:
                scales = (weight.abs().amax(dim=1) / top).clamp(min=1e-8).double()
                zeros = torch.zeros(len(scales), dtype=torch.long)
                qweight = torch.quantize_per_channel(weight, scales, zeros, 0, torch.qint8)
            else:
                scale = float((weight.abs().max() / top).clamp(min=1e-8))
                qweight = torch.quantize_per_tensor(weight, scale, 0, torch.qint8)
            self._packed = torch.ops.quantized.linear_prepack(qweight, bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.quantized.linear_dynamic(x, self._packed, self.reduce_range)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, reduce_range={self.reduce_range}"


def quantize_int8(model: nn.Module, recipe: Int8Recipe = DEFAULT_RECIPE) -> list[str]:
    """Replace, in place, the encoder linears named by ``recipe.targets`` with :class:`Int8Linear`.

    Only linears inside the encoder layers are touched (their names end in ``.qkv``, ``.out_proj``,
    ``.fc1`` or ``.fc2``); embeddings, pooler and heads stay fp32. The model must be in eval mode:
    the result is for inference only.

    Returns:
        the dotted names of the replaced modules.
    """
    if model.training:
        raise ValueError("quantize_int8 is for inference; call model.eval() first")
    chosen = [
        (name, module)
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and name.rsplit(".", 1)[-1] in recipe.targets and ".layers." in f".{name}"
    ]
    for name, module in chosen:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        setattr(parent, child, Int8Linear(module, recipe.per_channel, recipe.reduce_range, recipe.weight_bits))
    return [name for name, _ in chosen]
