"""Write the decoder track's tiny fixtures (tests/fixtures/llm/data): GSM8K and PIQA rows in the real schemas.

GSM8K: ``question`` and ``answer`` (a worked solution ending in ``#### N``), one-step additions.
PIQA: ``goal``, ``sol1``, ``sol2``, ``label`` (the right solution's index), five everyday goals.
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


def gsm8k_rows(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        a, b = rng.randint(2, 40), rng.randint(2, 40)
        who, what = rng.choice(NAMES), rng.choice(ITEMS)
        rows.append({"question": f"{who} has {a} {what} and buys {b} more. How many {what} does {who} have now?",
                     "answer": f"{who} has {a} + {b} = <<{a}+{b}={a + b}>>{a + b} {what}.\n#### {a + b}"})
    return rows


def piqa_rows(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        goal, good, bad = GOALS[i % len(GOALS)]
        label = rng.randint(0, 1)
        first, second = (good, bad) if label == 0 else (bad, good)
        rows.append({"goal": f"How to {goal}?", "sol1": first, "sol2": second, "label": label})
    return rows


def make_all(out: Path = OUT) -> None:
    files = {"gsm8k/train.jsonl": gsm8k_rows(48, 1), "gsm8k/test.jsonl": gsm8k_rows(12, 2),
             "piqa/train.jsonl": piqa_rows(40, 3), "piqa/validation.jsonl": piqa_rows(10, 4)}
    for name, rows in files.items():
        path = out / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


if __name__ == "__main__":
    make_all(Path(sys.argv[1]) if len(sys.argv) > 1 else OUT)
