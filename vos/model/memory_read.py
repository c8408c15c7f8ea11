"""Memory read: anisotropic-L2 similarity, top-k softmax and readout.

Shapes (flattened spatial dims): memory keys ``mk`` B×CK×N, shrinkage ``ms`` B×1×N, query keys ``qk``
B×CK×HW, query selection ``qe`` B×CK×HW, memory values ``mv`` B×C×N (several objects that share one
key set are stacked along C). The readout is B×C×HW, the usage B×N.

Two algorithms give the same numbers:

- ``mode="sparse"`` (ours): per query pixel keep the k most similar memory elements, softmax over
  them, and gather those k value columns. The readout costs k·HW·C multiply-adds instead of N·HW·C,
  and no N×HW affinity is ever multiplied with the values.
- ``mode="dense"`` (XMem's): materialise the N×HW affinity with the non-top-k entries zeroed and
  multiply the values densely. Kept as the equivalence oracle and the benchmark baseline.

``top_k=None`` is the full softmax over all N (training read, differentiable; always dense).

Backends (chosen in ``vos.backends``): ``"torch"`` is this file (runs everywhere, the test oracle);
``"triton"`` is the fused kernel ``vos.kernels.memory_read.memory_read_triton`` (same signature
minus ``mode``/``backend``); ``"auto"`` takes Triton for CUDA tensors when the kernels import.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F

from vos.backends import kernel_modules, read_kernel
from vos.kernels.checks import check_read_args

Backend = Literal["auto", "torch", "triton"]
Mode = Literal["sparse", "dense"]

# Query pixels per block in the sparse PyTorch path: bounds the B×block×N similarity buffer
# (~64 M fp32 elements = 256 MB) so that native-resolution videos do not need N×HW at once.
_MAX_BLOCK_ELEMENTS = 1 << 26


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """fp32 for half types (similarity must not be computed in bf16/fp16), fp64 stays fp64."""
    return torch.promote_types(dtype, torch.float32)


def _similarity_operands(
    mem_keys: torch.Tensor,
    mem_shrinkage: torch.Tensor | None,
    query_keys: torch.Tensor,
    query_selection: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Operands of the one-GEMM form of the similarity: ``S = memᵀ @ query`` with K = 2·CK + 1.

    ``−s_i/√C · Σ_c e_cj (k_ci − q_cj)² = Σ_c [s_i k_ci²/√C](−e_cj) + [s_i k_ci/√C](2 e_cj q_cj)
    + [s_i/√C](−Σ_c e_cj q_cj²)``: the memory side carries the shrinkage and the 1/√C scale, the
    query side the selection. Returns (mem B×(2CK+1)×N, query B×(2CK+1)×HW) in the compute dtype.
    """
    dtype = _compute_dtype(mem_keys.dtype)
    mk = mem_keys.to(dtype)
    qk = query_keys.to(dtype)
    ck = mk.shape[1]
    scale = 1.0 / math.sqrt(ck)
    row_scale = mk.new_full((mk.shape[0], 1, mk.shape[2]), scale)
    if mem_shrinkage is not None:
        row_scale = row_scale * mem_shrinkage.to(dtype)
    mem = torch.cat([mk * mk, mk, torch.ones_like(row_scale)], dim=1) * row_scale
    if query_selection is None:
        # Without selection every channel weighs 1 (STCN's plain L2).
        qe = torch.ones_like(qk)
    else:
        qe = query_selection.to(dtype)
    qeqk = qe * qk
    query = torch.cat([-qe, 2.0 * qeqk, -(qeqk * qk).sum(dim=1, keepdim=True)], dim=1)
    return mem, query


def similarity(
    mem_keys: torch.Tensor,
    mem_shrinkage: torch.Tensor | None,
    query_keys: torch.Tensor,
    query_selection: torch.Tensor | None,
) -> torch.Tensor:
    """Negative anisotropic squared L2 similarity, B×N×HW, in fp32 (fp64 for fp64 inputs).

    ``S[b,i,j] = −ms[b,0,i] · Σ_c qe[b,c,j] (mk[b,c,i] − qk[b,c,j])² / √CK``; ``ms=None`` means a
    shrinkage of 1, ``qe=None`` a selection of 1. Differentiable.
    """
    check_read_args(mem_keys, mem_shrinkage, query_keys, query_selection)
    mem, query = _similarity_operands(mem_keys, mem_shrinkage, query_keys, query_selection)
    return mem.transpose(1, 2) @ query


