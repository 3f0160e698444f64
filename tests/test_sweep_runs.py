"""Sweeps as a user runs them: real ``python -m experiments.run`` processes on tiny models.

Covers the ledger and closing summary, failure isolation, SIGKILL + rerun (skip, resume,
identical result), the run-directory lock, the submitit launcher (local executor), wandb in
offline mode and two-process data-parallel training (gloo).
"""

from __future__ import annotations

import fcntl
import glob
import json
import math
import os
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from experiments.results import Status, read_record, read_result
from experiments.runner import LOCK_FILE, PROJECT_ROOT, register_resolvers, run
from experiments.sweeps import expand_sweep, read_ledger, summarize
from tests.conftest import RESUMED_ADALORA, tiny
from tests.ports import free_port

register_resolvers()
RTE = PROJECT_ROOT / "tests" / "fixtures" / "data" / "glue" / "rte"
TINY = ["sweep=smoke", "task=tiny_glue_rte", "trainer.progress=false"]


def _sweep(out: Path, *overrides: str, env: dict[str, str] | None = None, wait: bool = True):
    cmd = [sys.executable, "-m", "experiments.run", *TINY, f"output_root={out}", *overrides]
    kwargs = dict(cwd=PROJECT_ROOT, env={**os.environ, **(env or {})}, stdout=subprocess.PIPE,
                  stderr=subprocess.STDOUT, text=True)
    if not wait:
        return subprocess.Popen(cmd, start_new_session=True, **kwargs)
    return subprocess.run(cmd, timeout=600, **kwargs)


def _run_dir(out: Path, method: str, budget: str = "glue_0.3m", overrides: str = "") -> Path:
    """``overrides``: the sub-directory Hydra's result-changing command-line overrides add (identity.override_dir)."""
    path = out / "smoke" / "tiny_glue_rte" / method / budget / "seed=0"
    return path / overrides if overrides else path


# ------------------------------------------------------------------------------ expansion, summary
def test_expand_sweep_follows_hydra_basic_sweeper_rules():
    jobs = expand_sweep({"task": "a,b", "method": "lora,adalora", "seed": "0"}, ["seed=0,1", "method=lora", "x=1"])
    assert len(jobs) == 2 * 1 * 2  # the command line replaces the sweep file's list for a key
    assert jobs[0] == ["task=a", "method=lora", "seed=0", "x=1"]
    assert {j[2] for j in jobs} == {"seed=0", "seed=1"}
    assert len(expand_sweep({"seed": "range(0,5)"}, [])) == 5


def test_summary_counts_outcomes_and_missing_jobs():
    entries = [{"run_dir": "a", "outcome": "done", "status": "success"},
               {"run_dir": "b", "outcome": "skipped", "status": "success"},
               {"run_dir": "c", "outcome": "failed", "status": "oom", "reason": "CUDA out of memory"}]
    text, ok = summarize(entries, total=4, results_root="outputs/glue")
    assert text.splitlines()[0] == ("[sweep] 4 jobs: 1 done, 1 skipped, 1 failed, 1 not reported (killed or crashed: "
                                    "rerun the sweep); results under outputs/glue")
    assert "[oom] c: CUDA out of memory" in text and not ok
    assert summarize(entries[:2], total=2, results_root="r") == (
        "[sweep] 2 jobs: 1 done, 1 skipped, 0 failed; results under r", True)


def test_ledger_keeps_jobs_that_share_a_run_directory(tmp_path, monkeypatch):
    """full_ft at two budget levels is one run directory: one job trains, the other skips it."""
    from experiments import sweeps

    ledger = tmp_path / "ledger.jsonl"
    monkeypatch.setenv(sweeps.LEDGER_ENV, str(ledger))
    for job, outcome in ((0, "done"), (1, "skipped"), (1, "skipped")):  # job 1 requeued: reports twice
        monkeypatch.setattr(sweeps, "_job_number", lambda job=job: job)
        sweeps.record_outcome(tmp_path / "full_ft" / "none", outcome, "success")
    entries = read_ledger(ledger)
    assert sorted((e["job"], e["outcome"]) for e in entries) == [(0, "done"), (1, "skipped")]
    assert summarize(entries, total=2, results_root="r")[1]


