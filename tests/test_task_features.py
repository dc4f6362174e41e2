"""Fine-tuning features: label alignment, QA windows and decoding, and batching, on a tiny WordPiece vocabulary."""

from pathlib import Path

import numpy as np
import pytest
import torch

from bertkit.config import BertConfig
from bertkit.tasks import classification as cls
from bertkit.tasks import families, qa, tagging
from bertkit.tasks.batches import TaskBatches, collate, model_inputs, sorted_batches
from bertkit.tasks.readers import Answer, QAExample, TaggingExample, TextExample, read_glue
from bertkit.tokenizer import Tokenizer

TASKS = Path(__file__).resolve().parent / "fixtures" / "tasks"
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = """. , - ? eu reject ##s german call 1996 08 22 black ##burn peter visited new york the cat sat on a mat
where was bey ##once born in houston texas she rose to fame late 1990 knowles when did who what good bad film"""


@pytest.fixture(scope="module")
def tok(tmp_path_factory) -> Tokenizer:
    path = tmp_path_factory.mktemp("vocab") / "vocab.txt"
    path.write_text("\n".join(SPECIALS + WORDS.split()) + "\n")
    return Tokenizer.from_pretrained(path)


def ids(tok, *words):
    return [tok.vocab[w] for w in words]


# ---------------------------------------------------------------------------------------------------------
# Classification
# ---------------------------------------------------------------------------------------------------------


def test_pair_features_have_segments_and_standard_glue_label_ids(tok):
    examples = read_glue("rte", TASKS / "rte_train.tsv")
    labels = cls.build_label_list(examples, task="rte")
    assert labels == ["entailment", "not_entailment"]
    features = cls.encode_classification(examples, tok, labels)
    assert [f.label for f in features] == [1, 0]
    f = features[0]
    first_sep = f.input_ids.index(tok.sep_id)
    assert f.input_ids[0] == tok.cls_id and f.input_ids[-1] == tok.sep_id
    assert f.token_type_ids == [0] * (first_sep + 1) + [1] * (len(f.input_ids) - first_sep - 1)
    assert f.targets == {"labels": 1} and f.attention_mask == [1] * len(f.input_ids)


def test_single_sentence_features_and_truncation(tok):
    examples = [TextExample("good film", label="pos"), TextExample("the cat sat on a mat . " * 5, label="neg")]
    labels = cls.build_label_list(examples)
    assert labels == ["neg", "pos"]
    features = cls.encode_classification(examples, tok, labels, max_seq_len=8)
    assert features[0].input_ids == [tok.cls_id, *ids(tok, "good", "film"), tok.sep_id]
    assert len(features[1].input_ids) == 8 and features[1].input_ids[-1] == tok.sep_id
    assert [f.label for f in features] == [1, 0]


def test_regression_keeps_float_labels_and_mnli_uses_the_standard_order(tok):
    examples = read_glue("stsb", TASKS / "stsb_train.tsv")
    assert cls.build_label_list(examples, task="stsb") is None
    assert [f.label for f in cls.encode_classification(examples, tok, None)] == [5.0, 3.8]
    assert cls.build_label_list([], task="mnli") == ["contradiction", "entailment", "neutral"]


def test_label_outside_the_list_names_the_line(tok):
    with pytest.raises(ValueError, match="line 7: label 'maybe' is not in the label list"):
        cls.encode_classification([TextExample("good", label="maybe", line=7)], tok, ["neg", "pos"])


def test_classify_logits_maps_argmax_to_names_and_passes_regression_through():
    result = cls.classify_logits(np.array([0.1, 2.0]), ["neg", "pos"])
    assert result.label == "pos" and result.score == result.probabilities["pos"] > 0.5
    assert sum(result.probabilities.values()) == pytest.approx(1.0, abs=1e-12)
    assert cls.classify_logits(np.array([4.5]), None) == cls.Classification(None, 4.5, {})


# ---------------------------------------------------------------------------------------------------------
# Tagging
# ---------------------------------------------------------------------------------------------------------

SENTENCE = TaggingExample(("EU", "rejects", "1996-08-22", "Blackburn"), ("B-ORG", "O", "O", "B-PER"), line=3)
TAGS = ["O", "B-ORG", "B-PER", "I-PER"]


