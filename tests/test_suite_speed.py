"""The suite's own running conditions (tests/conftest.py): one compute thread per test process, and session
fixtures built once per test run however many xdist workers share it."""

from __future__ import annotations

import os

import pytest
import torch

from tests.conftest import PROJECT_ROOT, built_once, file_costs


def test_each_test_process_computes_on_one_thread():
    assert torch.get_num_threads() == 1
    assert os.environ["OMP_NUM_THREADS"] == "1"  # and so does every subprocess a test starts


def test_a_shared_fixture_folder_is_built_once_and_rebuilt_after_a_failed_build(tmp_path):
    folder = tmp_path / "fixture"
    with pytest.raises(RuntimeError), built_once(folder) as needed:
        assert needed
        raise RuntimeError("the build failed half-way")
    with built_once(folder) as needed:
        assert needed  # nothing marked it built
        (folder / "made").write_text("x")
    with built_once(folder) as needed:
        assert not needed and (folder / "made").read_text() == "x"


def test_whole_files_run_costliest_first_and_every_recorded_file_exists(request):
    """`make test` deals files to its workers in collection order: the recorded costliest go first. By default
    xdist re-sorts the files by their number of tests, which undoes that order (a worker then sat idle for the last
    minute of the suite), so pyproject's addopts keep the collected order for every pytest invocation."""
    assert request.config.getoption("loadscopereorder") is False
    costs = file_costs()
    assert costs, "tests/file_costs.json is missing: run make test-costs"
    assert all((PROJECT_ROOT / name).is_file() for name in costs), "a recorded file is gone: run make test-costs"
    files = list(dict.fromkeys(item.nodeid.split("::")[0] for item in request.session.items))
    order = [costs.get(name, 0.0) for name in files]
    assert order == sorted(order, reverse=True), files