# ------------------------------------------------------------------------------ failures, kill, resume
@pytest.mark.slow
def test_failing_job_is_isolated_and_reported(tmp_path):
    """One job's data is invalid: the other job finishes, the summary names the failure, exit 1."""
    (tmp_path / "conf" / "task").mkdir(parents=True)
    bad = tmp_path / "bad_train.jsonl"
    bad.write_text('{"sentence1": "a", "sentence2": "b", "label": 7, "idx": 0}\n')
    (tmp_path / "conf" / "task" / "tiny_broken.yaml").write_text(
        (PROJECT_ROOT / "conf" / "task" / "tiny_glue_rte.yaml").read_text()
        .replace("name: tiny_glue_rte", "name: tiny_broken")
        .replace("'${project_root:}/tests/fixtures/data/glue/rte/train.jsonl'", f"'{bad}'"))
    out = tmp_path / "out"
    proc = _sweep(out, "task=tiny_broken,tiny_glue_rte", "method=lora", "trainer.max_steps=3",
                  f"hydra.searchpath=[file://{tmp_path / 'conf'}]")
    assert proc.returncode == 1, proc.stdout[-3000:]
    assert "[sweep] 2 jobs: 1 done, 0 skipped, 1 failed; results under" in proc.stdout
    assert "tiny_broken/lora/glue_0.3m/seed=0/trainer.max_steps=3: DataValidationError" in proc.stdout
    assert "field 'label'" in proc.stdout
    assert read_result(_run_dir(out, "lora", overrides="trainer.max_steps=3"))["status"] == "success"
    broken = out / "smoke" / "tiny_broken" / "lora" / "glue_0.3m" / "seed=0" / "trainer.max_steps=3"
    assert read_result(broken)["status"] == "failed"


@pytest.mark.slow
def test_sigkilled_sweep_reruns_without_loss_and_resumes_identically(tmp_path, uninterrupted_adalora):
    steps = [*RESUMED_ADALORA, "trainer.log_every=5"]
    sub = "trainer.eval_every=10,trainer.max_steps=60"  # checkpoint and log cadence change no result: not in it
    out = tmp_path / "killed"
    proc = _sweep(out, "method=lora,adalora,bitfit", *steps, wait=False)
    checkpoint = _run_dir(out, "adalora", overrides=sub) / "checkpoint.pt"
    deadline = time.monotonic() + 300
    while not checkpoint.exists():
        assert proc.poll() is None, proc.stdout.read()[-3000:]
        assert time.monotonic() < deadline, "no adalora checkpoint within 300 s"
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    lora_before = (_run_dir(out, "lora", overrides=sub) / "result.json").read_bytes()
    assert json.loads(lora_before)["status"] == "success"
    assert read_result(_run_dir(out, "adalora", overrides=sub))["status"] == "running"  # killed mid-run
    assert read_result(_run_dir(out, "bitfit", "none", overrides=sub)) is None

    rerun = _sweep(out, "method=lora,adalora,bitfit", *steps)
    assert rerun.returncode == 0, rerun.stdout[-3000:]
    assert "[sweep] 3 jobs: 2 done, 1 skipped, 0 failed; results under" in rerun.stdout
    assert f"[resume] {_run_dir(out, 'adalora', overrides=sub)} from step" in rerun.stdout
    assert (_run_dir(out, "lora", overrides=sub) / "result.json").read_bytes() == lora_before  # not repeated, not rewritten

    resumed, clean = read_result(_run_dir(out, "adalora", overrides=sub)), uninterrupted_adalora
    assert resumed["status"] == clean["status"] == "success"
    assert resumed["metrics"]["evals"] == clean["metrics"]["evals"]
    assert resumed["ranks"] == clean["ranks"]
    assert resumed["train"]["final_train_loss"] == clean["train"]["final_train_loss"]
    assert read_result(_run_dir(out, "bitfit", "none", overrides=sub))["status"] == "success"


def _tiny_cfg(out: Path, method: str = "lora"):
    return tiny(out, method=method, steps=3)


