"""Each metric against values worked out by hand (the arithmetic is in the comments)."""

import math

import numpy as np
import pytest

from bertkit.tasks import metrics as m


def test_accuracy_counts_matches():
    assert m.accuracy([1, 0, 1, 1], [1, 1, 1, 0]) == 0.5


def test_metrics_reject_length_mismatch_and_empty_input():
    with pytest.raises(ValueError, match="differ in length: 2 != 3"):
        m.accuracy([1, 0], [1, 0, 1])
    with pytest.raises(ValueError, match="empty"):
        m.pearson([], [])


def test_binary_f1():
    # tp=2, predicted positives=3, true positives=3 -> p = r = 2/3 -> F1 = 2/3
    assert m.f1_binary([1, 1, 0, 0, 1], [1, 0, 1, 0, 1]) == pytest.approx(2 / 3)
    assert m.f1_binary(["yes", "no"], ["yes", "yes"], positive="yes") == pytest.approx(2 / 3)


def test_binary_f1_is_zero_when_nothing_is_predicted_positive():
    assert m.f1_binary([0, 0, 0], [1, 0, 1]) == 0.0


def test_macro_f1_averages_per_class_f1():
    # class 0: F1 1; class 1: p=1, r=1/2 -> 2/3; class 2: p=1/2, r=1 -> 2/3; mean = 7/9
    assert m.f1_macro([0, 1, 2, 2], [0, 1, 1, 2]) == pytest.approx(7 / 9)


def test_confusion_matrix_rows_are_true_classes():
    np.testing.assert_array_equal(m.confusion_matrix([0, 1, 1], [0, 0, 1], 2), [[1, 1], [0, 1]])


def test_matthews_binary_by_hand():
    # TP=2 FP=1 FN=1 TN=1: (2*1 - 1*1) / sqrt(3*3*2*2) = 1/6
    assert m.matthews_corrcoef([1, 1, 0, 0, 1], [1, 0, 1, 0, 1]) == pytest.approx(1 / 6)
    assert m.matthews_corrcoef([1, 0, 1], [1, 0, 1]) == pytest.approx(1.0)
    assert m.matthews_corrcoef([0, 1, 0], [1, 0, 1]) == pytest.approx(-1.0)


def test_matthews_is_zero_when_undefined():
    assert m.matthews_corrcoef([1, 1, 1, 1], [1, 0, 1, 0]) == 0.0
    assert m.matthews_corrcoef([1, 0, 1], [1, 1, 1]) == 0.0


def test_matthews_multiclass_matches_gorodkin_formula():
    # cm = [[1,1,0],[0,1,0],[0,0,1]], n=4, correct=3, true counts t=(2,1,1), pred counts p=(1,2,1)
    # (3*4 - t.p) / sqrt((16 - p.p)(16 - t.t)) = (12 - 5) / sqrt(10 * 10) = 0.7
    assert m.matthews_corrcoef([0, 1, 1, 2], [0, 0, 1, 2]) == pytest.approx(0.7)


