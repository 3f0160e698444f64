"""A run's identity holds its data's content: local files by size and SHA-256, hub data and models by commit."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import huggingface_hub.constants as hc
import pytest

from experiments.content import FingerprintCache, data_content, model_content
from experiments.identity import identity_hash
from experiments.models import load_tokenizer
from experiments.results import read_result
from experiments.runner import PROJECT_ROOT, RunConflict, run, run_identity_block
from experiments.spec import current_identity, run_identity
from experiments.tasks import build_task
from tests.conftest import compose, tiny
from tests.test_identity import _cut

FIXTURE = PROJECT_ROOT / "tests" / "fixtures" / "data" / "glue" / "rte"
SHA = "0123456789abcdef0123456789abcdef01234567"


def _data(tmp_path: Path) -> Path:
    """A private copy of the tiny RTE files, free to edit."""
    data = tmp_path / "data"
    shutil.copytree(FIXTURE, data)
    return data


def _cfg(out: Path, data: Path, *extra: str):
    """tests.test_identity's tiny LoRA run, on the data files in ``data``."""
    return tiny(out, f"task.dataset.data_files.train={data / 'train.jsonl'}",
                         f"task.dataset.data_files.validation={data / 'validation.jsonl'}", *extra)


def _edit_one_label(path: Path) -> None:
    """Flip the first example's label in place: same size, other content."""
    lines = path.read_text().splitlines(keepends=True)
    row = json.loads(lines[0])
    row["label"] = 1 - row["label"]
    lines[0] = json.dumps(row) + "\n"
    assert len(lines[0]) == len(path.read_text().splitlines(keepends=True)[0])
    path.write_text("".join(lines))


def test_identity_records_size_and_sha256_of_each_data_file(tmp_path):
    data = _data(tmp_path)
    keys = run_identity_block(_cfg(tmp_path, data))["keys"]
    train = (data / "train.jsonl").read_bytes()
    assert keys["content"]["data"]["train"] == {"bytes": len(train), "sha256": hashlib.sha256(train).hexdigest()}
    assert set(keys["content"]["data"]) == {"train", "validation"}
    assert "model" not in keys["content"]  # a tiny model has no revision


@pytest.mark.slow
def test_a_data_file_changed_in_place_after_a_run_is_refused_with_the_reason(tmp_path, capsys):
    data = _data(tmp_path)
    cfg = _cfg(tmp_path, data)
    assert run(cfg)["status"] == "success"
    _edit_one_label(data / "train.jsonl")
    with pytest.raises(RunConflict, match=r"result\.json holds a success result of a different configuration; "
                                          r"differing keys: content\.data\.train\.sha256: .*force=true"):
        run(cfg)
    assert "[skip]" not in capsys.readouterr().out
    record = run(_cfg(tmp_path, data, "force=true"))
    assert record["status"] == "success"
    edited = hashlib.sha256((data / "train.jsonl").read_bytes()).hexdigest()
    assert read_result(cfg.run_dir)["identity"]["keys"]["content"]["data"]["train"]["sha256"] == edited


@pytest.mark.slow
def test_a_checkpoint_is_not_resumed_on_changed_data(tmp_path):
    data = _data(tmp_path)
    cfg = _cfg(tmp_path, data, "trainer.max_steps=6", "trainer.checkpoint_every=2")
    checkpoint = _cut(cfg)
    assert checkpoint.exists()
    (data / "train.jsonl").write_text((data / "train.jsonl").read_text() + (data / "validation.jsonl").read_text())
    with pytest.raises(RunConflict, match=r"checkpoint\.pt holds a checkpoint of a different configuration; "
                                          r"differing keys: content\.data\.train\.bytes"):
        run(cfg)
    assert checkpoint.exists()


@pytest.mark.slow
def test_a_record_written_before_fingerprints_is_still_skipped_with_a_note(tmp_path, capsys):
    data = _data(tmp_path)
    cfg = _cfg(tmp_path, data)
    run(cfg)
    result = Path(cfg.run_dir) / "result.json"
    record = json.loads(result.read_text())
    del record["identity"]["keys"]["content"]  # as a schema-2 record of the previous version stores it
    result.write_text(json.dumps(record))
    capsys.readouterr()
    assert run(cfg)["status"] == "success"
    out = capsys.readouterr().out
    assert "[skip]" in out
    assert f"[unverified] {result} records no fingerprint of content.data.train.bytes" in out


