"""Backend selection: names, scoping, and the reasons given when Triton cannot run."""

from __future__ import annotations

import threading

import pytest
import torch

import uhrops
from uhrops import _backend


def test_default_is_auto_and_cpu_auto_takes_torch():
    assert uhrops.get_backend() == "auto"
    assert _backend.resolve("op", torch.zeros(1)) == "torch"


def test_use_backend_scopes_and_restores():
    with uhrops.use_backend("torch"):
        assert uhrops.get_backend() == "torch"
        with uhrops.use_backend("auto"):
            assert uhrops.get_backend() == "auto"
        assert uhrops.get_backend() == "torch"
    assert uhrops.get_backend() == "auto"


def test_use_backend_restores_after_exception():
    with pytest.raises(KeyError):
        with uhrops.use_backend("torch"):
            raise KeyError
    assert uhrops.get_backend() == "auto"


def test_set_backend_process_wide_and_scope_wins():
    try:
        uhrops.set_backend("torch")
        assert uhrops.get_backend() == "torch"
        seen = []
        t = threading.Thread(target=lambda: seen.append(uhrops.get_backend()))
        t.start()
        t.join()
        assert seen == ["torch"]  # process-wide reaches other threads
        with uhrops.use_backend("auto"):
            assert uhrops.get_backend() == "auto"
    finally:
        uhrops.set_backend("auto")


def test_scoped_choice_does_not_leak_to_other_threads():
    seen = []
    with uhrops.use_backend("torch"):
        t = threading.Thread(target=lambda: seen.append(uhrops.get_backend()))
        t.start()
        t.join()
    assert seen == ["auto"]


@pytest.mark.parametrize("bad", ["cuda", "Triton", None, 3])
def test_unknown_name(bad):
    with pytest.raises(ValueError, match=r"set_backend\(\): `name` must be one of 'auto', "
                                         r"'torch', 'triton'"):
        uhrops.set_backend(bad)
    with pytest.raises(ValueError, match=r"use_backend\(\): `name` must be one of"):
        with uhrops.use_backend(bad):
            pass


def test_triton_on_cpu_without_interpreter_says_why(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    x = torch.randn(1, 1, 4, 4)
    with uhrops.use_backend("triton"):
        with pytest.raises(uhrops.BackendUnavailableError, match="TRITON_INTERPRET=1"):
            uhrops.haar_dwt2d(x)
    reason = uhrops.triton_unavailable_reason("cpu")
    assert reason is not None and "TRITON_INTERPRET=1" in reason


def test_triton_missing_says_how_to_install(monkeypatch):
    monkeypatch.setattr(_backend, "_triton_import_error",
                        lambda: "triton does not import (ImportError: x); install it with "
                                "`pip install 'uhrops[triton]'`")
    with uhrops.use_backend("triton"):
        with pytest.raises(uhrops.BackendUnavailableError, match=r"uhrops\[triton\]"):
            _backend.resolve("haar_dwt2d", torch.zeros(1))
    with uhrops.use_backend("auto"):
        assert _backend.resolve("haar_dwt2d", torch.zeros(1)) == "torch"


def test_op_without_kernel():
    with uhrops.use_backend("triton"):
        with pytest.raises(uhrops.BackendUnavailableError, match="no kernel"):
            _backend.resolve("some_op", torch.zeros(1), has_triton=False)


def test_other_device_types_are_refused():
    assert "CUDA" in uhrops.triton_unavailable_reason("meta")


def test_public_api_surface():
    expected = {
        "use_backend", "set_backend", "get_backend", "BackendUnavailableError",
        "triton_unavailable_reason", "haar_dwt2d", "haar_idwt2d", "haar_wavedec2",
        "haar_waverec2", "haar_packet2d", "haar_ipacket2d", "HaarDWT2d", "HaarIDWT2d",
        "HaarPacket2d", "HaarIPacket2d",
    }
    assert expected <= set(uhrops.__all__)
    for name in uhrops.__all__:
        assert hasattr(uhrops, name), name
