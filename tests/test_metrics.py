"""Metric functions against values worked out by hand (arithmetic in the comments)."""

import math

import numpy as np
import pytest

from experiments.metrics import (
    GLUE_MAIN_METRIC,
    GLUE_TASKS,
    glue_metrics,
    normalize_answer,
    rouge_metrics,
    split_sentences,
    squad_exact_match,
    squad_f1,
    squad_metrics,
)

# --------------------------------------------------------------------------------------- GLUE


def test_cola_mcc_from_confusion_matrix():
    # TP=3, TN=2, FP=1, FN=1:
    # MCC = (TP*TN - FP*FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN)) = (6 - 1) / sqrt(4*4*3*3) = 5/12
    references = [1, 1, 1, 1, 0, 0, 0]
    predictions = [1, 1, 1, 0, 0, 0, 1]
    result = glue_metrics("cola", predictions, references)
    assert result.keys() == {"matthews_correlation"}
    assert result["matthews_correlation"] == pytest.approx(100 * 5 / 12)


def test_stsb_monotone_nonlinear():
    # y = x^2 on x = 1..4: same ranks, so Spearman = 1.
    # Pearson: dx = (-1.5, -0.5, 0.5, 1.5), dy = (-6.5, -3.5, 1.5, 8.5) around means 2.5, 7.5;
    # sum dx*dy = 9.75 + 1.75 + 0.75 + 12.75 = 25, sum dx^2 = 5, sum dy^2 = 129 -> r = 25/sqrt(645).
    pearson = 100 * 25 / math.sqrt(645)
    result = glue_metrics("stsb", np.array([1.0, 2.0, 3.0, 4.0]), np.array([1.0, 4.0, 9.0, 16.0]))
    assert result.keys() == {"pearson", "spearmanr", "combined_score"}
    assert result["pearson"] == pytest.approx(pearson)
    assert result["pearson"] < 100
    assert result["spearmanr"] == pytest.approx(100.0)
    assert result["combined_score"] == pytest.approx((pearson + 100) / 2)


@pytest.mark.parametrize("task", ["mrpc", "qqp", "glue_mrpc"])
def test_mrpc_qqp_accuracy_and_positive_class_f1(task):
    # TP=2 (idx 0,1), FP=2 (idx 2,3), FN=1 (idx 4), TN=1 (idx 5).
    # accuracy = 3/6; precision = 2/4, recall = 2/3, F1 = 2TP/(2TP+FP+FN) = 4/7.
    references = [1, 1, 0, 0, 1, 0]
    predictions = [1, 1, 1, 1, 0, 0]
    result = glue_metrics(task, predictions, references)
    assert result.keys() == {"accuracy", "f1", "combined_score"}
    assert result["accuracy"] == pytest.approx(50.0)
    assert result["f1"] == pytest.approx(100 * 4 / 7)
    assert result["combined_score"] == pytest.approx((50 + 100 * 4 / 7) / 2)


@pytest.mark.parametrize("task", ["sst2", "mnli", "qnli", "rte", "glue_rte"])
def test_accuracy_tasks(task):
    # 3 of 4 correct (MNLI has three classes).
    result = glue_metrics(task, np.array([0, 1, 2, 1]), np.array([0, 1, 2, 0]))
    assert result == {"accuracy": pytest.approx(75.0)}


def test_main_metric_is_reported_for_every_task():
    assert set(GLUE_MAIN_METRIC) == set(GLUE_TASKS)
    assert GLUE_MAIN_METRIC["cola"] == "matthews_correlation"
    assert GLUE_MAIN_METRIC["stsb"] == "combined_score"
    assert GLUE_MAIN_METRIC["mrpc"] == GLUE_MAIN_METRIC["qqp"] == "accuracy"
    for task in GLUE_TASKS:
        predictions = [0.5, 1.5, 2.5] if task == "stsb" else [0, 1, 1]
        assert GLUE_MAIN_METRIC[task] in glue_metrics(
            task, predictions, [0.0, 1.0, 1.0] if task == "stsb" else [0, 1, 0]
        )


