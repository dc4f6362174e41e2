"""Pretraining from a shard set: the model, the batch sources and the evaluation handed to the one loop.

The BERT paper's recipe (section 3.1, appendix A.2): masked-LM plus next-sentence prediction on sentence pairs, most
steps at sequence length 128 and the rest at 512. Every family member trains through the same run; only the
sentence task differs (``config.sentence_task``): NSP for BERT, sentence-order prediction for ALBERT, none for
RoBERTa (masked-LM alone on packed full sentences) and DistilBERT. Shards record the objective they were prepared
for, and a run refuses shards of another. Here a run is one call::

    summary = run_pretraining(PretrainSettings(data="shards", out_dir="runs/bert", arch="bert"))

A run folder holds the final model in the standard layout (``config.json``, ``model.safetensors``, the tokenizer's
files: ``vocab.txt``, ``vocab.json`` + ``merges.txt`` or ``spiece.model``, and ``tokenizer_config.json``),
``metrics.jsonl`` (one line per logged step; evaluation lines add ``eval_*`` metrics), ``pretrain.json`` (the
settings, the data, the evaluation before training and the final summary), ``report.html`` with its PNG plots
(``loss.png`` …, see :mod:`bertkit.inspect.report`) and ``checkpoints/`` for ``resume``.

Evaluation uses a held-out tail of the shard set (the end of the corpus, so no training instance shares its
documents) masked with a fixed seed at BERT's 15% token rate whatever the run's own masking, so every evaluation of
a run, and of any run on the same shards, scores the same positions.

A run with a time budget (``max_minutes``) trains until that much training time is spent, its learning rate
following the fraction of the budget used. Settings left unset (None) take the budget recipe
(:data:`BUDGET_RECIPE`; ``benchmarks/pretrain_recipe.py`` compares recipes) in a budgeted run and the BERT
paper's choices (:data:`PAPER_RECIPE`) otherwise.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from bertkit.config import IGNORE, PRESETS, BertConfig
from bertkit.data.pretraining import ARCH_OBJECTIVES, PretrainingBatches
from bertkit.data.shards import MANIFEST, ShardError, ShardSet
from bertkit.inspect.report import write_report
from bertkit.model import BertForPreTraining
from bertkit.recipes.run_folder import model_and_tokenizer_writer
from bertkit.recipes.training import TrainingSettings
from bertkit.tokenizer import Tokenizer
from bertkit.train import checkpointing as ckpt
from bertkit.train.distributed import DistInfo
from bertkit.train.logging import METRICS_FILE
from bertkit.train.loop import (
    UNBOUNDED_STEPS,
    BudgetError,
    Phase,
    TrainConfig,
    Trainer,
    check_minutes,
    resolve_precision,
)

log = logging.getLogger("bertkit")

RUN_FILE = "pretrain.json"
EVAL_MASK_SEED = 0  # evaluation masking never changes, so evaluations are comparable across steps and runs
EVAL_MLM_PROB = 0.15  # ... nor does its rate: runs that train at another masking rate are scored alike

# Defaults of the settings left unset. ``dropout=None`` keeps the model config's own rates; a number replaces them
# during pretraining only (the saved config keeps its rates for fine-tuning).
PAPER_RECIPE: dict[str, Any] = dict(batch_size=32, lr=1e-4, warmup_ratio=0.01, mlm_prob=0.15, whole_word=False,
                                    dropout=None, sentence_task=True)
# What a time-budgeted run uses; why these values is in benchmarks/RESULTS.md ("Pretraining recipe").
BUDGET_RECIPE: dict[str, Any] = dict(batch_size=64, lr=5e-4, warmup_ratio=0.05, mlm_prob=0.15, whole_word=False,
                                     dropout=0.0, sentence_task=False)
PAPER_MAX_STEPS = 10_000
# Settings that define a run: resuming with any of them changed would not continue the same run.
_RUN_DEFINING = ("max_minutes", "data", "phase2_data", "phase2_steps", "arch", "preset", "config_file",
                 "init_from", "max_steps", "batch_size", "grad_accum", "lr", "warmup_ratio", "optimizer",
                 "weight_decay", "whole_word", "mlm_prob", "dropout", "sentence_task", "seed", "eval_holdout")


@dataclass(kw_only=True)
class PretrainSettings(TrainingSettings):
    """One pretraining run. Paths are folders; ``max_steps`` counts optimizer steps over both phases.

    Model: ``init_from`` (a checkpoint folder; MLM/sentence heads start fresh if it has none), else ``config_file``,
    else ``preset``; a fresh model takes the shards' vocabulary size and padding id.
    Architecture: ``arch`` ("bert", "roberta", "distilbert", "albert"), else the ``model_type`` of ``init_from`` /
    ``config_file``, else the ``arch`` the shards were prepared for; an ``arch`` that contradicts the checkpoint or
    config file is an error.
    Tokenizer (copied into the run folder): ``tokenizer``, else ``init_from``, else the shard folder; it must be
    the one that wrote the shards.
    Evaluation: ``eval_holdout`` instances from the end of the shard set (None: 5%, at most 1000; 0: none).
    Two phases: with ``phase2_data``, the last ``phase2_steps`` steps train on that set (e.g. length 512).
    Budget: ``max_minutes`` of training time end the run (with ``max_steps`` too, whichever comes first; without
    it, the budget alone). Unset (None) settings take :data:`BUDGET_RECIPE` with a budget, else
    :data:`PAPER_RECIPE` (and ``max_steps`` 10,000).
    Objective: ``mlm_prob`` of the tokens are masked (``whole_word``: whole words); ``sentence_task=False`` trains
    masked-LM alone, also on shards prepared with NSP / SOP pairs.
    Training: the settings every recipe shares (:class:`~bertkit.recipes.training.TrainingSettings`).
    """

    data: str
    out_dir: str
    arch: str | None = None
    preset: str = "base"
    config_file: str | None = None
    init_from: str | None = None
    tokenizer: str | None = None
    max_minutes: float | None = None
    batch_size: int | None = None  # None: the recipe's (PAPER_RECIPE, or BUDGET_RECIPE with a budget)
    whole_word: bool | None = None
    mlm_prob: float | None = None
    dropout: float | None = None
    sentence_task: bool | None = None
    eval_holdout: int | None = None
    phase2_data: str | None = None
    phase2_steps: int = 0
    plots: bool = True

    def __post_init__(self) -> None:
        check_minutes(self.max_minutes, "max_minutes")
        recipe = PAPER_RECIPE if self.max_minutes is None else BUDGET_RECIPE
        for name, value in recipe.items():
            if getattr(self, name) is None:
                setattr(self, name, value)
        if self.max_steps is None and self.max_minutes is None:
            self.max_steps = PAPER_MAX_STEPS
        if not 0 < self.mlm_prob < 1:
            raise ValueError(f"mlm_prob must be in (0, 1), got {self.mlm_prob}")
        if self.dropout is not None and not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.preset not in PRESETS:
            raise ValueError(f"unknown preset {self.preset!r}; choose from {', '.join(PRESETS)}")
        if self.arch is not None and self.arch not in ARCH_OBJECTIVES:
            raise ValueError(f"unknown arch {self.arch!r}; choose from {', '.join(ARCH_OBJECTIVES)}")
        for name in ("max_steps", "batch_size", "grad_accum", "eval_batch_size"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.eval_holdout is not None and self.eval_holdout < 0:
            raise ValueError(f"eval_holdout must be >= 0, got {self.eval_holdout}")
        if (self.phase2_data is None) != (self.phase2_steps == 0):
            raise ValueError("phase2_data and phase2_steps go together: give both or neither")
        if self.phase2_steps and self.max_steps is None:
            raise ValueError("phase2_steps counts back from max_steps: give max_steps with a time budget")
        if not 0 <= self.phase2_steps < (self.max_steps or 1):
            raise ValueError(f"phase2_steps must be in [0, max_steps={self.max_steps}), got {self.phase2_steps}")
        if self.init_from is not None and self.config_file is not None:
            raise ValueError("give init_from or config_file, not both: an initial checkpoint brings its config")

    def train_config(self) -> TrainConfig:
        return super().train_config(self.out_dir, max_minutes=self.max_minutes)


# ------------------------------------------------------------------------------------------------ the run
def run_pretraining(settings: PretrainSettings, dist: DistInfo | None = None) -> dict[str, Any]:
    """Pretrain as ``settings`` say and return the loop's summary (plus ``initial_eval`` and ``fresh_parameters``).

    Every check that can fail (shards, tokenizer, model, an existing run folder) runs before training starts.
    With ``dist`` (from ``init_distributed``) each rank trains on its own share of the shards; only rank 0 writes.
    The run folder is locked for the whole run (:class:`~bertkit.train.checkpointing.RunLock`). Resuming a run that
    already finished trains nothing and returns its recorded summary with ``already_finished=True``.
    """
    dist = dist or DistInfo.single()
    with ckpt.RunLock(settings.out_dir, enabled=dist.is_main):
        return _run_pretraining(settings, dist)


def _run_pretraining(settings: PretrainSettings, dist: DistInfo) -> dict[str, Any]:
    out_dir = Path(settings.out_dir)
    resuming = ckpt.resume_point(out_dir, settings.resume, METRICS_FILE) is not None
    if resuming:
        check_resumed_budget(out_dir / RUN_FILE, settings.max_minutes)
    run_info = ckpt.read_run_file(out_dir / RUN_FILE, settings, _RUN_DEFINING, "pretraining") if resuming else {}
    if "summary" in run_info:
        return ckpt.finished_run(out_dir, run_info)
    shards = ShardSet(settings.data)
    phase2 = _phase2_shards(settings, shards)
    tokenizer = resolve_tokenizer(settings, shards)
    model = build_model(settings, shards, phase2)
    if settings.dropout is not None:
        set_dropout(model, settings.dropout)
    train, evaluation = make_sources(settings, shards, phase2, dist, token_types=model.config.has_token_types)
    evaluate = PretrainingEvaluator(evaluation) if evaluation is not None else None
    trainer = Trainer(
        model, settings.train_config(), train=train[0].train if len(train) == 1 else None,
        phases=train if len(train) > 1 else None, evaluate=evaluate,
        save_model=model_and_tokenizer_writer(tokenizer), dist=dist,
    )  # fmt: skip
    if dist.is_main and not resuming:
        run_info = {
            "settings": dataclasses.asdict(settings),
            "arch": model.config.model_type,
            "data": {"instances": len(shards), "objective": shards.objective,
                     "train_batches": train[0].train.num_batches(0),
                     "eval_instances": 0 if evaluation is None else len(evaluation.indices)},
            "fresh_parameters": getattr(getattr(model, "load_report", None), "fresh", []),
            "initial_eval": initial_eval(trainer, evaluate),
        }
        ckpt.write_run_file(out_dir / RUN_FILE, run_info)
    try:
        summary = trainer.fit()
    except BudgetError:
        if dist.is_main and not resuming:
            (out_dir / RUN_FILE).unlink(missing_ok=True)  # this run's own record: it trained nothing
        raise
    summary.update(initial_eval=run_info.get("initial_eval"), fresh_parameters=run_info.get("fresh_parameters"))
    if dist.is_main:
        ckpt.write_run_file(out_dir / RUN_FILE, {**run_info, "summary": summary})
        if settings.plots:
            report = write_report(out_dir)
            summary["report"] = str(report) if report else None
    return summary


def check_resumed_budget(run_file: Path, max_minutes: float | None) -> None:
    """A budget given on resume must be the run's own: a run started without one cannot be given one later."""
    if max_minutes is None or not run_file.is_file():
        return
    started = json.loads(run_file.read_text(encoding="utf-8")).get("settings", {}).get("max_minutes")
    if started is None:
        raise ValueError(f"{run_file}: the run was started without a time budget (max_minutes); resume it "
                         "without one, or start a new run with it")


