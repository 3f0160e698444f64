"""``experiments.spec``: one resolution, typed configs, identities of old records (issue 31 items 1-2, issue 32)."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from experiments import identity as identity_module
from experiments.identity import identity_hash, override_dirname
from experiments.lr_search import SELECTED_LR_ENV
from experiments.spec import ConfigError, record_identity, resolve, run_identity
from experiments.training import TrainSettings
from tests.conftest import PROJECT_ROOT, compose

FIXTURE_RUNS = PROJECT_ROOT / "tests" / "fixtures" / "runs"
PINNED = json.loads((PROJECT_ROOT / "tests" / "fixtures" / "identity_hashes.json").read_text())
TINY = ["task=tiny_glue_rte", "model=tiny_deberta", "budget=glue_0.3m"]


def test_every_fixture_record_keeps_its_identity_hash(monkeypatch):
    """The pinned hashes are the identities of the records as written: their data paths (the checkouts they ran
    in, /work/main and /work/wt-18) taken literally, as any other checkout reads them. A checkout at one of those
    paths would re-anchor them to ``${project_root:}`` (a moved clone is the same run; that identity is pinned by
    tests/test_budget_levels.py), so the paths are read here as from a checkout that is none of them."""
    monkeypatch.setattr(identity_module, "_ROOT_PREFIX", "/nonexistent-checkout/")
    records = sorted(FIXTURE_RUNS.rglob("result.json"))
    assert len(records) == len(PINNED) == 28
    for path in records:
        identity = record_identity(json.loads(path.read_text()))
        assert identity_hash(identity) == PINNED[str(path.relative_to(FIXTURE_RUNS))], path


@pytest.mark.slow
def test_schema_1_identity_of_an_unregistered_kind_imports_nothing(tmp_path):
    """A schema-1 record naming a module that would write a marker: its identity comes from the config alone."""
    (tmp_path / "payload_mod.py").write_text(f"open({str(tmp_path / 'marker')!r}, 'w').write('ran')\n")
    record = json.loads((FIXTURE_RUNS / "fixtures/tiny_glue_rte/lora/glue_0.3m/seed=0/result.json").read_text())
    record["config"]["method"] = {"name": "mine", "module": "payload_mod", "kind": "mine", "width": 4}
    code = ("import json, sys; from experiments.spec import record_identity; "
            "print(json.dumps(record_identity(json.loads(sys.stdin.read()))['method']))")
    out = subprocess.run([sys.executable, "-c", code], input=json.dumps(record), capture_output=True, text=True,
                         cwd=PROJECT_ROOT, env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"}, check=True)
    assert json.loads(out.stdout) == {"name": "mine", "module": "payload_mod", "kind": "mine", "width": 4}
    assert not (tmp_path / "marker").exists()


def test_peft_lora_rows_identity_follows_the_tasks_lora_block():
    """The bug of issue 31: peft_dora trained with the lora block's lr but was hashed without it."""
    base = compose([*TINY, "method=peft_dora"])
    changed = compose([*TINY, "method=peft_dora", "task.hparams.lora.lr=0.02"])
    spec, spec_changed = resolve(base), resolve(changed)
    assert spec.train.lr == 0.005 and spec_changed.train.lr == 0.02
    assert spec.hparams_blocks == ("lora", "peft")
    assert spec.identity()["trainer"]["lr"] == 0.005 and spec_changed.identity()["trainer"]["lr"] == 0.02
    assert identity_hash(spec.identity()) != identity_hash(spec_changed.identity())
    # the module-level function a caller with a plain config uses agrees with the spec
    assert run_identity(dict(spec_changed.config), "glue_0.3m") == spec_changed.identity()


def test_lora_identity_is_unchanged_by_the_spec():
    """Kinds whose blocks are their own name hash as before (the fixture records are such runs)."""
    spec = resolve(compose([*TINY, "method=lora"]))
    assert spec.hparams_blocks == ("lora",) and spec.identity()["trainer"]["lr"] == 0.005


