"""Which ``device`` and ``dtype`` strings a model may be loaded with, checked before anything loads.

The name checks import no torch, so the config validates them cheaply; whether the named device exists
on this machine (:func:`check_device_available`) is asked of torch at load time, because a saved
config may be re-run on another machine.
"""

from __future__ import annotations

import re
from typing import Any

from mecharule.errors import ConfigError

DTYPE_NAMES = ("float32", "bfloat16", "float16", "auto")
DEVICE_FORMS = "cpu, cuda, cuda:N (N = GPU index), mps, xpu or xpu:N"
_DEVICE = re.compile(r"(cpu|mps|cuda|xpu)(:\d+)?")


def check_dtype_name(dtype: str) -> str:
    if dtype not in DTYPE_NAMES:
        raise ConfigError(
            f"dtype {dtype!r} is unknown; accepted dtypes: {', '.join(DTYPE_NAMES)} (--dtype / model.dtype)"
        )
    return dtype


def check_device_name(device: str) -> str:
    if not _DEVICE.fullmatch(device):
        raise ConfigError(
            f"device {device!r} is not a device mecharule can load a model on; accepted forms: "
            f"{DEVICE_FORMS} (--device / model.device)"
        )
    return device


def check_device_available(device: str) -> None:
    """A one-line error when the (well-formed) device does not exist on this machine."""
    import torch

    check_device_name(device)
    kind, _, index = device.partition(":")
    if kind == "cuda":
        _check_accelerator("cuda", torch.cuda.is_available(), torch.cuda.device_count(), index, device)
        return
    if kind == "xpu":
        xpu: Any = getattr(torch, "xpu", None)
        available = bool(xpu is not None and xpu.is_available())
        _check_accelerator("xpu", available, xpu.device_count() if available else 0, index, device)
        return
    if kind == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device {device!r}: this machine has no usable Apple MPS device; use --device cpu")


def _check_accelerator(kind: str, available: bool, count: int, index: str, device: str) -> None:
    import torch

    if not available:
        build = f"torch {torch.__version__}"
        reason = (
            f"{build} was built without CUDA"
            if kind == "cuda" and torch.version.cuda is None
            else f"{build} sees no {kind.upper()} device on this machine"
        )
        raise ConfigError(f"device {device!r} is not available: {reason}; use --device cpu")
    if index and int(index) >= count:
        raise ConfigError(
            f"device {device!r} does not exist: this machine has {count} {kind.upper()} device(s) "
            f"({', '.join(f'{kind}:{i}' for i in range(count))}); pick one of them or --device cpu"
        )
