"""Fine-tuning: a pretrained BERT plus one output layer, trained on a labelled task; then evaluation and prediction.

The task families (classify, pair, regress, tag, qa) differ only in their data and head (tasks/families.py);
training is the one loop (train/loop.py) over a `TaskBatches` source, with the dev metric as its evaluation. Every
variant of the family (BERT, RoBERTa, DistilBERT, ALBERT) fine-tunes the same way: the architecture comes from the
pretrained checkpoint's config.json, the pair layout from its tokenizer, and a model without token types
(DistilBERT) gets batches without them.

Defaults follow the BERT paper's fine-tuning recipe (section 4 and appendix A.3): batch 32, 3 epochs, linear decay
after 10% warm-up, weight decay 0.01, dropout 0.1, Adam. The learning rate is 3e-5 (middle of the paper's
2e-5 .. 5e-5 grid) and 5e-5 for QA, the paper's SQuAD value. Sequences are cut to 128 tokens, QA windows to 384
tokens with a 128-token stride. Where the paper leaves a detail open, the defaults are those of transformers'
standard fine-tuning recipe, so the same flags give the same result there: AdamW's epsilon is 1e-8 (pretraining
keeps BERT's 1e-6) and warm-up lasts ceil(10%) of the steps.

A run's output directory holds:
    config.json, model.safetensors     the final model: the best by the dev metric when a dev set is given,
                                       with its task family and labels (see TaskSpec); `architectures` names
                                       the variant's standard class (BertForSequenceClassification,
                                       RobertaForTokenClassification ...)
    tokenizer files                    those of its kind (vocab.txt, vocab.json + merges.txt, or spiece.model)
                                       and tokenizer_config.json
    best.json                          the step and dev metrics of that model
    finetune.json                      the run's settings
    metrics.jsonl                      training loss and dev metrics over steps
    checkpoints/                       only while the run is unfinished: what `resume` continues from
An existing, non-empty output directory is used only if it holds a run of the same task and `resume` (continue
an interrupted run) or `overwrite` (delete it and start again) is set; any other directory is left untouched.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bertkit import files
from bertkit.config import BertConfig
from bertkit.inspect.report import DETAILS_FILE, write_report
from bertkit.recipes.run_folder import model_and_tokenizer_writer
from bertkit.recipes.training import TrainingSettings
from bertkit.tasks import families
from bertkit.tasks.batches import TaskBatches
from bertkit.tasks.families import FAMILIES, TaskSpec
from bertkit.tasks.models import build_task_model, load_task_model, run_on_features
from bertkit.tasks.readers import glue_path
from bertkit.tokenizer import Tokenizer
from bertkit.train import checkpointing
from bertkit.train.distributed import DistInfo, all_reduce_sum, barrier
from bertkit.train.loop import TrainConfig, Trainer

log = logging.getLogger("bertkit")

SETTINGS_FILE = "finetune.json"
FINETUNE_ADAM_EPS = 1e-8  # transformers' (and torch's) AdamW default; BERT's TensorFlow code used 1e-6
BEST_FILE = "best.json"


@dataclass(kw_only=True)
class FinetuneSettings(TrainingSettings):
    """One fine-tuning run. `lr` and `max_seq_len` default by task (see the module docstring).

    A GLUE task name sets the task family and the columns; with `data_dir` it also finds train.tsv and dev.tsv
    there. `max_steps` overrides `epochs`. `eval_every` (steps) defaults to once per epoch; `patience` stops
    after that many evaluations without a better dev metric. `save_every` (steps) defaults to `eval_every`,
    `log_every` to 50 steps or an epoch if shorter. The training settings are those every recipe shares
    (:class:`~bertkit.recipes.training.TrainingSettings`).
    """

    model: Path | str
    out: Path | str
    task: str | None = None
    train: Path | str | None = None
    dev: Path | str | None = None
    glue: str | None = None
    data_dir: Path | str | None = None
    text_column: str = "text"
    pair_column: str | None = None
    label_column: str = "label"
    epochs: int = 3
    max_seq_len: int | None = None
    warmup_ratio: float = 0.1
    dropout: float = 0.1
    seed: int = 42
    eval_every: int | None = None
    save_every: int | None = None
    log_every: int | None = None
    keep_last: int = 1
    patience: int | None = None
    doc_stride: int = 128
    max_query_len: int = 64
    squad_v2: bool = False
    null_threshold: float = 0.0
    overwrite: bool = False

    def __post_init__(self) -> None:
        if self.glue is not None:
            inferred = families.task_for_glue(self.glue)
            if self.task is not None and self.task != inferred:
                raise ValueError(f"task {self.task!r} does not match GLUE task {self.glue!r} (a {inferred!r} task)")
            self.task = inferred
            if self.data_dir is not None:
                self.train = self.train or glue_path(self.glue, self.data_dir, "train")
                dev = glue_path(self.glue, self.data_dir, "dev")
                self.dev = self.dev or (dev if dev.is_file() else None)
        if self.task is None:
            raise ValueError("no task: give a task family (classify, pair, regress, tag, qa) or a GLUE task name")
        if self.train is None:
            raise ValueError("no training data: give a training file (or a GLUE task with its data directory)")
        if self.resume and self.overwrite:
            raise ValueError("resume and overwrite exclude each other")
        if self.patience is not None and self.dev is None:
            raise ValueError("early stopping (patience) needs a dev set")
        self.model, self.out = Path(self.model), Path(self.out)
        family = FAMILIES.get(self.task)
        if family is None:
            raise ValueError(f"unknown task {self.task!r} (expected one of {', '.join(FAMILIES)})")
        self.lr = self.lr or family.default_lr
        self.max_seq_len = self.max_seq_len or family.default_max_seq_len

    def spec(self, labels: tuple[str, ...] | None = None) -> TaskSpec:
        return TaskSpec(self.task, labels, self.max_seq_len, self.glue, self.text_column, self.pair_column,
                        self.label_column, self.doc_stride, self.max_query_len, self.squad_v2, self.null_threshold)

    def to_dict(self) -> dict[str, Any]:
        return {k: str(v) if isinstance(v, Path) else v for k, v in dataclasses.asdict(self).items()}


# ----------------------------------------------------------------------------------------------------------
# Evaluation and prediction
# ----------------------------------------------------------------------------------------------------------


def _data_spec(spec: TaskSpec, glue: str | None, overrides: dict[str, Any]) -> TaskSpec:
    changes = {k: v for k, v in overrides.items() if v is not None}
    return dataclasses.replace(spec, **changes, glue=glue or spec.glue)


def evaluate_model(
    model_dir: str | os.PathLike,
    data: str | os.PathLike | None = None,
    *,
    glue: str | None = None,
    data_dir: str | os.PathLike | None = None,
    batch_size: int = 64,
    device: str | None = None,
    **overrides: Any,
) -> dict[str, float]:
    """The task family's metrics of a fine-tuned model on a labelled file (or a GLUE task's dev.tsv).

    Args:
        overrides: TaskSpec fields to change for this data: text_column, pair_column, label_column,
            squad_v2, null_threshold, max_seq_len (None keeps the model's own).
    Returns:
        the metrics (fractions in [0, 1]), plus `loss` and `examples`.
    """
    task = families.task_for_glue(glue) if glue is not None else None
    loaded = load_task_model(model_dir, task=task, device=device)
    if data is None:
        if glue is None or data_dir is None:
            raise ValueError("give a data file, or a GLUE task name with its data directory")
        data = glue_path(glue, data_dir, "dev")
    spec = _data_spec(loaded.spec, glue, overrides)
    examples = families.read_task_file(spec, data)
    families.check_known_labels(spec, examples, data)
    features = families.encode(spec, examples, loaded.tokenizer)
    outputs, loss = run_on_features(loaded.model, features, batch_size=batch_size, pad_id=loaded.tokenizer.pad_id)
    result = families.score(spec, examples, features, outputs)
    return {**result, "loss": loss, "examples": float(len(examples))}


def predict(
    model_dir: str | os.PathLike,
    input: str | os.PathLike,
    output: str | os.PathLike,
    *,
    batch_size: int = 64,
    device: str | None = None,
    **overrides: Any,
) -> int:
    """Write one JSON line per input example (see families.prediction_records); returns how many.

    The output is written to a temporary file and renamed, so a failure leaves any previous output intact.
    """
    loaded = load_task_model(model_dir, device=device)
    spec = _data_spec(loaded.spec, None, overrides)
    examples = families.read_task_file(spec, input, labelled=False)
    features = families.encode(spec, examples, loaded.tokenizer)
    outputs, _ = run_on_features(loaded.model, features, batch_size=batch_size, pad_id=loaded.tokenizer.pad_id)
    records = families.prediction_records(spec, examples, features, outputs)
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    files.write_text(output, text)
    return len(records)


def write_json(path: str | os.PathLike, value: Any) -> None:
    """Write JSON atomically (temp file, then rename)."""
    files.write_text(path, json.dumps(value, indent=2) + "\n")


# ----------------------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------------------


class _StopTraining(Exception):
    """Raised through the training loop once the dev metric has stopped improving."""


class _PatientBatches:
    """The training BatchSource, cut short after `patience` evaluations in a row without a better dev metric.

    The stop is raised when the loop asks for its next batch: by then it has logged that evaluation and saved
    the best model. The flag is summed over ranks (evaluation runs on rank 0 only) so all processes stop together.
    """

    def __init__(self, source: TaskBatches, patience: int, dist: DistInfo) -> None:
        self.source, self.patience, self.dist = source, patience, dist
        self.best: float | None = None
        self.waited = 0

    def record(self, value: float) -> None:
        if self.best is None or value > self.best:
            self.best, self.waited = value, 0
        else:
            self.waited += 1

    def num_batches(self, epoch: int) -> int:
        return self.source.num_batches(epoch)

    def batch(self, epoch: int, index: int) -> dict[str, torch.Tensor]:
        stop = torch.tensor(float(self.waited >= self.patience), device=self.dist.device)
        if all_reduce_sum(stop, self.dist).item() > 0:
            raise _StopTraining
        return self.source.batch(epoch, index)


def _check_out_dir(settings: FinetuneSettings) -> None:
    """Refuse an output directory whose contents this run must not touch (see the module docstring)."""
    out = settings.out
    if out.resolve() == settings.model.resolve():
        raise ValueError(f"the output directory {out} is the pretrained model's directory")
    if not out.is_dir() or not any(p.name != checkpointing.LOCK_FILE for p in out.iterdir()):
        if settings.resume:
            raise FileNotFoundError(f"{out}: no previous run to resume")
        return
    previous = out / SETTINGS_FILE
    if not previous.is_file():
        raise FileExistsError(f"{out} is not empty and holds no fine-tuning run ({SETTINGS_FILE} missing); "
                              "choose another output directory")
    try:
        old_task = json.loads(previous.read_text(encoding="utf-8"))["task"]
    except (json.JSONDecodeError, KeyError, UnicodeDecodeError) as err:
        raise FileExistsError(f"{previous}: unreadable ({err}); choose another output directory") from None
    if old_task != settings.task:
        raise FileExistsError(f"{out} holds a run fine-tuned for task {old_task!r}, not {settings.task!r}; "
                              "choose another output directory")
    if not settings.resume and not settings.overwrite:
        raise FileExistsError(f"{out} holds a previous {old_task!r} run; resume it (--resume) or replace it "
                              "(--overwrite)")
    if settings.resume and checkpointing.latest_checkpoint(out) is None:
        raise FileExistsError(f"{out}: the previous run finished (no checkpoint left to resume); use --overwrite")


def _clear_dir(directory: Path) -> None:
    for entry in directory.iterdir():
        if entry.name != checkpointing.LOCK_FILE:  # held by this run
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()


@dataclass
class _TaskData:
    spec: TaskSpec
    train_examples: int
    train_features: list
    dev_examples: list
    dev_features: list


def _load_data(settings: FinetuneSettings, tokenizer: Tokenizer) -> _TaskData:
    """Read and encode the training and dev sets; label names come from training (or the GLUE standard)."""
    spec = settings.spec()
    train = families.read_task_file(spec, settings.train)
    spec = settings.spec(families.label_list(spec, train))
    dev = families.read_task_file(spec, settings.dev) if settings.dev is not None else []
    families.check_known_labels(spec, dev, settings.dev)
    train_features = families.encode(spec, train, tokenizer)
    dev_features = families.encode(spec, dev, tokenizer) if dev else []
    log.info("%s: %d training examples (%d features), %d dev examples", spec.task, len(train),
             len(train_features), len(dev))
    return _TaskData(spec, len(train), train_features, dev, dev_features)


def _promote_best(out: Path) -> dict[str, Any] | None:
    """Move the best model into the output directory and drop the resume checkpoints; returns best.json."""
    best = out / "best"
    info = None
    if (best / BEST_FILE).is_file():
        info = json.loads((best / BEST_FILE).read_text(encoding="utf-8"))
        checkpointing.save_final(out, lambda tmp: [shutil.copy2(f, tmp / f.name) for f in best.iterdir()])
        shutil.rmtree(best)
    shutil.rmtree(out / checkpointing.CHECKPOINTS, ignore_errors=True)
    return info


def run_finetune(settings: FinetuneSettings, dist: DistInfo | None = None) -> dict[str, Any]:
    """Fine-tune `settings.model` on the task and write the model to `settings.out`.

    Returns:
        a summary: task, steps, the dev metric and its best value and step, the best model's dev metrics,
        example counts and whether early stopping ended the run.
    """
    dist = dist or DistInfo.single()
    _check_out_dir(settings)  # before the lock file goes into a folder this run may not use
    with checkpointing.RunLock(settings.out, enabled=dist.is_main):
        return _run_finetune(settings, dist)


def _run_finetune(settings: FinetuneSettings, dist: DistInfo) -> dict[str, Any]:
    _check_out_dir(settings)  # again, now that no other process can change the folder
    barrier(dist)  # every rank has looked before rank 0 writes
    tokenizer = Tokenizer.from_pretrained(settings.model)
    _check_tokenizer(tokenizer, BertConfig.from_json_file(settings.model / "config.json"), settings.model)
    data = _load_data(settings, tokenizer)
    model = build_task_model(settings.model, data.spec, dropout=settings.dropout, seed=settings.seed)
    if dist.is_main:
        if settings.overwrite and settings.out.is_dir():
            _clear_dir(settings.out)
        if not settings.resume:
            write_json(settings.out / SETTINGS_FILE, settings.to_dict())
    barrier(dist)
    source = TaskBatches(data.train_features, settings.batch_size, settings.seed, rank=dist.rank,
                         world_size=dist.world_size, pad_id=tokenizer.pad_id,
                         token_types=model.config.has_token_types)
    patient = _PatientBatches(source, settings.patience, dist) if settings.patience is not None else None
    has_dev = bool(data.dev_examples)
    evaluate = _dev_evaluator(data, tokenizer, settings.eval_batch_size, patient) if has_dev else None
    trainer = Trainer(model, _train_config(settings, source, has_dev), patient or source, evaluate=evaluate,
                      save_model=model_and_tokenizer_writer(tokenizer),
                      best_metric=data.spec.metric if has_dev else None, dist=dist)
    stopped = False
    try:
        trainer.fit()
    except _StopTraining:
        stopped = True
    best = _promote_best(settings.out) if dist.is_main else None
    if dist.is_main:
        _write_report(settings, data, tokenizer, trainer.best_step)
    barrier(dist)
    return {"task": data.spec.task, "steps": trainer.step, "stopped_early": stopped,
            "metric": data.spec.metric if has_dev else None, "best_value": trainer.best_value,
            "best_step": trainer.best_step, "dev": (best or {}).get("metrics", trainer.last_eval),
            "train_examples": data.train_examples, "train_features": len(data.train_features),
            "dev_examples": len(data.dev_examples), "out_dir": str(settings.out)}


def _check_tokenizer(tokenizer: Tokenizer, config: BertConfig, directory: Path) -> None:
    """Refuse a tokenizer whose ids the model cannot read: more ids than embeddings, or (where positions are
    counted from the padding id, as RoBERTa's) another padding id."""
    if tokenizer.vocab_size > config.vocab_size:
        raise ValueError(f"{directory}: the {tokenizer.kind} tokenizer has {tokenizer.vocab_size} entries but the "
                         f"model's vocab_size is {config.vocab_size}")
    if config.position_offset and tokenizer.pad_id != config.pad_token_id:
        raise ValueError(f"{directory}: the tokenizer pads with id {tokenizer.pad_id} but the {config.model_type} "
                         f"model's pad_token_id is {config.pad_token_id}")


def _train_config(settings: FinetuneSettings, source: TaskBatches, has_dev: bool) -> TrainConfig:
    steps_per_epoch = max(math.ceil(source.num_batches(0) / settings.grad_accum), 1)
    total = settings.max_steps or source.num_batches(0) * settings.epochs // settings.grad_accum
    eval_every = settings.eval_every or steps_per_epoch
    save_every = settings.save_every if settings.save_every is not None else eval_every
    return settings.train_config(settings.out, epochs=settings.epochs,
                                 warmup_steps=math.ceil(settings.warmup_ratio * total), eps=FINETUNE_ADAM_EPS,
                                 log_every=settings.log_every or min(50, steps_per_epoch),
                                 eval_every=eval_every if has_dev else 0, save_every=save_every)


def _write_report(settings: FinetuneSettings, data: _TaskData, tokenizer: Tokenizer, step: int | None) -> None:
    """eval_details.json (confusion matrix or per-entity scores of the final model on dev), then report.html."""
    if data.dev_examples:
        final = load_task_model(settings.out).model
        outputs, _ = run_on_features(final, data.dev_features, batch_size=settings.eval_batch_size,
                                     pad_id=tokenizer.pad_id)
        extra = families.details(data.spec, data.dev_examples, data.dev_features, outputs)
        if extra:
            write_json(settings.out / DETAILS_FILE, {"step": step, **extra})
    write_report(settings.out)


def _dev_evaluator(data: _TaskData, tokenizer: Tokenizer, batch_size: int, patient: _PatientBatches | None):
    """The loop's evaluate callback: the family's dev metrics (and loss) of the model being trained."""

    def evaluate(model: nn.Module) -> dict[str, float]:
        outputs, loss = run_on_features(model, data.dev_features, batch_size=batch_size, pad_id=tokenizer.pad_id)
        result = families.score(data.spec, data.dev_examples, data.dev_features, outputs)
        if patient is not None:
            patient.record(result[data.spec.metric])
        return result if loss is None else {**result, "loss": loss}

    return evaluate
