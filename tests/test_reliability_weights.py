"""The files ``experiments.evaluate`` / ``experiments.export`` read from a run directory, and where they write.

A run folder travels (copied to a cluster, attached to a bug report), so its record may say
anything: every file read must lie inside the folder and be the record's own run, an export never
lands inside a run folder or writes through a link, a full disk is one line, and a folder copied
from another checkout still re-evaluates. Runs are real (the tiny models, two steps).
"""

from __future__ import annotations

import ast
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import safetensors.torch
import torch
from safetensors import SafetensorError

from adalora.methods.storage import read_safetensors, write_safetensors
from experiments.evaluate import main as evaluate_main
from experiments.export import main as export_main
from experiments.identity import PROJECT_ROOT
from experiments.runner import run
from experiments.weights import WEIGHT_FILES
from tests.conftest import compose

pytestmark = pytest.mark.slow  # every test here reads a trained run

UMASK = 0o022


def finished_run(root: Path, method: str, budget: str, *extra: str) -> Path:
    """A finished tiny run (two steps) with its weights, trained under umask 022."""
    cfg = compose(["task=tiny_glue_rte", "model=tiny_deberta", f"method={method}", f"budget={budget}",
                    f"output_root={root}", "trainer.progress=false", "trainer.max_steps=2", *extra])
    old = os.umask(UMASK)
    try:
        record = run(cfg)
    finally:
        os.umask(old)
    assert record["status"] == "success", record["reason"]
    return Path(cfg.run_dir)


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory) -> Path:
    """A LoRA run (read-only for the tests: copy it to change it)."""
    return finished_run(tmp_path_factory.mktemp("lora"), "lora", "glue_0.3m")


def copy_run(run_dir: Path, to: Path) -> Path:
    shutil.copytree(run_dir, to, symlinks=True)
    return to


def edit_record(run_dir: Path, change: Callable[[dict], None]) -> None:
    path = run_dir / "result.json"
    record = json.loads(path.read_text())
    change(record)
    path.write_text(json.dumps(record))


def forge_weights(run_dir: Path, change: Callable[[dict], None]) -> None:
    """Rewrite the spec in ``weights/final.safetensors`` and make the record agree with the new file's
    size, as someone planting a file would: only the spec differs from the run's own."""
    path = run_dir / WEIGHT_FILES["final"]
    tensors, meta = read_safetensors(path)
    change(meta["spec"])
    write_safetensors(path, tensors, meta)
    edit_record(run_dir, lambda r: r["weights"]["final"].update(bytes=path.stat().st_size))


