"""Knowledge distillation of a masked-LM teacher into a shallower student, as DistilBERT (Sanh et al., 2019).

The student has the teacher's width and (by default) half its layers, and starts from the teacher itself: its
embeddings, every other encoder layer (0, 2, 4, ...) and its MLM head. It then learns from three signals at once::

    loss = alpha_ce  * T^2 * KL(softmax(teacher / T) || softmax(student / T))   at the masked positions
         + alpha_mlm * cross-entropy(student, original token)                   at the masked positions
         + alpha_cos * (1 - cos(student hidden, teacher hidden))                at every real (non-pad) token

with the weights of the DistilBERT training code (T = 2, alpha_ce = 5, alpha_mlm = 2, alpha_cos = 1). The T^2
factor keeps the soft-target gradients on the same scale as the hard ones whatever the temperature (Hinton et al.).

Distillation is a model-side difference only: :class:`Distiller` wraps the student and the frozen teacher and returns
the combined loss, so checkpoints, resume, evaluation cadence, ``metrics.jsonl`` and the report all come from the one
:class:`~bertkit.train.loop.Trainer`, on the batches of ``bertkit pretrain``. A run is one call::

    summary = run_distillation(DistillSettings(teacher="runs/bert", shards="shards", out_dir="runs/distil"))

Evaluation scores the student *and* the teacher on the same held-out, fixed-mask batches, so the share of the
teacher's MLM accuracy the student keeps (``accuracy_retained``) is measured in the run. The teacher sees the token
types it was trained with; a DistilBERT student has no token-type table and sees none (its initial position table
holds the teacher's segment-A embedding).

The run folder holds the student in the standard layout of its architecture (a DistilBERT checkpoint by default),
``distill.json`` (settings, teacher, layer map, evaluation before training, summary), ``metrics.jsonl``,
``report.html`` and ``checkpoints/``.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from bertkit.config import IGNORE, PRESETS, BertConfig
from bertkit.data.pretraining import PretrainingBatches
from bertkit.data.shards import ShardError, ShardSet
from bertkit.inspect.report import write_report
from bertkit.model import BertForPreTraining
from bertkit.recipes.pretrain import PretrainSettings, initial_eval, make_sources, resolve_tokenizer
from bertkit.recipes.run_folder import model_and_tokenizer_writer
from bertkit.recipes.training import TrainingSettings
from bertkit.train import checkpointing as ckpt
from bertkit.train.distributed import DistInfo
from bertkit.train.logging import METRICS_FILE
from bertkit.train.loop import TrainConfig, Trainer
from bertkit.variants import VARIANTS

log = logging.getLogger("bertkit")

RUN_FILE = "distill.json"
# Student architectures, each with the teacher architectures it can start from: the student copies the teacher's
# embeddings, so positions and vocabulary must follow the same convention (ALBERT's shared layers have no
# "every other layer" to take).
TEACHERS_FOR: dict[str, tuple[str, ...]] = {v.model_type: v.teachers for v in VARIANTS.values() if v.teachers}
ARCHS = tuple(TEACHERS_FOR)
# Student parameters distillation never trains (BERT's pooler and NSP head): frozen, so no optimizer state or
# DistributedDataParallel bookkeeping is spent on them.
_UNUSED_PREFIXES = ("nsp.", "bert.pooler.")
_LAYER = re.compile(r"^bert\.layers\.(\d+)\.")
_SEGMENT, _POSITION = "bert.embeddings.segment.weight", "bert.embeddings.position.weight"
# Settings that define a run: resuming with any of them changed would not continue the same run.
_RUN_DEFINING = ("teacher", "shards", "student_preset", "arch", "student_layers", "max_steps", "batch_size",
                 "grad_accum", "lr", "warmup_ratio", "weight_decay", "max_grad_norm", "optimizer", "temperature",
                 "alpha_ce", "alpha_mlm", "alpha_cos", "whole_word", "seed", "eval_holdout")


# ------------------------------------------------------------------------------------------------- the loss
@dataclass(frozen=True)
class LossWeights:
    """The three terms' weights and the softmax temperature (defaults: the DistilBERT training code's)."""

    temperature: float = 2.0
    alpha_ce: float = 5.0
    alpha_mlm: float = 2.0
    alpha_cos: float = 1.0

    def __post_init__(self) -> None:
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        alphas = {"alpha_ce": self.alpha_ce, "alpha_mlm": self.alpha_mlm, "alpha_cos": self.alpha_cos}
        if any(a < 0 for a in alphas.values()) or not sum(alphas.values()) > 0:
            raise ValueError(f"the loss weights must be >= 0 and not all 0, got {alphas}")

    def combine(self, soft: torch.Tensor, mlm: torch.Tensor, cosine: torch.Tensor) -> torch.Tensor:
        return self.alpha_ce * soft + self.alpha_mlm * mlm + self.alpha_cos * cosine


def soft_target_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """``T^2 * KL(softmax(teacher / T) || softmax(student / T))``, averaged over rows.

    Args:
        student_logits, teacher_logits: (N, V) MLM logits at the same N masked positions.
    """
    student_log_probs = F.log_softmax(student_logits.float() / temperature, dim=-1)
    teacher_log_probs = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    kl = F.kl_div(student_log_probs, teacher_log_probs, reduction="batchmean", log_target=True)
    return kl * temperature**2


def cosine_loss(student_hidden: torch.Tensor, teacher_hidden: torch.Tensor) -> torch.Tensor:
    """Mean of ``1 - cos(student, teacher)`` over rows: aligns the directions of the hidden states.

    Args:
        student_hidden, teacher_hidden: (N, H) last hidden states at the same N real tokens.
    """
    return (1.0 - F.cosine_similarity(student_hidden.float(), teacher_hidden.float(), dim=-1)).mean()


@dataclass
class DistillationOutput:
    loss: torch.Tensor  # the weighted sum the optimizer follows
    soft_loss: torch.Tensor  # T^2 * KL at the masked positions
    mlm_loss: torch.Tensor  # student cross-entropy at the masked positions
    cosine_loss: torch.Tensor  # 1 - cos of last hidden states at the real tokens
    student_logits: torch.Tensor  # (N, V) at the N masked positions, in row-major order of mlm_labels
    teacher_logits: torch.Tensor  # (N, V), same positions


class Distiller(nn.Module):
    """The model the training loop sees: a trainable student and a frozen teacher; ``forward`` gives the loss.

    The teacher is held outside the module tree, so ``parameters()``, ``state_dict()`` (checkpoints, resume),
    ``train()`` and the optimizer see the student only; ``.to()`` still moves both. It always runs in eval mode
    under ``torch.inference_mode``, with its vocabulary projection at the masked positions only.
    """

    def __init__(self, student: BertForPreTraining, teacher: BertForPreTraining, weights: LossWeights) -> None:
        super().__init__()
        if student.config.hidden_size != teacher.config.hidden_size:
            raise ValueError(f"the cosine loss compares hidden states: the student's width "
                             f"{student.config.hidden_size} must equal the teacher's {teacher.config.hidden_size}")
        self.student, self.weights = student, weights
        for name, param in student.named_parameters():
            if name.startswith(_UNUSED_PREFIXES):
                param.requires_grad_(False)
        self._frozen = (teacher.eval().requires_grad_(False),)  # a tuple is not registered as a submodule

    @property
    def teacher(self) -> BertForPreTraining:
        return self._frozen[0]

    def _apply(self, fn: Callable[[torch.Tensor], torch.Tensor], recurse: bool = True) -> Distiller:
        """The hook behind ``.to()`` / ``.cuda()`` / ``.half()``: the unregistered teacher follows the student."""
        self.teacher._apply(fn, recurse)
        return super()._apply(fn, recurse)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        mlm_labels: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        nsp_labels: torch.Tensor | None = None,
    ) -> DistillationOutput:
        """input_ids, attention_mask, mlm_labels, token_type_ids: (B, T). ``nsp_labels`` is accepted (pretraining
        batches carry it) and ignored: distillation has no sentence task. Token types reach each model only if it
        has a token-type table (a DistilBERT student has none)."""
        selected, real = mlm_labels != IGNORE, attention_mask.bool()
        with torch.inference_mode():
            t_hidden, t_logits = _mlm_at(self.teacher, input_ids, token_type_ids, attention_mask, selected)
            t_hidden = t_hidden[real]
        t_hidden, t_logits = t_hidden.clone(), t_logits.clone()  # normal tensors, so autograd may save them
        s_hidden, s_logits = _mlm_at(self.student, input_ids, token_type_ids, attention_mask, selected)
        soft = soft_target_loss(s_logits, t_logits, self.weights.temperature)
        mlm = F.cross_entropy(s_logits.float(), mlm_labels[selected])
        cosine = cosine_loss(s_hidden[real], t_hidden)
        return DistillationOutput(self.weights.combine(soft, mlm, cosine), soft, mlm, cosine, s_logits, t_logits)


def _mlm_at(
    model: BertForPreTraining,
    input_ids: torch.Tensor,
    token_type_ids: torch.Tensor | None,
    attention_mask: torch.Tensor,
    selected: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(last hidden states (B, T, H), MLM logits (N, V) at the ``selected`` positions) of one model."""
    types = token_type_ids if model.config.has_token_types else None
    hidden = model.bert(input_ids, types, attention_mask).last_hidden_state
    return hidden, model.lm_logits(hidden[selected])


