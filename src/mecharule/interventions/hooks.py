"""THE only module that registers torch hooks. Hooks exist only inside a ``with`` block and are
removed in ``finally``, even when the block raises.

Two primitives:

* :func:`patched` — replace a unit site's activation tensor with ``fn(activation)``;
* :func:`recording` — capture a site's activation tensors (detached or not) into a dict.

Site tensors: ``mlp`` is the input of the MLP down-projection ``# [batch, pos, d_mlp]``;
``mlp_out`` is the output of the MLP module ``# [batch, pos, d_model]``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch
from torch.utils.hooks import RemovableHandle

from mecharule.models.architectures import down_proj_module, mlp_module
from mecharule.models.loading import ModelHandle
from mecharule.models.sites import UnitKind

SiteKey = tuple[int, UnitKind]  # (layer, kind)
Patch = Callable[[torch.Tensor], torch.Tensor]


def _attach(handle: ModelHandle, key: SiteKey, fn: Patch) -> RemovableHandle:
    layer, kind = key
    row = handle.arch.row
    if kind == "mlp":
        module = down_proj_module(handle.model, row, layer)

        def pre_hook(_module: Any, args: tuple[Any, ...]) -> tuple[Any, ...]:
            return (fn(args[0]), *args[1:])

        return module.register_forward_pre_hook(pre_hook)

    module = mlp_module(handle.model, row, layer)

    def post_hook(_module: Any, _args: Any, output: Any) -> Any:
        if isinstance(output, tuple):
            return (fn(output[0]), *output[1:])
        return fn(output)

    return module.register_forward_hook(post_hook)


@contextmanager
def patched(handle: ModelHandle, patches: Mapping[SiteKey, Patch]) -> Iterator[None]:
    """Replace activations at the given sites with ``fn(activation)`` inside the block."""
    handles: list[RemovableHandle] = []
    try:
        for key, fn in patches.items():
            handles.append(_attach(handle, key, fn))
        yield
    finally:
        for h in handles:
            h.remove()


@contextmanager
def recording(
    handle: ModelHandle, keys: list[SiteKey], detach: bool = True
) -> Iterator[dict[SiteKey, list[torch.Tensor]]]:
    """Record activations at the given sites: ``store[key]`` gets one tensor per forward call."""
    store: dict[SiteKey, list[torch.Tensor]] = {key: [] for key in keys}

    def recorder(key: SiteKey) -> Patch:
        def fn(x: torch.Tensor) -> torch.Tensor:
            store[key].append(x.detach() if detach else x)
            return x

        return fn

    with patched(handle, {key: recorder(key) for key in keys}):
        yield store


def count_hooks(handle: ModelHandle) -> int:
    """Number of forward hooks currently registered anywhere in the model (for tests)."""
    total = 0
    for module in handle.model.modules():
        total += len(module._forward_hooks) + len(module._forward_pre_hooks)
    return total