def memory_read(
    mem_keys: torch.Tensor,
    mem_shrinkage: torch.Tensor | None,
    query_keys: torch.Tensor,
    query_selection: torch.Tensor | None,
    mem_values: torch.Tensor,
    top_k: int | None = 30,
    mode: Mode = "sparse",
    backend: Backend = "auto",
    need_usage: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Read the memory for every query pixel.

    Args:
        mem_keys: B×CK×N. mem_shrinkage: B×1×N or None. query_keys: B×CK×HW.
        query_selection: B×CK×HW or None. mem_values: B×C×N.
        top_k: softmax over the k = min(top_k, N) most similar elements; None = full softmax.
        mode: "sparse" (gather k value columns) or "dense" (XMem's dense affinity × values).
        backend: "auto" | "torch" | "triton" (see the module docstring).
        need_usage: also return the usage B×N: per memory element, the sum over query pixels of
            its (top-k) softmax weight — the column sums of XMem's affinity.

    Returns:
        (readout B×C×HW in mem_values' dtype, usage B×N in fp32/fp64 or None).
    """
    check_read_args(mem_keys, mem_shrinkage, query_keys, query_selection, mem_values, top_k)
    if mode not in ("sparse", "dense"):
        raise ValueError(f"mode must be 'sparse' or 'dense', got {mode!r}")

    kernel = read_kernel(backend, mem_keys, mode)
    inputs = (mem_keys, mem_shrinkage, query_keys, query_selection, mem_values)
    if kernel is not None and _kernel_covers(top_k, mem_keys.shape[2], inputs):
        return kernel(
            mem_keys, mem_shrinkage, query_keys, query_selection, mem_values, top_k=top_k, need_usage=need_usage
        )
    if top_k is None or mode == "dense":
        return _read_dense(mem_keys, mem_shrinkage, query_keys, query_selection, mem_values, top_k, need_usage)
    return _read_sparse(mem_keys, mem_shrinkage, query_keys, query_selection, mem_values, top_k, need_usage)


def _kernel_covers(top_k: int | None, n: int, inputs: tuple[torch.Tensor | None, ...]) -> bool:
    """Whether the Triton read handles this call: the full softmax (forward and backward) always;
    a top-k read only without gradients (its kernels have no backward) and with k within the
    kernels' register budget (``MAX_TOP_K``). Other reads take the reference."""
    if top_k is None or top_k >= n:
        return True
    needs_grad = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in inputs)
    limit = getattr(kernel_modules()[0].get("memory_read"), "MAX_TOP_K", None)
    return not needs_grad and (limit is None or top_k <= limit)


def resolve_backend(backend: Backend, tensor: torch.Tensor, mode: Mode = "sparse") -> Literal["torch", "triton"]:
    """The backend that ``memory_read`` runs for tensors like ``tensor`` (``vos.backends``); raises
    VosError when the requested one cannot run (kernels missing, CPU tensors without ``TRITON_INTERPRET=1``)."""
    return "torch" if read_kernel(backend, tensor, mode) is None else "triton"


def _read_dense(
    mem_keys: torch.Tensor,
    mem_shrinkage: torch.Tensor | None,
    query_keys: torch.Tensor,
    query_selection: torch.Tensor | None,
    mem_values: torch.Tensor,
    top_k: int | None,
    need_usage: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """XMem's algorithm: dense N×HW affinity (top-k entries kept, the rest zero), then values @ affinity.
    With top_k=None it is the full softmax read used in training (differentiable)."""
    sim = similarity(mem_keys, mem_shrinkage, query_keys, query_selection)  # B×N×HW
    n = sim.shape[1]
    if top_k is None or top_k >= n:
        affinity = torch.softmax(sim, dim=1)
    else:
        top_sim, top_idx = torch.topk(sim, k=top_k, dim=1)
        weights = torch.softmax(top_sim, dim=1)
        affinity = torch.zeros_like(sim).scatter_(1, top_idx, weights)
    readout = mem_values.to(affinity.dtype) @ affinity
    usage = affinity.sum(dim=2) if need_usage else None
    return readout.to(mem_values.dtype), usage


def _read_sparse(
    mem_keys: torch.Tensor,
    mem_shrinkage: torch.Tensor | None,
    query_keys: torch.Tensor,
    query_selection: torch.Tensor | None,
    mem_values: torch.Tensor,
    top_k: int,
    need_usage: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Top-k softmax and a gather of k value columns per query pixel, in blocks of query pixels.

    The readout is ``embedding_bag`` over the value rows with the softmax weights as per-sample
    weights: k·HW·C multiply-adds, no N×HW affinity.
    """
    b, _, n = mem_keys.shape
    hw = query_keys.shape[2]
    c = mem_values.shape[1]
    k = min(top_k, n)
    mem, query = _similarity_operands(mem_keys, mem_shrinkage, query_keys, query_selection)
    dtype = mem.dtype
    # Row table B×N×C: zero-copy when the caller stores values element-major (B×N×C) and passes
    # the transposed view, as the inference memory does; otherwise one transposing copy.
    table = mem_values.to(dtype).transpose(1, 2).contiguous()
    readout = torch.empty(b, c, hw, dtype=dtype, device=mem_values.device)
    usage = torch.zeros(b, n, dtype=dtype, device=mem_keys.device) if need_usage else None
    block = max(1, min(hw, _MAX_BLOCK_ELEMENTS // max(1, b * n)))
    for start in range(0, hw, block):
        stop = min(hw, start + block)
        # Query-major layout B×HWb×N so that top-k runs over the contiguous last dim.
        sim = query[:, :, start:stop].transpose(1, 2) @ mem  # B×HWb×N
        top_sim, top_idx = torch.topk(sim, k=k, dim=2, sorted=False)
        del sim
        # Explicit max subtraction: exp never overflows, the largest weight's exponent is 0.
        weights = torch.exp(top_sim - top_sim.amax(dim=2, keepdim=True))
        weights = weights / weights.sum(dim=2, keepdim=True)  # B×HWb×k
        for bi in range(b):
            # Weighted sum of the k gathered value rows per query pixel, fused in one op.
            out = F.embedding_bag(top_idx[bi], table[bi], per_sample_weights=weights[bi], mode="sum")
            readout[bi, :, start:stop] = out.t()  # HWb×C → C×HWb
        if usage is not None:
            usage.scatter_add_(1, top_idx.reshape(b, -1), weights.reshape(b, -1))
    return readout.to(mem_values.dtype), usage
