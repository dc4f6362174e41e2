"""Dynamic int8 quantisation of the encoder's linear layers, with the few outlier channels handled exactly.

Dynamic quantisation stores each weight matrix as int8 and, at run time, quantises the layer's input
with one scale per call, multiplies in int8 and rescales to fp32. Our encoder feeds its linear layers the
packed (N, H) stack of a whole batch's real tokens, so that one input scale covers every token of the
batch: a single large value coarsens the grid for all of them.

Such values are not spread at random. In all-MiniLM-L6-v2 (512 mixed sentences) the input of the
feed-forward output projection (``ffn.fc2``, the GELU output) stays below ~7 except in one or two channels
per layer that reach 14-25, and only at the [CLS] token; the inputs of ``qkv`` and ``fc1`` (LayerNorm
outputs, i.e. the residual stream) carry channels of 10-30 at punctuation, [CLS] and [SEP]. The default
recipe (:data:`DEFAULT_RECIPE`) therefore:

* keeps the ``fp32_channels`` largest input channels of ``fc2`` (found by calibration) out of the int8
  product: they are read out of the GELU output, zeroed there, and added back with one fp32 matmul of
  width ``fp32_channels`` (~1% of the layer's cost). The int8 grid then spans ~7 instead of ~25.
* smooths the inputs of ``qkv`` and ``fc1`` (SmoothQuant): input channel j is divided by
  ``s_j = max|x_j|^a / max|W_j|^(1-a)`` and weight column j multiplied by it. The product is unchanged,
  but range moves from the activation outliers into the weights, which are quantised per output row. The
  division is one extra pass over the (N, H) input: it cannot be folded into the preceding LayerNorm,
  whose output is also the residual.
* quantises weights per output channel to 7 bits. On CPUs without VNNI (AVX2 only, as here) the kernels
  multiply uint8 activations by int8 weights and add pairs in int16, which saturates when both are near
  full range (255 * 127 * 2 > 32767); 7-bit weights ([-63, 63]) cannot overflow.
* quantises activations to all 8 bits (torch's stock dynamic recipe uses 7: ``reduce_range``).
* runs on oneDNN's ``qlinear_pointwise`` kernel, which applies fc1's GELU in the same pass; torch's
  fbgemm ``linear_dynamic`` computes the same product (``engine="fbgemm"``) but was slower here.

Measured with ``benchmarks/quantize.py`` (cosine of each int8 sentence embedding to its fp32 one;
speed = fp32 time / int8 time on the same sorted batches, 2 threads, AVX2; figures in
``benchmarks/RESULTS.md``):

    recipe                                                 cos mean  cos min  speed
    all linears, per-tensor, w8 a7 (torch's stock, fbgemm)   0.933    0.863   1.32x
    all linears, per-channel, w7 a8                          0.991    0.976   1.49x
    qkv + out_proj + fc1, w7 a8 (fc2 fp32)                   0.995    0.987   1.29x
    w7 a8, fc2's 4 largest input channels fp32               0.995    0.986   1.48x
    ... and qkv/fc1 inputs smoothed (a = 0.5): default       0.998    0.995   1.48x

Calibration needs only a few sentences in the model's own tokens (:func:`calibration_batch`): the
outliers sit at [CLS], punctuation and other frequent tokens, so any text shows them.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from bertkit.model import BertModel
from bertkit.model.layer import ACTIVATIONS, FeedForward

ALL_TARGETS = ("qkv", "out_proj", "fc1", "fc2")
ENGINES = ("fbgemm", "onednn")
SMOOTHED = ("qkv", "fc1")  # inputs that come straight from a LayerNorm and carry the residual outliers

CALIBRATION_TEXTS = (
    "The quick brown fox jumps over the lazy dog.",
    "Stock markets fell sharply on Tuesday, after the central bank raised interest rates again.",
    "Where is the nearest train station?",
    "She said it was fine, but her voice, quiet and tired, told a different story.",
    "Photosynthesis converts light energy into chemical energy stored in glucose.",
    "I loved this movie so much!",
    "The committee will publish its final report, with recommendations, early next year.",
    "In 1969, two astronauts walked on the Moon while a third orbited above them.",
)


@dataclass(frozen=True)
class Int8Recipe:
    """Which encoder linears become int8, and how.

    targets: short names of the encoder's linear layers to quantise (see :data:`ALL_TARGETS`).
    per_channel: one weight scale per output row instead of one per matrix.
    reduce_range: quantise activations to 7 bits (torch's default on x86); 8 bits is more accurate.
    weight_bits: 7 keeps weights in [-63, 63], so the AVX2 kernels' int16 pair sums (255 * 63 * 2) cannot
        saturate with 8-bit activations; 8 uses [-127, 127] and can saturate on CPUs without VNNI.
    fp32_channels: how many of ``fc2``'s input channels (the largest seen in calibration) stay exact in fp32.
    smooth: SmoothQuant migration strength ``a`` in [0, 1] for the inputs of ``qkv`` and ``fc1``; None = off.
    engine: the int8 kernel, "onednn" (fuses fc1's activation) or "fbgemm" (torch's ``linear_dynamic``);
        both compute the same product, speed differs by CPU.
    """

    targets: tuple[str, ...] = ALL_TARGETS
    per_channel: bool = True
    reduce_range: bool = False
    weight_bits: int = 7
    fp32_channels: int = 4
    smooth: float | None = 0.5
    engine: str = "onednn"

    def __post_init__(self) -> None:
        unknown = set(self.targets) - set(ALL_TARGETS)
        if unknown:
            raise ValueError(f"unknown quantisation targets {sorted(unknown)}; choose from {ALL_TARGETS}")
        if self.weight_bits not in (7, 8):
            raise ValueError(f"weight_bits must be 7 or 8, got {self.weight_bits}")
        if self.fp32_channels < 0:
            raise ValueError(f"fp32_channels must be >= 0, got {self.fp32_channels}")
        if self.smooth is not None and not 0.0 <= self.smooth <= 1.0:
            raise ValueError(f"smooth must be in [0, 1] or None, got {self.smooth}")
        if self.engine not in ENGINES:
            raise ValueError(f"engine must be one of {ENGINES}, got {self.engine!r}")

    @property
    def needs_calibration(self) -> bool:
        """True when the recipe uses activation statistics (fp32 channels or smoothing)."""
        keeps_channels = "fc2" in self.targets and self.fp32_channels > 0
        smooths = self.smooth is not None and any(t in self.targets for t in SMOOTHED)
        return keeps_channels or smooths


DEFAULT_RECIPE = Int8Recipe()


@contextmanager
def _engine(name: str):
    """torch packs weights for the engine selected when ``linear_prepack`` runs; the packed weight then
    always runs on that engine's kernel."""
    if name not in torch.backends.quantized.supported_engines:
        raise RuntimeError(f"this torch build has no {name!r} quantised engine "
                           f"(it has {torch.backends.quantized.supported_engines})")
    before = torch.backends.quantized.engine
    torch.backends.quantized.engine = name
    try:
        yield
    finally:
        torch.backends.quantized.engine = before


# the activations oneDNN can apply to a linear's output in the same kernel: (post-op, algorithm)
_FUSED_ACTIVATIONS = {"gelu": ("gelu", "none"), "gelu_new": ("gelu", "tanh"), "gelu_pytorch_tanh": ("gelu", "tanh"),
                      "relu": ("relu", "none")}


def fusable_activation(act) -> str | None:
    """The config name (``hidden_act``) of a feed-forward activation function oneDNN can fuse, else None."""
    return next((name for name, fn in ACTIVATIONS.items() if fn is act and name in _FUSED_ACTIVATIONS), None)


def _quantize_input(x: torch.Tensor, levels: int) -> tuple[torch.Tensor, float, int]:
    """x -> (uint8 codes, scale, zero point): one affine grid of ``levels`` steps over [min(x, 0), max(x, 0)].

    The codes come from ``quantize_per_tensor`` (one vectorised pass) and are read back as a plain uint8
    tensor over the same memory, which is what the oneDNN kernel takes.
    """
    lo, hi = (float(v) for v in torch.aminmax(x.detach()))
    lo, hi = min(lo, 0.0), max(hi, 0.0)  # the grid holds 0 exactly
    scale = max((hi - lo) / levels, 1e-8)
    zero = round(-lo / scale)
    with warnings.catch_warnings():  # quantised-tensor constructors warn about a future API change
        warnings.simplefilter("ignore")
        q = torch.quantize_per_tensor(x, scale, zero, torch.quint8)
    codes = torch.empty(0, dtype=torch.uint8).set_(q.untyped_storage(), q.storage_offset(), q.shape, q.stride())
    return codes, scale, zero


class Int8Linear(nn.Module):
    """A linear layer with an int8 weight and dynamically quantised input; fp32 in, fp32 out.

    Each call quantises its input with one scale (over the whole packed (N, H) token stack), multiplies in
    int8 and rescales to fp32 with the bias. ``engine`` picks the kernel: "onednn" (``onednn::qlinear_pointwise``,
    which can also apply ``activation`` to the output in the same pass) or "fbgemm" (torch's
    ``quantized::linear_dynamic``). ``smooth``, when given, holds per-input-channel SmoothQuant factors: the
    weight's columns are multiplied by them and each input divided by them before quantisation.
    """

    def __init__(self, linear: nn.Linear, per_channel: bool, reduce_range: bool, weight_bits: int = 7,
                 smooth: torch.Tensor | None = None, engine: str = "onednn", activation: str | None = None) -> None:
        super().__init__()
        if engine not in ENGINES:
            raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
        if activation is not None and (engine != "onednn" or activation not in _FUSED_ACTIVATIONS):
            raise ValueError(f"activation {activation!r} cannot be fused on engine {engine!r}")
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.reduce_range, self.engine, self.activation = reduce_range, engine, activation
        weight = linear.weight.detach().float()
        bias = None if linear.bias is None else linear.bias.detach().float().contiguous()
        self.register_buffer("inv_smooth", None if smooth is None else (1.0 / smooth).float())
        if smooth is not None:
            weight = weight * smooth
        top = 2 ** (weight_bits - 1) - 1  # 63 or 127
        scales = weight.abs().amax(dim=1) if per_channel else weight.abs().max().expand(self.out_features)
        scales = (scales / top).clamp(min=1e-8)
        if engine == "onednn":
            if not torch.backends.mkldnn.is_available():
                raise RuntimeError("this torch build has no oneDNN; use Int8Recipe(engine='fbgemm')")
            qweight = (weight / scales[:, None]).round().clamp(-top, top).to(torch.int8)
            self._packed = torch.ops.onednn.qlinear_prepack(qweight, None)
            self.register_buffer("weight_scales", scales.float().contiguous())
            self.register_buffer("weight_zeros", torch.zeros(self.out_features, dtype=torch.long))
            self.register_buffer("bias", bias)
            self._post = _FUSED_ACTIVATIONS[activation] if activation else ("none", "none")
            return
        with warnings.catch_warnings(), _engine(engine):
            warnings.simplefilter("ignore")
            if per_channel:
                zeros = torch.zeros(self.out_features, dtype=torch.long)
                qweight = torch.quantize_per_channel(weight.contiguous(), scales.double(), zeros, 0, torch.qint8)
            else:
                qweight = torch.quantize_per_tensor(weight.contiguous(), float(scales[0]), 0, torch.qint8)
            self._packed = torch.ops.quantized.linear_prepack(qweight, bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.inv_smooth is not None:
            x = x * self.inv_smooth
        if self.engine == "fbgemm":
            return torch.ops.quantized.linear_dynamic(x, self._packed, self.reduce_range)
        codes, scale, zero = _quantize_input(x, 127 if self.reduce_range else 255)
        post, algorithm = self._post
        return torch.ops.onednn.qlinear_pointwise(codes, scale, zero, self._packed, self.weight_scales,
                                                  self.weight_zeros, self.bias, 1.0, 0, torch.float32, post, [],
                                                  algorithm)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, engine={self.engine}, "
                f"reduce_range={self.reduce_range}, smoothed={self.inv_smooth is not None}, "
                f"activation={self.activation}")


class Int8FeedForward(nn.Module):
    """fc1 -> act -> fc2 where fc2 is int8 except for a few input channels, which stay exact in fp32.

    The outlier channels are read out of the activation, zeroed there (in place: the activation is this
    module's own temporary) and their contribution added back with one narrow fp32 matmul. fc2's int8
    weight has those columns zeroed so they do not widen its per-row scales. ``fc1`` is the layer to run
    first (int8 or the original fp32 one); when it is an :class:`Int8Linear` that applies the activation
    itself (oneDNN), the activation is not applied again.
    """

    def __init__(self, ffn: FeedForward, fc1: nn.Module, fc2: nn.Linear, channels: torch.Tensor,
                 recipe: Int8Recipe) -> None:
        super().__init__()
        self.fc1, self.act = fc1, ffn.act
        self.act_fused = isinstance(fc1, Int8Linear) and fc1.activation is not None
        self.register_buffer("channels", channels.long())
        weight = fc2.weight.detach().float()
        self.register_buffer("exact_weight", weight[:, channels].t().contiguous())  # (k, out)
        masked = nn.Linear(fc2.in_features, fc2.out_features, bias=fc2.bias is not None)
        with torch.no_grad():
            masked.weight.copy_(weight.index_fill(1, self.channels, 0.0))
            if fc2.bias is not None:
                masked.bias.copy_(fc2.bias)
        self.fc2 = Int8Linear(masked, recipe.per_channel, recipe.reduce_range, recipe.weight_bits,
                              engine=recipe.engine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc1(x) if self.act_fused else self.act(self.fc1(x))
        exact = h.index_select(-1, self.channels)  # (..., k)
        h.index_fill_(-1, self.channels, 0.0)
        y = self.fc2(h)
        flat = y.view(-1, y.shape[-1])
        flat.addmm_(exact.view(-1, exact.shape[-1]), self.exact_weight)
        return y


def calibration_batch(tokenizer, texts: Iterable[str] = CALIBRATION_TEXTS) -> dict[str, torch.Tensor]:
    """A padded batch of ``texts`` for :func:`quantize_int8`'s calibration, in the model's own tokens."""
    return tokenizer.batch_encode(list(texts), max_length=128)


def _encoder(model: nn.Module) -> BertModel:
    found = next((m for m in model.modules() if isinstance(m, BertModel)), None)
    if found is None:
        raise TypeError(f"{type(model).__name__} holds no BertModel encoder to quantise")
    return found


@torch.inference_mode()
def input_ranges(model: nn.Module, batches: Iterable[Mapping[str, torch.Tensor]],
                 modules: Iterable[str]) -> dict[str, torch.Tensor]:
    """The largest |input| per input channel of each named submodule, over the encoder run on ``batches``."""
    modules = list(modules)
    ranges: dict[str, torch.Tensor] = {}
    handles = []
    for name in modules:
        def record(module, inputs, output, name=name) -> None:
            x = inputs[0].detach()
            seen = x.abs().reshape(-1, x.shape[-1]).amax(0).float()
            ranges[name] = seen if name not in ranges else torch.maximum(ranges[name], seen)

        handles.append(model.get_submodule(name).register_forward_hook(record))
    encoder = _encoder(model)
    limit = encoder.config.max_sequence_length
    try:
        for batch in batches:  # token types left out: models without them (DistilBERT) reject any
            mask = batch.get("attention_mask")
            encoder(batch["input_ids"][:, :limit], None, None if mask is None else mask[:, :limit])
    finally:
        for handle in handles:
            handle.remove()
    missing = [name for name in modules if name not in ranges]
    if missing:
        raise ValueError(f"calibration never reached {missing[:3]}; pass at least one non-empty batch")
    return ranges


def _smooth_factors(x_range: torch.Tensor, weight: torch.Tensor, alpha: float) -> torch.Tensor:
    w_range = weight.detach().abs().amax(0).float().clamp(min=1e-5)
    return (x_range.clamp(min=1e-5) ** alpha / w_range ** (1 - alpha)).clamp(min=1e-5)


def quantize_int8(model: nn.Module, recipe: Int8Recipe = DEFAULT_RECIPE,
                  calibration: Iterable[Mapping[str, torch.Tensor]] | None = None) -> list[str]:
    """Replace, in place, the encoder linears named by ``recipe.targets`` with int8 ones.

    Only linears inside the encoder layers are touched (``.qkv``, ``.out_proj``, ``.fc1``, ``.fc2``);
    embeddings, pooler and heads stay fp32. When ``fc2`` is a target and ``recipe.fp32_channels`` > 0,
    each feed-forward block becomes an :class:`Int8FeedForward`. The model must be in eval mode.

    Args:
        calibration: batches (input_ids, attention_mask) run through the encoder to find outlier channels;
            needed when ``recipe.needs_calibration`` (see :func:`calibration_batch`).

    Returns:
        the dotted names of the linears now computed in int8.
    """
    if model.training:
        raise ValueError("quantize_int8 is for inference; call model.eval() first")
    if recipe.needs_calibration and calibration is None:
        raise ValueError("this int8 recipe keeps outlier channels exact or smooths inputs, so it needs "
                         "calibration batches: quantize_int8(model, recipe, [calibration_batch(tokenizer)])")
    linears = [name for name, module in model.named_modules()
               if isinstance(module, nn.Linear) and ".layers." in f".{name}"
               and name.rsplit(".", 1)[-1] in recipe.targets]
    split_fc2 = "fc2" in recipe.targets and recipe.fp32_channels > 0
    ffns = [name for name, module in model.named_modules() if isinstance(module, FeedForward)] if split_fc2 else []
    observed = [n for n in linears if n.rsplit(".", 1)[-1] in SMOOTHED] if recipe.smooth is not None else []
    observed += [f"{name}.fc2" for name in ffns]
    ranges = input_ranges(model, calibration, observed) if observed else {}

    def int8(name: str, activation: str | None = None) -> Int8Linear:
        linear = model.get_submodule(name)
        smooth = (_smooth_factors(ranges[name], linear.weight, recipe.smooth)
                  if name in ranges and name.rsplit(".", 1)[-1] in SMOOTHED else None)
        return Int8Linear(linear, recipe.per_channel, recipe.reduce_range, recipe.weight_bits, smooth,
                          recipe.engine, activation)

    in_ffns = {f"{name}.{child}" for name in ffns for child in ("fc1", "fc2")}
    replacements = {name: int8(name) for name in linears if name not in in_ffns}
    for name in ffns:
        ffn = model.get_submodule(name)
        act = fusable_activation(ffn.act) if recipe.engine == "onednn" else None
        fc1 = int8(f"{name}.fc1", act) if f"{name}.fc1" in linears else ffn.fc1
        k = min(recipe.fp32_channels, ffn.fc2.in_features)
        channels = ranges[f"{name}.fc2"].topk(k).indices.sort().values
        replacements[name] = Int8FeedForward(ffn, fc1, ffn.fc2, channels, recipe)
    for name, module in replacements.items():
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent), child, module)
    return linears