def test_tag_goes_on_the_first_sub_token_only(tok):
    (feature,) = tagging.encode_tagging([SENTENCE], tok, TAGS)
    # [CLS] eu reject ##s 1996 - 08 - 22 black ##burn [SEP]
    assert feature.input_ids == [tok.cls_id, *ids(tok, "eu", "reject", "##s", "1996", "-", "08", "-", "22",
                                                  "black", "##burn"), tok.sep_id]
    assert feature.labels == [-100, 1, 0, -100, 0, -100, -100, -100, -100, 2, -100, -100]
    assert feature.first_token == [1, 2, 4, 9] and not feature.truncated


def test_long_sentence_is_truncated_counted_and_decodes_lost_words_as_o(tok):
    (feature,) = tagging.encode_tagging([SENTENCE], tok, TAGS, max_seq_len=6)
    assert feature.truncated and len(feature.input_ids) == 6 and feature.input_ids[-1] == tok.sep_id
    assert feature.first_token == [1, 2, 4, -1]
    assert feature.labels == [-100, 1, 0, -100, 0, -100]
    logits = np.zeros((6, len(TAGS)))
    logits[1, 2] = 1.0  # the model says B-PER on "EU"
    assert tagging.decode_tags([feature], [logits], TAGS) == [["B-PER", "O", "O", "O"]]


def test_decode_of_oracle_logits_gives_back_the_gold_tags(tok):
    examples = [SENTENCE, TaggingExample(("Peter", "Blackburn"), ("B-PER", "I-PER"))]
    features = tagging.encode_tagging(examples, tok, TAGS)
    padded = np.zeros((2, 12, len(TAGS)))  # (N, T, C), padded past the shorter sentence
    for n, f in enumerate(features):
        for position, label in enumerate(f.labels):
            padded[n, position, max(label, 0)] = 1.0
    assert tagging.decode_tags(features, padded, TAGS) == [list(e.tags) for e in examples]


def test_unknown_tag_names_the_line(tok):
    with pytest.raises(ValueError, match="line 3: tag 'B-ORG' is not in the tag list"):
        tagging.encode_tagging([SENTENCE], tok, ["O", "B-PER"])


def test_build_tag_list_puts_o_first():
    assert tagging.build_tag_list([SENTENCE]) == ["O", "B-ORG", "B-PER"]


def test_tags_map_back_to_character_spans():
    words, tags = ["Peter", "Blackburn", "visited", "New", "York", "."], ["B-PER", "I-PER", "O", "B-LOC", "I-LOC", "O"]
    joined = tagging.tags_to_spans(words, tags)
    assert joined == [
        tagging.EntitySpan("PER", 0, 15, "Peter Blackburn"), tagging.EntitySpan("LOC", 24, 32, "New York")]
    text = "Peter  Blackburn visited\tNew York."
    original = tagging.tags_to_spans(words, tags, text=text)
    assert [(s.start, s.end, s.text) for s in original] == [(0, 16, "Peter  Blackburn"), (25, 33, "New York")]
    with pytest.raises(ValueError, match="word 'York' not found"):
        tagging.tags_to_spans(words, tags, text="Peter Blackburn visited New Jersey.")


# ---------------------------------------------------------------------------------------------------------
# Question answering
# ---------------------------------------------------------------------------------------------------------

FILLER = "the cat sat on a mat . "
LONG_CONTEXT = FILLER * 3 + "she was born in houston , texas . " + FILLER * 3
LONG = QAExample("long", "where was she born ?", LONG_CONTEXT,
                 (Answer("houston , texas", LONG_CONTEXT.index("houston")),))
ACCENTED_CONTEXT = "Beyoncé  Knowles was born in Houston,  Texas.   She rose to fame in the late 1990s."
ACCENTED = QAExample("bey", "Where was Beyoncé born?", ACCENTED_CONTEXT,
                     (Answer("Houston,  Texas", ACCENTED_CONTEXT.index("Houston")),))


def _span_text(example, feature):
    return example.context[feature.offsets[feature.start_position][0] : feature.offsets[feature.end_position][1]]


