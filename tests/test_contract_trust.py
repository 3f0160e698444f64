"""A saved adapter's metadata is data: ``MethodHandle.load`` never imports a module it names."""

from __future__ import annotations

import sys

import pytest

from adalora.methods import MethodHandle
from adalora.methods.base import SAVE_FILE, SAVE_FORMAT
from adalora.methods.storage import write_safetensors
from adalora.trust import TRUST_ENV, UntrustedCode
from tests.tiny import tiny_deberta

PAYLOAD = "contract_planted_payload"


def test_saved_metadata_naming_a_module_never_imports_it(tmp_path, monkeypatch):
    marker = tmp_path / "code-ran"
    (tmp_path / f"{PAYLOAD}.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv(TRUST_ENV, raising=False)
    write_safetensors(tmp_path / SAVE_FILE, {}, {"format": SAVE_FORMAT, "base_sha256": None, "total_steps": None,
                                                 "method": {"name": "planted", "kind": "planted", "module": PAYLOAD}})
    with pytest.raises(UntrustedCode, match=f"{tmp_path / SAVE_FILE} names method.module='{PAYLOAD}', which is not "
                                            "imported in this process; reading a file never imports code"):
        MethodHandle.load(tiny_deberta(), tmp_path)
    assert not marker.exists() and PAYLOAD not in sys.modules
