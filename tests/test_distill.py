"""Distillation: the student starts from every other teacher layer, each loss term is what it claims to be, a run
learns toward its teacher, and `bertkit distill` writes a DistilBERT checkpoint transformers loads."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers

from bertkit import BertConfig, BertForPreTraining, BertModel
from bertkit.cli import main
from bertkit.data.prepare import prepare
from bertkit.data.shards import ShardSet
from bertkit.recipes.distill import (
    DistillationEvaluator,
    Distiller,
    DistillSettings,
    LossWeights,
    cosine_loss,
    init_student,
    run_distillation,
    soft_target_loss,
    student_config,
    student_layer_map,
)
from bertkit.recipes.pretrain import PretrainSettings, make_sources
from bertkit.tokenizer import Tokenizer
from bertkit.train import checkpointing as ckpt
from bertkit.train.distributed import DistInfo
from bertkit.train.logging import read_metrics
from bertkit.train.loop import TrainConfig, Trainer

CORPUS = Path(__file__).parent / "fixtures" / "corpus"
VOCAB = 1000
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny_teacher(layers: int = 4, vocab_size: int = VOCAB, seed: int = 0) -> BertForPreTraining:
    torch.manual_seed(seed)
    return BertForPreTraining(BertConfig.preset("tiny", num_hidden_layers=layers, vocab_size=vocab_size,
                                                max_position_embeddings=64))


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> tuple[Path, Path]:
    """(tokenizer folder, shard folder of BERT pairs at length 48) for the fixture corpus."""
    root = tmp_path_factory.mktemp("distill")
    Tokenizer.train(sorted(str(p) for p in CORPUS.glob("*.txt")), vocab_size=VOCAB).save_pretrained(root / "tok")
    prepare([str(CORPUS)], str(root / "tok"), str(root / "shards"), max_seq_len=48)
    return root / "tok", root / "shards"


def frequency_teacher(shard_dir: Path) -> BertForPreTraining:
    """A tiny 4-layer BERT that knows the corpus' token frequencies (its MLM bias holds their logarithms).

    It predicts like a briefly pretrained model (the most frequent word), without the minutes of pretraining.
    """
    shards = ShardSet(str(shard_dir))
    counts = np.bincount(np.concatenate([shards[i].ids for i in range(len(shards))]), minlength=VOCAB)
    counts[list(shards.special_ids)] = 0
    teacher = tiny_teacher()
    with torch.no_grad():
        teacher.mlm.bias.copy_(torch.from_numpy(np.log(counts + 1.0)).float())
    return teacher


@pytest.fixture(scope="module")
def teacher_dir(data, tmp_path_factory) -> Path:
    """The frequency teacher with its tokenizer: a checkpoint folder as `bertkit pretrain` leaves one."""
    path = tmp_path_factory.mktemp("teacher")
    frequency_teacher(data[1]).save_pretrained(path)
    Tokenizer.from_pretrained(data[0]).save_pretrained(path)
    return path


def single_segment_batch(vocab_size: int = 99) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(5, vocab_size, (3, 9), generator=generator)
    mask = torch.ones_like(ids)
    mask[1, 6:], mask[2, 4:] = 0, 0
    labels = torch.full_like(ids, -100)
    labels[0, [1, 5]], labels[1, 2], labels[2, 3] = ids[0, [1, 5]], ids[1, 2], ids[2, 3]
    return {"input_ids": ids * mask, "attention_mask": mask, "mlm_labels": labels}


# ------------------------------------------------------------------------------------------ the student
def test_layer_map_takes_every_other_layer_at_half_depth():
    assert student_layer_map(6, 3) == [0, 2, 4]
    assert student_layer_map(12, 6) == [0, 2, 4, 6, 8, 10]
    assert student_layer_map(4, 2) == [0, 2]
    assert student_layer_map(6, 6) == list(range(6))
    for bad in (0, 7):
        with pytest.raises(ValueError, match="between 1 and the teacher's 6 layers"):
            student_layer_map(6, bad)


def test_student_copies_exactly_layers_0_2_4_of_a_6_layer_teacher_and_its_embeddings_and_mlm_head():
    teacher = tiny_teacher(layers=6, vocab_size=99)
    config = student_config(teacher.config, "distilbert", preset="tiny")
    student, fresh = init_student(teacher, config)
    assert (config.model_type, config.num_hidden_layers, config.type_vocab_size) == ("distilbert", 3, 0)
    assert fresh == [] and student.nsp is None and student.bert.pooler is None
    for i, j in enumerate([0, 2, 4]):
        ours, theirs = student.bert.layers[i].state_dict(), teacher.bert.layers[j].state_dict()
        assert ours.keys() == theirs.keys()
        assert all(torch.equal(ours[k], theirs[k]) for k in ours), f"student layer {i} != teacher layer {j}"
        neighbour = teacher.bert.layers[j + 1].state_dict()
        assert not any(torch.equal(ours[k], neighbour[k]) for k in ours if k.endswith("weight") and "norm" not in k)
    for name, tensor in student.mlm.state_dict().items():
        assert torch.equal(tensor, teacher.mlm.state_dict()[name]), name
    s_emb, t_emb = student.bert.embeddings, teacher.bert.embeddings
    assert torch.equal(s_emb.token.weight, t_emb.token.weight)
    assert torch.equal(s_emb.norm.weight, t_emb.norm.weight) and torch.equal(s_emb.norm.bias, t_emb.norm.bias)
    # No token types: the teacher's segment-A row is folded into the positions.
    assert torch.allclose(s_emb.position.weight, t_emb.position.weight + t_emb.segment.weight[0], atol=0)


def test_full_depth_distilbert_student_computes_exactly_what_the_teacher_does_on_one_segment():
    teacher = tiny_teacher(layers=4, vocab_size=99).eval()
    student, _ = init_student(teacher, student_config(teacher.config, "distilbert", layers=4))
    batch = single_segment_batch()
    with torch.no_grad():
        ours = student.eval()(batch["input_ids"], None, batch["attention_mask"], batch["mlm_labels"])
        theirs = teacher(batch["input_ids"], None, batch["attention_mask"], batch["mlm_labels"])
    torch.testing.assert_close(ours.mlm_logits, theirs.mlm_logits, atol=1e-5, rtol=0)


# --------------------------------------------------------------------------------------------- the loss
def test_soft_target_loss_matches_a_hand_computation():
    student = [[1.0, 2.0, 3.0], [0.0, 0.0, 1.0]]
    teacher = [[3.0, 2.0, 1.0], [1.0, 0.0, 0.0]]
    temperature = 2.0

    def softmax(row):
        exps = [math.exp(x / temperature) for x in row]
        return [e / sum(exps) for e in exps]

    kl = [sum(pt * math.log(pt / ps) for pt, ps in zip(softmax(t), softmax(s), strict=True))
          for s, t in zip(student, teacher, strict=True)]
    expected = temperature**2 * sum(kl) / len(kl)
    got = soft_target_loss(torch.tensor(student), torch.tensor(teacher), temperature)
    assert got.item() == pytest.approx(expected, rel=1e-6)
    assert soft_target_loss(torch.tensor(teacher), torch.tensor(teacher), temperature).item() == pytest.approx(0)


def test_cosine_loss_matches_a_hand_computation():
    student = torch.tensor([[1.0, 0.0], [1.0, 1.0], [3.0, 4.0]])
    teacher = torch.tensor([[0.0, 2.0], [2.0, 2.0], [4.0, 3.0]])
    # 1 - cos per row: orthogonal 1, parallel 0, (12 + 12) / 25 -> 1 - 0.96
    assert cosine_loss(student, teacher).item() == pytest.approx((1.0 + 0.0 + 0.04) / 3, rel=1e-6)


def test_distiller_terms_match_a_recomputation_at_masked_and_real_positions():
    teacher = tiny_teacher(layers=4, vocab_size=99, seed=1)
    student = BertForPreTraining(student_config(teacher.config, "distilbert"))  # fresh: every term is non-zero
    weights = LossWeights(temperature=3.0, alpha_ce=5.0, alpha_mlm=2.0, alpha_cos=1.0)
    distiller = Distiller(student, teacher, weights).eval()
    batch = single_segment_batch()
    types = (torch.arange(9) >= 4).long().expand(3, 9) * batch["attention_mask"]
    out = distiller(**batch, token_type_ids=types, nsp_labels=torch.zeros(3, dtype=torch.long))

    selected, real = batch["mlm_labels"] != -100, batch["attention_mask"].bool()
    with torch.no_grad():
        t_hidden = teacher.bert(batch["input_ids"], types, batch["attention_mask"]).last_hidden_state
        s_hidden = student.bert(batch["input_ids"], None, batch["attention_mask"]).last_hidden_state
        t_logits = teacher.mlm(t_hidden, teacher.bert.embeddings.token.weight)[selected]  # full vocab, then picked
        s_logits = student.mlm(s_hidden, student.bert.embeddings.token.weight)[selected]
    p_t, log_p_s = torch.softmax(t_logits / 3.0, -1), torch.log_softmax(s_logits / 3.0, -1)
    soft = 9.0 * (p_t * (p_t.log() - log_p_s)).sum(-1).mean()
    mlm = -torch.log_softmax(s_logits, -1)[torch.arange(4), batch["mlm_labels"][selected]].mean()
    cosine = (1 - torch.nn.functional.cosine_similarity(s_hidden[real], t_hidden[real], dim=-1)).mean()
    for got, expected in ((out.soft_loss, soft), (out.mlm_loss, mlm), (out.cosine_loss, cosine)):
        assert got.item() == pytest.approx(expected.item(), rel=1e-5, abs=1e-6)  # fp32 sums over 99 classes
    assert out.loss.item() == pytest.approx(5 * soft.item() + 2 * mlm.item() + cosine.item(), rel=1e-5, abs=1e-5)
    assert min(soft.item(), mlm.item(), cosine.item()) > 1e-3


def test_distiller_trains_and_saves_the_student_only():
    teacher = tiny_teacher(layers=4, vocab_size=99)
    student, _ = init_student(teacher, student_config(teacher.config, "distilbert"))
    distiller = Distiller(student, teacher, LossWeights()).train()
    assert not teacher.training
    assert {id(p) for p in distiller.parameters()} == {id(p) for p in student.parameters()}
    assert all(key.startswith("student.") for key in distiller.state_dict())
    distiller(**single_segment_batch()).loss.backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert all(p.grad is not None for p in student.parameters() if p.requires_grad)


# ---------------------------------------------------------------------------------------------- learning
def test_distilled_student_accuracy_moves_to_the_teachers(data):
    """A fresh student, distilled from a teacher that knows the corpus' token frequencies, learns what it knows."""
    shards = ShardSet(str(data[1]))
    teacher = frequency_teacher(data[1])
    student = BertForPreTraining(student_config(teacher.config, "distilbert"))
    settings = PretrainSettings(data=str(data[1]), out_dir="unused", batch_size=16, eval_holdout=64)
    train, evaluation = make_sources(settings, shards, None, DistInfo.single("cpu"))
    evaluate = DistillationEvaluator(evaluation)
    distiller = Distiller(student, teacher, LossWeights()).eval()
    with torch.no_grad():
        before = evaluate(distiller)
    config = TrainConfig(out_dir=data[0].parent / "learn", max_steps=20, lr=3e-3, warmup_steps=3, log_every=1,
                         progress=False, max_grad_norm=5.0)
    summary = Trainer(distiller, config, train[0].train, evaluate=evaluate, save_model=lambda m, p: None).fit()
    losses = [r["loss"] for r in read_metrics(config.out_dir / "metrics.jsonl") if "loss" in r]
    assert np.median(losses[-5:]) < 0.8 * np.median(losses[:5])  # about 13 vs 17.5
    assert summary["eval_loss"] < 0.8 * before["loss"]  # the objective on held-out text, fixed masking
    teacher_accuracy = summary["eval_teacher_mlm_accuracy"]
    assert teacher_accuracy == before["teacher_mlm_accuracy"] > 0.02  # 0.04-0.06: the most frequent word
    assert before["mlm_accuracy"] < 0.3 * teacher_accuracy
    assert summary["eval_mlm_accuracy"] > 0.8 * teacher_accuracy  # all of it, in practice
    assert summary["eval_agreement"] > before["agreement"] + 0.5
    assert summary["eval_soft_loss"] < 0.2 * before["soft_loss"]