# ----------------------------------------------------------------------------------- teacher and student
def load_teacher(path: str | Path) -> BertForPreTraining:
    """A checkpoint with a trained masked-LM head, such as a ``bertkit pretrain`` run folder.

    Raises:
        FileNotFoundError: no checkpoint in ``path``.
        ValueError: the checkpoint has no MLM head (an encoder-only or fine-tuned model).
    """
    teacher = BertForPreTraining.from_pretrained(path)
    missing = [name for name in teacher.load_report.fresh if name.startswith("mlm.")]
    if missing:
        raise ValueError(f"{path}: the teacher checkpoint has no masked-LM head (missing {', '.join(missing)}); "
                         "distillation needs the teacher's MLM predictions, e.g. a `bertkit pretrain` run folder, "
                         "not an encoder-only or fine-tuned model")
    return teacher


def student_layer_map(teacher_layers: int, student_layers: int) -> list[int]:
    """The teacher layer each student layer starts from: evenly spaced from layer 0.

    At half depth this is every other layer, (0, 2, 4, ...), as in the DistilBERT paper.
    """
    if not 1 <= student_layers <= teacher_layers:
        raise ValueError(f"the student needs between 1 and the teacher's {teacher_layers} layers, "
                         f"got {student_layers}")
    return [i * teacher_layers // student_layers for i in range(student_layers)]


def student_config(teacher: BertConfig, arch: str, layers: int | None = None, preset: str | None = None) -> BertConfig:
    """The student's config: ``arch``'s conventions, the teacher's width, vocabulary and positions.

    ``layers`` defaults to half the teacher's (rounded up). ``preset`` names the intended size and is checked
    against the teacher: the student is initialised from the teacher's weights, so the widths must agree.
    """
    if arch not in TEACHERS_FOR:
        raise ValueError(f"unknown student architecture {arch!r}; choose from {', '.join(ARCHS)}")
    if teacher.model_type not in TEACHERS_FOR[arch]:
        raise ValueError(f"a {arch} student cannot start from a {teacher.model_type} teacher (the embeddings or "
                         f"layers differ); use a {' or '.join(TEACHERS_FOR[arch])} teacher")
    layers = -(-teacher.num_hidden_layers // 2) if layers is None else layers
    student_layer_map(teacher.num_hidden_layers, layers)  # validates the count
    shape = dict(hidden_size=teacher.hidden_size, num_attention_heads=teacher.num_attention_heads,
                 intermediate_size=teacher.intermediate_size)
    if preset is not None:
        wanted = BertConfig.preset(preset)
        for key, value in shape.items():
            if getattr(wanted, key) != value:
                raise ValueError(f"student preset {preset!r} has {key}={getattr(wanted, key)} but the teacher has "
                                 f"{value}; the student copies the teacher's weights, so choose the teacher's size")
    # Token types and LayerNorm epsilon are fixed by DistilBERT's format; a student of the teacher's kind keeps them.
    same = {} if arch != teacher.model_type else {"type_vocab_size": teacher.type_vocab_size,
                                                  "layer_norm_eps": teacher.layer_norm_eps}
    return BertConfig.preset(
        preset or "base", arch=arch, **shape, **same, num_hidden_layers=layers, vocab_size=teacher.vocab_size,
        max_position_embeddings=teacher.max_position_embeddings, hidden_act=teacher.hidden_act,
        pad_token_id=teacher.pad_token_id, initializer_range=teacher.initializer_range,
    )  # fmt: skip


def init_student(teacher: BertForPreTraining, config: BertConfig) -> tuple[BertForPreTraining, list[str]]:
    """A student built from ``config`` holding the teacher's embeddings, MLM head and layers per the layer map.

    A student without token types (DistilBERT) gets the teacher's segment-A embedding folded into its position
    table, so its embedding layer computes exactly what the teacher's does for single-segment input.

    Returns:
        (student, names of the student parameters the teacher had nothing for, left freshly initialised).
    """
    student = BertForPreTraining(config)
    layer_of = student_layer_map(teacher.config.num_hidden_layers, config.num_hidden_layers)
    source, fresh = teacher.state_dict(), []
    with torch.no_grad():
        for name, tensor in student.state_dict().items():
            match = _LAYER.match(name)
            theirs = name if match is None else f"bert.layers.{layer_of[int(match.group(1))]}.{name[match.end():]}"
            if theirs in source and source[theirs].shape == tensor.shape:
                tensor.copy_(source[theirs])
            else:
                fresh.append(name)
        if not config.has_token_types and _SEGMENT in source:
            student.state_dict()[_POSITION][:] += source[_SEGMENT][0]
    return student, fresh


# -------------------------------------------------------------------------------------------- evaluation
class DistillationEvaluator:
    """``evaluate`` for the loop: the student's and the teacher's MLM scores on the same held-out batches.

    Sums run over every masked (or real) token of the source, so the figures do not depend on the batch size.
    ``accuracy_retained`` is the student's MLM accuracy over the teacher's; ``agreement`` is how often their top
    predictions coincide; ``loss`` is the distillation objective itself on held-out text.
    """

    def __init__(self, source: PretrainingBatches) -> None:
        self.source = source

    def __call__(self, model: Distiller) -> dict[str, float]:
        device = next(model.parameters()).device
        # soft, mlm, cosine, student correct, teacher correct, agreement, teacher mlm loss, masked, real tokens
        sums = torch.zeros(9, dtype=torch.float64)
        for index in range(self.source.num_batches(0)):
            batch = {k: v.to(device) for k, v in self.source.batch(0, index).items()}
            out = model(**batch)
            targets = batch["mlm_labels"][batch["mlm_labels"] != IGNORE]  # (N,)
            student, teacher = out.student_logits.float(), out.teacher_logits.float()
            n, real = targets.numel(), int(batch["attention_mask"].sum())
            sums += torch.tensor([
                out.soft_loss.item() * n, out.mlm_loss.item() * n, out.cosine_loss.item() * real,
                (student.argmax(-1) == targets).sum().item(), (teacher.argmax(-1) == targets).sum().item(),
                (student.argmax(-1) == teacher.argmax(-1)).sum().item(),
                F.cross_entropy(teacher, targets, reduction="sum").item(), n, real,
            ], dtype=torch.float64)  # fmt: skip
        soft, mlm, teacher_loss = (sums[[0, 1, 6]] / sums[7]).tolist()
        cosine = (sums[2] / sums[8]).item()
        accuracy, teacher_accuracy, agreement = (sums[3:6] / sums[7]).tolist()
        weights = model.weights
        return {
            "loss": weights.alpha_ce * soft + weights.alpha_mlm * mlm + weights.alpha_cos * cosine,
            "soft_loss": soft,
            "mlm_loss": mlm,
            "cosine_loss": cosine,
            "mlm_accuracy": accuracy,
            "perplexity": math.exp(min(mlm, 50.0)),
            "teacher_mlm_loss": teacher_loss,
            "teacher_mlm_accuracy": teacher_accuracy,
            "teacher_perplexity": math.exp(min(teacher_loss, 50.0)),
            "accuracy_retained": accuracy / teacher_accuracy if teacher_accuracy > 0 else float("nan"),
            "agreement": agreement,
        }


# ------------------------------------------------------------------------------------------------ the run
@dataclass(kw_only=True)
class DistillSettings(TrainingSettings):
    """One distillation run. Paths are folders; ``max_steps`` counts optimizer steps.

    Student: ``arch`` (default DistilBERT), ``student_layers`` (default half the teacher's), ``student_preset``
    (optional; checked against the teacher's width). Tokenizer (copied into every saved student): ``tokenizer``,
    else the teacher's folder, else the shard folder; it must be the one that wrote the shards. Optimisation
    defaults follow the DistilBERT training code (lr 5e-4, 5% warm-up, no weight decay, gradient norm 5).
    Evaluation: ``eval_holdout`` instances from the end of the shard set (None: 5%, at most 1000; 0: none).
    Training: the settings every recipe shares (:class:`~bertkit.recipes.training.TrainingSettings`).
    """

    teacher: str
    shards: str
    out_dir: str
    student_preset: str | None = None
    arch: str = "distilbert"
    student_layers: int | None = None
    tokenizer: str | None = None
    max_steps: int = 10_000
    lr: float = 5e-4
    warmup_ratio: float = 0.05
    weight_decay: float = 0.0
    max_grad_norm: float = 5.0
    temperature: float = 2.0
    alpha_ce: float = 5.0
    alpha_mlm: float = 2.0
    alpha_cos: float = 1.0
    whole_word: bool = False
    mlm_prob: float = 0.15  # share of the tokens masked, as in pretraining
    eval_holdout: int | None = None
    plots: bool = True

    def __post_init__(self) -> None:
        if self.student_preset is not None and self.student_preset not in PRESETS:
            raise ValueError(f"unknown student preset {self.student_preset!r}; choose from {', '.join(PRESETS)}")
        if self.arch not in ARCHS:
            raise ValueError(f"unknown student architecture {self.arch!r}; choose from {', '.join(ARCHS)}")
        if self.student_layers is not None and self.student_layers < 1:
            raise ValueError(f"student_layers must be >= 1, got {self.student_layers}")
        if Path(self.out_dir).resolve() == Path(self.teacher).resolve():
            raise ValueError(f"out_dir {self.out_dir} is the teacher's folder: the student would overwrite it")
        self.loss_weights()  # validates them

    def loss_weights(self) -> LossWeights:
        return LossWeights(self.temperature, self.alpha_ce, self.alpha_mlm, self.alpha_cos)

    def data_settings(self) -> PretrainSettings:
        """The pretraining settings that choose the batches: the same sources ``bertkit pretrain`` trains on."""
        return PretrainSettings(
            data=self.shards, out_dir=self.out_dir, preset=self.student_preset or "base", init_from=self.teacher,
            tokenizer=self.tokenizer, max_steps=self.max_steps, batch_size=self.batch_size, seed=self.seed,
            whole_word=self.whole_word, mlm_prob=self.mlm_prob, eval_holdout=self.eval_holdout,
            eval_batch_size=self.eval_batch_size,
        )  # fmt: skip

    def train_config(self) -> TrainConfig:
        return super().train_config(self.out_dir)


def run_distillation(settings: DistillSettings, dist: DistInfo | None = None) -> dict[str, Any]:
    """Distil as ``settings`` say; returns the loop's summary plus ``initial_eval`` and the layer map.

    Every check that can fail (teacher, shards, tokenizer, student shape, an existing run folder) runs before
    training starts. Under torchrun each rank trains on its own share of the shards; only rank 0 writes.
    The run folder is locked for the whole run; resuming a finished run returns its recorded summary.
    """
    dist = dist or DistInfo.single()
    with ckpt.RunLock(settings.out_dir, enabled=dist.is_main):
        return _run_distillation(settings, dist)


def _run_distillation(settings: DistillSettings, dist: DistInfo) -> dict[str, Any]:
    out_dir = Path(settings.out_dir)
    resuming = ckpt.resume_point(out_dir, settings.resume, METRICS_FILE) is not None
    run_info = ckpt.read_run_file(out_dir / RUN_FILE, settings, _RUN_DEFINING, "distillation") if resuming else {}
    if "summary" in run_info:
        return ckpt.finished_run(out_dir, run_info)
    shards = ShardSet(settings.shards)
    data = settings.data_settings()
    tokenizer = resolve_tokenizer(data, shards)
    teacher = load_teacher(settings.teacher)
    _check_teacher_fits(settings, teacher.config, shards)
    config = student_config(teacher.config, settings.arch, settings.student_layers, settings.student_preset)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings.seed)  # anything left fresh depends on the seed only
        student, fresh = init_student(teacher, config)
    if fresh:
        log.warning("%s: student parameters the teacher has no counterpart for: %s", settings.teacher, fresh)
    # The batches carry token types when the teacher has them; the Distiller hands them to each model that does.
    train, evaluation = make_sources(data, shards, None, dist, token_types=teacher.config.has_token_types)
    model = Distiller(student, teacher, settings.loss_weights())
    evaluate = DistillationEvaluator(evaluation) if evaluation is not None else None
    student_writer = model_and_tokenizer_writer(tokenizer, part=lambda distiller: distiller.student)
    trainer = Trainer(model, settings.train_config(), train=train[0].train, evaluate=evaluate,
                      save_model=student_writer, dist=dist)
    if dist.is_main and not resuming:
        run_info = {
            "settings": dataclasses.asdict(settings),
            "teacher": {"path": str(settings.teacher), "model_type": teacher.config.model_type,
                        "layers": teacher.config.num_hidden_layers, "parameters": _count(teacher)},
            "student": {"model_type": config.model_type, "layers": config.num_hidden_layers,
                        "parameters": _count(student), "from_teacher_layers": student_layer_map(
                            teacher.config.num_hidden_layers, config.num_hidden_layers), "fresh_parameters": fresh},
            "data": {"instances": len(shards), "train_batches": train[0].train.num_batches(0),
                     "eval_instances": 0 if evaluation is None else len(evaluation.indices)},
            "initial_eval": initial_eval(trainer, evaluate),
        }
        ckpt.write_run_file(out_dir / RUN_FILE, run_info)
    summary = trainer.fit()
    summary.update(initial_eval=run_info.get("initial_eval"), teacher=run_info.get("teacher"),
                   student=run_info.get("student"))
    if dist.is_main:
        ckpt.write_run_file(out_dir / RUN_FILE, {**run_info, "summary": summary})
        if settings.plots:
            report = write_report(out_dir)
            summary["report"] = str(report) if report else None
    return summary


def _check_teacher_fits(settings: DistillSettings, config: BertConfig, shards: ShardSet) -> None:
    if config.vocab_size != shards.vocab_size:
        raise ShardError(f"{settings.shards}: shards have a vocabulary of {shards.vocab_size} but the teacher "
                         f"{settings.teacher} has {config.vocab_size}; prepare them with the teacher's tokenizer")
    length = shards.max_seq_len
    if length > config.max_position_embeddings:
        raise ValueError(f"{settings.shards}: sequences of up to {length} tokens, but the teacher has only "
                         f"{config.max_position_embeddings} positions")


def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