def set_dropout(model: nn.Module, p: float) -> None:
    """Every dropout of ``model`` (hidden, attention, heads) at rate ``p`` while it trains; its config is left as
    it is, so a model pretrained without dropout is still fine-tuned with its config's rates."""
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = p
        elif isinstance(getattr(module, "dropout", None), float):  # attention keeps its rate as a number for SDPA
            module.dropout = p


def initial_eval(trainer: Trainer, evaluate: Callable[[nn.Module], dict[str, float]] | None) -> dict[str, float]:
    """Evaluation of the untrained (or just loaded) model: the baseline every later evaluation is read against."""
    if evaluate is None:
        return {}
    model, device = trainer.raw_model, trainer.dist.device
    dtype = resolve_precision(trainer.config.precision, device)
    model.eval()
    with torch.no_grad(), torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
        metrics = evaluate(model)
    model.train()
    return metrics


# ---------------------------------------------------------------------------------- data and tokenizer
def _phase2_shards(settings: PretrainSettings, shards: ShardSet) -> ShardSet | None:
    if settings.phase2_data is None:
        return None
    phase2 = ShardSet(settings.phase2_data)
    if phase2.fingerprint != shards.fingerprint:
        raise ShardError(f"{settings.phase2_data}: written with another tokenizer than {settings.data} "
                         f"({phase2.fingerprint[:12]}... vs {shards.fingerprint[:12]}...)")
    return phase2


