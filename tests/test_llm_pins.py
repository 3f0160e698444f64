"""Every hub data set a decoder task reads (its training data and every eval set) is pinned to a commit, or is
listed in :data:`UNPINNED` with the reason: a moved ``main`` must not change what a decoder sweep evaluates."""

from __future__ import annotations

import functools
import re
from pathlib import Path

from experiments.tasks.causal_lm import CausalLMTask
from tests.test_causal_lm_task import task_cfg

TASKS = Path(__file__).resolve().parents[1] / "conf" / "task"
COMMIT = re.compile(r"[0-9a-f]{40}")

# (task, data set key) -> why it is not pinned. The one place an unpinned hub data set of a decoder task may be
# named; docs/llm.md's "Known limits" lists the same. Empty: every one is pinned to the commit public code pins.
UNPINNED: dict[tuple[str, str], str] = {}


@functools.cache  # composing every task file takes seconds: once per test process, at test time, not collection
def decoder_tasks() -> tuple[str, ...]:
    """Every shipped task of the causal_lm family (a tiny twin names it through its defaults)."""
    return tuple(sorted(p.stem for p in TASKS.glob("*.yaml") if task_cfg(p.stem).get("family") == CausalLMTask.family))


def datasets_of(cfg: dict) -> dict[str, dict]:
    """The task's data sets by key: ``dataset`` and ``eval_sets.<name>`` (what the run's content identity reads)."""
    return {"dataset": cfg["dataset"], **CausalLMTask.more_datasets(cfg)}


def test_the_decoder_tasks_are_found():
    assert {"gsm8k", "metamathqa_gsm8k", "commonsense", "tiny_commonsense", "tiny_metamathqa_gsm8k"} <= set(decoder_tasks())


def test_every_hub_backed_decoder_data_set_is_pinned_or_listed_as_unpinned():
    for name, key, dataset in ((n, k, d) for n in decoder_tasks() for k, d in datasets_of(task_cfg(n)).items()):
        if dataset.get("path"):  # a hub data set: its revision must be a commit
            if (name, key) in UNPINNED:
                assert not COMMIT.fullmatch(str(dataset.get("revision"))), f"{name} {key} is pinned: drop it from UNPINNED"
                continue
            assert COMMIT.fullmatch(str(dataset.get("revision"))), \
                f"task {name}: {key} ({dataset['path']}) has revision {dataset.get('revision')!r}, not a commit"
        for url in (dataset.get("data_files") or {}).values():  # a remote file: its URL must name a commit
            if str(url).startswith(("http://", "https://")):
                assert COMMIT.search(str(url)), f"task {name}: {key} reads {url} at no commit"


def test_the_commonsense_eval_sets_are_the_commits_public_code_pins():
    """The eight sets' pins (conf/task/commonsense.yaml cites where each is pinned)."""
    pins = {key.removeprefix("eval_sets."): (d["path"], d.get("name"), d["revision"][:8])
            for key, d in datasets_of(task_cfg("commonsense")).items() if key != "dataset"}
    assert pins == {
        "boolq": ("google/boolq", None, "35b264d0"), "piqa": ("baber/piqa", None, "142f6d73"),
        "siqa": ("allenai/social_i_qa", None, "537a2ec8"), "hellaswag": ("Rowan/hellaswag", None, "218ec52e"),
        "winogrande": ("allenai/winogrande", "winogrande_xl", "01e74176"),
        "arc_easy": ("allenai/ai2_arc", "ARC-Easy", "210d026f"),
        "arc_challenge": ("allenai/ai2_arc", "ARC-Challenge", "210d026f"),
        "openbookqa": ("allenai/openbookqa", "main", "388097ea")}
