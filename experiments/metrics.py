"""Evaluation metrics for the paper's benchmarks, as pure functions of predictions and references.

Every number is reported in percent (0-100), the unit of the paper's tables, so that results
files can be compared with the paper without a conversion step. Nothing here downloads
anything: GLUE metrics come from scikit-learn / scipy, SQuAD scoring re-implements the logic
of the official v1.1 / v2.0 evaluation scripts, and ROUGE uses the ``rouge-score`` package
with a regex sentence splitter in place of nltk's punkt model (which would need a download).
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Mapping, Sequence
from decimal import Decimal, InvalidOperation

import numpy as np
from numpy.typing import ArrayLike

# scipy, scikit-learn and rouge-score (which pulls in nltk) are imported by the functions that score
# with them: together they cost seconds, and every ``python -m experiments.run`` imports this module.

# ---------------------------------------------------------------------------------------------
# GLUE
# ---------------------------------------------------------------------------------------------

GLUE_TASKS = ("cola", "sst2", "mrpc", "qqp", "stsb", "mnli", "qnli", "rte")

# The number the paper's Table 1 reports for each task (MNLI's m/mm split is named by the caller).
GLUE_MAIN_METRIC: dict[str, str] = {
    "cola": "matthews_correlation",
    "sst2": "accuracy",
    "mrpc": "accuracy",
    "qqp": "accuracy",
    "stsb": "combined_score",
    "mnli": "accuracy",
    "qnli": "accuracy",
    "rte": "accuracy",
}


def _glue_task_name(task: str) -> str:
    """Accept both ``cola`` and ``glue_cola``: configs use the prefixed form, datasets the bare one."""
    name = task.removeprefix("glue_")
    if name not in GLUE_TASKS:
        raise ValueError(
            f"Unknown GLUE task {task!r}; expected one of {list(GLUE_TASKS)} (optionally 'glue_'-prefixed)"
        )
    return name


def _as_vectors(task: str, predictions: ArrayLike, references: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Check shapes up front so a caller passing logits or a truncated split fails loudly, not silently."""
    preds, refs = np.asarray(predictions), np.asarray(references)
    if preds.ndim != 1 or refs.ndim != 1:
        raise ValueError(
            f"{task}: predictions and references must be 1-D, got shapes {preds.shape} and {refs.shape} "
            "(argmax the logits before calling glue_metrics)"
        )
    if len(preds) != len(refs):
        raise ValueError(f"{task}: {len(preds)} predictions but {len(refs)} references")
    if len(preds) == 0:
        raise ValueError(f"{task}: no predictions to score")
    return preds, refs


def _check_class_ids(task: str, preds: np.ndarray) -> None:
    """Classification metrics on float scores would silently threshold them; require class ids."""
    if not np.all(np.mod(preds, 1) == 0):
        raise ValueError(
            f"{task}: predictions must be integer class ids, got non-integer values such as {preds[0]!r}"
        )


def _stsb_metrics(preds: np.ndarray, refs: np.ndarray) -> dict[str, float]:
    """Pearson and Spearman; a constant prediction vector has no correlation and yields NaN, as in HF."""
    from scipy.stats import pearsonr, spearmanr  # only STS-B needs scipy (see the imports above)

    pearson = 100.0 * float(pearsonr(preds, refs)[0])
    spearman = 100.0 * float(spearmanr(preds, refs)[0])
    return {"pearson": pearson, "spearmanr": spearman, "combined_score": (pearson + spearman) / 2}


def _accuracy_f1(preds: np.ndarray, refs: np.ndarray) -> dict[str, float]:
    """MRPC/QQP: accuracy and F1 of the positive ("paraphrase"/"duplicate") class 1."""
    from sklearn.metrics import accuracy_score, f1_score  # scored here only (see the imports above)

    accuracy = 100.0 * float(accuracy_score(refs, preds))
    f1 = 100.0 * float(f1_score(refs, preds, pos_label=1, average="binary"))
    return {"accuracy": accuracy, "f1": f1, "combined_score": (accuracy + f1) / 2}