def test_windows_overlap_by_the_stride_and_contain_the_answer(tok):
    features = qa.encode_qa([LONG], tok, max_seq_len=24, doc_stride=5, max_query_len=8)
    question = ids(tok, "where", "was", "she", "born", "?")
    question_len = len(question)
    window = 24 - question_len - 3
    first_context = [f.offsets[question_len + 2][0] for f in features]
    passage = tok.encode(LONG_CONTEXT, add_special_tokens=False)
    assert first_context == [passage.offsets[i][0] for i in range(0, len(passage.ids) - window + 5, 5)][: len(features)]
    assert all(len(f.input_ids) <= 24 for f in features) and len(features) > 3
    with_answer = [f for f in features if f.start_position > 0]
    assert len(with_answer) >= 2  # the answer sits whole in several overlapping windows
    assert all(_span_text(LONG, f) == "houston , texas" for f in with_answer)
    assert all((f.start_position, f.end_position) == (0, 0) for f in features if f not in with_answer)
    for f in features:
        assert f.input_ids[: question_len + 2] == [tok.cls_id, *question, tok.sep_id]
        assert f.token_type_ids == [0] * (question_len + 2) + [1] * (len(f.input_ids) - question_len - 2)


def test_window_starts_cover_the_passage():
    assert qa.window_starts(10, 4, 3) == [0, 3, 6]
    assert qa.window_starts(3, 4, 3) == [0]
    assert qa.window_starts(10, 4, 9) == [0, 4, 8]  # a stride beyond the window would skip tokens


def test_question_is_cut_to_max_query_len(tok):
    (feature,) = qa.encode_qa([ACCENTED], tok, max_query_len=2)
    assert feature.input_ids[:4] == [tok.cls_id, *ids(tok, "where", "was"), tok.sep_id]


def _oracle_logits(features, example, low=0.0):
    """Logits that put 10 on the gold start and end of every window holding the answer."""
    starts, ends = [], []
    for f in features:
        s, e = np.full(len(f.input_ids) + 3, low), np.full(len(f.input_ids) + 3, low)  # + padding
        if f.start_position > 0:
            s[f.start_position], e[f.end_position] = 10.0, 10.0
        starts.append(s)
        ends.append(e)
    return starts, ends


@pytest.mark.parametrize("example", [LONG, ACCENTED], ids=["long", "accented"])
def test_oracle_logits_decode_to_the_gold_text_and_offsets(tok, example):
    features = qa.encode_qa([example], tok, max_seq_len=24, doc_stride=5, max_query_len=8)
    starts, ends = _oracle_logits(features, example)
    result = qa.decode_qa([example], features, starts, ends)
    gold = example.answers[0]
    assert result.answers == {example.id: gold.text}
    prediction = result.details[example.id]
    assert (prediction.start_char, prediction.end_char) == (gold.answer_start, gold.answer_start + len(gold.text))
    assert prediction.score == 20.0


def test_spans_never_use_question_tokens_or_exceed_max_answer_len(tok):
    (feature,) = qa.encode_qa([ACCENTED], tok)
    start, end = np.zeros(len(feature.input_ids)), np.zeros(len(feature.input_ids))
    start[2], end[3] = 50.0, 50.0  # question tokens
    houston = next(i for i, o in enumerate(feature.offsets) if o and ACCENTED_CONTEXT[o[0] : o[1]] == "Houston")
    start[houston], end[houston + 2], end[houston + 6] = 5.0, 4.0, 6.0
    result = qa.decode_qa([ACCENTED], [feature], [start], [end], max_answer_len=3)
    assert result.answers == {"bey": "Houston,  Texas"}
    result = qa.decode_qa([ACCENTED], [feature], [start], [end], max_answer_len=30)
    assert result.answers["bey"] == "Houston,  Texas.   She rose to"  # tokens houston .. to: 7 tokens


