"""make_instances (NSP pairs), mask_tokens (80/10/10, whole-word, cap) and PretrainingBatches."""

import numpy as np
import pytest

from bertkit.config import IGNORE
from bertkit.data.pretraining import PretrainingBatches, make_instances, mask_tokens
from bertkit.data.shards import write_manifest, write_shard

CLS, SEP, PAD, MASK = 101, 102, 0, 103
SPECIALS = (PAD, 100, CLS, SEP, MASK)
VOCAB = 1000


def _documents(rng: np.random.Generator, n_docs: int = 60) -> list[list[list[int]]]:
    """Documents of 1..30 sentences of 3..25 ids; ids encode (document, sentence) so tests can trace segments."""
    docs = []
    for d in range(n_docs):
        n_sent = int(rng.integers(1, 31))
        docs.append([[1000 * d + s + 200_000] * int(rng.integers(3, 26)) for s in range(n_sent)])
    return docs


def _all_instances(max_seq_len: int = 64, seed: int = 0):
    rng = np.random.default_rng(seed)
    docs = _documents(rng)
    out = []
    for _ in range(5):
        for d in range(len(docs)):
            out.extend((d, x) for x in make_instances(docs, d, rng, max_seq_len, 0.1, cls_id=CLS, sep_id=SEP))
    return out


def test_instances_have_bert_layout_and_fit():
    instances = _all_instances()
    assert len(instances) > 1000
    for _, x in instances:
        ids = np.array(x.ids)
        assert len(ids) <= 64
        assert ids[0] == CLS and ids[x.a_len - 1] == SEP and ids[-1] == SEP
        assert np.count_nonzero(ids == SEP) == 2 and np.count_nonzero(ids == CLS) == 1
        assert x.a_len >= 3 and len(ids) - x.a_len >= 2  # both segments non-empty