def test_fingerprints_are_cached_by_size_and_times_and_redone_when_the_file_changes(tmp_path):
    file, cache_file = tmp_path / "big.jsonl", tmp_path / "cache" / "fingerprints.json"
    file.write_text('{"a": 1}\n')
    first = FingerprintCache(cache_file).fingerprint(file)
    assert first == {"bytes": 9, "sha256": hashlib.sha256(b'{"a": 1}\n').hexdigest()}
    entries = json.loads(cache_file.read_text())
    stat = file.stat()
    assert entries[str(file.resolve())] == [9, stat.st_mtime_ns, stat.st_ctime_ns, first["sha256"]]
    entries[str(file.resolve())][3] = "f" * 64  # a later process reads the hash from the cache, not the file
    cache_file.write_text(json.dumps(entries))
    assert FingerprintCache(cache_file).fingerprint(file)["sha256"] == "f" * 64
    file.write_text('{"a": 2}\n')  # same size, changed in place; mtime put back: the ctime still moves
    os.utime(file, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert FingerprintCache(cache_file).fingerprint(file)["sha256"] == hashlib.sha256(b'{"a": 2}\n').hexdigest()


def test_hub_revisions_resolve_from_the_local_cache_offline(tmp_path, monkeypatch):
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path))
    (tmp_path / "models--org--model" / "refs").mkdir(parents=True)
    (tmp_path / "models--org--model" / "refs" / "main").write_text(SHA)
    parquet = tmp_path / "datasets--EdinburghNLP--xsum" / "refs" / "refs" / "convert" / "parquet"
    parquet.parent.mkdir(parents=True)
    parquet.write_text(SHA[::-1])
    hub = {"source": "hub", "pretrained": "org/model", "revision": None}
    assert model_content(hub) == {"revision": SHA}
    assert model_content({**hub, "revision": "v2"}) == {}  # not in the cache, offline: unknown, left out
    assert model_content({**hub, "revision": "f" * 40}) == {"revision": "f" * 40}  # a pinned commit
    assert model_content({"source": "tiny", "pretrained": None}) == {}
    xsum = {"path": "EdinburghNLP/xsum", "name": None, "revision": "refs/convert/parquet", "data_files": None}
    assert data_content(xsum) == {"revision": SHA[::-1]}


def test_pinning_the_commit_a_branch_resolved_to_keeps_the_identity(tmp_path, monkeypatch):
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path))
    ref = tmp_path / "datasets--EdinburghNLP--xsum" / "refs" / "refs" / "convert" / "parquet"
    ref.parent.mkdir(parents=True)
    ref.write_text(SHA)

    def config(revision: str) -> dict:
        return {"task": {"name": "xsum", "dataset": {"path": "EdinburghNLP/xsum", "name": None, "revision": revision,
                                                      "data_files": None}}, "seed": 0}

    branch, pinned = current_identity(config("refs/convert/parquet"), "b"), current_identity(config(SHA), "b")
    assert branch == pinned and branch["content"] == {"data": {"revision": SHA}}
    assert "revision" not in branch["task"]["dataset"]
    ref.write_text(SHA[::-1])  # the hub rebuilt the branch: another run
    assert identity_hash(current_identity(config("refs/convert/parquet"), "b")) != identity_hash(branch)


def test_a_null_revision_leaves_older_records_hash_alone_and_a_set_one_changes_it():
    config = {"task": {"name": "t", "dataset": {"path": "p", "name": None, "data_files": None}},
              "model": {"name": "m", "source": "hub", "pretrained": "org/m"}, "seed": 0}
    with_null = {"task": {**config["task"], "dataset": {**config["task"]["dataset"], "revision": None}},
                 "model": {**config["model"], "revision": None}, "seed": 0}
    assert identity_hash(run_identity(with_null, "b")) == identity_hash(run_identity(config, "b"))
    pinned = {**with_null, "model": {**config["model"], "revision": SHA}}
    assert identity_hash(run_identity(pinned, "b")) != identity_hash(run_identity(config, "b"))


def test_a_revision_on_a_tiny_model_is_a_clear_error():
    with pytest.raises(ValueError, match=r"model 'tiny_bert': `revision` is for hub models.*remove model\.revision"):
        load_tokenizer({"name": "tiny_bert", "source": "tiny", "arch": "bert", "revision": "main"})


def test_xsum_loads_its_parquet_revision_and_names_it_when_it_is_not_cached():
    cfg = compose(["task=xsum", "model=bart_large", "budget=nlg_0.13"])
    assert cfg.task.dataset.revision == "refs/convert/parquet" and cfg.model.revision is None
    with pytest.raises(RuntimeError, match=r"EdinburghNLP/xsum at revision 'refs/convert/parquet' is not in the "
                                           r"Hugging Face cache.*make prefetch"):
        build_task(dict(cfg.task)).load()