def one_line(err: str) -> str:
    """The single line a refused command printed (anything more, a traceback, fails the test)."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    return lines[0]


# ------------------------------------------------------------------ reads stay inside the run
def _outside_absolute(run: Path, elsewhere: Path) -> None:
    edit_record(run, lambda r: r["weights"]["final"].update(file=str(elsewhere / "final.safetensors")))


def _outside_dotdot(run: Path, elsewhere: Path) -> None:
    edit_record(run, lambda r: r["weights"]["final"].update(file=f"../{elsewhere.name}/final.safetensors"))


def _outside_symlinked_file(run: Path, elsewhere: Path) -> None:
    (run / WEIGHT_FILES["final"]).symlink_to(elsewhere / "final.safetensors")


def _outside_symlinked_folder(run: Path, elsewhere: Path) -> None:
    (run / "weights").rmdir()
    (run / "weights").symlink_to(elsewhere)


@pytest.mark.parametrize("plant", [_outside_absolute, _outside_dotdot, _outside_symlinked_file,
                                   _outside_symlinked_folder], ids=["absolute", "dotdot", "symlink", "symlinked-dir"])
def test_a_weights_file_outside_the_run_directory_is_never_read(lora_run, tmp_path, capsys, plant):
    run = copy_run(lora_run, tmp_path / "run")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.move(run / WEIGHT_FILES["final"], elsewhere / "final.safetensors")  # the run's own weights, moved out
    plant(run, elsewhere)
    assert evaluate_main([str(run)]) == 2
    line = one_line(capsys.readouterr().err)
    assert "outside the run directory" in line or "relative paths inside its directory" in line
    assert export_main([str(run), "--format", "peft", "--out", str(tmp_path / "out")]) == 2
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------ weights must be the record's
@pytest.fixture(scope="module")
def bitfit_run(tmp_path_factory) -> Path:
    return finished_run(tmp_path_factory.mktemp("bitfit"), "bitfit", "glue_0.3m")


def test_weights_of_another_run_are_refused_by_evaluate_and_export_naming_both(lora_run, bitfit_run, tmp_path,
                                                                                capsys):
    run = copy_run(lora_run, tmp_path / "run")
    shutil.copy(bitfit_run / WEIGHT_FILES["final"], run / WEIGHT_FILES["final"])  # a BitFit run's final.safetensors
    assert evaluate_main([str(run)]) == 2
    line = one_line(capsys.readouterr().err)
    assert "holds the weights of another run (method 'bitfit', seed 0" in line
    assert "result.json records method 'lora', seed 0" in line and "reproduced" not in line
    assert export_main([str(run), "--format", "merged", "--out", str(tmp_path / "merged")]) == 2
    assert "method 'bitfit'" in one_line(capsys.readouterr().err) and not (tmp_path / "merged").exists()


def test_weights_whose_seed_size_or_parameter_count_differs_from_the_record_are_refused(lora_run, tmp_path, capsys):
    seeded = copy_run(lora_run, tmp_path / "seeded")
    forge_weights(seeded, lambda spec: spec.update(seed=1))
    assert evaluate_main([str(seeded)]) == 2
    assert "(method 'lora', seed 1, model 'tiny_deberta')" in one_line(capsys.readouterr().err)
    sized = copy_run(lora_run, tmp_path / "sized")
    size = (sized / WEIGHT_FILES["final"]).stat().st_size
    edit_record(sized, lambda r: r["weights"]["final"].update(bytes=size + 8))
    assert evaluate_main([str(sized)]) == 2
    assert f"bytes {size} (recorded {size + 8})" in one_line(capsys.readouterr().err)
    counted = copy_run(lora_run, tmp_path / "counted")
    parameters = json.loads((counted / "result.json").read_text())["weights"]["final"]["parameters"]
    edit_record(counted, lambda r: r["weights"]["final"].update(parameters=parameters + 1))
    assert evaluate_main([str(counted)]) == 2
    assert f"with {parameters} trained parameters, but result.json records {parameters + 1}" in one_line(
        capsys.readouterr().err)


# ------------------------------------------------------------------ where an export writes
def test_export_into_the_runs_own_weights_folder_is_refused_and_the_weights_stay(lora_run, tmp_path, capsys):
    run = copy_run(lora_run, tmp_path / "run")
    before = (run / WEIGHT_FILES["final"]).read_bytes()
    for out in (run / "weights", run / "exports" / "peft"):
        assert export_main([str(run), "--format", "peft", "--out", str(out), "--overwrite"]) == 2
        assert f"is inside the run directory {run}" in one_line(capsys.readouterr().err)
    assert (run / WEIGHT_FILES["final"]).read_bytes() == before and not (run / "exports").exists()
    assert evaluate_main([str(run)]) == 0


def test_an_out_that_is_a_symlink_is_refused(lora_run, tmp_path, capsys):
    target = tmp_path / "target"
    target.mkdir()
    (target / "mine.txt").write_text("kept")
    link = tmp_path / "link"
    link.symlink_to(target)
    assert export_main([str(lora_run), "--format", "peft", "--out", str(link), "--overwrite"]) == 2
    assert f"--out {link} is a symlink" in one_line(capsys.readouterr().err)
    assert link.is_symlink() and [p.name for p in target.iterdir()] == ["mine.txt"]


def test_export_onto_a_full_disk_is_one_line_naming_disk_and_file_and_leaves_nothing(lora_run, tmp_path,
                                                                                     monkeypatch, capsys):
    real = safetensors.torch.save_file

    def full_disk(tensors, path, *args, **kwargs):  # what safetensors raises on a full disk (tried on a tmpfs)
        real(tensors, path, *args, **kwargs)
        Path(path).write_bytes(Path(path).read_bytes()[:64])
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(safetensors.torch, "save_file", full_disk)
    out = tmp_path / "exports" / "peft"
    assert export_main([str(lora_run), "--format", "peft", "--out", str(out)]) == 2
    line = one_line(capsys.readouterr().err)
    assert f"no space left on device while writing {out}" in line and "(the disk mounted at /" in line
    assert list((tmp_path / "exports").iterdir()) == []  # nothing half-written, no staging folder


# ------------------------------------------------------------------ permissions, devices, other checkouts
def test_weights_follow_the_umask(lora_run):
    modes = {p.relative_to(lora_run).as_posix(): p.stat().st_mode & 0o777 for p in (lora_run / "weights").rglob("*")}
    assert modes == {"weights/final.safetensors": 0o644}
    assert (lora_run / "weights").stat().st_mode & 0o777 == 0o755


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_evaluate_on_a_cuda_device_without_cuda_is_one_line_naming_the_device_and_the_fix(lora_run, capsys):
    assert evaluate_main([str(lora_run), "--device", "cuda"]) == 2
    line = one_line(capsys.readouterr().err)
    assert line.startswith("error: --device cuda cannot be used on this machine") and "use --device cpu" in line


def test_a_run_folder_from_another_checkout_re_evaluates(lora_run, tmp_path, capsys):
    run = copy_run(lora_run, tmp_path / "run")
    stored = (run / "result.json").read_text()
    assert str(PROJECT_ROOT) in stored
    # as written on a colleague's machine: the stored config names that checkout's data files
    (run / "result.json").write_text(stored.replace(str(PROJECT_ROOT), "/home/colleague/adalora"))
    assert evaluate_main([str(run)]) == 0
    assert "reproduced: yes, exactly" in capsys.readouterr().out


def _imports(module: str) -> set[str]:
    tree = ast.parse((PROJECT_ROOT / "experiments" / f"{module}.py").read_text())
    return {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}


def test_weights_and_training_do_not_import_each_other():
    assert "experiments.training" not in _imports("weights")
    assert "experiments.weights" in _imports("training")  # the one direction: training saves weights