def glue_metrics(task: str, predictions: ArrayLike, references: ArrayLike) -> dict[str, float]:
    """Score one GLUE task in percent: class ids for classification tasks, floats for STS-B."""
    from sklearn.metrics import accuracy_score, matthews_corrcoef  # scored here only (see the imports above)

    name = _glue_task_name(task)
    preds, refs = _as_vectors(name, predictions, references)
    if name == "stsb":
        return _stsb_metrics(preds.astype(float), refs.astype(float))
    _check_class_ids(name, preds)
    if name == "cola":
        return {"matthews_correlation": 100.0 * float(matthews_corrcoef(refs, preds))}
    if name in ("mrpc", "qqp"):
        return _accuracy_f1(preds, refs)
    return {"accuracy": 100.0 * float(accuracy_score(refs, preds))}


# ---------------------------------------------------------------------------------------------
# SQuAD v1.1 / v2.0
# ---------------------------------------------------------------------------------------------

_PUNCTUATION = frozenset(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)


def normalize_answer(s: str) -> str:
    """The official SQuAD normalisation: lower-case, drop punctuation and articles, collapse spaces.

    The steps run in the official order (punctuation before articles), so "the-cat" -> "thecat"
    keeps its article glued on exactly as the official script does.
    """
    text = "".join(ch for ch in s.lower() if ch not in _PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def _exact(prediction: str, gold: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(gold))


def _token_f1(prediction: str, gold: str) -> float:
    """Bag-of-tokens F1 after normalisation.

    If either side is empty (an unanswerable question, or an abstaining prediction) the answer
    is all-or-nothing: 1 only when both are empty, which is the v2.0 rule. It coincides with
    v1.1 whenever the gold answer is non-empty after normalisation.
    """
    pred_tokens = normalize_answer(prediction).split()
    gold_tokens = normalize_answer(gold).split()
    if not pred_tokens or not gold_tokens:
        return float(pred_tokens == gold_tokens)
    common = sum((Counter(pred_tokens) & Counter(gold_tokens)).values())
    if common == 0:
        return 0.0
    precision = common / len(pred_tokens)
    recall = common / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def _golds_or_no_answer(ground_truths: Sequence[str]) -> list[str]:
    """An empty gold list marks an unanswerable question, whose only correct answer is ''."""
    if isinstance(ground_truths, str):
        raise ValueError(f"ground_truths must be a list of answer strings, got the string {ground_truths!r}")
    return list(ground_truths) or [""]


def squad_exact_match(prediction: str, ground_truths: Sequence[str]) -> float:
    """1.0 if the normalised prediction equals any normalised gold answer, else 0.0."""
    return max(_exact(prediction, gold) for gold in _golds_or_no_answer(ground_truths))


def squad_f1(prediction: str, ground_truths: Sequence[str]) -> float:
    """Best token-level F1 (0..1) over the gold answers: annotators disagree on answer spans."""
    return max(_token_f1(prediction, gold) for gold in _golds_or_no_answer(ground_truths))


def _gold_answers(answers: Sequence[str], version_2: bool) -> list[str]:
    """v2.0 drops golds that normalise to nothing (v1.1 keeps them), which may leave none."""
    if not version_2:
        return list(answers)
    return [answer for answer in answers if normalize_answer(answer)]


def _mean_percent(scores: Sequence[float]) -> float:
    return 100.0 * sum(scores) / len(scores)


def _group(prefix: str, exact: Sequence[float], f1: Sequence[float]) -> dict[str, float]:
    return {
        f"{prefix}exact": _mean_percent(exact),
        f"{prefix}f1": _mean_percent(f1),
        f"{prefix}total": float(len(exact)),
    }


def squad_metrics(
    predictions: Mapping[str, str], references: Mapping[str, Sequence[str]], version_2: bool
) -> dict[str, float]:
    """Official-style SQuAD scores in percent over every question in ``references``.

    A question without a prediction scores 0 on both metrics, even an unanswerable one: a
    missing prediction is a pipeline bug and must not be credited as a correct abstention.
    Predictions for ids absent from ``references`` are ignored, as in the official script.
    For v2.0 the answerable ("HasAns") and unanswerable ("NoAns") questions are also scored
    separately; a group with no questions is omitted.
    """
    if not references:
        raise ValueError("references is empty: no questions to score")
    exact: dict[str, float] = {}
    f1: dict[str, float] = {}
    for qid, answers in references.items():
        if isinstance(answers, str):
            raise ValueError(f"references[{qid!r}] must be a list of answers, got the string {answers!r}")
        if not answers and not version_2:
            raise ValueError(
                f"references[{qid!r}] has no answer, which only SQuAD v2.0 allows (version_2=False)"
            )
        if qid not in predictions:
            exact[qid] = f1[qid] = 0.0
            continue
        golds = _gold_answers(answers, version_2)
        exact[qid] = squad_exact_match(predictions[qid], golds)
        f1[qid] = squad_f1(predictions[qid], golds)

    result = {"exact": _mean_percent(list(exact.values())), "f1": _mean_percent(list(f1.values()))}
    if version_2:
        for prefix, has_answer in (("HasAns_", True), ("NoAns_", False)):
            ids = [qid for qid, answers in references.items() if bool(answers) == has_answer]
            if ids:
                result.update(_group(prefix, [exact[q] for q in ids], [f1[q] for q in ids]))
    return result


# ---------------------------------------------------------------------------------------------
# ROUGE
# ---------------------------------------------------------------------------------------------

# Lower-cased words that end with a period without ending a sentence. Dotted forms such as
# "e.g.", "U.S." or "p.m." and single-letter initials are recognised by pattern instead.
_ABBREVIATIONS = frozenset(
    "mr mrs ms dr prof sr jr st mt rev gen col lt sgt capt gov sen rep pres vs etc al inc ltd co corp "
    "no fig eq vol jan feb mar apr jun jul aug sep sept oct nov dec".split()
)
_DOTTED = re.compile(r"(?:[a-z]\.)*[a-z]")
# Terminal punctuation (plus closing quotes/brackets), whitespace, then what may start a sentence.
_CANDIDATE_BOUNDARY = re.compile(r"""[.!?]+["')\]]*\s+(?=["'(\[]?[A-Z0-9])""")


def _ends_with_abbreviation(text: str, end: int) -> bool:
    """Whether the period at ``text[end]`` closes an abbreviation rather than a sentence."""
    preceding = text[:end].split()
    if not preceding:
        return False
    word = preceding[-1].lstrip("\"'([").lower()
    return word in _ABBREVIATIONS or _DOTTED.fullmatch(word) is not None


def _split_line(line: str) -> list[str]:
    sentences, start = [], 0
    for match in _CANDIDATE_BOUNDARY.finditer(line):
        punct = match.group().rstrip().rstrip("\"')]")
        if punct == "." and _ends_with_abbreviation(line, match.start()):
            continue
        sentences.append(line[start : match.end()].strip())
        start = match.end()
    sentences.append(line[start:].strip())
    return [sentence for sentence in sentences if sentence]


def split_sentences(text: str) -> list[str]:
    """Split text into sentences without nltk's punkt model (which needs a download).

    Existing newlines are always boundaries (CNN/DailyMail highlights are newline-separated).
    Within a line, a boundary is ``.``, ``!`` or ``?`` (optionally followed by a closing
    quote/bracket), then whitespace, then an upper-case letter, a digit or an opening quote.
    A lone period after a known abbreviation ("Mr.", "Dr.", "etc."), a single-letter initial
    ("J. Smith") or a dotted form ("U.S.", "e.g.", "p.m.") is not a boundary.

    Limitation vs punkt: no statistics learnt from a corpus, so a sentence that really ends
    on an abbreviation ("... moved to the U.S. Then ...") is not split, unknown abbreviations
    followed by a capitalised word are split, and lower-case sentence starts are never split.
    This only moves ROUGE-Lsum, whose sentence-level LCS depends on the split.
    """
    return [sentence for line in text.splitlines() for sentence in _split_line(line)]


_ROUGE_TYPES = ("rouge1", "rouge2", "rougeL", "rougeLsum")


def rouge_metrics(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Mean ROUGE-1/2/L/Lsum F-measure over examples, in percent, with Porter stemming.

    Texts are re-joined one sentence per line because ROUGE-Lsum computes its union-LCS per
    newline-separated sentence (ROUGE-1/2/L tokenise newlines away, so they are unaffected).
    HF ``evaluate`` reports the "mid" of a bootstrap over examples, which is this mean up to
    resampling noise; the plain mean is deterministic, so it is used instead.
    """
    if isinstance(predictions, str) or isinstance(references, str):
        raise ValueError("predictions and references must be lists of strings, not single strings")
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    if not predictions:
        raise ValueError("no predictions to score")
    from rouge_score import rouge_scorer  # nltk comes with it: only a ROUGE metric pays for it

    scorer = rouge_scorer.RougeScorer(list(_ROUGE_TYPES), use_stemmer=True)
    totals = dict.fromkeys(_ROUGE_TYPES, 0.0)
    for prediction, reference in zip(predictions, references, strict=True):
        scores = scorer.score("\n".join(split_sentences(reference)), "\n".join(split_sentences(prediction)))
        for rouge_type in _ROUGE_TYPES:
            totals[rouge_type] += scores[rouge_type].fmeasure
    return {rouge_type: 100.0 * total / len(predictions) for rouge_type, total in totals.items()}


# ---------------------------------------------------------------------------------------------
# PEFT's MetaMathQA answer scoring (huggingface/peft method_comparison/MetaMathQA/utils.py)
# ---------------------------------------------------------------------------------------------

# The answer follows the first of these markers (in this order) that the text contains, at its last
# occurrence: MetaMathQA's "The answer is: N" and GSM8K's "#### N".
PEFT_ANSWER_MARKERS = ("The answer is: ", "The answer is ", "The final answer is: ", "The final answer is ", "#### ")


def peft_parse_answer(text: str) -> str | None:
    """The answer PEFT's method comparison reads from a generation or a reference, None without a marker.

    Its rules (``parse_answer``): strip the text and its final ``.!?``; take what follows the last
    occurrence of the first marker of :data:`PEFT_ANSWER_MARKERS` it contains; keep that text's first
    line; strip spaces and ``.!?$%`` from both ends (GSM8K writes 50% as 50).
    """
    text = text.strip().rstrip(".!?")
    marker = next((m for m in PEFT_ANSWER_MARKERS if m in text), None)
    if marker is None:
        return None
    return text.rpartition(marker)[2].strip().split("\n", 1)[0].strip(" .!?$%")


def peft_answer_value(answer: str | None) -> float | str | None:
    """An answer as PEFT compares it (``convert_to_decimal``): a number (``a/b`` divided, as a Decimal,
    then a float, so 20/35 equals 0.5714285714285714), else the text itself; None stays None."""
    if answer is None:
        return None
    try:
        parts = answer.split("/")
        if len(parts) > 2:
            return answer
        value = Decimal(parts[0].strip())
        if len(parts) == 2:
            denominator = Decimal(parts[1].strip())
            if denominator == 0:
                return answer
            value = value / denominator
        return float(value)
    except (InvalidOperation, ValueError):
        return answer


def peft_accuracy(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Percent of predictions whose PEFT answer equals the reference's (``get_accuracy``).

    A prediction without an answer marker is wrong. A reference without one is an error, as in PEFT,
    where it raises: such a reference cannot be scored this way (the task validates its references).
    """
    if len(predictions) != len(references) or not predictions:
        raise ValueError(f"peft_accuracy needs as many predictions as references (>0), got {len(predictions)} "
                         f"and {len(references)}")
    right = 0
    for prediction, reference in zip(predictions, references, strict=True):
        gold = peft_parse_answer(reference)
        if gold is None:
            raise ValueError(f"reference {reference[-60:]!r} has no answer marker PEFT reads "
                             f"({', '.join(repr(m) for m in PEFT_ANSWER_MARKERS)})")
        predicted = peft_parse_answer(prediction)
        right += predicted is not None and peft_answer_value(predicted) == peft_answer_value(gold)
    return 100.0 * right / len(predictions)