@pytest.mark.parametrize(
    ("task", "predictions", "references", "message"),
    [
        ("wnli", [0], [0], "Unknown GLUE task 'wnli'.*cola"),
        ("rte", [0, 1], [0], "2 predictions but 1 references"),
        ("rte", [], [], "no predictions"),
        ("rte", [[0.1, 0.9]], [1], "must be 1-D"),
        ("cola", [0.3, 0.9], [0, 1], "integer class ids"),
    ],
)
def test_glue_bad_inputs(task, predictions, references, message):
    with pytest.raises(ValueError, match=message):
        glue_metrics(task, predictions, references)


# -------------------------------------------------------------------------------------- SQuAD


@pytest.mark.parametrize(
    ("raw", "normalized"),
    [
        ("The  Cat!", "cat"),
        ("an apple and a pear", "apple and pear"),
        ("Theatre, the  end.", "theatre end"),  # articles only as whole words
        ("U.S.-based (1990)", "usbased 1990"),
        ("  \tA\n", ""),
    ],
)
def test_normalize_answer(raw, normalized):
    assert normalize_answer(raw) == normalized


def test_exact_match_and_f1_by_hand():
    assert squad_exact_match("The Eiffel Tower.", ["eiffel tower"]) == 1.0
    assert squad_exact_match("Eiffel", ["eiffel tower"]) == 0.0
    # "big red dog" vs "red dog barked": 2 common tokens; P = 2/3, R = 2/3 -> F1 = 2/3.
    assert squad_f1("the big red dog", ["red dog barked"]) == pytest.approx(2 / 3)
    # Repeated tokens count once per occurrence in both: common = 1, P = 1/3, R = 1 -> F1 = 1/2.
    assert squad_f1("dog dog dog", ["dog"]) == pytest.approx(0.5)
    assert squad_f1("cat", ["dog"]) == 0.0


def test_max_over_gold_answers():
    golds = ["blue cat", "red dog barked", "big red dog!"]
    assert squad_exact_match("the big red dog", golds) == 1.0
    assert squad_f1("the big red dog", golds) == 1.0
    assert squad_f1("red dog", ["red dog barked", "blue cat"]) == pytest.approx(0.8)  # P=1, R=2/3


def test_no_answer_golds():
    assert squad_exact_match("", []) == 1.0
    assert squad_f1("", []) == 1.0
    assert squad_exact_match("Paris", []) == 0.0
    assert squad_f1("Paris", []) == 0.0


def test_squad_v2_overall_and_split():
    references = {"q1": ["Paris"], "q2": [], "q3": [], "q4": ["red dog barked"]}
    predictions = {"q1": "paris", "q2": "", "q3": "something", "q4": "the big red dog"}
    # EM: q1 1, q2 1, q3 0, q4 0.   F1: q1 1, q2 1, q3 0, q4 2/3.
    result = squad_metrics(predictions, references, version_2=True)
    assert result == pytest.approx(
        {
            "exact": 50.0,
            "f1": 100 * (2 + 2 / 3) / 4,
            "HasAns_exact": 50.0,
            "HasAns_f1": 100 * (1 + 2 / 3) / 2,
            "HasAns_total": 2.0,
            "NoAns_exact": 50.0,
            "NoAns_f1": 50.0,
            "NoAns_total": 2.0,
        }
    )


def test_squad_v2_omits_empty_group_and_v1_has_no_groups():
    references = {"q1": ["Paris"], "q2": ["London", "the city of London"]}
    predictions = {"q1": "Paris", "q2": "city of london"}
    v2 = squad_metrics(predictions, references, version_2=True)
    assert v2 == {"exact": 100.0, "f1": 100.0, "HasAns_exact": 100.0, "HasAns_f1": 100.0, "HasAns_total": 2.0}
    assert squad_metrics(predictions, references, version_2=False) == {"exact": 100.0, "f1": 100.0}


def test_squad_missing_prediction_counts_as_wrong_and_extra_ids_are_ignored():
    references = {"q1": ["Paris"], "q2": ["London"], "q3": []}
    predictions = {"q1": "Paris", "unknown": "x"}
    result = squad_metrics(predictions, references, version_2=True)
    # Only q1 is right: 1 of 3. q3 (unanswerable) has no prediction, which is not an abstention.
    assert result["exact"] == pytest.approx(100 / 3)
    assert result["NoAns_exact"] == 0.0