# Files that make a folder a tokenizer: WordPiece, byte-level BPE, SentencePiece.
TOKENIZER_FILES = ("vocab.txt", "vocab.json", "spiece.model")


def resolve_tokenizer(settings: PretrainSettings, shards: ShardSet) -> Tokenizer:
    """The tokenizer that wrote the shards: from ``settings.tokenizer``, the ``init_from`` model or the shard folder.

    Raises:
        FileNotFoundError: none of those folders holds a tokenizer.
        ShardError: the tokenizer found is not the one that wrote the shards.
    """
    candidates = [settings.tokenizer, settings.init_from, settings.data]
    for folder in (c for c in candidates if c is not None):
        if any((Path(folder) / name).is_file() for name in TOKENIZER_FILES) or folder == settings.tokenizer:
            tokenizer = Tokenizer.from_pretrained(folder)
            if tokenizer.fingerprint() != shards.fingerprint:
                raise ShardError(
                    f"{settings.data}: shards were written with tokenizer {shards.fingerprint[:12]}..., but "
                    f"{folder} holds tokenizer {tokenizer.fingerprint()[:12]}... (vocab {tokenizer.vocab_size} vs "
                    f"{shards.vocab_size}); prepare the shards with this model's tokenizer"
                )
            return tokenizer
    raise FileNotFoundError(f"no tokenizer ({' / '.join(TOKENIZER_FILES)}) in {settings.data} (nor in init_from); "
                            "pass the tokenizer folder that wrote the shards")