@pytest.mark.parametrize(("override", "named", "nearest"), [
    ("+task.max_seq_lenght=128", "max_seq_lenght", "task.max_seq_length"),
    ("+model.revison=x", "revison", "model.revision"),
    ("+task.dataset.pathh=y", "pathh", "task.dataset.path"),
    ("+trainer.warmup_step=3", "warmup_step", "trainer.warmup_steps"),
    ("trainer.lr=true", "trainer.lr", None),
])
def test_misspelt_task_dataset_model_keys_are_refused_naming_the_nearest(override, named, nearest):
    with pytest.raises(ConfigError) as err:
        resolve(compose([*TINY, "method=lora", override]))
    message = str(err.value)
    assert "\n" not in message and named in message
    assert nearest is None or f"did you mean {nearest}?" in message


def test_ranges_are_checked_where_the_field_is_declared():
    with pytest.raises(ConfigError, match=r"task\.max_seq_length must be a positive integer"):
        resolve(compose([*TINY, "method=lora", "task.max_seq_length=0"]))
    with pytest.raises(ConfigError, match=r"model\.source must be one of"):
        resolve(compose([*TINY, "method=lora", "model.source=web"]))
    with pytest.raises(ConfigError, match=r"trainer\.batch_size=0"):
        resolve(compose([*TINY, "method=lora", "trainer.batch_size=0"]))


def test_fp16_on_a_cpu_is_refused_naming_trainer_precision_and_bf16_runs():
    with pytest.raises(ConfigError, match=r"trainer\.precision=fp16 cannot run on this device"):
        resolve(compose([*TINY, "method=lora", "trainer.precision=fp16"]))
    assert resolve(compose([*TINY, "method=lora", "trainer.precision=bf16"])).train.precision == "bf16"


def _selection(tmp_path: Path, lr_text: str, monkeypatch) -> None:
    path = tmp_path / "selected.yaml"
    path.write_text(f"selected:\n  tiny_glue_rte:\n    lora:\n      glue_0.3m: {{lr: {lr_text}}}\n")
    monkeypatch.setenv(SELECTED_LR_ENV, str(path))


def test_a_selected_lr_written_1e_4_is_read_as_the_number(tmp_path, monkeypatch):
    _selection(tmp_path, "1e-4", monkeypatch)
    assert isinstance(yaml.safe_load("lr: 1e-4")["lr"], str)  # the YAML 1.1 trap itself
    assert resolve(compose([*TINY, "method=lora"])).train.lr == 1e-4


def test_a_selected_lr_of_true_is_refused_in_one_line(tmp_path, monkeypatch):
    _selection(tmp_path, "true", monkeypatch)
    with pytest.raises(ConfigError) as err:
        resolve(compose([*TINY, "method=lora"]))
    assert "selected.tiny_glue_rte.lora.glue_0.3m.lr must be a positive number, got True" in str(err.value)
    assert "\n" not in str(err.value) and "selected.yaml" in str(err.value)


def test_override_dirname_is_cut_by_bytes_not_characters():
    name = override_dirname(["task.dataset.data_files.train=/数据/" + "训练集" * 40 + ".jsonl"])
    assert len(name.encode()) <= 150 and name.encode().decode() == name


def test_a_run_path_component_over_255_bytes_is_refused_before_anything_is_created(tmp_path):
    with pytest.raises(ConfigError, match=r"sweep_name=.*longer than 255 bytes"):
        resolve(compose([*TINY, "method=lora", f"output_root={tmp_path}", "sweep_name=" + "x" * 300]))
    assert list(tmp_path.iterdir()) == []