@torch.no_grad()
def held_out_mlm_accuracy(model: BertForPreTraining, source) -> float:
    """The share of masked held-out tokens whose argmax is right, counted here rather than by the evaluators."""
    correct = total = 0
    for index in range(source.num_batches(0)):
        batch = source.batch(0, index)
        types = batch["token_type_ids"] if model.config.type_vocab_size else None  # DistilBERT has none
        logits = model.eval()(batch["input_ids"], types, batch["attention_mask"]).mlm_logits  # (B, T, V)
        labels = batch["mlm_labels"]
        masked = labels != -100
        correct += (logits[masked].argmax(-1) == labels[masked]).sum().item()
        total += masked.sum().item()
    return correct / total


def test_distillation_run_measures_teacher_and_student_on_the_same_held_out_batches(data, teacher_dir, tmp_path):
    out = tmp_path / "run"
    summary = run_distillation(DistillSettings(
        teacher=str(teacher_dir), shards=str(data[1]), out_dir=str(out), max_steps=6, batch_size=8, lr=1e-3,
        log_every=1, eval_every=3, save_every=0, eval_holdout=64, progress=False, plots=False,
    ))  # fmt: skip
    records = read_metrics(out / "metrics.jsonl")
    assert [r["step"] for r in records if "loss" in r] == list(range(1, 7))
    evals = [r for r in records if "eval_accuracy_retained" in r]
    assert [r["step"] for r in evals] == [3, 6]
    assert summary["initial_eval"]["teacher_mlm_accuracy"] == summary["eval_teacher_mlm_accuracy"] > 0
    # Both in-run figures are the models' own held-out accuracies, as `bertkit pretrain` measures them: the
    # teacher from its folder, the student from the checkpoint the run wrote; "retained" is their ratio.
    settings = PretrainSettings(data=str(data[1]), out_dir="unused", eval_holdout=64)
    _, evaluation = make_sources(settings, ShardSet(str(data[1])), None, DistInfo.single("cpu"))
    teacher, student = (held_out_mlm_accuracy(BertForPreTraining.from_pretrained(folder), evaluation)
                        for folder in (teacher_dir, out))
    assert teacher == pytest.approx(summary["eval_teacher_mlm_accuracy"], abs=1e-9)
    assert student == pytest.approx(summary["eval_mlm_accuracy"], abs=1e-9)
    assert summary["eval_accuracy_retained"] == pytest.approx(student / teacher)
    info = json.loads((out / "distill.json").read_text())
    assert info["student"]["from_teacher_layers"] == [0, 2] and info["teacher"]["layers"] == 4
    assert info["summary"]["eval_accuracy_retained"] == summary["eval_accuracy_retained"]
    for name in ("config.json", "model.safetensors", "vocab.txt", "tokenizer_config.json", "metrics.jsonl"):
        assert (out / name).is_file(), name


