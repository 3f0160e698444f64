"""Every input is checked before work starts and named when bad: seed, run-path names, method knobs,
every job of a sweep, and the data files (encoding, non-finite numbers, SQuAD offsets)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import experiments.runner
from experiments.runner import PROJECT_ROOT, ConfigError, register_resolvers, run
from experiments.tasks import build_task
from experiments.tasks.base import DataValidationError
from tests.conftest import tiny
from tests.test_tasks import jsonl_cfg, squad_row

register_resolvers()


def _cfg(out: Path, *extra: str, method: str = "lora"):
    return tiny(out, *extra, method=method, steps=2)


def _cli(out: Path, *overrides: str, multirun: bool = False) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "experiments.run", *(["-m"] if multirun else []), "task=tiny_glue_rte", "model=tiny_deberta", "method=lora",
           "budget=glue_0.3m", f"output_root={out}", "trainer.progress=false", "trainer.max_steps=2", *overrides]
    return subprocess.run(cmd, cwd=PROJECT_ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=600,
                          capture_output=True, text=True)


@pytest.fixture
def no_data(monkeypatch):
    """Fail loudly if the run gets as far as the data: the checks must come first."""

    def build_task(cfg):
        raise AssertionError("the data was loaded before the configuration was checked")

    monkeypatch.setattr(experiments.runner, "build_task", build_task)


@pytest.mark.parametrize("seed", ["-1", "1e20", "abc", "4294967296", "true"])
def test_bad_seed_is_named_and_creates_nothing(tmp_path, no_data, seed):
    cfg = _cfg(tmp_path / "out", f"seed={seed}")
    with pytest.raises(ConfigError, match=r"seed=.*: must be an integer in 0\.\.4294967295"):
        run(cfg)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("override", "key"), [("sweep_name=../../x", "sweep_name"), ("sweep_name=a/b", "sweep_name"),
                                               ("sweep_name=..", "sweep_name"), ("task.name=..", "task.name")])
def test_run_path_names_stay_under_output_root(tmp_path, no_data, override, key):
    cfg = _cfg(tmp_path / "a" / "b" / "out", override)
    with pytest.raises(ConfigError, match=rf"{key}=.*must be one directory name"):
        run(cfg)
    assert list(tmp_path.rglob("*")) == []


def test_method_knob_error_surfaces_before_the_data_and_creates_nothing(tmp_path, no_data):
    cfg = _cfg(tmp_path / "out", "method.orth_reg_weight=-1", method="adalora")
    with pytest.raises(ConfigError, match="bad method config: method.orth_reg_weight must be >= 0, got -1"):
        run(cfg)
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_cli_config_error_is_one_line_and_leaves_no_directory(tmp_path):
    out = tmp_path / "out"
    proc = _cli(out, "seed=abc")
    assert proc.returncode == 1
    assert proc.stdout.strip().splitlines() == [
        "[config error] invalid setting(s): seed='abc': must be an integer in 0..4294967295 (numpy's seed range)"]
    assert "Traceback" not in proc.stderr
    assert not list(out.rglob("seed=abc")) and not (out / "adhoc").exists()
    escaped = _cli(out, "sweep_name=../../escaped")
    assert escaped.returncode == 1 and "sweep_name='../../escaped'" in escaped.stdout
    assert not (tmp_path / "escaped").exists()


@pytest.mark.slow
def test_sweep_lists_every_bad_job_before_the_first_one_trains(tmp_path):
    out = tmp_path / "out"
    proc = _cli(out, "seed=0,abc,-1", multirun=True)
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    must = "must be an integer in 0..4294967295 (numpy's seed range)"
    assert proc.stdout.strip().splitlines() == [
        "[sweep] 2 of 3 jobs cannot run; nothing was started:",
        f"  job 1 (seed=abc): ConfigError: invalid setting(s): seed='abc': {must}",
        f"  job 2 (seed=-1): ConfigError: invalid setting(s): seed=-1: {must}",
    ]
    assert not list(out.rglob("result.json"))  # seed=0 is fine but did not train
    assert not list(out.rglob("seed=*"))


# ---------------------------------------------------------------------------- data files
def _glue_file(tmp_path: Path, content: bytes, glue_task: str = "rte") -> dict:
    path = tmp_path / "train.jsonl"
    path.write_bytes(content)
    return {"name": "t", "family": "glue", "glue_task": glue_task, "eval_splits": ["train"],
            "dataset": {"data_files": {"train": str(path)}}}


def test_non_utf8_bytes_are_named_with_file_line_and_field(tmp_path):
    good = json.dumps({"sentence1": "a", "sentence2": "b", "label": 1}).encode()
    bad = b'{"sentence1": "caf\xe9", "sentence2": "b", "label": 0}'  # Latin-1, not UTF-8
    cfg = _glue_file(tmp_path, good + b"\n" + bad + b"\n")
    with pytest.raises(DataValidationError, match=r"train\.jsonl', line 2, field 'sentence1': byte 0xe9 .* not UTF-8"):
        build_task(cfg).load()


def test_a_label_that_overflows_to_inf_is_named(tmp_path):
    rows = b'{"sentence1": "a", "sentence2": "b", "label": 1.5}\n{"sentence1": "a", "sentence2": "b", "label": 1e999}\n'
    with pytest.raises(DataValidationError, match=r"train\.jsonl', line 2, field 'label': inf is not a finite number"):
        build_task(_glue_file(tmp_path, rows, glue_task="stsb")).load()


@pytest.mark.parametrize(("answer", "match"), [
    (("ab", -3), r"expected a character offset >= 0, got -3"),  # context[-3:-1] == 'ab': the old check passed it
    (("barn", 9), r"the answer 'barn' at offset 9 ends past the context \(11 characters\)"),
    (("barn", 2.5), r"expected a character offset >= 0, got 2\.5"),
])
def test_squad_answer_offsets_outside_the_context_are_named(tmp_path, answer, match):
    context = "in the barn" if answer[0] == "barn" else "xxxabc"
    rows = [squad_row(0, "in the barn", [("barn", 7)]), squad_row(1, context, [answer])]
    task = build_task(jsonl_cfg(tmp_path, "squad", {"train": rows, "validation": rows[:1]}))
    with pytest.raises(DataValidationError,
                       match=rf"train\.jsonl', line 2 \(split 'train', row 1\), field 'answers\.answer_start'.*{match}"):
        task.load()