def test_editing_an_external_methods_source_changes_its_recorded_trace(tmp_path, monkeypatch):
    """Issue 31 item 5: a user module's code is recorded (source hash where not installed), like the suite's git sha."""
    import importlib

    from experiments.identity import external_code

    package = tmp_path / "ext_trace_methods"
    package.mkdir()
    (package / "__init__.py").write_text("from ext_trace_methods.kind import WIDTH\n")
    (package / "kind.py").write_text("WIDTH = 4\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.import_module("ext_trace_methods")
    before = external_code("ext_trace_methods")
    assert before["module"] == "ext_trace_methods" and len(before["source_sha256"]) == 64
    assert external_code("ext_trace_methods") == before  # a pure function of the files
    (package / "kind.py").write_text("WIDTH = 5\n")  # an edit in a file the package imports
    assert external_code("ext_trace_methods")["source_sha256"] != before["source_sha256"]
    assert external_code(None) is None  # the suite's own kinds: code_version says what they are
    installed = external_code("yaml")  # an installed distribution: its name and version
    assert installed["distribution"].lower() == "pyyaml" and installed["version"] == yaml.__version__


def test_launcher_without_its_plugin_names_the_pip_package(monkeypatch):
    import importlib.util

    from experiments.run import missing_launcher

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "hydra_plugins.hydra_joblib_launcher" else real(name, *a))
    assert missing_launcher(["task=glue_rte", "launcher=joblib"]) == (
        "launcher=joblib needs its Hydra plugin: pip install hydra-joblib-launcher (or launcher=local)")
    assert missing_launcher(["launcher=local"]) is None


@pytest.mark.slow  # one tiny PEFT DoRA run (~30 s of CPU)
def test_peft_dora_rerun_with_another_lora_lr_is_refused_naming_trainer_lr(tmp_path):
    """Issue 31's first bug end to end: the rerun at the lora block's new lr is not skipped as finished."""
    from experiments.runner import RunConflict, run

    base = [*TINY, "method=peft_dora", f"output_root={tmp_path}", "trainer.progress=false", "trainer.max_steps=2"]
    first = run(compose(base))
    assert first["status"] == "success" and first["train"]["settings"]["lr"] == 0.005  # the lr that trained
    assert first["identity"]["keys"]["trainer"]["lr"] == 0.005
    with pytest.raises(RunConflict, match=r"differing keys: trainer\.lr: 0\.005 -> 0\.02"):
        run(compose([*base, "task.hparams.lora.lr=0.02"]))


@pytest.mark.slow
def test_the_record_is_typed_and_states_what_ran(tiny_finished_run):
    """Issue 31 item 3: one typed schema, read by attribute; the record says the settings, world and code that ran."""
    from experiments.results import SCHEMA_VERSION, RunRecord, Status, read_record, read_result

    record = read_record(tiny_finished_run.run_dir)
    assert isinstance(record, RunRecord) and record.status is Status.SUCCESS and record.schema_version == SCHEMA_VERSION
    assert record.world_size == 1 and record.train["devices"] == 0  # one CPU process
    assert record.train["settings"]["lr"] == 0.005 and record.train["settings"]["max_steps"] == 4
    assert record.env["external_code"] is None  # the suite's own kind: env.git_sha says what it is
    assert record.to_dict() == read_result(tiny_finished_run.run_dir)  # written in one place, read back whole
    old = json.loads((FIXTURE_RUNS / "fixtures/tiny_glue_rte/lora/glue_0.3m/seed=0/result.json").read_text())
    migrated = RunRecord.from_dict(old)  # schema 1: world size unknown, counted as one device
    assert migrated.schema_version == 1 and migrated.train["world_size"] is None and migrated.world_size == 1
    with pytest.raises(ValueError, match=r"result\.status must be one of"):
        RunRecord.from_dict({**old, "status": "done"})


def test_trainer_ranges_are_declared_on_the_train_settings_fields():
    ranged = {f.name for f in dataclasses.fields(TrainSettings) if "range" in f.metadata}
    assert {"lr", "batch_size", "epochs", "max_steps", "warmup_ratio", "max_grad_norm", "adam_eps"} <= ranged
    settings = TrainSettings(lr=-1, batch_size=0, warmup_ratio=1.5, max_grad_norm=None, max_steps=3, epochs=0)
    assert settings.range_problems() == ["trainer.lr=-1: must be a finite number > 0",
                                         "trainer.batch_size=0: must be a positive integer",
                                         "trainer.warmup_ratio=1.5: must be a number in [0, 1)"]
    assert TrainSettings(lr=1e-3, batch_size=True, max_steps=None, epochs=0).range_problems() == [
        "trainer.batch_size=True: must be a positive integer",
        "trainer.epochs=0: must be a number > 0 (or set trainer.max_steps)"]