def test_squad2_null_answer_compares_cls_score_with_threshold(tok):
    (feature,) = qa.encode_qa([ACCENTED], tok)
    start, end = np.zeros(len(feature.input_ids)), np.zeros(len(feature.input_ids))
    start[0], end[0] = 5.0, 5.0  # null score 10
    houston = next(i for i, o in enumerate(feature.offsets) if o and ACCENTED_CONTEXT[o[0] : o[1]] == "Houston")
    start[houston], end[houston] = 4.0, 4.0  # best span 8
    decode = lambda **kw: qa.decode_qa([ACCENTED], [feature], [start], [end], **kw).details["bey"]
    assert decode().text == "Houston"  # SQuAD 1.1: always a span
    assert decode(allow_no_answer=True) == qa.QAPrediction("", -1, -1, 8.0, 10.0)
    assert decode(allow_no_answer=True, null_score_diff_threshold=2.5).text == "Houston"


def test_unanswerable_question_targets_cls(tok):
    example = QAExample("none", "Who was born?", ACCENTED_CONTEXT, (), is_impossible=True)
    (feature,) = qa.encode_qa([example], tok)
    assert (feature.start_position, feature.end_position) == (0, 0)


def test_query_longer_than_window_is_rejected(tok):
    with pytest.raises(ValueError, match="max_seq_len 64 leaves no room"):
        qa.encode_qa([ACCENTED], tok, max_seq_len=64, max_query_len=64)


# ---------------------------------------------------------------------------------------------------------
# Batches
# ---------------------------------------------------------------------------------------------------------


def _features(n):
    """Feature i has label i (so batches reveal the order) and length 2 + i % 5."""
    return [cls.ClassificationFeature([2] + [10 + i] * (i % 5) + [3], [0] * (2 + i % 5), i) for i in range(n)]


def _order(source, epoch):
    return [i for k in range(source.num_batches(epoch)) for i in source.batch(epoch, k)["labels"].tolist()]


def test_batches_are_deterministic_and_reshuffled_each_epoch():
    features = _features(20)
    a, b = TaskBatches(features, 4, seed=1), TaskBatches(features, 4, seed=1)
    assert a.num_batches(0) == 5
    for key, value in a.batch(0, 2).items():
        assert torch.equal(value, b.batch(0, 2)[key])
    assert sorted(_order(a, 0)) == list(range(20))
    assert _order(a, 0) != _order(a, 1) and _order(a, 0) != _order(TaskBatches(features, 4, seed=2), 0)
    assert _order(b, 1) == _order(a, 1)  # any batch can be rebuilt, in any order of calls
    assert _order(TaskBatches(features, 4, seed=1, shuffle=False), 0) == list(range(20))
    with pytest.raises(IndexError):
        a.batch(0, 5)


def test_ranks_split_features_and_step_in_lockstep():
    features = _features(7)
    ranks = [TaskBatches(features, 2, seed=3, rank=r, world_size=2) for r in range(2)]
    assert [r.num_batches(0) for r in ranks] == [2, 2]
    seen = _order(ranks[0], 0) + _order(ranks[1], 0)
    assert sorted(set(seen)) == list(range(7)) and len(seen) == 8  # one feature repeated to even the ranks up


def test_batch_pads_to_its_longest_sequence():
    batch = TaskBatches(_features(10), 10, seed=0).batch(0, 0)
    lengths = batch["attention_mask"].sum(dim=1)
    assert batch["input_ids"].shape == (10, 6) and sorted(lengths.tolist()) == sorted([2 + i % 5 for i in range(10)])
    assert (batch["input_ids"][batch["attention_mask"] == 0] == 0).all()


