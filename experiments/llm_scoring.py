"""Scoring of decoder-LLM outputs with lm-evaluation-harness's conventions (and LLM-Adapters' parser).

Why reimplement rather than import ``lm_eval``: it pulls in ``evaluate``, ``sacrebleu`` and a task
registry that fetches data sets from the hub, none of which may run on an offline node (DESIGN §5).
What is reimplemented is small and pinned to the harness's behaviour by
``tests/test_llm_scoring.py``, which compares every function here with values that
``scripts/llm_scoring_reference.py`` computed by running lm-evaluation-harness 0.4.13 itself
(``tests/fixtures/llm_scoring_reference.json``).

The conventions, each from the harness's source:

- **generate_until**: a generation is cut at the first of the task's ``until`` strings.
- **regex filter** (``lm_eval/filters/extraction.py::RegexFilter``): ``re.findall``; the
  ``group_select``-th match (0: first, -1: last); a tuple of groups gives its first non-empty group;
  the result is stripped; no match gives the fallback ``"[invalid]"``.
- **exact_match** (``lm_eval/api/metrics.py::exact_match_hf_evaluate``): each of
  ``regexes_to_ignore`` is removed (``re.sub``) from prediction and reference, in order, then
  optional lower-casing and punctuation removal, then string equality.
- **GSM8K** (``lm_eval/tasks/gsm8k/gsm8k.yaml``, version 3.0): ``strict-match`` takes the first
  ``#### N``; ``flexible-extract`` the last number-like span; the reference is the full solution
  text, whose ``... #### `` prefix ``regexes_to_ignore`` removes.
- **multiple choice** (``ConfigurableTask.process_results``): ``acc`` is whether the choice with the
  highest log-likelihood is the gold one; ``acc_norm`` divides each log-likelihood by the choice's
  length in characters first.
- **log-likelihood of a continuation** (``lm_eval/models/huggingface.py::HFLM``): trailing
  whitespace of the context moves to the continuation; the continuation's tokens are those of
  ``encode(context + continuation)`` after ``len(encode(context))``; no special tokens are added
  (an empty context is replaced by the BOS token, or the end-of-text token where there is none); the score is the sum of the
  continuation tokens' log-probabilities, and ``is_greedy`` says whether each was the argmax.

The commonsense tasks are also scored the LLM-Adapters/DoRA way (generate, then parse the first
``answer1``/``option2``/``true``... in the lower-cased output), as a second metric.
"""

from __future__ import annotations

import re
import string
from collections.abc import Sequence

import torch

FALLBACK = "[invalid]"

GSM8K_STRICT = r"#### (\-?[0-9\.\,]+)"
GSM8K_FLEXIBLE = r"(-?[$0-9.,]{2,})|(-?[0-9]+)"
GSM8K_IGNORE = (",", r"\$", r"(?s).*#### ", r"\.$")
GSM8K_UNTIL = ("Question:", "</s>", "<|im_end|>")

# LLM-Adapters' answer vocabulary per commonsense task (its commonsense_evaluate.py::extract_answer).
COMMONSENSE_ANSWERS = {
    "boolq": r"true|false",
    "piqa": r"solution1|solution2",
    "siqa": r"answer1|answer2|answer3|answer4|answer5",
    "arc_easy": r"answer1|answer2|answer3|answer4|answer5",
    "arc_challenge": r"answer1|answer2|answer3|answer4|answer5",
    "openbookqa": r"answer1|answer2|answer3|answer4|answer5",
    "hellaswag": r"ending1|ending2|ending3|ending4",
    "winogrande": r"option1|option2",
}


def truncate_at(text: str, until: Sequence[str]) -> str:
    """``generate_until``: the text before the earliest of the stop strings."""
    cut = len(text)
    for stop in until:
        at = text.find(stop) if stop else -1
        if at != -1:
            cut = min(cut, at)
    return text[:cut]


def regex_extract(response: str, pattern: str, group_select: int = 0, fallback: str = FALLBACK) -> str:
    """The harness's ``RegexFilter`` on one response."""
    matches = re.findall(pattern, response if isinstance(response, str) else "")
    if not matches:
        return fallback
    match = matches[group_select]
    if isinstance(match, tuple):
        groups = [g for g in match if g]
        match = groups[0] if groups else fallback
    return match.strip()


