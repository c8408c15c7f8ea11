"""Choice between the PyTorch reference and the Triton kernels of the weak losses.

The Triton kernels live in the module `kernels.losses` (a later part of the project). It provides
functions with the same names and arguments as the PyTorch ones in `vos.losses` (without `backend`).
This module is the only place that decides which implementation runs:

- "torch": always the PyTorch reference of `vos.losses`.
- "triton": the kernel; a `VosError` when `kernels.losses` or the named function is missing.
- "auto": the kernel when `kernels.losses` provides it and every tensor argument is on CUDA,
  otherwise PyTorch (the CPU path, and the test oracle of the kernels).
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable
from types import ModuleType

import torch

from vos.errors import VosError

BACKENDS = ("auto", "torch", "triton")
KERNEL_MODULE = "kernels.losses"


@functools.cache
def kernel_module() -> ModuleType | None:
    """`kernels.losses` when it can be imported, else None (cached; `kernel_module.cache_clear()`)."""
    try:
        return importlib.import_module(KERNEL_MODULE)
    except ModuleNotFoundError as error:
        # Only the absence of the module itself means "no kernels"; a missing dependency inside an
        # existing kernels module is a real error and must surface.
        if error.name in ("kernels", KERNEL_MODULE):
            return None
        raise


def select(name: str, backend: str, *tensors: torch.Tensor) -> Callable | None:
    """The Triton implementation of loss `name` to call, or None when the PyTorch reference runs."""
    if backend not in BACKENDS:
        raise VosError(f"losses.backend: must be 'auto', 'torch' or 'triton', got {backend!r}")
    if backend == "torch":
        return None
    module = kernel_module()
    impl = getattr(module, name, None) if module is not None else None
    if backend == "triton":
        if module is None:
            raise VosError(f"losses.backend 'triton': the kernel module {KERNEL_MODULE} is not available")
        if impl is None:
            raise VosError(f"losses.backend 'triton': {KERNEL_MODULE} has no {name}")
        return impl
    if impl is not None and tensors and all(t.is_cuda for t in tensors):
        return impl
    return None