@pytest.mark.slow
def test_run_directory_lock_stops_a_second_job(tmp_path, capsys):
    cfg = _tiny_cfg(tmp_path)
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True)
    with open(run_dir / LOCK_FILE, "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)  # another job is running this directory
        record = run(cfg)
        assert record == {"status": "running"}
        assert "[busy]" in capsys.readouterr().out
        assert read_result(run_dir) is None  # it trained nothing and wrote nothing
    assert run(cfg)["status"] == "success"


# ------------------------------------------------------------------------------ launchers, tracking
@pytest.mark.slow
def test_submitit_launcher_runs_a_tiny_sweep_with_its_local_executor(tmp_path):
    proc = _sweep(tmp_path, "launcher=submitit_local", "method=lora,adalora", "trainer.max_steps=4")
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "[sweep] 2 jobs: 2 done, 0 skipped, 0 failed" in proc.stdout
    for method in ("lora", "adalora"):
        assert read_result(_run_dir(tmp_path, method, overrides="trainer.max_steps=4"))["status"] == "success"
    assert list((tmp_path / "smoke" / ".submitit").glob("*/*_result.pkl"))  # the jobs ran through submitit


def _wandb_records(path: str) -> list:
    """Records of a W&B transaction log (LevelDB log format after a 7-byte header)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data, pos, block, records, partial = Path(path).read_bytes(), 7, 32768, [], b""
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(partial + chunk)
            records.append(record)
            partial = b""
        elif kind in (2, 3):
            partial += chunk
    return records


@pytest.mark.slow
def test_wandb_offline_writes_one_run_per_job_with_rank_history(tmp_path):
    proc = _sweep(tmp_path, "logger=wandb", "logger.project=adalora-test", "method=lora,adalora",
                  "trainer.max_steps=8", "trainer.log_every=2", env={"WANDB_MODE": "offline", "WANDB_SILENT": "true"})
    assert proc.returncode == 0, proc.stdout[-3000:]
    for method in ("lora", "adalora"):
        logs = glob.glob(str(_run_dir(tmp_path, method, overrides="trainer.max_steps=8") / "wandb" / "offline-run-*" / "run-*.wandb"))
        assert len(logs) == 1, logs
        records = _wandb_records(logs[0])
        runs = [r.run for r in records if r.WhichOneof("record_type") == "run"]
        assert (runs[0].run_group, runs[0].job_type, runs[0].project) == ("smoke", method, "adalora-test")
        history = [{i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in r.history.item}
                   for r in records if r.WhichOneof("record_type") == "history"]
        assert any("train/loss" in h for h in history) and any("eval/accuracy" in h for h in history)
        budgets = [h["budget/total"] for h in history if "budget/total" in h]
        if method == "adalora":
            final = read_result(_run_dir(tmp_path, method, overrides="trainer.max_steps=8"))["ranks"]
            assert budgets == [h["budget"] for h in final["history"]] and budgets[0] > budgets[-1]
            ranks = [h for h in history if "budget/total" in h][-1]
            assert {k[len("rank/"):]: v for k, v in ranks.items() if k.startswith("rank/")} == final["pattern"]
            assert any(r.WhichOneof("record_type") == "exit" and r.exit.exit_code == 0 for r in records)
        else:
            assert budgets == []


# ------------------------------------------------------------------------------ data parallel
def _probe_overrides(out: Path, batch_size: int) -> list[str]:
    """The tiny AdaLoRA run every data-parallel probe trains (dropout off, so ranks and one process compare)."""
    return ["task=tiny_glue_rte", "model=tiny_deberta", "method=adalora", "budget=glue_0.3m",
            f"output_root={out}", "trainer.progress=false", "trainer.epochs=3", f"trainer.batch_size={batch_size}",
            "trainer.eval_every=6", "trainer.log_every=2",
            *(f"+model.tiny_config.{key}=0.0" for key in
              ("hidden_dropout_prob", "attention_probs_dropout_prob", "pooler_dropout", "cls_dropout"))]


@pytest.fixture(scope="module")
def two_process_runs(tmp_path_factory) -> Path:
    """One 2-process gloo launch of tests/ddp_probe.py training, in the same two processes, the three runs the
    data-parallel tests read: the AdaLoRA probe (``rank<r>.pt``), the same run with rank 1's loss NaN at step 3
    (``nan/rank<r>.pt``), and the probe's settings as a 2-step LoRA run through the runner's own path, which
    writes its record (under ``record/``). A launch costs three interpreters of ~4 s of imports each and the
    process group: one launch, not three. The record run comes after the diverged one, so its success also shows
    that a divergence leaves the process group usable."""
    out = tmp_path_factory.mktemp("two_process_runs")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}",
           str(PROJECT_ROOT / "tests" / "ddp_probe.py"), str(out), *_probe_overrides(out, batch_size=4),
           "--then=nan", "--nan-at=1:3",
           "--then=record", "--record", "method=lora", f"output_root={out / 'record'}", "trainer.max_steps=2",
           "trainer.eval_every=2"]
    proc = subprocess.run(cmd, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, "\n".join(line for line in proc.stderr.splitlines() if "Error" in line)[-4000:]
    return out


def _ranks(folder: Path) -> list[dict]:
    """What each of the two ranks of one probed run ended with."""
    return [torch.load(folder / f"rank{r}.pt", weights_only=False) for r in range(2)]


@pytest.mark.slow
def test_two_process_gloo_ddp_masks_match_across_ranks_and_single_process(tmp_path, two_process_runs):
    """2 ranks x batch 4 see the same 8 examples per step as 1 process x batch 8 (same order). The single process
    is this one (no launcher: the reference is what one process computes, not a claim about torchrun)."""
    from tests import ddp_probe

    ranks = _ranks(two_process_runs)
    ddp_probe.main(str(tmp_path / "single"), _probe_overrides(tmp_path / "single", batch_size=8))
    single = torch.load(tmp_path / "single" / "rank0.pt", weights_only=False)
    assert ranks[0]["world_size"] == 2 and ranks[0]["total_steps"] == single["total_steps"] == 18
    for name, mask in ranks[0]["masks"].items():
        assert torch.equal(mask, ranks[1]["masks"][name]), name
        assert torch.equal(ranks[0]["lambdas"][name], ranks[1]["lambdas"][name]), name
        assert torch.equal(mask, single["masks"][name]), name
        torch.testing.assert_close(ranks[0]["lambdas"][name], single["lambdas"][name], rtol=1e-3, atol=1e-5)
    assert ranks[0]["pattern"] == ranks[1]["pattern"] == single["pattern"]
    assert sum(ranks[0]["pattern"].values()) == 2 * len(ranks[0]["pattern"])  # b(T) = target_r x n
    assert ranks[0]["evals"] == ranks[1]["evals"]
    for ddp_eval, single_eval in zip(ranks[0]["evals"], single["evals"], strict=True):
        assert ddp_eval["step"] == single_eval["step"]
        assert ddp_eval["accuracy"] == pytest.approx(single_eval["accuracy"], abs=1e-6)
    assert ranks[0]["train_loss"] == pytest.approx(single["train_loss"], rel=1e-3)
    assert ranks[0]["diverged_at"] is ranks[1]["diverged_at"] is None


@pytest.mark.slow
def test_a_nan_on_one_rank_stops_every_rank_at_the_same_step(two_process_runs):
    """Rank 1's loss alone is NaN at step 3: both ranks stop there as diverged (each rank stopping on
    its own loss left rank 0 training into a collective with a process that had left)."""
    ranks = _ranks(two_process_runs / "nan")
    assert [r["diverged_at"] for r in ranks] == [3, 3]
    assert math.isfinite(ranks[0]["train_loss"]) and math.isnan(ranks[1]["train_loss"])  # the fault was rank 1's


@pytest.mark.slow
def test_a_two_process_record_says_world_size_2(two_process_runs):
    """Issue 31 item 3: the record says how many processes trained (Table 15's GPU-hours count them). The record is
    the one ``experiments.runner.run`` (what ``python -m experiments.run`` calls) wrote in a 2-process launch."""
    [result] = (two_process_runs / "record" / "adhoc" / "tiny_glue_rte" / "lora" / "glue_0.3m" / "seed=0").rglob("result.json")
    record = read_record(result.parent)
    assert record.status is Status.SUCCESS and record.world_size == 2
    assert record.train["world_size"] == 2 and record.train["devices"] == (2 if torch.cuda.is_available() else 0)
