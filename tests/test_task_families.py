"""A task family from outside the suite: registered without editing it, swept, resumed, re-evaluated, tabled.

The family lives in a temporary directory: a module file named by the task config's ``module:``, or
a fake installed distribution whose ``entry_points.txt`` exposes it in the group
``adalora.task_families``; its ``task/<name>.yaml`` is in a config directory of its own, added with
``hydra.searchpath``. Every step goes through the suite's entry points, as
tests/test_external_method.py does for a method kind.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from adalora import trust
from analysis.collect import collect
from analysis.index_page import write_index
from analysis.tables import format_table, summary_table, write_table
from experiments.runner import PROJECT_ROOT, _build, register_resolvers, resolve
from experiments.tasks import (
    ENTRY_POINT_GROUP,
    GlueTask,
    SquadTask,
    SummarizationTask,
    TaskConfigError,
    build_task,
    get_family,
    peft_task_type_for_head,
    registered_families,
)
from tests.conftest import compose
from tests.test_external_method import _run as run_with_user_code

register_resolvers()

RTE = PROJECT_ROOT / "tests" / "fixtures" / "data" / "glue" / "rte"
# One text column -> a class, scored by accuracy and its own "errors" count; its own typed keys.
FAMILY_SOURCE = '''
from dataclasses import dataclass

import datasets
import torch
from transformers import DataCollatorWithPadding

from experiments.tasks import Task, TaskConfig, register_task_family
from experiments.tasks.base import batches, require_strings, tokenize


@dataclass(frozen=True)
class OneTextConfig(TaskConfig):
    text_column: str = "sentence"
    num_classes: int = 2
    max_length: int = 32


@register_task_family
class OneText(Task):
    family = "{family}"
    config_cls = OneTextConfig
    head = "sequence_classification"
    budget_families = frozenset({{"glue"}})
    archs = frozenset({{"deberta-v2"}})
    peft_task_type = "SEQ_CLS"

    def configure(self, config):
        self.num_labels = config.num_classes

    def default_main_metric(self):
        return "accuracy"

    def required_columns(self):
        return [self.config.text_column, "label"]

    def validate_split(self, dataset, ref):
        require_strings(dataset, self.config.text_column, ref, non_empty=True)

    def _encode(self, tokenizer):
        def encode(batch):
            features = tokenizer(batch[self.config.text_column], truncation=True, max_length=self.config.max_length)
            features["labels"] = [int(label) for label in batch["label"]]
            return features
        return encode

    def train_dataset(self, tokenizer):
        return tokenize(self.load()[self.train_split], self._encode(tokenizer), desc="one-text train")

    def collator(self, tokenizer):
        return DataCollatorWithPadding(tokenizer)

    def evaluate_split(self, model, tokenizer, split, batch_size, device):
        data = self.cached_eval_data(tokenizer, split, lambda: tokenize(self.load()[split], self._encode(tokenizer),
                                                                         desc="one-text eval"))
        wrong = total = 0
        for batch in batches(data, self.collator(tokenizer), batch_size, device):
            labels = batch.pop("labels")
            wrong += int((model(**batch).logits.argmax(-1) != labels).sum())
            total += len(labels)
        return {{"accuracy": 100.0 * (total - wrong) / total, "errors": float(wrong)}}
'''
TINY = ["model=tiny_deberta", "trainer.progress=false", "trainer.max_steps=4", "trainer.eval_every=2",
        "trainer.checkpoint_every=2", "trainer.keep_checkpoint=true"]


def _task_cfg(name: str, family: str, module: str | None) -> dict:
    files = {"train": str(RTE / "train.jsonl"), "validation": str(RTE / "validation.jsonl")}
    cfg = {"name": name, "family": family, "text_column": "sentence2", "max_length": 24,
           "dataset": {"path": None, "name": None, "data_files": files},
           "hparams": {"default": {"lr": 0.005, "batch_size": 8, "epochs": 1, "warmup_steps": 0, "eval_batch_size": 16},
                       "adalora": {"tinit": 0, "tfinal": 1, "deltaT": 1, "orth_reg_weight": 0.1}}}
    return {**cfg, "module": module} if module else cfg


def _conf_dir(root: Path, task: dict) -> Path:
    conf = root / "conf"
    (conf / "task").mkdir(parents=True)
    (conf / "task" / f"{task['name']}.yaml").write_text(json.dumps(task) + "\n")  # JSON is YAML
    return conf


def _module(tmp_path: Path, module: str, family: str) -> Path:
    pkg = tmp_path / "pkg"
    pkg.mkdir(exist_ok=True)
    (pkg / f"{module}.py").write_text(FAMILY_SOURCE.format(family=family))
    return pkg


def _run(out: Path, conf: Path, pythonpath: Path, *overrides: str, multirun: bool = False) -> subprocess.CompletedProcess:
    return run_with_user_code(out, conf, pythonpath, *overrides, multirun=multirun, base=TINY)


def _records(out: Path) -> dict[tuple[str, int], tuple[Path, dict]]:
    found = {}
    for path in out.rglob("result.json"):
        record = json.loads(path.read_text())
        found[(record["run"]["method"], record["run"]["seed"])] = (path.parent, record)
    return found


def test_a_family_in_the_users_module_is_built_from_its_task_config(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(_module(tmp_path, "ext_fam_onetext", "ext_onetext")))
    task = build_task(_task_cfg("ext_rte", "ext_onetext", "ext_fam_onetext"))
    assert (task.family, task.head, task.num_labels, task.main_metric) == ("ext_onetext", "sequence_classification",
                                                                           2, "accuracy")
    assert task.config.text_column == "sentence2" and task.config.max_length == 24
    assert len(task.load()["train"]) == 48 and "ext_onetext" in registered_families()
    family = get_family("ext_onetext")
    assert family.accepts_arch("deberta-v2") and not family.accepts_arch("bart")
    assert family.accepted_budget_families({}) == {"glue"}


def test_a_task_config_key_the_family_does_not_have_is_refused_naming_the_nearest(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(_module(tmp_path, "ext_fam_typo", "ext_typo")))
    cfg = {**_task_cfg("t", "ext_typo", "ext_fam_typo"), "text_colum": "sentence1"}
    with pytest.raises(TaskConfigError, match=r"task.text_colum is not a valid key of task family 'ext_typo' "
                                              r"\(did you mean task.text_column\?\)"):
        build_task(cfg)
    with pytest.raises(TaskConfigError, match=r"task.max_seq_lenght is not a valid key of task family 'glue' "
                                              r"\(did you mean task.max_seq_length\?\)"):
        build_task({"family": "glue", "glue_task": "rte", "max_seq_lenght": 256})
    with pytest.raises(TaskConfigError, match=r"task.max_length must be an int, got '24'"):
        build_task({**_task_cfg("t", "ext_typo", "ext_fam_typo"), "max_length": "24"})


def test_an_unknown_family_is_refused_naming_the_registered_ones():
    with pytest.raises(TaskConfigError, match=r"task.family 'translation' is not registered; registered families: "
                                              r"\[.*'glue', 'squad', 'summarization'.*\].*docs/tasks.md"):
        build_task({"family": "translation"})


def test_a_family_from_an_installed_packages_entry_point_is_found_by_name(tmp_path, monkeypatch):
    site = tmp_path / "site"
    (site / "ext_ep_onetext").mkdir(parents=True)
    (site / "ext_ep_onetext" / "__init__.py").write_text(FAMILY_SOURCE.format(family="ext_ep_onetext"))
    dist = site / "ext_ep_onetext-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: ext-ep-onetext\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\next_ep_onetext = ext_ep_onetext:OneText\n")
    monkeypatch.syspath_prepend(str(site))
    task = build_task(_task_cfg("ext_ep_rte", "ext_ep_onetext", module=None))  # no module: the entry point names it
    assert type(task).__module__ == "ext_ep_onetext" and "ext_ep_onetext" in registered_families()


def test_a_task_module_named_by_a_file_read_from_disk_is_not_imported(tmp_path, monkeypatch):
    pkg = _module(tmp_path, "ext_fam_untrusted", "ext_untrusted")
    (pkg / "ext_fam_untrusted.py").write_text(f"open({str(tmp_path / 'ran')!r}, 'w').close()\n")
    monkeypatch.syspath_prepend(str(pkg))
    with trust.reading(str(tmp_path / "result.json")), pytest.raises(trust.UntrustedCode, match="task.module"):
        build_task(_task_cfg("t", "ext_untrusted", "ext_fam_untrusted"))
    assert not (tmp_path / "ran").exists()


def test_each_builtin_family_owns_its_head_budget_families_archs_and_peft_task_type():
    assert {f: (get_family(f).head, get_family(f).peft_task_type) for f in ("glue", "squad", "summarization")} == {
        "glue": ("sequence_classification", "SEQ_CLS"), "squad": ("question_answering", "QUESTION_ANS"),
        "summarization": ("seq2seq_lm", "SEQ_2_SEQ_LM")}
    assert (GlueTask.budget_families, SquadTask.budget_families, SummarizationTask.budget_families) == (
        {"glue", "qa"}, {"qa"}, {"nlg"})
    assert GlueTask.accepts_arch("roberta") and SquadTask.accepts_arch("bert") and not GlueTask.accepts_arch("bart")
    assert SummarizationTask.accepts_arch("bart") and not SummarizationTask.accepts_arch("deberta-v2")
    assert GlueTask.accepted_budget_families({"budget_families": ["glue", "qa", "nlg"]}) == {"glue", "qa", "nlg"}
    assert peft_task_type_for_head("question_answering") == "QUESTION_ANS"


@pytest.mark.slow
def test_a_family_in_the_users_module_sweeps_resumes_reevaluates_and_reaches_the_tables(tmp_path, monkeypatch):
    from experiments.evaluate import reevaluate

    pkg = _module(tmp_path, "ext_fam_sweep", "ext_sweep")
    conf = _conf_dir(tmp_path, _task_cfg("ext_rte", "ext_sweep", "ext_fam_sweep"))
    monkeypatch.syspath_prepend(str(pkg))

    # a sweep over two methods and two seeds
    _run(tmp_path / "out", conf, pkg, "task=ext_rte", "method=lora,adalora", "budget=glue_0.3m", "seed=0,1",
         multirun=True)
    records = _records(tmp_path / "out")
    assert sorted(records) == [("adalora", 0), ("adalora", 1), ("lora", 0), ("lora", 1)]
    for (_, _), (_, record) in records.items():
        assert record["status"] == "success", record["reason"]
        assert record["run"]["family"] == "ext_sweep" and record["params"]["budget_target"] == 2 * 2 * 448
        assert set(record["metrics"]["final"]) >= {"accuracy", "errors"}

    # the summary table and the report page show its task and its metric
    df = collect(tmp_path / "out")
    assert set(df.loc[df["is_main"], "metric"]) == {"accuracy"}
    table = summary_table(df)
    assert {("lora", "glue_0.3m"), ("adalora", "glue_0.3m")} <= set(table.index)
    rows = format_table(table).set_index(["Method", "Budget", "Source"])
    assert rows.filter(like="ext_rte").iloc[:, 0].str.endswith("(n=2)").all()
    write_table(table, tmp_path / "figures", "summary", "Summary")
    assert "ext_rte" in write_index(tmp_path / "out", tmp_path / "figures").read_text()

    # resume: a run that stopped after its step-2 checkpoint continues to the uninterrupted result
    cfg = compose([f"hydra.searchpath=[file://{conf}]", *TINY, "task=ext_rte", "method=lora", "budget=glue_0.3m",
                   "seed=0", f"output_root={tmp_path}/cut"])
    full_dir, full = records[("lora", 0)]
    cut_dir = tmp_path / "cut" / full_dir.relative_to(tmp_path / "out")
    trainer, _, _ = _build(cfg, resolve(cfg), cut_dir, None)
    trainer.train(stop_after=2)
    del trainer
    proc = _run(tmp_path / "cut", conf, pkg, "task=ext_rte", "method=lora", "budget=glue_0.3m", "seed=0")
    assert "[resume]" in proc.stdout and "from step 2" in proc.stdout
    assert json.loads((cut_dir / "result.json").read_text())["metrics"]["evals"] == full["metrics"]["evals"]

    # re-evaluation from the saved weights reproduces the recorded metrics, the family's own included
    again = reevaluate(full_dir)
    assert again["reproduced"] and again["metrics"]["errors"] == full["metrics"]["final"]["errors"]