def make_sources(
    settings: PretrainSettings, shards: ShardSet, phase2: ShardSet | None, dist: DistInfo, *, token_types: bool = True
) -> tuple[list[Phase], PretrainingBatches | None]:
    """Training phases for this rank, and the evaluation source (the held-out tail, fixed masking, rank 0's).

    With two phases, the same fraction is cut from the tail of the second set, which usually holds the same
    corpus at another length: its held-out documents must not be trained on either. ``token_types=False`` (a model
    without token types) leaves ``token_type_ids`` out of the batches.
    """
    holdout = _holdout_size(settings, len(shards))
    labels = None if settings.sentence_task else False  # None: the shards' own sentence labels, if any

    def train_source(data: ShardSet, cut: int) -> PretrainingBatches:
        indices = np.arange(len(data) - cut)
        source = PretrainingBatches(data, settings.batch_size, settings.seed, rank=dist.rank,
                                    world_size=dist.world_size, mlm_prob=settings.mlm_prob,
                                    whole_word=settings.whole_word, indices=indices, token_types=token_types,
                                    sentence_labels=labels)
        if source.num_batches(0) == 0:
            raise ValueError(f"{data.shard_dir}: {len(indices)} training instances are fewer than one batch of "
                             f"{settings.batch_size} on each of {dist.world_size} process(es)")
        return source

    steps = settings.max_steps or UNBOUNDED_STEPS  # None: the time budget alone ends the run
    phases = [Phase("phase1", train_source(shards, holdout), steps - settings.phase2_steps)]
    if phase2 is not None:
        cut = math.ceil(holdout * len(phase2) / len(shards))
        phases.append(Phase("phase2", train_source(phase2, cut), settings.phase2_steps))
    evaluation = None
    if holdout:
        evaluation = PretrainingBatches(shards, settings.eval_batch_size, EVAL_MASK_SEED, mlm_prob=EVAL_MLM_PROB,
                                        drop_last=False, indices=np.arange(len(shards) - holdout, len(shards)),
                                        token_types=token_types, sentence_labels=labels)
    return phases, evaluation


