"""Argument checks shared by the Triton kernels and their PyTorch references (`vos.model.memory_read`,
`vos.losses`): one definition of what a valid call is, so both sides refuse the same inputs with
the same message. Plain `ValueError`s: a wrong shape here is a caller's programming error."""

from __future__ import annotations

import torch


def check_read_args(
    mem_keys: torch.Tensor,
    mem_shrinkage: torch.Tensor | None,
    query_keys: torch.Tensor,
    query_selection: torch.Tensor | None,
    mem_values: torch.Tensor | None = None,
    top_k: int | None = None,
) -> None:
    """Memory read: keys B×CK×N, shrinkage B×1×N or None, query keys B×CK×HW, selection like the
    query keys or None, values B×C×N (None: not checked); top_k a positive integer or None."""
    if mem_keys.dim() != 3 or query_keys.dim() != 3:
        raise ValueError(
            "mem_keys and query_keys must be B×CK×N and B×CK×HW, "
            f"got {tuple(mem_keys.shape)} and {tuple(query_keys.shape)}"
        )
    b, ck, n = mem_keys.shape
    if query_keys.shape[:2] != (b, ck):
        raise ValueError(f"query_keys must be {b}×{ck}×HW, got {tuple(query_keys.shape)}")
    if n == 0:
        raise ValueError("memory_read needs at least one memory element (N = 0)")
    if mem_shrinkage is not None and tuple(mem_shrinkage.shape) != (b, 1, n):
        raise ValueError(f"mem_shrinkage must be {b}×1×{n}, got {tuple(mem_shrinkage.shape)}")
    if query_selection is not None and query_selection.shape != query_keys.shape:
        raise ValueError(f"query_selection must be {tuple(query_keys.shape)}, got {tuple(query_selection.shape)}")
    if mem_values is not None and (mem_values.dim() != 3 or mem_values.shape[0] != b or mem_values.shape[2] != n):
        raise ValueError(f"mem_values must be B×C×N = {b}×C×{n}, got {tuple(mem_values.shape)}")
    if top_k is not None and (isinstance(top_k, bool) or top_k < 1):
        raise ValueError(f"top_k must be a positive integer or None, got {top_k}")


def check_loss_shapes(logits: torch.Tensor, lab: torch.Tensor | None, box_mask: torch.Tensor) -> None:
    """Weak losses: logits (or probabilities) B×N×T×H×W, box_mask the same, lab B×T×3×H×W."""
    if logits.dim() != 5:
        raise ValueError(f"expected B×N×T×H×W, got shape {tuple(logits.shape)}")
    if box_mask.shape != logits.shape:
        raise ValueError(f"box_mask shape {tuple(box_mask.shape)} differs from {tuple(logits.shape)}")
    if lab is not None:
        batch, _, frames, height, width = logits.shape
        if lab.shape != (batch, frames, 3, height, width):
            raise ValueError(f"lab must be B×T×3×H×W = {(batch, frames, 3, height, width)}, got {tuple(lab.shape)}")


def check_divisible(shape: tuple[int, ...], stride: int) -> None:
    """A loss stride: a positive integer that divides the last two dims."""
    if isinstance(stride, bool) or not isinstance(stride, int) or stride < 1:
        raise ValueError(f"losses.stride: must be a positive integer, got {stride!r}")
    height, width = shape[-2], shape[-1]
    if height % stride or width % stride:
        raise ValueError(f"losses.stride: input size {height}x{width} is not divisible by the loss stride {stride}")
