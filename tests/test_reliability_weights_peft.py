"""A PEFT-kind run keeps PEFT's own adapter folder (``weights/final/``): readable by teammates, never unpickled."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from experiments.evaluate import main as evaluate_main
from tests.test_reliability_weights import copy_run, finished_run, one_line

pytestmark = pytest.mark.slow  # every test here reads a trained run

pytest.importorskip("peft")


@pytest.fixture(scope="module")
def peft_run(tmp_path_factory) -> Path:
    return finished_run(tmp_path_factory.mktemp("peft"), "peft_rslora", "glue_0.3m")


def test_peft_adapter_folders_follow_the_umask(peft_run):
    weights = peft_run / "weights"
    modes = {p.relative_to(weights).as_posix(): p.stat().st_mode & 0o777 for p in weights.rglob("*")}
    assert {"final", "final/adapter_config.json", "final/adapter_model.safetensors", "final.safetensors"} <= set(modes)
    assert modes.pop("final") == 0o755 and set(modes.values()) == {0o644}, modes  # PEFT's README.md too


class _Planted:
    """Unpickling this runs ``exec`` on code that writes the marker file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').write('ran')",)


def test_a_planted_pickle_adapter_is_refused_in_one_line_and_runs_nothing(peft_run, tmp_path, capfd):
    run = copy_run(peft_run, tmp_path / "run")
    marker = tmp_path / "PAYLOAD_RAN"
    adapter = run / "weights" / "final"
    (adapter / "adapter_model.safetensors").unlink()
    (adapter / "adapter_model.bin").write_bytes(pickle.dumps({"base_model.model.x": _Planted(marker)}))
    assert evaluate_main([str(run)]) == 2
    line = one_line(capfd.readouterr().err)
    assert line.startswith(f"error: {adapter} holds no adapter_model.safetensors; an adapter_model.bin (a pickle) "
                           "is never loaded")
    assert not marker.exists()