def _holdout_size(settings: PretrainSettings, total: int) -> int:
    n = min(1000, total // 20) if settings.eval_holdout is None else settings.eval_holdout
    if n >= total:
        raise ValueError(f"eval_holdout={n} leaves no training data: {settings.data} holds {total} instances")
    return n


# ------------------------------------------------------------------------------------------------- model
def build_model(settings: PretrainSettings, shards: ShardSet, phase2: ShardSet | None = None) -> BertForPreTraining:
    """A fresh model sized for the shards' vocabulary, or ``init_from``'s weights after checking they fit the data.

    The initial weights depend only on ``settings.seed`` (drawn in a forked RNG, so the global stream is untouched).
    """
    config = model_config(settings, shards)
    for data in (shards, phase2):
        if data is not None:
            check_objective(data, config, sentence_task=settings.sentence_task)
            length = data.max_seq_len
            positions = config.max_position_embeddings - config.position_offset
            if length > positions:
                raise ValueError(f"{data.shard_dir}: sequences of up to {length} tokens, but the model has only "
                                 f"{positions} positions")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings.seed)
        if settings.init_from is None:
            return BertForPreTraining(config)
        model = BertForPreTraining.from_pretrained(settings.init_from)
    if model.load_report.fresh:
        log.warning("%s: initialised fresh: %s", settings.init_from, ", ".join(model.load_report.fresh))
    return model


def model_config(settings: PretrainSettings, shards: ShardSet) -> BertConfig:
    """The run's model config: ``init_from``'s, the config file's or the preset of the architecture.

    The architecture comes from ``settings.arch``, else the checkpoint / config file (its ``model_type``), else the
    shards' manifest (the ``arch`` they were prepared for). A fresh model's vocabulary size and padding id follow
    the shards' tokenizer.

    Raises:
        ValueError: ``settings.arch`` contradicts the checkpoint's or config file's ``model_type``.
        ShardError: ``init_from``'s vocabulary differs from the shards'.
    """
    if settings.init_from is not None:
        path = Path(settings.init_from) / "config.json"
        config = BertConfig.from_json_file(path)
        _check_arch(settings.arch, config.model_type, str(path))
        if config.vocab_size != shards.vocab_size:
            raise ShardError(f"{settings.data}: shards have a vocabulary of {shards.vocab_size} but "
                             f"{settings.init_from} has {config.vocab_size}; prepare them with its tokenizer")
        return config
    if settings.config_file is not None:
        config = BertConfig.from_json_file(settings.config_file)
        _check_arch(settings.arch, config.model_type, settings.config_file)
        return config.replace(vocab_size=shards.vocab_size, pad_token_id=shards.pad_id)
    arch = settings.arch or shards.arch
    return BertConfig.preset(settings.preset, arch=arch, vocab_size=shards.vocab_size, pad_token_id=shards.pad_id)