def exact_match(prediction: str, reference: str, regexes_to_ignore: Sequence[str] = (), ignore_case: bool = False,
                ignore_punctuation: bool = False) -> bool:
    """The harness's ``exact_match`` on one pair."""
    for pattern in regexes_to_ignore:
        prediction = re.sub(pattern, "", prediction)
        reference = re.sub(pattern, "", reference)
    if ignore_case:
        prediction, reference = prediction.lower(), reference.lower()
    if ignore_punctuation:
        table = str.maketrans("", "", string.punctuation)
        prediction, reference = prediction.translate(table), reference.translate(table)
    return prediction == reference


def gsm8k_scores(generations: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Both GSM8K metrics the harness reports, as fractions: ``exact_match_strict`` and ``exact_match_flexible``."""
    if len(generations) != len(references) or not generations:
        raise ValueError(f"gsm8k_scores needs as many generations as references (>0), got "
                         f"{len(generations)} and {len(references)}")
    totals = {"exact_match_strict": 0, "exact_match_flexible": 0}
    for generation, reference in zip(generations, references, strict=True):
        text = truncate_at(generation, GSM8K_UNTIL)
        for key, pattern, group in (("exact_match_strict", GSM8K_STRICT, 0),
                                    ("exact_match_flexible", GSM8K_FLEXIBLE, -1)):
            extracted = regex_extract(text, pattern, group)
            totals[key] += exact_match(extracted, reference, GSM8K_IGNORE, ignore_case=True)
    return {key: value / len(generations) for key, value in totals.items()}


def multiple_choice_correct(loglikelihoods: Sequence[float], choices: Sequence[str], gold: int) -> tuple[bool, bool]:
    """(acc, acc_norm) of one multiple-choice item, the harness's way (``acc_norm``: per character)."""
    if len(loglikelihoods) != len(choices) or not choices:
        raise ValueError(f"one log-likelihood per choice, got {len(loglikelihoods)} for {len(choices)} choices")
    raw = max(range(len(choices)), key=lambda i: (loglikelihoods[i], -i))
    norm = max(range(len(choices)), key=lambda i: (loglikelihoods[i] / len(choices[i]), -i))
    return raw == gold, norm == gold


def commonsense_parse(task: str, generation: str) -> str:
    """LLM-Adapters' answer parser: the first answer word of ``task``'s vocabulary in the lower-cased output."""
    if task not in COMMONSENSE_ANSWERS:
        raise ValueError(f"commonsense task {task!r} is unknown; known: {sorted(COMMONSENSE_ANSWERS)}")
    found = re.findall(COMMONSENSE_ANSWERS[task], generation.lower().strip())
    return found[0] if found else ""


def encode_pair(tokenizer, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """The harness's split of (context, continuation) into token ids (no special tokens added)."""
    spaces = len(context) - len(context.rstrip())
    if spaces:
        context, continuation = context[:-spaces], context[-spaces:] + continuation
    if not context:
        prefix = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
        return [prefix], tokenizer.encode(continuation, add_special_tokens=False)
    whole = tokenizer.encode(context + continuation, add_special_tokens=False)
    context_ids = tokenizer.encode(context, add_special_tokens=False)
    return context_ids, whole[len(context_ids):]


@torch.no_grad()
def loglikelihood(model, tokenizer, context: str, continuation: str) -> tuple[float, bool]:
    """(sum of the continuation's token log-probabilities, whether greedy decoding gives it)."""
    context_ids, continuation_ids = encode_pair(tokenizer, context, continuation)
    if not continuation_ids:
        raise ValueError(f"the continuation {continuation!r} encodes to no tokens")
    device = next(model.parameters()).device
    ids = torch.tensor([(context_ids + continuation_ids)[:-1]], device=device)
    logprobs = torch.log_softmax(model(input_ids=ids).logits[0].float(), dim=-1)[-len(continuation_ids):]
    target = torch.tensor(continuation_ids, device=device)
    picked = logprobs.gather(1, target[:, None])[:, 0]
    return float(picked.sum()), bool((logprobs.argmax(-1) == target).all())
