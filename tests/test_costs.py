"""Run counts and GPU-hours in the docs and sweep headers come from the sweep files (`make costs`),
so a sweep file changed without them fails here."""

from __future__ import annotations

import math
import shutil

import pytest

from experiments import costs

REGENERATE = "run `make costs` (python -m experiments.costs --write) and commit what it rewrites"


def test_cost_numbers_in_readme_docs_and_sweep_headers_match_the_sweep_files():
    stale = costs.stale()
    assert not stale, f"run counts / GPU-hours out of date in {stale}: {REGENERATE}"


@pytest.fixture
def checkout(tmp_path, monkeypatch):
    """A copy of the files `make costs` reads and writes, which the module then uses."""
    for part in ("conf", "docs"):
        shutil.copytree(costs.ROOT / part, tmp_path / part)
    shutil.copy2(costs.ROOT / "README.md", tmp_path / "README.md")
    monkeypatch.setattr(costs, "ROOT", tmp_path)
    monkeypatch.setattr(costs, "CONF", tmp_path / "conf")
    _clear()
    yield tmp_path
    _clear()


def _clear() -> None:
    for cached in (costs._yaml, costs._effective_budget, costs._hours):
        cached.cache_clear()


def test_a_sweep_file_changed_without_make_costs_is_stale_until_it_runs(checkout):
    glue = checkout / "conf" / "sweep" / "glue.yaml"
    glue.write_text(glue.read_text().replace("seed: 0,1,2,3,4", "seed: 0,1,2"))
    assert costs.stale() == ["README.md", "conf/sweep/glue.yaml"]
    assert costs.main(["--check"]) == 1
    assert costs.main(["--write"]) == 0 and costs.stale() == []
    assert "| `glue` | 288 |" in (checkout / "README.md").read_text()  # 8 tasks x 4 methods x 3 budgets x 3 seeds
    assert "# make costs: 288 distinct runs, ~" in glue.read_text()


def test_a_new_sweep_file_gets_a_row_and_a_header_line(checkout):
    """Any conf/sweep/*.yaml: one on a model x task without an assumption gets its runs, no GPU-hours."""
    (checkout / "conf" / "sweep" / "mine.yaml").write_text(
        "# @package _global_\n# my sweep\ndefaults:\n  - override /model: tiny_bert\nhydra:\n  sweeper:\n"
        "    params:\n      task: tiny_glue_rte\n      method: lora,full_ft\n      budget: glue_0.3m,glue_0.6m\n"
        "      seed: 0,1\n")
    assert "README.md" in costs.stale()
    costs.main(["--write"])
    assert "| `mine` | 6 | — |" in (checkout / "README.md").read_text()  # full_ft's 2 budgets: one directory
    assert "# make costs: 6 distinct runs, GPU-h not estimated (tiny_bert x tiny_glue_rte" in \
        (checkout / "conf" / "sweep" / "mine.yaml").read_text()


def test_runs_are_the_runners_distinct_directories():
    """A method without a size knob records every budget under `none`; overrides replace the file's lists."""
    assert costs.cost("glue_baselines").runs == 8 * 2 * 5
    assert costs.cost("lr_search_glue method=bitfit budget=none").runs == 8 * 9
    assert costs.cost("nlg").runs == 2 * 2 * 4 + 2  # full FT: one run per task whatever the budget
    with pytest.raises(SystemExit, match=r"no sweep file conf/sweep/glu\.yaml"):
        costs.cost("glu")


def test_gpu_hours_are_steps_times_seconds_per_step():
    mnli_lora = {"task": "glue_mnli", "method": "lora", "budget": "glue_0.3m", "seed": "0"}
    steps = 7 * math.ceil(392_702 / 32)  # glue_mnli: 7 epochs at batch 32
    assert costs.run_hours("deberta_v3_base", mnli_lora) == pytest.approx(steps * 0.15 / 3600)
    adalora = {**mnli_lora, "method": "adalora"}  # kind adalora: allocator and penalty, 1.1x
    assert costs.run_hours("deberta_v3_base", adalora) == pytest.approx(steps * 0.15 * 1.1 / 3600)
    xsum_ft = {"task": "xsum", "method": "full_ft", "budget": "none", "seed": "0"}  # max_steps 15000
    assert costs.run_hours("bart_large", xsum_ft) == pytest.approx(15_000 * 4.0 * 1.4 / 3600)
    assert costs.run_hours("tiny_deberta", {**mnli_lora, "task": "tiny_glue_rte"}) is None


def test_make_lr_search_runs_the_bitfit_row_the_docs_cost():
    makefile = (costs.ROOT / "Makefile").read_text()
    assert "sweep=lr_search_glue method=bitfit budget=none" in makefile