def test_isnext_b_continues_the_same_document_and_notnext_comes_from_another():
    for d, x in _all_instances():
        a_docs = {v // 1000 - 200 for v in x.ids[1 : x.a_len - 1]}
        b_docs = {v // 1000 - 200 for v in x.ids[x.a_len : -1]}
        assert a_docs == {d}
        if x.label:
            assert b_docs.isdisjoint({d})
        else:
            assert b_docs == {d}
            assert max(x.ids[1 : x.a_len - 1]) <= min(x.ids[x.a_len : -1])  # B follows A in sentence order


def test_notnext_is_about_half():
    instances = [x for _, x in _all_instances(max_seq_len=128)]
    assert 0.45 < np.mean([x.label for x in instances]) < 0.55


def test_short_target_drawn_for_about_ten_percent_of_documents():
    rng = np.random.default_rng(0)
    docs = [[[7] * 10 for _ in range(40)] for _ in range(2)]  # 400 tokens: several full instances per document
    firsts = [make_instances(docs, 0, rng, 128, 0.1, cls_id=CLS, sep_id=SEP)[0] for _ in range(6000)]
    # For IsNext pairs a full target (125 tokens) always gives 128 ids; a short one (uniform in [2, 124]) gives
    # fewer unless it is within a sentence (10 tokens) of the top: expected 0.1 * 114 / 123 = 0.093.
    short = np.mean([len(x.ids) < 128 for x in firsts if not x.label])
    assert 0.075 < short < 0.11


def test_single_sentence_documents_and_lone_document_do_not_crash():
    rng = np.random.default_rng(1)
    docs = [[[5, 6, 7, 8]], [[9]], [[11, 12, 13]]]
    instances = [x for d in range(3) for x in make_instances(docs, d, rng, 16, cls_id=CLS, sep_id=SEP)]
    assert instances and all(x.ids[0] == CLS for x in instances)
    alone = make_instances([[[5, 6, 7, 8]]], 0, rng, 16, cls_id=CLS, sep_id=SEP)
    assert len(alone) == 1 and not alone[0].label  # split into IsNext halves
    assert make_instances([[[9]]], 0, rng, 16, cls_id=CLS, sep_id=SEP) == []


def test_make_instances_is_deterministic_for_a_seed():
    assert [x for _, x in _all_instances(seed=3)] == [x for _, x in _all_instances(seed=3)]
    assert [x for _, x in _all_instances(seed=3)] != [x for _, x in _all_instances(seed=4)]


def _batch(rng, rows=2000, width=128):
    ids = rng.integers(1000, VOCAB * 30, size=(rows, width))
    lengths = rng.integers(20, width + 1, size=rows)
    pad = np.arange(width)[None, :] >= lengths[:, None]
    ids[pad] = PAD
    ids[:, 0] = CLS
    ids[np.arange(rows), lengths - 1] = SEP
    special = pad | np.isin(ids, SPECIALS)
    return ids, special


def test_mask_rates_80_10_10_and_specials_never_chosen():
    rng = np.random.default_rng(0)
    ids, special = _batch(rng)
    masked, labels = mask_tokens(ids, special, rng, VOCAB * 30, MASK, special_ids=SPECIALS)
    chosen = labels != IGNORE
    assert not np.any(chosen & special)
    assert abs(chosen.sum() / (~special).sum() - 0.15) < 0.01
    assert np.array_equal(labels[chosen], ids[chosen]) and np.array_equal(masked[~chosen], ids[~chosen])
    as_mask = np.mean(masked[chosen] == MASK)
    unchanged = np.mean(masked[chosen] == ids[chosen])
    assert abs(as_mask - 0.8) < 0.01 and abs(unchanged - 0.1) < 0.01
    assert abs(1 - as_mask - unchanged - 0.1) < 0.01
    assert not np.any(np.isin(masked[chosen & (masked != MASK)], SPECIALS[:2] + SPECIALS[2:4]))


def test_mask_cap_respected_and_one_dimensional_input():
    rng = np.random.default_rng(0)
    ids, special = _batch(rng, rows=50)
    _, labels = mask_tokens(ids, special, rng, VOCAB, MASK, mlm_prob=0.5, max_predictions=7)
    assert (labels != IGNORE).sum(axis=1).max() == 7
    masked, labels = mask_tokens(ids[0], special[0], rng, VOCAB, MASK)
    assert masked.shape == labels.shape == ids[0].shape


def test_whole_word_masking_selects_complete_words():
    rng = np.random.default_rng(0)
    ids, special = _batch(rng, rows=500)
    starts = rng.random(ids.shape) < 0.6
    _, labels = mask_tokens(ids, special, rng, VOCAB, MASK, whole_word=True, word_starts=starts)
    chosen = labels != IGNORE
    assert abs(chosen.sum() / (~special).sum() - 0.15) < 0.01
    word = np.cumsum(starts | special, axis=1)  # word number along each row
    for row in range(len(ids)):
        for w in np.unique(word[row][chosen[row]]):
            members = (word[row] == w) & ~special[row]
            assert chosen[row][members].all()
    with pytest.raises(ValueError, match="word_starts"):
        mask_tokens(ids, special, rng, VOCAB, MASK, whole_word=True)


@pytest.mark.parametrize("whole_word", [False, True])
def test_a_30_percent_masking_rate_is_honoured_by_tokens_and_whole_words(whole_word):
    rng = np.random.default_rng(1)
    ids, special = _batch(rng, rows=500)
    starts = rng.random(ids.shape) < 0.6
    _, labels = mask_tokens(ids, special, rng, VOCAB, MASK, mlm_prob=0.3, whole_word=whole_word, word_starts=starts)
    chosen = labels != IGNORE
    assert abs(chosen.sum() / (~special).sum() - 0.3) < 0.01
    if whole_word:  # a chosen word is chosen whole: no piece of it left unmasked
        word = np.cumsum(starts | special, axis=1)
        partly = [(row, w) for row in range(len(ids)) for w in np.unique(word[row][chosen[row]])
                  if not chosen[row][(word[row] == w) & ~special[row]].all()]
        assert partly == []


@pytest.fixture
def shard_dir(tmp_path):
    rng = np.random.default_rng(0)
    docs = _documents(rng, 40)
    instances = [x for d in range(len(docs)) for x in make_instances(docs, d, rng, 48, cls_id=CLS, sep_id=SEP)]
    instances = [type(x)([i % VOCAB if i not in SPECIALS else i for i in x.ids], x.a_len, x.label)
                 for x in instances]
    continuation = np.zeros(VOCAB, dtype=bool)
    continuation[500:] = True
    half = len(instances) // 2
    entries = [
        write_shard(str(tmp_path / f"shard_{k}.bin"), [x.ids for x in part], [x.a_len for x in part],
                    [x.label for x in part], continuation, np.dtype(np.uint16))
        for k, part in enumerate([instances[:half], instances[half:]])
    ]
    tok = {"fingerprint": "f" * 64, "vocab_size": VOCAB, "special_ids": sorted(SPECIALS), "cls_id": CLS,
           "sep_id": SEP, "pad_id": PAD, "mask_id": MASK, "unk_id": 100}
    write_manifest(str(tmp_path), {"tokenizer": tok, "settings": {"max_seq_len": 48}, "shards": entries})
    return tmp_path, instances


def test_batches_shapes_types_and_labels(shard_dir):
    path, instances = shard_dir
    source = PretrainingBatches(str(path), batch_size=8, seed=0)
    assert source.num_batches(0) == len(instances) // 8
    batch = source.batch(0, 0)
    b, t = batch["input_ids"].shape
    assert b == 8 and t <= 48
    for key in ("token_type_ids", "attention_mask", "mlm_labels"):
        assert batch[key].shape == (b, t)
    assert batch["nsp_labels"].shape == (b,)
    pad = batch["attention_mask"] == 0
    assert (batch["input_ids"][pad] == PAD).all() and (batch["mlm_labels"][pad] == IGNORE).all()
    assert t == int(batch["attention_mask"].sum(1).max())
    assert (batch["mlm_labels"] != IGNORE).any()


def test_batches_are_deterministic_and_epochs_reshuffle(shard_dir):
    path, _ = shard_dir
    a, b = PretrainingBatches(str(path), 4, seed=7), PretrainingBatches(str(path), 4, seed=7)
    for key, value in a.batch(1, 3).items():
        assert value.equal(b.batch(1, 3)[key])
    assert not a.batch(0, 0)["input_ids"].equal(a.batch(1, 0)["input_ids"])


def _visited(source, epoch):
    return np.concatenate([source._rank_order(epoch)[: source.num_batches(epoch) * source.batch_size]])


def test_ranks_take_disjoint_equal_slices(shard_dir):
    path, instances = shard_dir
    ranks = [PretrainingBatches(str(path), 2, seed=0, rank=r, world_size=3, drop_last=False) for r in range(3)]
    counts = {r.num_batches(0) for r in ranks}
    assert len(counts) == 1
    seen = [set(_visited(r, 0).tolist()) for r in ranks]
    assert all(seen[i].isdisjoint(seen[j]) for i in range(3) for j in range(i + 1, 3))
    assert sum(len(s) for s in seen) == len(instances) - len(instances) % 3


def test_holdout_is_the_tail_and_disjoint_from_training(shard_dir):
    path, instances = shard_dir
    train, held = PretrainingBatches(str(path), 4, seed=0).split_holdout(8)
    assert held.indices.tolist() == list(range(len(instances) - 8, len(instances)))
    assert set(train.indices.tolist()).isdisjoint(held.indices.tolist())
    assert held.num_batches(0) == 2
