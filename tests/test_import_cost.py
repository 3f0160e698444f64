"""What importing each entry point costs: the heavy packages it must not load.

Every ``python -m experiments.run`` / ``analysis`` command, and each of the suite's subprocesses,
pays its entry point's import before it does anything: peft, rouge-score (with nltk, scipy and
scikit-learn), datasets and pandas cost seconds. They are imported where they are used (a PEFT
method when it is built, ROUGE when it is scored, data when it is loaded), and the analysis, which
reads JSON records, loads no torch at all. Each test starts a fresh interpreter, since this one has
imported everything already. That the lazily imported code still runs is shown where it is used:
``tests/test_metrics.py`` (ROUGE, STS-B, MRPC, CoLA), ``tests/test_peft_kind.py`` (the PEFT kind),
``tests/test_lr_schedule.py`` (the scheduler) and ``tests/test_tasks.py`` (loading data).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import adalora

ROOT = Path(__file__).resolve().parents[1]

# Packages a run imports where it uses them, never with ``experiments.run``.
RUN_DEFERRED = ("peft", "rouge_score", "nltk", "scipy", "sklearn", "matplotlib", "pandas", "datasets")
# The analysis reads records (JSON) and draws them: none of the training stack.
ANALYSIS_FREE_OF = ("torch", "transformers", "peft", "datasets", "accelerate", "rouge_score", "nltk", "sklearn")


def loaded_after_import(modules: tuple[str, ...], watched: tuple[str, ...]) -> list[str]:
    """The ``watched`` top-level packages in ``sys.modules`` of a fresh interpreter that imported ``modules``."""
    code = (f"import importlib, json, sys; [importlib.import_module(m) for m in {list(modules)!r}]; "
            f"print(json.dumps(sorted(p for p in {list(watched)!r} if p in sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def test_importing_experiments_run_defers_peft_rouge_scipy_sklearn_datasets_and_pandas():
    assert loaded_after_import(("experiments.run",), RUN_DEFERRED) == []


def test_importing_the_analysis_entry_points_loads_no_torch_transformers_peft_or_datasets():
    entry_points = ("analysis.report", "analysis.collect", "analysis.index_page", "analysis.demo",
                    "analysis.demo_llm", "analysis.llm_report", "analysis.run_notebooks", "benchmarks.analysis")
    assert loaded_after_import(entry_points, ANALYSIS_FREE_OF) == []


def test_importing_the_sweep_and_cost_commands_loads_no_training_stack():
    assert loaded_after_import(("experiments.sweeps", "experiments.costs"), ANALYSIS_FREE_OF) == []


def test_analysing_todays_records_loads_no_torch(tiny_finished_run):
    """Reading a record's stored identity, drawing a rank heatmap's rows and the decoder allocation table load none
    of the training stack (each notebook kernel of ``make figures`` paid seconds of torch for them): a record's
    identity is stored, the architecture registry is data until a model is matched, and only a failed run's
    reason needs the allocator's exception class."""
    from experiments.results import read_result

    code = (f"import json, sys\n"
            f"from analysis.figures import rank_matrix\n"
            f"from analysis.grouping import record_identity\n"
            f"from analysis.tables.llm_tables import allocation_table\n"
            f"new, old = json.loads(sys.stdin.read())\n"
            f"matrix = rank_matrix(old['ranks']['pattern'], old['ranks']['weight_types'])\n"
            f"print(json.dumps({{'identity': record_identity(new), 'rows': list(matrix.index), "
            f"'allocation': len(allocation_table([new, old])), "
            f"'loaded': sorted(p for p in {list(ANALYSIS_FREE_OF)!r} if p in sys.modules)}}))")
    new = read_result(Path(tiny_finished_run.run_dir))
    old = json.loads((ROOT / "tests/fixtures/runs/fixtures/tiny_glue_sst2/adalora/glue_0.3m/seed=0/result.json").read_text())
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, input=json.dumps([new, old]), capture_output=True,
                         text=True, check=True)
    seen = json.loads(out.stdout)
    assert seen["identity"] == new["identity"]["keys"] and seen["identity"]["method"]["name"] == "lora"
    assert seen["rows"] == ["W_q", "W_k", "W_v", "W_o", "W_f1", "W_f2"] and seen["allocation"] == 0
    assert seen["loaded"] == []


def test_adalora_public_names_resolve_to_their_defining_modules():
    """``from adalora import X`` still gives every public name, now imported on first use."""
    from adalora.allocator import RankAllocator
    from adalora.budget import BUDGET_LEVELS, count_parameters, get_budget
    from adalora.layers import AdaptedOutput, BottleneckAdapter, LoRALinear, SVDLinear
    from adalora.methods import METHODS, MethodHandle, apply_method
    from adalora.regularizers import orthogonal_regularization

    expected = {"RankAllocator": RankAllocator, "BUDGET_LEVELS": BUDGET_LEVELS, "count_parameters": count_parameters,
                "get_budget": get_budget, "AdaptedOutput": AdaptedOutput, "BottleneckAdapter": BottleneckAdapter,
                "LoRALinear": LoRALinear, "SVDLinear": SVDLinear, "METHODS": METHODS, "MethodHandle": MethodHandle,
                "apply_method": apply_method, "orthogonal_regularization": orthogonal_regularization}
    assert sorted(adalora.__all__) == sorted(expected)
    assert {name: getattr(adalora, name) for name in adalora.__all__} == expected
    assert set(adalora.__all__) <= set(dir(adalora))


def test_adalora_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="has no attribute 'SVDLinaer'"):
        adalora.SVDLinaer  # noqa: B018 - the access is what is tested
