"""A method from outside the suite: registered without editing it, run, swept, resumed, reloaded, exported.

The method lives in a temporary directory: a module file (named by the method config's ``module:``)
or a fake installed distribution whose ``entry_points.txt`` exposes it in the group
``adalora.methods``; its ``method/<name>.yaml`` is in a config directory of its own, added with
``hydra.searchpath``. Every step goes through the suite's entry points (``python -m
experiments.run``, ``experiments.evaluate``, ``python -m experiments.export``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForSequenceClassification

from adalora.methods import MethodHandle
from analysis.collect import collect
from analysis.figures import budget_curve
from analysis.index_page import write_index
from analysis.tables import format_table, results_table, write_table
from experiments.evaluate import reevaluate
from experiments.export import main as export_main
from experiments.runner import PROJECT_ROOT, _build, register_resolvers, resolve, run
from experiments.weights import build_base, load_run
from tests.conftest import compose

register_resolvers()

# A LoRA-like update on W_q and W_v only, with its own layer, settings, knob and optimiser groups.
KIND_SOURCE = '''
from dataclasses import dataclass

import torch
from torch import nn

from adalora.methods import MethodHandle, register_kind, require


class LowRankQV(nn.Module):
    def __init__(self, base_layer, width):
        super().__init__()
        self.base_layer = base_layer
        self.ext_down = nn.Parameter(torch.randn(width, base_layer.in_features) * 0.02)
        self.ext_up = nn.Parameter(torch.zeros(base_layer.out_features, width))

    def delta_weight(self):
        return self.ext_up @ self.ext_down

    def forward(self, x):
        return self.base_layer(x) + (x @ self.ext_down.T) @ self.ext_up.T


@dataclass
class QVSettings:
    width: int
    up_lr_ratio: float = 4.0

    def __post_init__(self):
        require(self.width >= 1, "width", "a positive width", self.width)


@register_kind
class QVLowRank(MethodHandle):
    kind = "{kind}"
    settings_cls = QVSettings
    size_knob = "width"
    export_formats = ("merged",)

    def insert_layers(self):
        self.wrap_linears(("W_q", "W_v"), lambda lin: LowRankQV(lin, self.settings.width))

    def optimizer_param_groups(self, weight_decay, lr):
        up = [p for n, p in self.model.named_parameters() if n.endswith("ext_up")]
        rest = [p for n, p in self.model.named_parameters() if p.requires_grad and not n.endswith("ext_up")]
        return [{{"params": rest, "weight_decay": weight_decay}},
                {{"params": up, "weight_decay": weight_decay, "lr": lr * self.settings.up_lr_ratio}}]
'''
TINY = ["task=tiny_glue_rte", "model=tiny_deberta", "trainer.progress=false", "trainer.max_steps=4",
        "trainer.eval_every=2", "trainer.checkpoint_every=2", "trainer.keep_checkpoint=true"]
# tiny DeBERTa: W_q and W_v are 32 x 32 in 2 layers, so a width w costs 2 * 2 * 64 w = 256 w parameters;
# the level's target is LoRA r on the six weight types, 448 r (r = 2: 1792 -> w = 7; r = 4: 3584 -> w = 14).
WIDTHS = {"glue_0.3m": 7, "glue_0.6m": 14}


def _conf_dir(root: Path, name: str, module: str | None) -> Path:
    conf = root / "conf"
    (conf / "method").mkdir(parents=True)
    module_line = f", module: {module}" if module else ""
    (conf / "method" / f"{name}.yaml").write_text(f"{{name: {name}, label: 'QV low-rank'{module_line}, width: null}}\n")
    return conf


def _run(out: Path, conf: Path, pythonpath: Path, *overrides: str, multirun: bool = False,
         base: tuple[str, ...] | list[str] = tuple(TINY)) -> subprocess.CompletedProcess:
    """``python -m experiments.run`` with the user's config dir and module path (``base``: the tiny run's overrides;
    tests/test_task_families.py passes its own, without the task)."""
    cmd = [sys.executable, "-m", "experiments.run", *(["-m"] if multirun else []), f"hydra.searchpath=[file://{conf}]", *base,
           f"output_root={out}", *overrides]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(pythonpath), str(PROJECT_ROOT)]), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def _records(out: Path) -> dict[tuple[str, int], tuple[Path, dict]]:
    found = {}
    for path in out.rglob("result.json"):
        record = json.loads(path.read_text())
        found[(record["run"]["budget"], record["run"]["seed"])] = (path.parent, record)
    return found


def _logits(model: torch.nn.Module) -> torch.Tensor:
    gen = torch.Generator().manual_seed(3)
    ids = torch.randint(5, model.config.vocab_size, (3, 12), generator=gen)
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits


@pytest.mark.slow
def test_a_method_in_the_users_module_runs_sweeps_resumes_reloads_and_exports(tmp_path, monkeypatch, capsys):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "ext_qv_methods.py").write_text(KIND_SOURCE.format(kind="ext_qv"))
    conf = _conf_dir(tmp_path, "ext_qv", "ext_qv_methods")
    monkeypatch.syspath_prepend(str(pkg))

    # a sweep over budgets and seeds, each run at the width the count rule picks
    _run(tmp_path / "out", conf, pkg, "method=ext_qv", "budget=glue_0.3m,glue_0.6m", "seed=0,1", multirun=True)
    records = _records(tmp_path / "out")
    assert sorted(records) == [("glue_0.3m", 0), ("glue_0.3m", 1), ("glue_0.6m", 0), ("glue_0.6m", 1)]
    for (budget, _), (run_dir, record) in records.items():
        assert record["status"] == "success", record["reason"]
        assert record["run"]["label"] == "QV low-rank" and record["run"]["method"] == "ext_qv"
        params = record["params"]
        assert params["trainable_paper"] == params["budget_target"] == 256 * WIDTHS[budget]
        assert params["budget_gap"] == 0.0 and params["trainable_paper_start"] == 256 * WIDTHS[budget]
        assert record["ranks"] is None and record["weights"]["final"]["file"] == "weights/final.safetensors"
        optimizer = torch.load(run_dir / "checkpoint.pt", weights_only=False)["optimizer"]
        lrs = [g["lr"] for g in optimizer["param_groups"]]  # the kind's own groups reached AdamW
        assert len(lrs) == 2 and lrs[1] == pytest.approx(4 * lrs[0])

    # the tables, the budget curve and the report page show it under its config's label, after the paper's rows
    df = collect(tmp_path / "out")
    table1 = results_table(df.assign(task=df["task"].replace({"tiny_glue_rte": "glue_rte"}), model="deberta_v3_base"),
                           "table1")
    assert list(table1.index)[-2:] == [("ext_qv", "glue_0.3m"), ("ext_qv", "glue_0.6m")]
    rows = format_table(table1).set_index(["Method", "Budget", "Source"])
    assert rows.loc[("QV low-rank", "0.3M", "paper"), "RTE"] == "—"
    assert rows.loc[("QV low-rank", "0.6M", "ours"), "RTE"].endswith("(n=2)")
    curve = budget_curve(df, "tiny_glue_rte", "accuracy")
    assert "QV low-rank (ours)" in {c.get_label() for c in curve.axes[0].containers}
    write_table(table1, tmp_path / "figures", "table1", "Table 1")
    page = write_index(tmp_path / "out", tmp_path / "figures").read_text()
    assert page.count("QV low-rank") >= 2  # the run summary and the table

    # resume: a run that stopped after its step-2 checkpoint continues to the uninterrupted result
    cfg = compose([f"hydra.searchpath=[file://{conf}]", *TINY, "method=ext_qv", "budget=glue_0.3m", "seed=0",
                   f"output_root={tmp_path}/cut"])
    full_dir, full = records[("glue_0.3m", 0)]
    cut_dir = Path(cfg.run_dir)  # the run the in-process rerun below resumes
    trainer, _, _ = _build(cfg, resolve(cfg), cut_dir, None)
    trainer.train(stop_after=2)
    del trainer
    capsys.readouterr()
    assert run(cfg)["status"] == "success"  # what python -m experiments.run calls for the job (in this process)
    printed = capsys.readouterr().out
    assert "[resume]" in printed and "from step 2" in printed
    resumed = json.loads((cut_dir / "result.json").read_text())
    assert resumed["metrics"]["evals"] == full["metrics"]["evals"]

    # save and re-evaluate: the reloaded weights reproduce the recorded metrics
    assert reevaluate(full_dir)["reproduced"]
    loaded = load_run(full_dir)
    assert loaded.handle.kind == "ext_qv" and loaded.handle.settings.width == 7
    loaded.handle.save(tmp_path / "mine")
    again = MethodHandle.load(build_base(loaded.spec), tmp_path / "mine")  # the run's base, rebuilt
    assert torch.equal(_logits(again.model), _logits(loaded.model))

    # export: the kind says it merges, so the suite's exporter writes a plain transformers checkpoint; the
    # weights file names the user's module, which a new process imports only when allowed (adalora.trust)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(pkg), str(PROJECT_ROOT)]),
           "ADALORA_TRUST_MODULES": "ext_qv_methods"}
    subprocess.run([sys.executable, "-m", "experiments.export", str(full_dir), "--format", "merged", "--out",
                    str(tmp_path / "merged")], cwd=PROJECT_ROOT, check=True, capture_output=True, timeout=300, env=env)
    merged = AutoModelForSequenceClassification.from_pretrained(tmp_path / "merged").eval()
    assert torch.allclose(_logits(merged), _logits(loaded.model), atol=1e-5)
    monkeypatch.setenv("ADALORA_TRUST_MODULES", "ext_qv_methods")
    assert export_main([str(full_dir), "--format", "peft", "--out", str(tmp_path / "peft")]) == 2  # in this process
    assert "'ext_qv' (ext_qv) has no PEFT form; use --format merged" in capsys.readouterr().err


@pytest.mark.slow
def test_a_method_from_an_installed_packages_entry_point_runs_and_reloads(tmp_path, monkeypatch):
    site = tmp_path / "site"
    (site / "ext_ep_qv").mkdir(parents=True)
    (site / "ext_ep_qv" / "__init__.py").write_text(KIND_SOURCE.format(kind="ext_ep_qv"))
    dist = site / "ext_ep_qv-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: ext-ep-qv\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[adalora.methods]\next_ep_qv = ext_ep_qv:QVLowRank\n")
    conf = _conf_dir(tmp_path, "ext_ep_qv", module=None)  # no module: the entry point names it
    monkeypatch.syspath_prepend(str(site))

    _run(tmp_path / "out", conf, site, "method=ext_ep_qv", "budget=glue_0.6m", "seed=0")
    [(run_dir, record)] = _records(tmp_path / "out").values()
    assert record["status"] == "success", record["reason"]
    assert record["params"]["budget_target"] == record["params"]["trainable_paper"] == 256 * 14
    assert reevaluate(run_dir)["reproduced"]
    assert load_run(run_dir).handle.kind == "ext_ep_qv"
