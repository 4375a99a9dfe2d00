"""Device and precision resolution for "auto"."""

from __future__ import annotations

import pytest

from pneumocxr.errors import ConfigError
from pneumocxr.training import hardware


def test_bf16_flag_read_from_cpuinfo(tmp_path):
    yes = tmp_path / "yes"
    yes.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx512f avx512_bf16 amx_tile\n")
    amx = tmp_path / "amx"
    amx.write_text("flags\t\t: fpu avx512f amx_bf16\n")
    no = tmp_path / "no"
    no.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f\n")
    assert hardware.cpu_supports_bf16(yes)
    assert hardware.cpu_supports_bf16(amx)
    assert not hardware.cpu_supports_bf16(no)
    assert not hardware.cpu_supports_bf16(tmp_path / "absent")


@pytest.mark.parametrize(("native", "expected"), [(True, "bf16-mixed"), (False, "32")])
def test_auto_precision_on_cpu_follows_native_bf16(monkeypatch, native, expected):
    monkeypatch.setattr(hardware, "cpu_supports_bf16", lambda: native)
    assert hardware.resolve_precision("auto", "cpu") == expected


def test_auto_precision_on_cuda_follows_bf16_support(monkeypatch):
    monkeypatch.setattr(hardware.torch.cuda, "is_bf16_supported", lambda: True)
    assert hardware.resolve_precision("auto", "cuda") == "bf16-mixed"
    monkeypatch.setattr(hardware.torch.cuda, "is_bf16_supported", lambda: False)
    assert hardware.resolve_precision("auto", "cuda") == "32"


def test_explicit_precision_wins_and_bad_values_are_config_errors():
    assert hardware.resolve_precision("32", "cpu") == "32"
    assert hardware.resolve_precision("bf16-mixed", "cpu") == "bf16-mixed"
    with pytest.raises(ConfigError, match="needs a GPU"):
        hardware.resolve_precision("16-mixed", "cpu")
    with pytest.raises(ConfigError, match=r"train\.precision"):
        hardware.resolve_precision("fp8", "cpu")


def test_accelerator_auto_prefers_cuda_then_mps_then_cpu(monkeypatch):
    monkeypatch.setattr(hardware.torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(hardware.torch.backends.mps, "is_available", lambda: False)
    assert hardware.resolve_accelerator("auto") == "cpu"
    monkeypatch.setattr(hardware.torch.backends.mps, "is_available", lambda: True)
    assert hardware.resolve_accelerator("auto") == "mps"
    monkeypatch.setattr(hardware.torch.cuda, "is_available", lambda: True)
    assert hardware.resolve_accelerator("auto") == "cuda"


def test_requesting_an_absent_device_is_a_config_error(monkeypatch):
    monkeypatch.setattr(hardware.torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="no CUDA device"):
        hardware.resolve_accelerator("cuda")
    with pytest.raises(ConfigError, match=r"train\.accelerator"):
        hardware.resolve_accelerator("tpu")


def test_devices_parse():
    assert hardware.resolve_devices("auto") == "auto"
    assert hardware.resolve_devices("2") == 2
    with pytest.raises(ConfigError, match=r"train\.devices"):
        hardware.resolve_devices("two")