def test_pearson_by_hand():
    # x-mean = (-1,0,1), y-mean = (-7/3,-1/3,8/3): 5 / sqrt(2 * 114/9) = 15 / sqrt(228)
    assert m.pearson([1, 2, 3], [2, 4, 7]) == pytest.approx(15 / math.sqrt(228))
    assert m.pearson([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)


def test_pearson_of_a_constant_is_zero():
    assert m.pearson([1, 1, 1], [1, 2, 3]) == 0.0


def test_average_ranks_share_ties():
    np.testing.assert_allclose(m.average_ranks([10, 20, 20, 5]), [2, 3.5, 3.5, 1])


def test_spearman_with_ties_uses_average_ranks():
    # ranks x = (1, 2.5, 2.5, 4), y = (1, 3, 2, 4): 4.5 / sqrt(4.5 * 5) = 3 / sqrt(10)
    assert m.spearman([1, 2, 2, 3], [1, 3, 2, 4]) == pytest.approx(3 / math.sqrt(10))
    assert m.spearman([1, 2, 3, 4], [1, 4, 9, 16]) == pytest.approx(1.0)  # monotone, not linear


def test_normalize_answer_follows_squad():
    assert m.normalize_answer("The  Cat's, hat!") == "cats hat"
    assert m.normalize_answer("An apple a day") == "apple day"
    assert m.normalize_answer("theatre") == "theatre"  # articles only as whole words


def test_squad_f1_counts_token_overlap():
    # pred (cat, sat) vs gold (cat, sat, down): p = 1, r = 2/3 -> F1 = 0.8
    assert m.squad_f1("the cat sat", ["a cat sat down"]) == pytest.approx(0.8)
    assert m.squad_exact_match("the cat sat", ["a cat sat down"]) == 0.0


def test_squad_scores_take_the_best_gold_answer():
    assert m.squad_exact_match("houston", ["Houston, Texas", "Houston"]) == 1.0
    assert m.squad_f1("Houston", ["Houston, Texas", "Dallas"]) == pytest.approx(2 / 3)


def test_squad_v2_empty_gold_only_matches_empty_prediction():
    assert m.squad_exact_match("", []) == 1.0
    assert m.squad_f1("", []) == 1.0
    assert m.squad_exact_match("Paris", []) == 0.0
    assert m.squad_f1("Paris", []) == 0.0
    assert m.squad_f1("", ["Paris"]) == 0.0


def test_squad_dataset_scores_split_has_and_no_answer():
    gold = {"a": ["Paris"], "b": [], "c": [], "d": ["the Seine river"]}
    preds = {"a": "paris", "b": "", "c": "Lyon", "d": "Seine"}
    # a: EM 1; d: EM 0, F1 p=1 r=1/2 -> 2/3; b: 1; c: 0
    scores = m.squad_scores(preds, gold)
    assert scores["HasAns_exact"] == pytest.approx(0.5)
    assert scores["HasAns_f1"] == pytest.approx((1 + 2 / 3) / 2)
    assert scores["NoAns_exact"] == pytest.approx(0.5)
    assert scores["exact"] == pytest.approx(2 / 4)
    assert scores["f1"] == pytest.approx((1 + 2 / 3 + 1) / 4)
    assert scores["total"] == 4 and scores["HasAns_total"] == 2 and scores["missing"] == 0


def test_squad_missing_prediction_scores_zero():
    scores = m.squad_scores({"a": "Paris"}, {"a": ["Paris"], "b": ["Rome"]})
    assert scores["exact"] == 0.5 and scores["missing"] == 1
    assert "NoAns_exact" not in scores


def test_get_entities_reads_iob2():
    tags = ["B-PER", "I-PER", "O", "B-LOC", "B-LOC", "I-LOC"]
    assert m.get_entities(tags) == [("PER", 0, 1), ("LOC", 3, 3), ("LOC", 4, 5)]


def test_get_entities_reads_iob1_and_loose_starts_like_conlleval():
    assert m.get_entities(["I-PER", "I-PER", "B-PER", "O", "I-LOC"]) == [
        ("PER", 0, 1), ("PER", 2, 2), ("LOC", 4, 4)]
    assert m.get_entities(["B-PER", "I-LOC", "I-LOC"]) == [("PER", 0, 0), ("LOC", 1, 2)]


def test_get_entities_rejects_unknown_tags():
    with pytest.raises(ValueError, match="'E-PER'"):
        m.get_entities(["E-PER"])


def test_entity_scores_overall_and_per_type():
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "I-ORG"]]
    pred = [["B-PER", "I-PER", "O", "B-ORG"], ["B-ORG", "O"]]
    # gold: PER(0-1) LOC(3) ORG(0-1); pred: PER(0-1) ORG(3) ORG(0); correct: PER only
    scores = m.entity_scores(gold, pred)
    assert scores.overall == m.PRF(precision=1 / 3, recall=1 / 3, f1=pytest.approx(1 / 3), support=3)
    assert scores.per_type["PER"] == m.PRF(1.0, 1.0, 1.0, 1)
    assert scores.per_type["LOC"] == m.PRF(0.0, 0.0, 0.0, 1)
    assert scores.per_type["ORG"] == m.PRF(0.0, 0.0, 0.0, 1)


def test_entity_scores_without_predictions_are_zero_not_an_error():
    scores = m.entity_scores([["B-PER", "O"]], [["O", "O"]])
    assert scores.overall == m.PRF(0.0, 0.0, 0.0, 1)


def test_entity_scores_reject_ragged_sentences():
    with pytest.raises(ValueError, match="sentence 0: 2 gold tags but 1 predicted"):
        m.entity_scores([["O", "O"]], [["O"]])
