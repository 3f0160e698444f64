"""Write the small, deterministic JSONL fixtures used by the offline test suite.

Every file is made from the project's own template grammar (no benchmark text) and
follows the column names and types of the hub datasets the real runs load:

* ``nyu-mll/glue``                -> ``tests/fixtures/data/glue/<task>/{train,validation}.jsonl``
  (MNLI: ``validation_matched.jsonl`` and ``validation_mismatched.jsonl``)
* ``rajpurkar/squad``             -> ``tests/fixtures/data/squad_v1/{train,validation}.jsonl``
* ``rajpurkar/squad_v2``          -> ``tests/fixtures/data/squad_v2/{train,validation}.jsonl``
* ``EdinburghNLP/xsum``           -> ``tests/fixtures/data/xsum/{train,validation}.jsonl``
* ``abisee/cnn_dailymail`` (3.0.0) -> ``tests/fixtures/data/cnn_dailymail/{train,validation}.jsonl``

The grammar is simple on purpose: the label of each example is decided by a few words
(sentiment adjectives, agreement, negation, which slot changed, ...), so a 2-layer model
can learn something in a few hundred steps. Output is byte-for-byte reproducible.

The families live in ``scripts/fixture_data`` (one module each); this file is the CLI.

Usage: ``python scripts/make_fixtures.py [--out tests/fixtures/data]``
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO_ROOT / "tests" / "fixtures" / "data"

# Run as a script (``python scripts/make_fixtures.py``) or loaded by path from the tests: either
# way the families are found beside this file, not through the installed packages.
sys.path.insert(0, str(Path(__file__).resolve().parent))
from fixture_data.glue import make_glue  # noqa: E402
from fixture_data.squad import make_squad  # noqa: E402
from fixture_data.summarization import make_summarization  # noqa: E402


def make_all(out: Path = DEFAULT_OUT) -> dict[str, int]:
    counts: dict[str, int] = {}
    counts.update(make_glue(out))
    counts.update(make_squad(out))
    counts.update(make_summarization(out))
    return counts


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args(argv)
    counts = make_all(args.out)
    total = sum(p.stat().st_size for p in args.out.rglob("*.jsonl"))
    for rel, n in sorted(counts.items()):
        print(f"{n:4d}  {rel}")
    print(f"total size: {total / 1024:.1f} KiB in {len(counts)} files under {args.out}")


if __name__ == "__main__":
    main()
