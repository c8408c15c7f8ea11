"""The one place that chooses between the PyTorch references and the Triton kernels.

Every operation with a kernel — the memory read and each weak loss — has a PyTorch reference in
`vos` (`vos.model.memory_read.memory_read`, `vos.losses.*`) and a Triton implementation with the same
arguments in `vos.kernels` (the repository's `kernels/` folder, installed under that name). The
references run everywhere and are the test oracle; the kernels need CUDA tensors, or CPU tensors
with ``TRITON_INTERPRET=1`` set before triton is imported (how the tests run them). Backends:

- ``"torch"``: the reference;
- ``"triton"``: the kernel, or a :class:`VosError` saying why it cannot run;
- ``"auto"``: the kernel when every tensor is on CUDA and the kernels import, else the reference.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from types import ModuleType

import torch

from vos.errors import VosError

BACKENDS = ("auto", "torch", "triton")


@functools.cache
def kernel_modules() -> tuple[dict[str, ModuleType], str]:
    """({"losses": …, "memory_read": …}, "") when the kernels import, else ({}, the reason). Cached;
    tests replace this function to stand in for missing or fake kernels."""
    try:
        from vos.kernels import losses, memory_read
    except ImportError as exc:
        return {}, f"cannot import vos.kernels ({exc})"
    return {"losses": losses, "memory_read": memory_read}, ""


def _kernel(module: str, name: str, what: str) -> tuple[Callable | None, str]:
    modules, reason = kernel_modules()
    if module not in modules:
        return None, reason or f"vos.kernels.{module} is not available"
    impl = getattr(modules[module], name, None)
    return impl, "" if impl is not None else f"vos.kernels.{module} has no {name} for {what}"


def _check_backend(backend: str, what: str) -> None:
    if backend not in BACKENDS:
        raise VosError(f"{what}: backend must be 'auto', 'torch' or 'triton', got {backend!r}")


def _runs_here(tensors: tuple[torch.Tensor, ...]) -> bool:
    return all(t.is_cuda for t in tensors) or os.environ.get("TRITON_INTERPRET") == "1"


def loss_kernel(name: str, backend: str, *tensors: torch.Tensor) -> Callable | None:
    """The Triton implementation of weak-loss function `name` to call, or None for the reference."""
    _check_backend(backend, "losses.backend")
    if backend == "torch":
        return None
    impl, reason = _kernel("losses", name, name)
    if backend == "triton":
        if impl is None:
            raise VosError(f"losses.backend 'triton': {reason}")
        return impl
    return impl if impl is not None and tensors and all(t.is_cuda for t in tensors) else None


def read_kernel(backend: str, tensor: torch.Tensor, mode: str = "sparse") -> Callable | None:
    """The Triton memory read to call (``memory_read_triton``), or None for the reference."""
    _check_backend(backend, "memory read")
    if backend == "torch":
        return None
    impl, reason = _kernel("memory_read", "memory_read_triton", "the memory read")
    if backend == "auto":
        # the dense mode is XMem's algorithm and exists only in PyTorch
        return impl if mode == "sparse" and tensor.is_cuda else None
    if mode == "dense":
        raise VosError("memory read: mode 'dense' is XMem's PyTorch algorithm; use backend 'torch' or 'auto'")
    if not _runs_here((tensor,)):
        raise VosError(
            f"memory read: backend 'triton' needs CUDA tensors (got {tensor.device.type}); "
            "set TRITON_INTERPRET=1 to run the kernel on CPU, or use backend 'torch'"
        )
    if impl is None:
        raise VosError(f"memory read: backend 'triton' is unavailable ({reason}); use backend 'torch' or 'auto'")
    return impl