# ---------------------------------------------------------------------------------------------- the CLI
def distill_args(data, teacher_dir, out: Path, *extra: str) -> list[str]:
    return ["distill", "--teacher", str(teacher_dir), "--student-preset", "tiny", "--shards", str(data[1]),
            "--out", str(out), "--batch-size", "8", "--lr", "1e-3", "--log-every", "1", "--eval-every", "3",
            "--eval-holdout", "32", "--no-progress", "--no-plots", *extra]


def test_cli_writes_a_distilbert_checkpoint_that_transformers_loads(data, teacher_dir, tmp_path, capsys):
    out = tmp_path / "student"
    assert main(distill_args(data, teacher_dir, out, "--max-steps", "3")) == 0
    printed = capsys.readouterr().out
    assert "student keeps" in printed and "layers from the teacher's [0, 2]" in printed
    config = json.loads((out / "config.json").read_text())
    assert (config["model_type"], config["n_layers"], config["dim"]) == ("distilbert", 2, 128)
    assert Tokenizer.from_pretrained(out).fingerprint() == ShardSet(str(data[1])).fingerprint
    ours = BertForPreTraining.from_pretrained(out).eval()
    reference = transformers.DistilBertForMaskedLM.from_pretrained(out).eval()
    batch = single_segment_batch(VOCAB)
    with torch.no_grad():
        expected = reference(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        got = ours(batch["input_ids"], None, batch["attention_mask"]).mlm_logits
    real = batch["attention_mask"].bool()
    torch.testing.assert_close(got[real], expected[real], atol=1e-4, rtol=1e-4)


def test_cli_resume_continues_the_same_distillation(data, teacher_dir, tmp_path, monkeypatch):
    args = [*distill_args(data, teacher_dir, tmp_path / "whole"), "--max-steps", "6", "--save-every", "3"]
    assert main(args) == 0
    after_step = Trainer._after_step

    def interrupt_after_step_4(self):
        record = after_step(self)
        if self.step == 4:
            raise KeyboardInterrupt
        return record

    cut = [*distill_args(data, teacher_dir, tmp_path / "cut"), "--max-steps", "6", "--save-every", "3"]
    monkeypatch.setattr(Trainer, "_after_step", interrupt_after_step_4)
    assert main(cut) == 130
    monkeypatch.undo()
    state = ckpt.load_trainer_state(ckpt.latest_checkpoint(tmp_path / "cut"))
    assert all(key.startswith("student.") for key in state["model"])  # the teacher is never checkpointed
    assert main([*cut, "--resume"]) == 0

    def comparable(run):
        return [{k: v for k, v in r.items() if k not in ("elapsed", "tokens_per_s", "duration")}
                for r in read_metrics(tmp_path / run / "metrics.jsonl")]

    assert comparable("cut") == comparable("whole") and len(comparable("whole")) == 8  # 6 steps + 2 evaluations


def test_cli_refuses_a_teacher_without_an_mlm_head(data, tmp_path, capsys):
    encoder = tmp_path / "encoder"
    BertModel(BertConfig.preset("tiny", num_hidden_layers=4, vocab_size=VOCAB)).save_pretrained(encoder)
    Tokenizer.from_pretrained(data[0]).save_pretrained(encoder)
    assert main(distill_args(data, encoder, tmp_path / "out", "--max-steps", "2")) == 2
    err = capsys.readouterr().err
    assert "no masked-LM head" in err and str(encoder) in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("extra", "message"), [
    (["--student-layers", "5"], "between 1 and the teacher's 4 layers"),
    (["--student-preset", "mini"], "hidden_size=256 but the teacher has 128"),
    (["--arch", "roberta"], "roberta student cannot start from a bert teacher"),
    (["--temperature", "0"], "--temperature: must be > 0, got 0"),
])  # fmt: skip
def test_cli_refuses_a_student_that_cannot_start_from_the_teacher(data, teacher_dir, tmp_path, capsys, extra, message):
    try:
        code = main([*distill_args(data, teacher_dir, tmp_path / "out", "--max-steps", "2"), *extra])
    except SystemExit as stop:  # a flag out of range is refused by the parser, before any work
        code = stop.code
    assert code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_cli_refuses_to_write_the_student_over_its_teacher(data, teacher_dir, capsys):
    assert main(distill_args(data, teacher_dir, teacher_dir, "--max-steps", "2")) == 2
    assert "is the teacher's folder" in capsys.readouterr().err
