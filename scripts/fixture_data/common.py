"""What every fixture family shares: the JSONL writer and seeded sampling helpers."""

from __future__ import annotations

import json
import random
from collections.abc import Iterable
from pathlib import Path


def write_jsonl(path: Path, rows: Iterable[dict]) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with path.open("w", encoding="utf-8", newline="\n") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=True) + "\n")
            n += 1
    return n


def balanced_labels(rng: random.Random, n: int, labels: list) -> list:
    out = [labels[i % len(labels)] for i in range(n)]
    rng.shuffle(out)
    return out


def pick(rng: random.Random, seq):
    return seq[rng.randrange(len(seq))]


def cap(s: str) -> str:
    return s[:1].upper() + s[1:]