@pytest.mark.parametrize(
    ("references", "version_2", "message"),
    [
        ({}, False, "references is empty"),
        ({"q1": []}, False, "only SQuAD v2.0 allows"),
        ({"q1": "Paris"}, True, "must be a list of answers"),
    ],
)
def test_squad_bad_inputs(references, version_2, message):
    with pytest.raises(ValueError, match=message):
        squad_metrics({"q1": "Paris"}, references, version_2=version_2)


def test_squad_answer_string_instead_of_list_is_rejected():
    with pytest.raises(ValueError, match="list of answer strings"):
        squad_f1("Paris", "Paris")


# ------------------------------------------------------------------------------ sentence split


@pytest.mark.parametrize(
    ("text", "sentences"),
    [
        # "Mr." is an abbreviation; "p.m." is followed by a lower-case word, so neither splits.
        (
            "Mr. Smith went to Washington. He arrived at 5 p.m. on Monday.",
            ["Mr. Smith went to Washington.", "He arrived at 5 p.m. on Monday."],
        ),
        ("Is it? Yes! It is.", ["Is it?", "Yes!", "It is."]),
        ('He said "Stop." Then he left.', ['He said "Stop."', "Then he left."]),
        ("Dr. J. Watson lives in the U.S. with Mrs. Hudson, e.g. on Baker St. 221B.", None),
        ("Line one\nLine two. 3 more", ["Line one", "Line two.", "3 more"]),
        ("pi is 3.14 today. yes", ["pi is 3.14 today. yes"]),  # no split before lower case
        ("", []),
    ],
)
def test_split_sentences(text, sentences):
    assert split_sentences(text) == (sentences if sentences is not None else [text])


# -------------------------------------------------------------------------------------- ROUGE


def test_rouge_identical_is_100():
    text = "The cat sat on the mat. It was happy."
    assert rouge_metrics([text], [text]) == pytest.approx(
        {"rouge1": 100.0, "rouge2": 100.0, "rougeL": 100.0, "rougeLsum": 100.0}
    )


def test_rouge1_with_stemming_by_hand():
    # Tokens (Porter stem for words longer than 3 letters): "cats running" -> cat run; "cat runs" -> cat run.
    assert rouge_metrics(["cats running"], ["cat runs"])["rouge1"] == pytest.approx(100.0)
    # pred: the cat were run; ref: a cat run fast -> 2 common of 4 and 4: P = R = 1/2 -> F = 50.
    # Bigrams: (the cat)(cat were)(were run) vs (a cat)(cat run)(run fast) -> none shared.
    result = rouge_metrics(["the cats were running"], ["a cat runs fast"])
    assert result["rouge1"] == pytest.approx(50.0)
    assert result["rouge2"] == pytest.approx(0.0)


def test_rouge_lsum_rewards_reordered_sentences():
    # rougeL: one LCS over all 8 tokens; "the cat sat down" and "a dog ran away" are swapped, so
    # the LCS keeps only one sentence: 4/8 -> F = 50. rougeLsum: union-LCS per reference sentence
    # finds each sentence intact in the prediction: 8/8 -> F = 100.
    reference = "The cat sat down. A dog ran away."
    prediction = "A dog ran away. The cat sat down."
    result = rouge_metrics([prediction], [reference])
    assert result["rougeL"] == pytest.approx(50.0)
    assert result["rougeLsum"] == pytest.approx(100.0)
    assert result["rougeLsum"] > result["rougeL"]


def test_rouge_is_mean_over_examples():
    result = rouge_metrics(["cat sat", "totally different"], ["cat sat", "nothing shared here"])
    assert result["rouge1"] == pytest.approx(50.0)  # (100 + 0) / 2


@pytest.mark.parametrize(
    ("predictions", "references", "message"),
    [
        (["a", "b"], ["a"], "2 predictions but 1 references"),
        ([], [], "no predictions"),
        ("a cat", "a cat", "lists of strings"),
    ],
)
def test_rouge_bad_inputs(predictions, references, message):
    with pytest.raises(ValueError, match=message):
        rouge_metrics(predictions, references)