def _check_arch(given: str | None, found: str, source: str) -> None:
    if given is not None and given != found:
        raise ValueError(f"arch {given!r} contradicts {source}, whose model_type is {found!r}; drop the arch or "
                         "use a matching checkpoint / config")


def check_objective(shards: ShardSet, config: BertConfig, *, sentence_task: bool = True) -> None:
    """Refuse shards prepared for another sentence objective than the model's (e.g. NSP pairs for RoBERTa).

    Without the sentence task (``sentence_task=False``) a model with a sentence head (BERT, ALBERT) trains
    masked-LM alone on any shards: pairs or packed sentences are text alike, and it has token types for pairs.

    Raises:
        ShardError: naming the manifest, the shards' objective and the model's.
    """
    expected = config.sentence_task or "none"
    if not sentence_task and config.sentence_task is not None:
        return
    if shards.objective != expected:
        prepared = shards.arch
        raise ShardError(
            f"{Path(shards.shard_dir) / MANIFEST}: shards were prepared for objective {shards.objective!r} "
            f"(arch {prepared!r}), but a {config.model_type} model pretrains with objective {expected!r}; "
            f"re-run `bertkit prepare --arch {config.model_type}`"
        )


# -------------------------------------------------------------------------------------------- evaluation
class PretrainingEvaluator:
    """``evaluate`` for the loop: MLM loss, accuracy and perplexity over masked positions, plus the sentence task's
    loss and accuracy under its own name (``nsp_*`` or ``sop_*``; none for a source without sentence labels).

    Sums are taken over every masked token (and every pair) of the source, so the metrics do not depend on the
    evaluation batch size. The model computes MLM logits only at the labelled positions.
    """

    def __init__(self, source: PretrainingBatches) -> None:
        self.source = source
        self.task = source.sentence_task

    def __call__(self, model: nn.Module) -> dict[str, float]:
        device = next(model.parameters()).device
        sums = torch.zeros(6, dtype=torch.float64)  # mlm loss, mlm correct, masked tokens, task loss, correct, pairs
        for index in range(self.source.num_batches(0)):
            batch = {k: v.to(device) for k, v in self.source.batch(0, index).items()}
            out = model(**batch)
            labels = batch["mlm_labels"]
            targets = labels[labels != IGNORE]  # (N,), in the order of out.mlm_logits' rows
            mlm_logits = out.mlm_logits.float()
            sums[:3] += torch.tensor([
                nn.functional.cross_entropy(mlm_logits, targets, reduction="sum").item(),
                (mlm_logits.argmax(-1) == targets).sum().item(), targets.numel(),
            ], dtype=torch.float64)  # fmt: skip
            if self.task is not None:
                task_logits, task_labels = out.nsp_logits.float(), batch["nsp_labels"]
                sums[3:] += torch.tensor([
                    nn.functional.cross_entropy(task_logits, task_labels, reduction="sum").item(),
                    (task_logits.argmax(-1) == task_labels).sum().item(), task_labels.numel(),
                ], dtype=torch.float64)  # fmt: skip
        mlm_loss = (sums[0] / sums[2]).item()
        metrics = {
            "loss": mlm_loss,
            "mlm_loss": mlm_loss,
            "mlm_accuracy": (sums[1] / sums[2]).item(),
            "perplexity": math.exp(min(mlm_loss, 50.0)),
        }
        if self.task is not None:
            task_loss = (sums[3] / sums[5]).item()
            metrics["loss"] += task_loss
            metrics[f"{self.task}_loss"] = task_loss
            metrics[f"{self.task}_accuracy"] = (sums[4] / sums[5]).item()
        return metrics
