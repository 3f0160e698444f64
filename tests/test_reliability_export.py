"""``experiments.export`` / ``experiments.evaluate`` on awkward paths: what is refused, named, and how it exits."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from experiments.evaluate import main as evaluate_main
from experiments.export import main as export_main
from experiments.runner import run
from experiments.weights import WEIGHT_FILES
from tests.conftest import compose

pytestmark = pytest.mark.slow  # every test here reads a trained run


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """One finished tiny LoRA run with its weights (read-only for the tests; copy it to change it)."""
    root = tmp_path_factory.mktemp("runs")
    cfg = compose(["task=tiny_glue_rte", "model=tiny_deberta", "method=lora", "budget=glue_0.3m",
                    f"output_root={root}", "trainer.progress=false", "trainer.max_steps=2"])
    assert run(cfg)["status"] == "success"
    return Path(cfg.run_dir)


def _copy(run_dir: Path, to: Path) -> Path:
    shutil.copytree(run_dir, to)
    return to


def test_an_existing_non_empty_out_is_refused_and_left_alone(run_dir, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert export_main([str(run_dir), "--format", "peft", "--out", str(out)]) == 2
    assert f"--out {out} exists and is not empty" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]


def test_overwrite_replaces_the_contents_of_out(run_dir, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "stale.safetensors").write_text("old export")
    assert export_main([str(run_dir), "--format", "peft", "--out", str(out), "--overwrite"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no staging folder left beside it


def test_an_existing_file_as_out_is_a_clear_error(run_dir, tmp_path, capsys):
    out = tmp_path / "adapter"
    out.write_text("a file")
    assert export_main([str(run_dir), "--format", "merged", "--out", str(out)]) == 2
    assert f"--out {out} is an existing file; give a directory path" in capsys.readouterr().err
    assert out.read_text() == "a file"


def test_an_out_that_holds_the_run_is_refused_even_with_overwrite(run_dir, tmp_path, capsys):
    copy = _copy(run_dir, tmp_path / "runs" / "seed=0")
    assert export_main([str(copy), "--format", "peft", "--out", str(tmp_path / "runs"), "--overwrite"]) == 2
    assert "contains the run" in capsys.readouterr().err and (copy / WEIGHT_FILES["final"]).is_file()


def test_truncated_weights_are_named_with_their_path_and_exit_2(run_dir, tmp_path, capsys):
    copy = _copy(run_dir, tmp_path / "run")
    weights = copy / WEIGHT_FILES["final"]
    weights.write_bytes(weights.read_bytes()[:40])
    assert evaluate_main([str(copy)]) == 2
    err = capsys.readouterr().err
    assert f"error: {weights} cannot be read (SafetensorError" in err and "force=true" in err
    assert export_main([str(copy), "--format", "peft", "--out", str(tmp_path / "out")]) == 2
    assert f"{weights} cannot be read" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_exported_files_follow_the_umask(run_dir, tmp_path):
    old = os.umask(0o022)
    try:
        assert export_main([str(run_dir), "--format", "peft", "--out", str(tmp_path / "peft"), "--with-base"]) == 0
        assert export_main([str(run_dir), "--format", "merged", "--out", str(tmp_path / "merged")]) == 0
    finally:
        os.umask(old)
    for root in (tmp_path / "peft", tmp_path / "merged"):
        modes = {p.relative_to(tmp_path).as_posix(): p.stat().st_mode & 0o777 for p in [root, *root.rglob("*")]}
        assert modes[root.name] == 0o755
        assert {m for name, m in modes.items() if name.endswith(".safetensors")} == {0o644}
        assert set(modes.values()) <= {0o644, 0o755}, modes


def test_a_directory_with_one_run_below_it_means_that_run_and_several_are_listed(run_dir, tmp_path, capsys):
    sweep = tmp_path / "sweep"
    one = _copy(run_dir, sweep / "tiny_glue_rte" / "lora" / "glue_0.3m" / "seed=0")
    assert evaluate_main([str(sweep)]) == 0
    assert "reproduced: yes, exactly" in capsys.readouterr().out
    assert export_main([str(sweep / "tiny_glue_rte"), "--format", "peft", "--out", str(tmp_path / "out")]) == 0
    assert f"of {one} ->" in capsys.readouterr().out
    two = _copy(run_dir, sweep / "tiny_glue_rte" / "lora" / "glue_0.3m" / "seed=1")
    assert evaluate_main([str(sweep)]) == 2
    err = capsys.readouterr().err
    assert f"{sweep} holds 2 runs; give one of them:\n  {one}\n  {two}" in err and "status: None" not in err
    assert evaluate_main([str(tmp_path / "nowhere")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_a_failed_run_is_named_with_its_status_and_reason(run_dir, tmp_path, capsys):
    copy = _copy(run_dir, tmp_path / "run")
    result = copy / "result.json"
    result.write_text(result.read_text().replace('"status": "success"', '"status": "failed"', 1)
                      .replace('"reason": null', '"reason": "RuntimeError: boom\\nTraceback ..."', 1))
    assert evaluate_main([str(copy)]) == 2
    assert "holds no successful run (status 'failed': RuntimeError: boom)" in capsys.readouterr().err