def test_collate_pads_to_the_longest_and_types_targets():
    batch = collate([cls.ClassificationFeature([2, 7, 3], [0, 0, 0], 1), cls.ClassificationFeature([2, 3], [0, 0], 0)],
                    pad_id=0)
    assert batch["input_ids"].tolist() == [[2, 7, 3], [2, 3, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert batch["labels"].dtype == torch.long
    regression = collate([cls.ClassificationFeature([2, 3], [0, 0], 4.5)])
    assert regression["labels"].dtype == torch.float32
    tags = collate([tagging.TaggingFeature([2, 5, 3], [0] * 3, [1], [-100, 1, -100]),
                    tagging.TaggingFeature([2, 3], [0] * 2, [], [-100, -100])])
    assert tags["labels"].tolist() == [[-100, 1, -100], [-100, -100, -100]]
    spans = collate([qa.QAFeature([2, 3], [0, 1], 0, [None, None], 1, 1)])
    assert spans["start_positions"].tolist() == [1] and spans["end_positions"].tolist() == [1]


def test_token_types_are_left_out_for_a_model_without_them():
    features = [cls.ClassificationFeature([2, 7, 3], [0, 1, 1], 1), cls.ClassificationFeature([2, 3], [0, 0], 0)]
    assert "token_type_ids" not in collate(features, token_types=False)
    assert "token_type_ids" not in TaskBatches(features, 2, seed=0, token_types=False).batch(0, 0)
    assert all("token_type_ids" not in b for _, b in sorted_batches(features, 1, token_types=False))
    distilbert, bert = BertConfig.preset("tiny", arch="distilbert"), BertConfig.preset("tiny")
    assert not distilbert.has_token_types and bert.has_token_types
    assert BertConfig.preset("tiny", arch="roberta").has_token_types  # one type, all zeros: still an input
    batch = collate(features)
    assert set(model_inputs(batch, distilbert)) == {"input_ids", "attention_mask", "labels"}
    assert model_inputs(batch, bert) is batch


def test_every_variants_task_class_name_maps_to_its_family():
    assert families.head_class("RobertaForSequenceClassification") == "BertForSequenceClassification"
    assert families.head_class("DistilBertForTokenClassification") == "BertForTokenClassification"
    assert families.head_class("AlbertForQuestionAnswering") == "BertForQuestionAnswering"
    assert families.head_class("BertForQuestionAnswering") == "BertForQuestionAnswering"
    assert families.head_class("RobertaForMaskedLM") is None and families.head_class("GPT2ForQuestionAnswering") is None
    labels = {"id2label": {"0": "neg", "1": "pos"}}
    spec = families.TaskSpec.from_config({"architectures": ["DistilBertForSequenceClassification"], **labels}, "x")
    assert spec.task == "classify" and spec.labels == ("neg", "pos")
    tagger = families.TaskSpec.from_config({"architectures": ["AlbertForTokenClassification"], **labels}, "x")
    assert tagger.task == "tag"
    with pytest.raises(ValueError, match="x: not a fine-tuned model .architecture 'RobertaForMaskedLM'"):
        families.TaskSpec.from_config({"architectures": ["RobertaForMaskedLM"]}, "x")


def test_collate_refuses_to_mix_labelled_and_unlabelled():
    with pytest.raises(ValueError, match="mixes labelled and unlabelled"):
        collate([cls.ClassificationFeature([2], [0], 1), cls.ClassificationFeature([2], [0], None)])


def test_sorted_batches_go_longest_first_and_return_original_indices():
    features = _features(11)
    seen, lengths = [], []
    for indices, batch in sorted_batches(features, 4):
        seen += indices
        lengths += [len(features[i].input_ids) for i in indices]
        assert batch["input_ids"].shape == (len(indices), len(features[indices[0]].input_ids))
    assert sorted(seen) == list(range(11)) and lengths == sorted(lengths, reverse=True)


@pytest.mark.realdata
def test_real_squad_oracle_logits_recover_the_gold_answers(shared_data, minilm_dir):
    """With a real vocabulary, targets set by encode_qa decode back to the gold text; the rare misses are answers
    that end inside a word piece ("six" of "sixth"), which a span of whole tokens cannot express."""
    from bertkit.tasks.metrics import squad_scores
    from bertkit.tasks.readers import read_squad

    examples = read_squad(shared_data / "squad" / "train-v2.0.json.gz")[0][:3000:3]  # answerable and not
    features = qa.encode_qa(examples, Tokenizer.from_pretrained(minilm_dir))
    starts, ends = [], []
    for f in features:
        s, e = np.zeros(len(f.input_ids)), np.zeros(len(f.input_ids))
        s[f.start_position] += 10.0
        e[f.end_position] += 10.0
        starts.append(s)
        ends.append(e)
    answers = qa.decode_qa(examples, features, starts, ends, allow_no_answer=True).answers
    scores = squad_scores(answers, {x.id: [a.text for a in x.answers] for x in examples})
    assert scores["NoAns_exact"] == 1.0 and scores["HasAns_exact"] > 0.98
