"""Run counts and GPU-hours in the docs and sweep headers come from the sweep files (`make costs`),
so a sweep file changed without them fails here."""

from __future__ import annotations

import math
import re
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


def test_a_sweep_over_several_models_costs_every_models_runs_with_the_sweeps_own_trainer_values(checkout, monkeypatch):
    """The decoder sweeps list several models: each model's runs count, at its own seconds per step, and the sweep
    file's trainer values (PEFT's 5,000 steps, bf16) win over the task's hparams as in a run."""
    monkeypatch.setitem(costs.SECONDS_PER_STEP, ("tiny_deberta", "glue_rte"), 0.5)
    (checkout / "conf" / "sweep" / "two.yaml").write_text(
        "# @package _global_\n# two models\ndefaults:\n  - override /model: deberta_v3_base\n"
        "trainer:\n  max_steps: 100\n  precision: bf16\nhydra:\n  sweeper:\n    params:\n"
        "      model: deberta_v3_base,tiny_deberta\n      task: glue_rte\n      method: lora\n"
        "      budget: glue_0.3m\n      seed: 0,1\n")
    c = costs.cost("two")
    assert c.runs == 2 * 2
    assert c.gpu_hours == pytest.approx(2 * 100 * (0.35 + 0.5) / 3600)  # deberta x glue_rte: 0.35 s per step
    assert costs.header_line("two").startswith("# make costs: 4 distinct runs, <1 GPU-h (one A100-class GPU, bf16, ±50%)")
    assert "| `two` | 4 | <1 (bf16) |" in costs.table(["two"])


def test_make_lr_search_runs_every_lr_search_sweep():
    makefile = (costs.ROOT / "Makefile").read_text()
    loop = re.search(r"^lr-search:.*\n\tstatus=0; for s in ([^;]*); do", makefile, re.M).group(1).split()
    assert {name for name in costs.sweep_files() if name.startswith("lr_search_")} == set(loop)


def test_gradient_checkpointing_costs_one_more_forward_per_step():
    job = {"task": "gsm8k", "method": "lora"}
    plain = costs.run_hours("llama3_2_1b", job, {"precision": "bf16"})
    checkpointed = costs.run_hours("llama3_2_1b", job, {"precision": "bf16", "gradient_checkpointing": True})
    assert plain is not None and plain > 0
    assert checkpointed == pytest.approx(plain * 4 / 3)
