"""Write the decoder track's tiny fixtures (tests/fixtures/llm/data), each in its hub data set's real schema.

GSM8K: ``question`` and ``answer`` (a worked solution ending in ``#### N``), one-step additions.
PIQA: ``goal``, ``sol1``, ``sol2``, ``label`` (the right solution's index), five everyday goals.
MetaMathQA: ``query``, ``response`` (ending ``The answer is: N``), ``type``, ``original_question``.
commonsense_170k (LLM-Adapters): ``instruction``, ``input``, ``output`` (``the correct answer is answer2``),
``answer``; and one validation split per commonsense set in the schema lm-evaluation-harness reads
(BoolQ as google/boolq, PIQA, SIQA, HellaSwag, WinoGrande, ARC-Easy/Challenge, OpenBookQA).
Deterministic (seeded ``random.Random``); ``tests/test_causal_lm_task.py`` checks the files equal a fresh run.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "llm" / "data"
NAMES = ["Ann", "Bo", "Cy", "Dee", "Eli", "Fay"]
ITEMS = ["apples", "pens", "books", "coins", "stamps"]
GOALS = [("keep bread fresh", "store it in a sealed bag", "leave it open in the sun"),
         ("cool hot soup", "stir it and wait a few minutes", "put it in the oven"),
         ("dry wet shoes", "stuff them with newspaper", "fill them with water"),
         ("open a stuck jar", "run the lid under hot water", "freeze the lid solid"),
         ("light a dark room", "switch on a lamp", "close the curtains")]


def _additions(n: int, seed: int):
    """(who, what, a, b, question) of ``n`` one-step addition word problems (GSM8K's and MetaMathQA's rows)."""
    rng = random.Random(seed)
    for _ in range(n):
        a, b = rng.randint(2, 40), rng.randint(2, 40)
        who, what = rng.choice(NAMES), rng.choice(ITEMS)
        yield who, what, a, b, f"{who} has {a} {what} and buys {b} more. How many {what} does {who} have now?"


def gsm8k_rows(n: int, seed: int) -> list[dict]:
    return [{"question": question, "answer": f"{who} has {a} + {b} = <<{a}+{b}={a + b}>>{a + b} {what}.\n#### {a + b}"}
            for who, what, a, b, question in _additions(n, seed)]


def piqa_rows(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        goal, good, bad = GOALS[i % len(GOALS)]
        label = rng.randint(0, 1)
        first, second = (good, bad) if label == 0 else (bad, good)
        rows.append({"goal": f"How to {goal}?", "sol1": first, "sol2": second, "label": label})
    return rows


def metamathqa_rows(n: int, seed: int) -> list[dict]:
    return [{"query": question, "response": f"{who} has {a} + {b} = {a + b} {what}.\nThe answer is: {a + b}",
             "type": "GSM_Rephrased", "original_question": question} for who, what, a, b, question in _additions(n, seed)]


def _mc(rng: random.Random, n_choices: int) -> tuple[int, list[str]]:
    """A gold index and ``n_choices`` short options, the gold one a fixed right word."""
    gold = rng.randrange(n_choices)
    wrong = rng.sample(["stone", "cloud", "spoon", "river", "ladder", "candle"], n_choices - 1)
    return gold, wrong[:gold] + ["water"] + wrong[gold:]


def commonsense_sets(n: int, seed: int) -> dict[str, list[dict]]:
    """``n`` validation rows per commonsense set, in the schema the harness reads from the hub."""
    rng = random.Random(seed)
    sets: dict[str, list[dict]] = {name: [] for name in ("boolq", "piqa", "siqa", "hellaswag", "winogrande",
                                                          "arc_easy", "arc_challenge", "openbookqa")}
    for i in range(n):
        name, what = NAMES[i % len(NAMES)], ITEMS[i % len(ITEMS)]
        sets["boolq"].append({"question": f"is water wet for {name}", "answer": bool(rng.randint(0, 1)),
                              "passage": f"{name} pours water on {what}."})
        sets["piqa"].append(piqa_rows(1, seed + i)[0])
        gold, options = _mc(rng, 3)
        sets["siqa"].append({"context": f"{name} was thirsty.", "question": "What did they drink?",
                             "answerA": options[0], "answerB": options[1], "answerC": options[2], "label": str(gold + 1)})
        gold, options = _mc(rng, 4)
        sets["hellaswag"].append({"ind": i, "activity_label": "Drinking", "ctx_a": f"{name} is thirsty.",
                                  "ctx_b": "they [title] drink", "ctx": f"{name} is thirsty. they drink",
                                  "endings": options, "source_id": f"fixture~{i}", "split": "val",
                                  "split_type": "indomain", "label": str(gold)})
        gold, options = _mc(rng, 2)
        sets["winogrande"].append({"sentence": f"{name} drank the _ because it was fresh.", "option1": options[0],
                                   "option2": options[1], "answer": str(gold + 1)})
        for arc, labels in (("arc_easy", "ABCD"), ("arc_challenge", "1234")):
            gold, options = _mc(rng, 4 if i % 3 else 3)
            sets[arc].append({"id": f"{arc}-{i}", "question": f"What does {name} drink?",
                              "choices": {"text": options, "label": list(labels[:len(options)])},
                              "answerKey": labels[gold]})
        gold, options = _mc(rng, 4)
        sets["openbookqa"].append({"id": f"obqa-{i}", "question_stem": f"{name} is thirsty and drinks",
                                   "choices": {"text": options, "label": list("ABCD")}, "answerKey": "ABCD"[gold]})
    return sets


def commonsense_170k_rows(n: int, seed: int) -> list[dict]:
    """Training rows in LLM-Adapters' commonsense_170k.json schema (its PIQA- and BoolQ-style instructions)."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        if i % 2:
            row = piqa_rows(1, seed + i)[0]
            answer = f"solution{row['label'] + 1}"
            instruction = (f"Please choose the correct solution to the question: {row['goal']}\n\nSolution1: "
                           f"{row['sol1']}\n\nSolution2: {row['sol2']}\n\nAnswer format: solution1/solution2")
        else:
            answer = rng.choice(["true", "false"])
            instruction = (f"Please answer the following question with true or false, question: is water "
                           f"{'wet' if answer == 'true' else 'dry'}?\n\nAnswer format: true/false")
        rows.append({"instruction": instruction, "input": "", "output": f"the correct answer is {answer}",
                     "answer": answer})
    return rows


def make_all(out: Path = OUT) -> None:
    files = {"gsm8k/train.jsonl": gsm8k_rows(48, 1), "gsm8k/test.jsonl": gsm8k_rows(12, 2),
             "piqa/train.jsonl": piqa_rows(40, 3), "piqa/validation.jsonl": piqa_rows(10, 4),
             "metamathqa/train.jsonl": metamathqa_rows(32, 5),
             "commonsense_170k/train.jsonl": commonsense_170k_rows(32, 6)}
    files.update({f"commonsense/{name}/validation.jsonl": rows for name, rows in commonsense_sets(6, 7).items()})
    for name, rows in files.items():
        path = out / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


if __name__ == "__main__":
    make_all(Path(sys.argv[1]) if len(sys.argv) > 1 else OUT)
