"""A run is its config: identity hash, skip/resume rules, corrupt files, validation, loud failures."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from experiments.identity import PROJECT_ROOT_TOKEN, identity_hash, override_dirname
from experiments.results import SCHEMA_VERSION, atomic_write_json, read_result
from experiments.runner import (
    LOCK_FILE,
    PROJECT_ROOT,
    ConfigError,
    RunConflict,
    _build,
    register_resolvers,
    resolve,
    run,
    run_identity_block,
)
from experiments.spec import dirname_overrides, record_identity
from experiments.tracking import wandb_run_id
from tests.conftest import tiny

register_resolvers()


def _cut(cfg, steps: int = 2) -> Path:
    """Train ``steps`` of a run in-process and stop, as a killed job would: only its checkpoint survives."""
    trainer, _, _ = _build(cfg, resolve(cfg), Path(cfg.run_dir), None)
    trainer.train(stop_after=steps)
    return Path(cfg.run_dir) / "checkpoint.pt"


# ------------------------------------------------------------------------------ identity itself
def test_identity_ignores_paths_logger_and_progress_but_not_results(tmp_path):
    base = run_identity_block(tiny(tmp_path))
    assert run_identity_block(tiny(tmp_path / "elsewhere", "sweep_name=other", "logger=wandb",
                                   "trainer.progress=true", "trainer.log_every=1", "trainer.checkpoint_every=2",
                                   "force=true"))["hash"] == base["hash"]
    for changed in ("trainer.lr=0.01", "trainer.max_steps=5", "method.alpha=8", "task.max_seq_length=32", "seed=1",
                    "model=tiny_bert", "+model.tiny_config.hidden_dropout_prob=0.0"):
        assert run_identity_block(tiny(tmp_path, changed))["hash"] != base["hash"], changed
    assert run_identity_block(tiny(tmp_path, "seed=1"))["group"] == base["group"]  # the seed is not the config


def test_identity_of_full_ft_is_the_same_at_every_budget_and_uses_this_methods_hparams(tmp_path):
    a = run_identity_block(tiny(tmp_path, method="full_ft", budget="glue_0.3m"))
    b = run_identity_block(tiny(tmp_path, method="full_ft", budget="glue_1.2m"))
    assert a["hash"] == b["hash"] and a["keys"]["budget"] == "none"
    # Another method's hyperparameters in the task file do not make this run different.
    lora = run_identity_block(tiny(tmp_path))
    assert run_identity_block(tiny(tmp_path, "task.hparams.full_ft.lr=0.1"))["hash"] == lora["hash"]
    assert run_identity_block(tiny(tmp_path, "++task.hparams.lora.lr=0.1"))["hash"] != lora["hash"]
    data = lora["keys"]["task"]["dataset"]["data_files"]["train"]
    assert data.startswith(PROJECT_ROOT_TOKEN + "/tests/fixtures/")  # a moved checkout is the same run


def test_schema_1_record_identity_is_computed_from_its_config():
    path = PROJECT_ROOT / "tests/fixtures/runs/fixtures/tiny_glue_rte/lora/glue_0.3m"
    a, b = (json.loads((path / f"seed={s}" / "result.json").read_text()) for s in (0, 1))
    assert a["schema_version"] == 1 and "identity" not in a
    ia, ib = record_identity(a), record_identity(b)
    assert identity_hash(ia) != identity_hash(ib)
    assert identity_hash(ia, with_seed=False) == identity_hash(ib, with_seed=False)


def test_override_dirname_keeps_result_changing_keys_only():
    overrides = ["task=tiny_glue_rte", "method=lora", "budget=glue_0.3m", "seed=1", "trainer.lr=0.005",
                 "trainer.progress=false", "trainer.log_every=2", "output_root=/tmp/x", "logger=wandb",
                 "logger.project=p", "sweep=smoke", "+model.tiny_config.cls_dropout=0.0", "model=tiny_deberta",
                 "task.max_seq_length=32"]
    assert dirname_overrides(overrides) == ["+model.tiny_config.cls_dropout=0.0", "model=tiny_deberta",
                                            "task.max_seq_length=32", "trainer.lr=0.005"]
    assert dirname_overrides(["task=a", "method=b", "budget=c", "seed=0"]) == []  # standard runs: today's path


def test_override_dirname_escapes_slashes_and_shortens_long_names_uniquely():
    assert override_dirname(["model.name=microsoft/deberta-v3-base", "trainer.lr=0.005"]) == \
        "model.name=microsoft%2Fdeberta-v3-base,trainer.lr=0.005"
    long = [f"+method.extra_{i}=some_long_value_{i}" for i in range(8)]
    a, b = override_dirname(long + ["trainer.lr=0.001"]), override_dirname(long + ["trainer.lr=0.002"])
    assert len(",".join(long)) > 150 and len(a) == len(b) == 150
    assert a != b and a[:137] == b[:137] == ",".join(long)[:137]  # same prefix, the hash tells them apart
    assert override_dirname(long + ["trainer.lr=0.001"]) == a  # stable: a rerun finds its directory


# ------------------------------------------------------------------------------ skip / resume rules
@pytest.mark.slow
def test_changed_config_is_never_skipped_and_force_replaces_it(tmp_path, capsys):
    cfg = tiny(tmp_path)
    first = run(cfg)
    assert first["status"] == "success" and first["identity"]["hash"] == run_identity_block(cfg)["hash"]
    before = (Path(cfg.run_dir) / "result.json").read_bytes()
    changed = tiny(tmp_path, "trainer.lr=0.0001", "trainer.max_steps=5")
    assert changed.run_dir == cfg.run_dir  # composed without Hydra's override sub-directory: same directory
    with pytest.raises(RunConflict, match=r"differing keys: .*trainer\.lr: 0\.005 -> 0\.0001.*force=true.*sweep_name"):
        run(changed)
    assert (Path(cfg.run_dir) / "result.json").read_bytes() == before  # nothing overwritten
    assert run(cfg)["status"] == "success" and "[skip]" in capsys.readouterr().out  # same config: skipped
    forced = tiny(tmp_path, "trainer.lr=0.0001", "trainer.max_steps=5", "force=true")
    record = run(forced)
    assert record["status"] == "success" and record["train"]["steps"] == 5
    assert read_result(cfg.run_dir)["identity"]["hash"] == run_identity_block(forced)["hash"]


@pytest.mark.slow
def test_resume_only_from_a_checkpoint_of_the_same_config(tmp_path, capsys):
    extra = ("trainer.max_steps=6", "trainer.checkpoint_every=2")
    checkpoint = _cut(tiny(tmp_path, *extra))
    assert torch.load(checkpoint, weights_only=False)["identity"]["hash"] == run_identity_block(tiny(tmp_path, *extra))["hash"]
    with pytest.raises(RunConflict, match=r"checkpoint\.pt holds a checkpoint of a different configuration; "
                                          r"differing keys: trainer\.lr"):
        run(tiny(tmp_path, *extra, "trainer.lr=0.0001"))
    assert checkpoint.exists()
    record = run(tiny(tmp_path, *extra, "trainer.lr=0.0001", "force=true"))
    out = capsys.readouterr().out
    assert "[force]" in out and "[resume]" not in out
    assert record["status"] == "success" and record["config"]["trainer"]["lr"] == 0.0001
    assert len(list(Path(checkpoint.parent).glob("checkpoint.pt.stale-*"))) == 1


@pytest.mark.slow
def test_resumed_run_records_the_wall_time_of_all_segments(tmp_path, capsys):
    extra = ("trainer.max_steps=6", "trainer.checkpoint_every=2")
    checkpoint = _cut(tiny(tmp_path, *extra))
    payload = torch.load(checkpoint, weights_only=False)
    payload["state"]["elapsed_s"] = 1000.0  # the first segment trained for 1000 s before it was killed
    torch.save(payload, checkpoint)
    record = run(tiny(tmp_path, *extra))
    assert "[resume]" in capsys.readouterr().out
    train = record["train"]
    assert train["segment_wall_time_s"] < 1000 < train["wall_time_s"]
    assert train["wall_time_s"] == pytest.approx(1000.0 + train["segment_wall_time_s"])


# ------------------------------------------------------------------------------ corrupt files
@pytest.mark.slow
def test_truncated_checkpoint_is_named_moved_aside_and_the_run_restarts(tmp_path, capsys):
    cfg = tiny(tmp_path, "trainer.max_steps=6", "trainer.checkpoint_every=2")
    checkpoint = _cut(cfg)
    checkpoint.write_bytes(checkpoint.read_bytes()[:1000])
    record = run(cfg)
    out = capsys.readouterr().out
    assert f"[corrupt] {checkpoint} cannot be read" in out and "[resume]" not in out
    assert record["status"] == "success" and record["train"]["steps"] == 6
    assert len(list(checkpoint.parent.glob("checkpoint.pt.corrupt-*"))) == 1


@pytest.mark.slow
@pytest.mark.parametrize("force", [False, True])
def test_half_written_result_json_is_named_moved_aside_and_rerun(tmp_path, capsys, force):
    cfg = tiny(tmp_path, *(["force=true"] if force else []))
    result = Path(cfg.run_dir) / "result.json"
    result.parent.mkdir(parents=True)
    result.write_text('{"schema_version": 2, "status": "succ')
    record = run(cfg)
    assert f"[corrupt] {result} cannot be read (JSONDecodeError" in capsys.readouterr().out
    assert record["status"] == "success" and read_result(cfg.run_dir)["status"] == "success"
    assert len(list(result.parent.glob("result.json.corrupt-*"))) == 1


def test_result_json_gets_the_umask_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_json(tmp_path / "result.json", {"a": 1})
    finally:
        os.umask(old)
    assert (tmp_path / "result.json").stat().st_mode & 0o777 == 0o644


@pytest.mark.slow
def test_record_carries_identity_code_version_and_the_checkpoint_its_hash(tiny_finished_run):
    cfg = tiny_finished_run
    on_disk = read_result(cfg.run_dir)
    assert on_disk["schema_version"] == SCHEMA_VERSION == 3  # schema 3: train.world_size (issue 31)
    assert on_disk["identity"] == run_identity_block(cfg)
    assert on_disk["identity"]["keys"]["trainer"]["max_steps"] == 4
    assert set(on_disk["env"]) >= {"git_sha", "git_dirty", "adalora_version", "versions"}
    checkpoint = torch.load(Path(cfg.run_dir) / "checkpoint.pt", weights_only=False)
    assert checkpoint["identity"]["hash"] == on_disk["identity"]["hash"]


def test_wandb_run_id_is_kept_when_resuming_and_new_otherwise(tmp_path):
    ids = iter(["first", "second", "third"])
    assert wandb_run_id(tmp_path, resume=False, new_id=lambda: next(ids)) == "first"
    assert wandb_run_id(tmp_path, resume=True, new_id=lambda: next(ids)) == "first"  # the next segment
    assert wandb_run_id(tmp_path, resume=False, new_id=lambda: next(ids)) == "second"  # from step 0 again


# ------------------------------------------------------------------------------ trainer validation
@pytest.mark.parametrize(("override", "key"), [
    ("trainer.max_steps=0", "max_steps"), ("trainer.max_steps=-5", "max_steps"),
    ("trainer.epochs=0", "epochs"), ("trainer.batch_size=0", "batch_size"), ("trainer.grad_accum=0", "grad_accum"),
    ("trainer.eval_every=0", "eval_every"), ("trainer.checkpoint_every=-1", "checkpoint_every"),
    ("trainer.eval_batch_size=2.5", "eval_batch_size"), ("trainer.lr=-1", "lr"), ("trainer.warmup_ratio=1.5", "warmup_ratio"),
])
def test_bad_trainer_settings_fail_before_any_model_is_built(tmp_path, override, key):
    extra = [override] if key == "max_steps" else ["trainer.max_steps=null", override]
    cfg = tiny(tmp_path, *extra)
    with pytest.raises(ConfigError, match=rf"trainer\.{key}="):
        resolve(cfg)
    with pytest.raises(ConfigError, match=rf"trainer\.{key}="):
        run(cfg)
    assert not (Path(cfg.run_dir) / "checkpoint.pt").exists()


# ------------------------------------------------------------------------------ from the command line
def _cli(out: Path, *overrides: str, multirun: bool = False) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "experiments.run", *(["-m"] if multirun else []), "task=tiny_glue_rte", "model=tiny_deberta", "method=lora",
           "budget=glue_0.3m", f"output_root={out}", "trainer.progress=false", *overrides]
    return subprocess.run(cmd, cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=600, env={**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"})


@pytest.mark.slow
def test_plain_multirun_over_lr_gives_every_job_its_directory_and_a_summary(tmp_path):
    proc = _cli(tmp_path, "trainer.max_steps=3", "trainer.lr=0.005,1e30", multirun=True)
    assert "raised" not in proc.stdout, proc.stdout[-3000:]
    base = tmp_path / "adhoc" / "tiny_glue_rte" / "lora" / "glue_0.3m" / "seed=0"
    dirs = sorted(p.name for p in base.iterdir())
    assert dirs == ["model=tiny_deberta,trainer.lr=0.005,trainer.max_steps=3",
                    "model=tiny_deberta,trainer.lr=1e+30,trainer.max_steps=3"]
    assert read_result(base / dirs[0])["status"] == "success"
    assert read_result(base / dirs[1])["status"] == "diverged"
    assert f"[sweep] 2 jobs: 1 done, 0 skipped, 1 failed; results under {tmp_path / 'adhoc'}" in proc.stdout
    assert proc.returncode == 1
    assert not list(base.rglob(".hydra"))


@pytest.mark.slow
def test_failed_single_run_exits_non_zero_with_reason_and_traceback_in_run_log(tmp_path):
    missing = tmp_path / "missing.jsonl"
    proc = _cli(tmp_path, "trainer.max_steps=3", f"task.dataset.data_files.train={missing}")
    assert proc.returncode == 1, proc.stdout[-3000:]
    run_dir = next(p.parent for p in tmp_path.rglob("result.json"))
    assert f"[failed] {run_dir / 'result.json'}: " in proc.stdout and "missing.jsonl" in proc.stdout
    assert "Traceback" in (run_dir / "run.log").read_text()


@pytest.mark.slow
def test_busy_job_leaves_the_running_directory_alone(tmp_path):
    run_dir = tmp_path / "adhoc" / "tiny_glue_rte" / "lora" / "glue_0.3m" / "seed=0" / "model=tiny_deberta"
    run_dir.mkdir(parents=True)
    (run_dir / "marker").write_text("the running job's files")
    with open(run_dir / LOCK_FILE, "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        proc = _cli(tmp_path)
    assert "[busy]" in proc.stdout and proc.returncode == 1
    assert sorted(p.name for p in run_dir.iterdir() if p.name != "run.log") == [LOCK_FILE, "marker"]
