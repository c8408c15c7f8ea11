"""Fused Triton memory read: anisotropic-L2 similarity, top-k softmax and sparse readout
(inference), and a flash-attention style full-softmax read with its backward (training).

Reference: ``vos.model.memory_read.memory_read`` (PyTorch). Shapes as there: memory keys ``mk`` B×CK×N,
shrinkage ``ms`` B×1×N (None = 1), query keys ``qk`` B×CK×HW, selection ``qe`` B×CK×HW (None = 1),
values ``mv`` B×C×N with any strides (the inference memory passes an element-major B×N×C buffer
transposed, which makes every gathered value column one contiguous row). Readout B×C×HW in
``mv``'s dtype, usage B×N.

Similarity, per memory element i and query pixel j (raw ``t`` before the row scale ``r``)::

    s_ij = r_i · t_ij,   r_i = ms_i / √CK,
    t_ij = Σ_c −e_cj·a_ci² + 2·e_cj·q_cj·a_ci − e_cj·q_cj²        (a = mk, q = qk, e = qe)

i.e. one GEMM with K = 2·CK (``[−e | 2e⊙q]ᵀ · [a² ; a]``, issued as two ``tl.dot`` into one
accumulator) plus the per-query term and the per-element scale. Dots run with
``input_precision="ieee"``: TF32 would perturb which elements make the top-k.

Top-k read (``top_k`` < N), three kernels; the dense N×HW affinity never reaches global memory:

1. ``_topk_select_kernel`` — grid (query blocks, N splits, B). Streams the memory keys of its split in
   tiles of BLOCK_N, computes the similarity tile and keeps a running top-K_PAD per query pixel
   (K_PAD = next power of two ≥ k). Value and index travel as one int64 key (order-preserving
   integer image of the fp32 similarity in the high word, the inverted index in the low word), so
   ``tl.topk`` / ``tl.bitonic_merge`` on plain integers carry the index along and break ties toward
   the lower index. Merge per tile: top-K_PAD of the tile, then ``max(running, flip(tile_best))``
   is bitonic and one bitonic merge sorts it. Tiles where no key beats any row's current K_PAD-th
   best are skipped (one reduction). Output: K_PAD candidates per (query pixel, split).
2. ``_topk_weights_kernel`` — grid (query blocks, B): top-K_PAD over the splits' candidates, mask to
   k = min(top_k, N), max-subtracted softmax, write (index, weight) per query pixel, and add the
   weights into the usage with atomics.
3. ``_sparse_readout_kernel`` — grid (query blocks, channel blocks, B): for j < k, gather value
   column idx_j (BLOCK_C channels) and accumulate w_j · v. k·HW·C multiply-adds.

Why two passes (select, then weights/readout) rather than one kernel that also gathers: the split
over N gives the selection enough programs on a large GPU (HW = 1,620 is only ~51 query blocks), and
the readout's grid over channel blocks (C = objects × 512) parallelises the gather independently of
the selection; the hand-off is K_PAD keys per (pixel, split) — ~0.4 MB per split at DAVIS shapes,
against the ~170 MB N×HW affinity. This is a design argument, not a measurement: the one-pass
variant has not been timed against it on a GPU.

Full-softmax read (``top_k`` None, or ≥ N), flash-attention style (online softmax, recomputation in
the backward):

- ``_full_fwd_kernel`` — grid (query blocks, channel blocks, B): readout and the per-pixel
  log-sum-exp ``lse``. ``_full_usage_kernel`` — grid (memory blocks, B): usage_i = Σ_j P_ij.
- Backward, with P_ij = exp(s_ij − lse_j), dP_ij = dO_j·v_i + dU_i, D_j = dO_j·O_j + Σ_i P_ij dU_i,
  G = P ⊙ (dP − D), H_ij = G_ij·r_i:
  ``_full_bwd_mem_kernel`` (grid memory blocks): dmk_ci = 2(Σ_j H_ij e_cj q_cj − a_ci Σ_j H_ij e_cj),
  dr_i = Σ_j G_ij t_ij (dms = dr / √CK); ``_full_bwd_values_kernel`` (grid memory × channel blocks):
  dmv = P·dOᵀ; ``_full_bwd_query_kernel`` (grid query blocks): dqk_cj = 2e_cj(Σ_i H_ij a_ci −
  q_cj Σ_i H_ij), dqe_cj = −Σ_i H_ij a_ci² + 2q_cj Σ_i H_ij a_ci − q_cj² Σ_i H_ij.

Precision: the top-k path computes in fp32 for every input dtype (the packed sort key holds an fp32
similarity; fp64 inputs give fp32-accurate results); the full path computes in fp32, or fp64 for
fp64 inputs. Readouts are accumulated in the compute dtype and stored in ``mv``'s dtype.

Cases the kernels do not cover raise ``ValueError`` here; ``vos.model.memory_read.memory_read`` sends
them to its PyTorch reference, with the same numbers: a top-k read that must be differentiable (the
sparse top-k kernels have no backward; the reference differentiates through ``topk``), and
``MAX_TOP_K`` < top_k < N (the running top-K_PAD would not fit in registers).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from .checks import check_read_args
from .common import TL_DTYPES

# Largest k the top-k kernels keep in registers (K_PAD per query pixel in the running merge).
MAX_TOP_K = 128

# Lower than every packed key of a real similarity (its high word is the image of a negative NaN).
_NEG_KEY = tl.constexpr(-(2**63))


@dataclass(frozen=True)
class Blocks:
    """Tile sizes (powers of two, ≥ 16 for ``tl.dot``) and launch options.

    query/mem/channels: BLOCK_Q, BLOCK_N, BLOCK_C of every kernel (BLOCK_N is raised to K_PAD in the
    top-k selection). splits: N splits of the top-k selection (power of two; None = chosen from
    the grid size and the device's SM count). num_warps: for every launch. The defaults
    (``DEFAULT_TOPK_BLOCKS``, ``DEFAULT_FULL_BLOCKS``) are not timed on a GPU but chosen
    so that ptxas (sm_90, sm_80) spills at most a few bytes per thread: none for the top-k read at
    k ≤ 32 and the fp32 full read, 16–24 B in the bf16 full-read backward (``python -m
    vos.bench.cross_compile``; the first defaults, 32/64/64 with 4 warps, spilled 0.2–17 KB per thread
    in seven of the eight kernels). Larger k spills in the selection (k = 100: 0.6–1.4 KB).
    """

    query: int = 32
    mem: int = 64
    channels: int = 64
    splits: int | None = None
    num_warps: int = 4

    def __post_init__(self) -> None:
        for name in ("query", "mem", "channels"):
            value = getattr(self, name)
            if value < 16 or value & (value - 1):
                raise ValueError(f"Blocks.{name} must be a power of two >= 16, got {value}")
        if self.splits is not None and (self.splits < 1 or self.splits & (self.splits - 1)):
            raise ValueError(f"Blocks.splits must be a power of two or None, got {self.splits}")


# Top-k read (inference, k = 30): selection 207 registers, weights 156, readout 40, no spills (sm_90).
DEFAULT_TOPK_BLOCKS = Blocks(query=32, mem=32, channels=64, num_warps=8)
# Full-softmax read and its backward (training): ≤ 255 registers, no spills (sm_90, fp32 CK = 64).
DEFAULT_FULL_BLOCKS = Blocks(query=16, mem=32, channels=64, num_warps=8)

# fp32 dots in IEEE precision: the top-k choice and the softmax must match the fp32 reference.
_PREC = "ieee"


# ------------------------------------------------------------------------------------------ helpers
@triton.jit
def _load_2d(base, offs_r, offs_c, n_r, n_c, s_r, s_c, DTYPE: tl.constexpr):
    """Tile base[offs_r·s_r + offs_c·s_c] (zero outside n_r × n_c), cast to DTYPE."""
    mask = (offs_r[:, None] < n_r) & (offs_c[None, :] < n_c)
    ptrs = base + offs_r[:, None] * s_r + offs_c[None, :] * s_c
    return tl.load(ptrs, mask=mask, other=0.0).to(DTYPE)


@triton.jit
def _pack(s, offs_n):
    """Order-preserving int64 key of (fp32 similarity s [R, BN], index offs_n [BN]): larger s gives
    a larger key; equal s, lower index gives the larger key."""
    bits = s.to(tl.int32, bitcast=True)
    # Negative floats order backwards as integers: flip their magnitude bits.
    key = bits ^ ((bits >> 31) & 0x7FFFFFFF)
    return (key.to(tl.int64) << 32) | (0x7FFFFFFF - offs_n).to(tl.int64)[None, :]


@triton.jit
def _unpack(packed):
    """Inverse of ``_pack``: (fp32 similarity, int32 index)."""
    key = (packed >> 32).to(tl.int32)
    bits = key ^ ((key >> 31) & 0x7FFFFFFF)
    idx = 0x7FFFFFFF - (packed & 0x7FFFFFFF).to(tl.int32)
    return bits.to(tl.float32, bitcast=True), idx


# ------------------------------------------------------------------------------------ top-k kernels
@triton.jit
def _topk_select_kernel(
    mk_ptr, r_ptr, qk_ptr, qe_ptr, cand_ptr,
    N, HW, n_per_split,
    s_kb, s_kc, s_kn, s_qb, s_qc, s_qj, s_eb, s_ec, s_ej,
    CK: tl.constexpr, BLOCK_CK: tl.constexpr, BLOCK_Q: tl.constexpr, BLOCK_N: tl.constexpr,
    K_PAD: tl.constexpr, NUM_SPLITS: tl.constexpr, PREC: tl.constexpr,
):
    pid_q = tl.program_id(0)
    split = tl.program_id(1)
    b = tl.program_id(2).to(tl.int64)
    offs_q = pid_q * BLOCK_Q + tl.arange(0, BLOCK_Q)
    offs_c = tl.arange(0, BLOCK_CK)
    q = _load_2d(qk_ptr + b * s_qb, offs_q, offs_c, HW, CK, s_qj, s_qc, tl.float32)  # BQ×BCK
    e = _load_2d(qe_ptr + b * s_eb, offs_q, offs_c, HW, CK, s_ej, s_ec, tl.float32)
    eq = e * q
    neg_e = -e
    two_eq = 2.0 * eq
    a0 = -tl.sum(eq * q, axis=1)  # BQ

    best = tl.full([BLOCK_Q, K_PAD], _NEG_KEY, tl.int64)  # sorted descending along dim 1
    n_lo = split * n_per_split
    n_hi = tl.minimum(N, n_lo + n_per_split)
    for n0 in range(n_lo, n_hi, BLOCK_N):
        offs_n = n0 + tl.arange(0, BLOCK_N)
        a = _load_2d(mk_ptr + b * s_kb, offs_c, offs_n, CK, N, s_kc, s_kn, tl.float32)  # BCK×BN
        r = tl.load(r_ptr + b * N + offs_n, mask=offs_n < N, other=0.0)
        t = tl.dot(neg_e, a * a, input_precision=PREC)
        t = tl.dot(two_eq, a, acc=t, input_precision=PREC)
        s = (t + a0[:, None]) * r[None, :]
        key = tl.where((offs_n < N)[None, :], _pack(s, offs_n), _NEG_KEY)
        floor = tl.min(best, axis=1)
        n_better = tl.sum(tl.sum((key > floor[:, None]).to(tl.int32), axis=1), axis=0)
        if n_better > 0:
            tile_best = tl.topk(key, K_PAD, dim=1)
            # Descending ⊕ ascending, elementwise max: a bitonic row holding the K_PAD best of both.
            best = tl.bitonic_merge(tl.maximum(best, tl.flip(tile_best, 1)), dim=1, descending=True)

    cols = tl.arange(0, K_PAD)
    ptrs = cand_ptr + (b * HW + offs_q[:, None]) * (NUM_SPLITS * K_PAD) + split * K_PAD + cols[None, :]
    tl.store(ptrs, best, mask=(offs_q < HW)[:, None])


@triton.jit
def _topk_weights_kernel(
    cand_ptr, idx_ptr, w_ptr, usage_ptr,
    N, HW, k_valid,
    BLOCK_Q: tl.constexpr, K_PAD: tl.constexpr, NUM_SPLITS: tl.constexpr, NEED_USAGE: tl.constexpr,
):
    pid_q = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    offs_q = pid_q * BLOCK_Q + tl.arange(0, BLOCK_Q)
    q_mask = offs_q < HW
    cols = tl.arange(0, NUM_SPLITS * K_PAD)
    cand = tl.load(
        cand_ptr + (b * HW + offs_q[:, None]) * (NUM_SPLITS * K_PAD) + cols[None, :],
        mask=q_mask[:, None],
        other=_NEG_KEY,
    )
    if NUM_SPLITS > 1:
        cand = tl.topk(cand, K_PAD, dim=1)
    s, idx = _unpack(cand)
    kcols = tl.arange(0, K_PAD)
    valid = (kcols[None, :] < k_valid) & q_mask[:, None]
    s = tl.where(valid, s, float("-inf"))
    m = tl.max(s, axis=1)
    m = tl.where(q_mask, m, 0.0)  # rows past HW have no entries
    p = tl.where(valid, tl.exp(s - m[:, None]), 0.0)
    denom = tl.sum(p, axis=1)
    w = p / tl.where(denom > 0, denom, 1.0)[:, None]
    out = (b * HW + offs_q[:, None]) * K_PAD + kcols[None, :]
    tl.store(idx_ptr + out, idx, mask=q_mask[:, None])
    tl.store(w_ptr + out, w, mask=q_mask[:, None])
    if NEED_USAGE:
        tl.atomic_add(usage_ptr + b * N + idx, w, mask=valid)


@triton.jit
def _sparse_readout_kernel(
    idx_ptr, w_ptr, mv_ptr, out_ptr,
    HW, C, k_valid,
    s_vb, s_vc, s_vn, s_ob, s_oc, s_oj,
    BLOCK_Q: tl.constexpr, BLOCK_C: tl.constexpr, K_PAD: tl.constexpr,
):
    pid_q = tl.program_id(0)
    pid_c = tl.program_id(1)
    b = tl.program_id(2).to(tl.int64)
    offs_q = pid_q * BLOCK_Q + tl.arange(0, BLOCK_Q)
    offs_c = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    q_mask = offs_q < HW
    mask = q_mask[:, None] & (offs_c < C)[None, :]
    row = (b * HW + offs_q) * K_PAD
    values = mv_ptr + b * s_vb + offs_c[None, :] * s_vc
    acc = tl.zeros([BLOCK_Q, BLOCK_C], dtype=tl.float32)
    for j in range(0, k_valid):
        idx = tl.load(idx_ptr + row + j, mask=q_mask, other=0)
        w = tl.load(w_ptr + row + j, mask=q_mask, other=0.0)
        v = tl.load(values + idx.to(tl.int64)[:, None] * s_vn, mask=mask, other=0.0)
        acc += w[:, None] * v.to(tl.float32)
    ptrs = out_ptr + b * s_ob + offs_c[None, :] * s_oc + offs_q[:, None] * s_oj
    tl.store(ptrs, acc.to(out_ptr.dtype.element_ty), mask=mask)


# ----------------------------------------------------------------------------- full-softmax kernels
@triton.jit
def _full_fwd_kernel(
    mk_ptr, r_ptr, qk_ptr, qe_ptr, mv_ptr, out_ptr, lse_ptr,
    N, HW, C,
    s_kb, s_kc, s_kn, s_qb, s_qc, s_qj, s_eb, s_ec, s_ej, s_vb, s_vc, s_vn,
    CK: tl.constexpr, BLOCK_CK: tl.constexpr, BLOCK_Q: tl.constexpr, BLOCK_N: tl.constexpr,
    BLOCK_C: tl.constexpr, COMPUTE: tl.constexpr, PREC: tl.constexpr,
):
    """out (B×C×HW, compute dtype, contiguous) = Σ_i softmax_i(s_ij) v_ci; lse (B×HW) per pixel."""
    pid_q = tl.program_id(0)
    pid_c = tl.program_id(1)
    b = tl.program_id(2).to(tl.int64)
    offs_q = pid_q * BLOCK_Q + tl.arange(0, BLOCK_Q)
    offs_c = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    offs_k = tl.arange(0, BLOCK_CK)
    q = _load_2d(qk_ptr + b * s_qb, offs_q, offs_k, HW, CK, s_qj, s_qc, COMPUTE)  # BQ×BCK
    e = _load_2d(qe_ptr + b * s_eb, offs_q, offs_k, HW, CK, s_ej, s_ec, COMPUTE)
    eq = e * q
    neg_e = -e
    two_eq = 2.0 * eq
    a0 = -tl.sum(eq * q, axis=1)

    m = tl.full([BLOCK_Q], float("-inf"), COMPUTE)
    denom = tl.zeros([BLOCK_Q], COMPUTE)
    acc = tl.zeros([BLOCK_Q, BLOCK_C], COMPUTE)
    for n0 in range(0, N, BLOCK_N):
        offs_n = n0 + tl.arange(0, BLOCK_N)
        n_mask = offs_n < N
        a = _load_2d(mk_ptr + b * s_kb, offs_k, offs_n, CK, N, s_kc, s_kn, COMPUTE)  # BCK×BN
        r = tl.load(r_ptr + b * N + offs_n, mask=n_mask, other=0.0)
        t = tl.dot(neg_e, a * a, input_precision=PREC)
        t = tl.dot(two_eq, a, acc=t, input_precision=PREC)
        s = tl.where(n_mask[None, :], (t + a0[:, None]) * r[None, :], float("-inf"))
        m_new = tl.maximum(m, tl.max(s, axis=1))
        alpha = tl.exp(m - m_new)
        p = tl.exp(s - m_new[:, None])
        denom = denom * alpha + tl.sum(p, axis=1)
        v = _load_2d(mv_ptr + b * s_vb, offs_n, offs_c, N, C, s_vn, s_vc, COMPUTE)  # BN×BC
        acc = tl.dot(p, v, acc=acc * alpha[:, None], input_precision=PREC)
        m = m_new

    q_mask = offs_q < HW
    out = acc / denom[:, None]
    ptrs = out_ptr + (b * C + offs_c[None, :]) * HW + offs_q[:, None]
    tl.store(ptrs, out, mask=q_mask[:, None] & (offs_c < C)[None, :])
    if pid_c == 0:
        tl.store(lse_ptr + b * HW + offs_q, m + tl.log(denom), mask=q_mask)


@triton.jit
def _mem_side_scores(
    qk_ptr, qe_ptr, b, j0, a_t, a2_t, r, n_mask, lse_ptr,
    HW, s_qb, s_qc, s_qj, s_eb, s_ec, s_ej,
    CK: tl.constexpr, BLOCK_CK: tl.constexpr, BLOCK_Q: tl.constexpr, COMPUTE: tl.constexpr,
    PREC: tl.constexpr,
):
    """For a memory tile (a_t = mk BN×BCK, a2_t = a_t², r BN) and query pixels j0…j0+BQ: raw score
    t, probabilities P = exp(r·t − lse) (zero outside the valid range), all BN×BQ; plus the query
    tile's selection e and e⊙q as BCK×BQ, and the pixel offsets."""
    offs_q = j0 + tl.arange(0, BLOCK_Q)
    offs_k = tl.arange(0, BLOCK_CK)
    q_mask = offs_q < HW
    q = _load_2d(qk_ptr + b * s_qb, offs_k, offs_q, CK, HW, s_qc, s_qj, COMPUTE)  # BCK×BQ
    e = _load_2d(qe_ptr + b * s_eb, offs_k, offs_q, CK, HW, s_ec, s_ej, COMPUTE)
    eq = e * q
    t = tl.dot(a2_t, -e, input_precision=PREC)
    t = tl.dot(a_t, 2.0 * eq, acc=t, input_precision=PREC)
    t = t - tl.sum(eq * q, axis=0)[None, :]
    lse = tl.load(lse_ptr + b * HW + offs_q, mask=q_mask, other=0.0)
    valid = n_mask[:, None] & q_mask[None, :]
    p = tl.where(valid, tl.exp(t * r[:, None] - lse[None, :]), 0.0)
    return t, p, e, eq, offs_q, q_mask


@triton.jit
def _full_usage_kernel(
    mk_ptr, r_ptr, qk_ptr, qe_ptr, lse_ptr, usage_ptr,
    N, HW,
    s_kb, s_kc, s_kn, s_qb, s_qc, s_qj, s_eb, s_ec, s_ej,
    CK: tl.constexpr, BLOCK_CK: tl.constexpr, BLOCK_Q: tl.constexpr, BLOCK_N: tl.constexpr,
    COMPUTE: tl.constexpr, PREC: tl.constexpr,
):
    """usage_i = Σ_j exp(s_ij − lse_j) (B×N, compute dtype)."""
    pid_n = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    n_mask = offs_n < N
    a_t = _load_2d(mk_ptr + b * s_kb, offs_n, tl.arange(0, BLOCK_CK), N, CK, s_kn, s_kc, COMPUTE)
    r = tl.load(r_ptr + b * N + offs_n, mask=n_mask, other=0.0)
    usage = tl.zeros([BLOCK_N], COMPUTE)
    for j0 in range(0, HW, BLOCK_Q):
        _, p, _, _, _, _ = _mem_side_scores(
            qk_ptr, qe_ptr, b, j0, a_t, a_t * a_t, r, n_mask, lse_ptr,
            HW, s_qb, s_qc, s_qj, s_eb, s_ec, s_ej, CK, BLOCK_CK, BLOCK_Q, COMPUTE, PREC,
        )
        usage += tl.sum(p, axis=1)
    tl.store(usage_ptr + b * N + offs_n, usage, mask=n_mask)


@triton.jit
def _full_bwd_mem_kernel(
    mk_ptr, r_ptr, qk_ptr, qe_ptr, mv_ptr, lse_ptr, delta_ptr, do_ptr, du_ptr, dmk_ptr, dr_ptr,
    N, HW, C,
    s_kb, s_kc, s_kn, s_qb, s_qc, s_qj, s_eb, s_ec, s_ej, s_vb, s_vc, s_vn,
    CK: tl.constexpr, BLOCK_CK: tl.constexpr, BLOCK_Q: tl.constexpr, BLOCK_N: tl.constexpr,
    BLOCK_C: tl.constexpr, HAS_DU: tl.constexpr, COMPUTE: tl.constexpr, PREC: tl.constexpr,
):
    """dmk (B×CK×N) and dr (B×N) for one memory tile; do (B×C×HW), lse/delta (B×HW), du (B×N)
    are contiguous in the compute dtype."""
    pid_n = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_CK)
    n_mask = offs_n < N
    a_t = _load_2d(mk_ptr + b * s_kb, offs_n, offs_k, N, CK, s_kn, s_kc, COMPUTE)  # BN×BCK
    a2_t = a_t * a_t
    r = tl.load(r_ptr + b * N + offs_n, mask=n_mask, other=0.0)
    if HAS_DU:
        du = tl.load(du_ptr + b * N + offs_n, mask=n_mask, other=0.0)
    acc_e = tl.zeros([BLOCK_N, BLOCK_CK], COMPUTE)
    acc_eq = tl.zeros([BLOCK_N, BLOCK_CK], COMPUTE)
    acc_r = tl.zeros([BLOCK_N], COMPUTE)
    for j0 in range(0, HW, BLOCK_Q):
        t, p, e, eq, offs_q, q_mask = _mem_side_scores(
            qk_ptr, qe_ptr, b, j0, a_t, a2_t, r, n_mask, lse_ptr,
            HW, s_qb, s_qc, s_qj, s_eb, s_ec, s_ej, CK, BLOCK_CK, BLOCK_Q, COMPUTE, PREC,
        )
        dp = tl.zeros([BLOCK_N, BLOCK_Q], COMPUTE)
        for c0 in range(0, C, BLOCK_C):
            offs_c = c0 + tl.arange(0, BLOCK_C)
            v = _load_2d(mv_ptr + b * s_vb, offs_n, offs_c, N, C, s_vn, s_vc, COMPUTE)  # BN×BC
            do = _load_2d(do_ptr + b * C * HW, offs_c, offs_q, C, HW, HW, 1, COMPUTE)  # BC×BQ
            dp = tl.dot(v, do, acc=dp, input_precision=PREC)
        if HAS_DU:
            dp += du[:, None]
        delta = tl.load(delta_ptr + b * HW + offs_q, mask=q_mask, other=0.0)
        g = p * (dp - delta[None, :])
        acc_r += tl.sum(g * t, axis=1)
        h = g * r[:, None]
        acc_e = tl.dot(h, tl.trans(e), acc=acc_e, input_precision=PREC)
        acc_eq = tl.dot(h, tl.trans(eq), acc=acc_eq, input_precision=PREC)
    dmk = 2.0 * (acc_eq - a_t * acc_e)
    mask = n_mask[:, None] & (offs_k < CK)[None, :]
    tl.store(dmk_ptr + (b * CK + offs_k[None, :]) * N + offs_n[:, None], dmk, mask=mask)
    tl.store(dr_ptr + b * N + offs_n, acc_r, mask=n_mask)


@triton.jit
def _full_bwd_values_kernel(
    mk_ptr, r_ptr, qk_ptr, qe_ptr, lse_ptr, do_ptr, dmv_ptr,
    N, HW, C,
    s_kb, s_kc, s_kn, s_qb, s_qc, s_qj, s_eb, s_ec, s_ej,
    CK: tl.constexpr, BLOCK_CK: tl.constexpr, BLOCK_Q: tl.constexpr, BLOCK_N: tl.constexpr,
    BLOCK_C: tl.constexpr, COMPUTE: tl.constexpr, PREC: tl.constexpr,
):
    """dmv (B×C×N, compute dtype) = P · dOᵀ for one memory tile × channel block."""
    pid_n = tl.program_id(0)
    pid_c = tl.program_id(1)
    b = tl.program_id(2).to(tl.int64)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_c = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    n_mask = offs_n < N
    a_t = _load_2d(mk_ptr + b * s_kb, offs_n, tl.arange(0, BLOCK_CK), N, CK, s_kn, s_kc, COMPUTE)
    a2_t = a_t * a_t
    r = tl.load(r_ptr + b * N + offs_n, mask=n_mask, other=0.0)
    acc = tl.zeros([BLOCK_N, BLOCK_C], COMPUTE)
    for j0 in range(0, HW, BLOCK_Q):
        _, p, _, _, offs_q, _ = _mem_side_scores(
            qk_ptr, qe_ptr, b, j0, a_t, a2_t, r, n_mask, lse_ptr,
            HW, s_qb, s_qc, s_qj, s_eb, s_ec, s_ej, CK, BLOCK_CK, BLOCK_Q, COMPUTE, PREC,
        )
        do = _load_2d(do_ptr + b * C * HW, offs_q, offs_c, HW, C, 1, HW, COMPUTE)  # BQ×BC
        acc = tl.dot(p, do, acc=acc, input_precision=PREC)
    mask = n_mask[:, None] & (offs_c < C)[None, :]
    tl.store(dmv_ptr + (b * C + offs_c[None, :]) * N + offs_n[:, None], acc, mask=mask)


@triton.jit
def _full_bwd_query_kernel(
    mk_ptr, r_ptr, qk_ptr, qe_ptr, mv_ptr, lse_ptr, delta_ptr, do_ptr, du_ptr, dqk_ptr, dqe_ptr,
    N, HW, C,
    s_kb, s_kc, s_kn, s_qb, s_qc, s_qj, s_eb, s_ec, s_ej, s_vb, s_vc, s_vn,
    CK: tl.constexpr, BLOCK_CK: tl.constexpr, BLOCK_Q: tl.constexpr, BLOCK_N: tl.constexpr,
    BLOCK_C: tl.constexpr, HAS_DU: tl.constexpr, COMPUTE: tl.constexpr, PREC: tl.constexpr,
):
    """dqk and dqe (B×CK×HW, compute dtype) for one block of query pixels."""
    pid_q = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    offs_q = pid_q * BLOCK_Q + tl.arange(0, BLOCK_Q)
    offs_k = tl.arange(0, BLOCK_CK)
    q_mask = offs_q < HW
    q = _load_2d(qk_ptr + b * s_qb, offs_q, offs_k, HW, CK, s_qj, s_qc, COMPUTE)  # BQ×BCK
    e = _load_2d(qe_ptr + b * s_eb, offs_q, offs_k, HW, CK, s_ej, s_ec, COMPUTE)
    eq = e * q
    neg_e = -e
    two_eq = 2.0 * eq
    a0 = -tl.sum(eq * q, axis=1)
    lse = tl.load(lse_ptr + b * HW + offs_q, mask=q_mask, other=0.0)
    delta = tl.load(delta_ptr + b * HW + offs_q, mask=q_mask, other=0.0)
    acc_a = tl.zeros([BLOCK_Q, BLOCK_CK], COMPUTE)
    acc_a2 = tl.zeros([BLOCK_Q, BLOCK_CK], COMPUTE)
    acc_h = tl.zeros([BLOCK_Q], COMPUTE)
    for n0 in range(0, N, BLOCK_N):
        offs_n = n0 + tl.arange(0, BLOCK_N)
        n_mask = offs_n < N
        a = _load_2d(mk_ptr + b * s_kb, offs_k, offs_n, CK, N, s_kc, s_kn, COMPUTE)  # BCK×BN
        a2 = a * a
        r = tl.load(r_ptr + b * N + offs_n, mask=n_mask, other=0.0)
        t = tl.dot(neg_e, a2, input_precision=PREC)
        t = tl.dot(two_eq, a, acc=t, input_precision=PREC) + a0[:, None]
        valid = q_mask[:, None] & n_mask[None, :]
        p = tl.where(valid, tl.exp(t * r[None, :] - lse[:, None]), 0.0)
        dp = tl.zeros([BLOCK_Q, BLOCK_N], COMPUTE)
        for c0 in range(0, C, BLOCK_C):
            offs_c = c0 + tl.arange(0, BLOCK_C)
            do = _load_2d(do_ptr + b * C * HW, offs_q, offs_c, HW, C, 1, HW, COMPUTE)  # BQ×BC
            v = _load_2d(mv_ptr + b * s_vb, offs_c, offs_n, C, N, s_vc, s_vn, COMPUTE)  # BC×BN
            dp = tl.dot(do, v, acc=dp, input_precision=PREC)
        if HAS_DU:
            dp += tl.load(du_ptr + b * N + offs_n, mask=n_mask, other=0.0)[None, :]
        h = p * (dp - delta[:, None]) * r[None, :]
        acc_a = tl.dot(h, tl.trans(a), acc=acc_a, input_precision=PREC)
        acc_a2 = tl.dot(h, tl.trans(a2), acc=acc_a2, input_precision=PREC)
        acc_h += tl.sum(h, axis=1)
    dq = 2.0 * e * (acc_a - q * acc_h[:, None])
    de = 2.0 * q * acc_a - acc_a2 - q * q * acc_h[:, None]
    mask = q_mask[:, None] & (offs_k < CK)[None, :]
    ptrs = (b * CK + offs_k[None, :]) * HW + offs_q[:, None]
    tl.store(dqk_ptr + ptrs, dq, mask=mask)
    tl.store(dqe_ptr + ptrs, de, mask=mask)


# ---------------------------------------------------------------------------------------- launchers
def _block_ck(ck: int) -> int:
    return max(16, triton.next_power_of_2(ck))


def _sm_count(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return 1  # interpreter: no parallelism to fill


def _row_scale(mem_keys: torch.Tensor, mem_shrinkage: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor:
    """r = ms / √CK, B×N contiguous in the compute dtype (ms None: 1/√CK)."""
    b, ck, n = mem_keys.shape
    scale = 1.0 / math.sqrt(ck)
    if mem_shrinkage is None:
        return torch.full((b, n), scale, dtype=dtype, device=mem_keys.device)
    return (mem_shrinkage.reshape(b, n).to(dtype) * scale).contiguous()


def _selection(query_keys: torch.Tensor, query_selection: torch.Tensor | None) -> torch.Tensor:
    # Ones without memory: a stride-0 view (the kernels take strides).
    if query_selection is None:
        return query_keys.new_ones(()).expand_as(query_keys)
    return query_selection


def _key_args(mk: torch.Tensor, qk: torch.Tensor, qe: torch.Tensor) -> tuple[int, ...]:
    return (*mk.stride(), *qk.stride(), *qe.stride())


@dataclass(frozen=True)
class TopkTiles:
    """Launch geometry of the top-k selection (kernels 1 and 2) for one shape."""

    k_pad: int  # K_PAD: next power of two ≥ k, at least 2
    block_n: int  # memory elements per tile (≥ K_PAD)
    block_q: int  # query pixels per program
    splits: int  # N splits (power of two; trailing ones may be empty)
    n_per_split: int  # memory elements per split (a multiple of block_n)


def topk_tiles(n: int, hw: int, batch: int, top_k: int, blocks: Blocks, sm_count: int) -> TopkTiles:
    """Tiles and N splits of the top-k selection. ``sm_count``: multiprocessors of the device, used
    when ``blocks.splits`` is None to aim at ~2 waves of programs, each split streaming at least
    2 tiles (at most 16 splits)."""
    k_pad = max(2, triton.next_power_of_2(min(top_k, n)))
    block_n = max(blocks.mem, k_pad)
    # Past k = 32, 16 query rows per program (tl.dot's minimum), so that the running top-K_PAD
    # (int64 keys) stays in registers: with 32 rows, ptxas (sm_90) spilled 0.5 KB per thread in the
    # selection at k = 50 and 10.8 KB in the weights kernel at k = 100.
    block_q = blocks.query if k_pad <= 32 else 16
    splits = blocks.splits
    if splits is None:
        want = triton.cdiv(2 * sm_count, triton.cdiv(hw, block_q) * batch)
        most = max(1, n // (2 * block_n))
        splits = max(1, min(triton.next_power_of_2(want), 16, 1 << (most.bit_length() - 1)))
    n_per_split = triton.cdiv(triton.cdiv(n, splits), block_n) * block_n
    splits = triton.cdiv(n, n_per_split)  # no empty split
    splits = triton.next_power_of_2(splits)  # the candidate row must be a power of two; extra splits stay empty
    return TopkTiles(k_pad, block_n, block_q, splits, n_per_split)


def _topk_select(
    mk: torch.Tensor,
    ms: torch.Tensor | None,
    qk: torch.Tensor,
    qe: torch.Tensor | None,
    top_k: int,
    need_usage: bool,
    blocks: Blocks,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, int]:
    """Kernels 1 and 2: (indices B×HW×K_PAD int32, softmax weights B×HW×K_PAD fp32, usage B×N fp32
    or None, k). Per query pixel the first k entries hold its k best elements, most similar first;
    the rest are padding (weight 0)."""
    b, ck, n = mk.shape
    hw = qk.shape[2]
    dev = mk.device
    k = min(top_k, n)
    tiles = topk_tiles(n, hw, b, top_k, blocks, _sm_count(dev))
    k_pad, block_q, splits = tiles.k_pad, tiles.block_q, tiles.splits
    q_blocks = triton.cdiv(hw, block_q)

    r = _row_scale(mk, ms, torch.float32)
    qe_ = _selection(qk, qe)
    cand = torch.empty(b, hw, splits * k_pad, dtype=torch.int64, device=dev)
    _topk_select_kernel[(q_blocks, splits, b)](
        mk, r, qk, qe_, cand,
        n, hw, tiles.n_per_split,
        *_key_args(mk, qk, qe_),
        CK=ck, BLOCK_CK=_block_ck(ck), BLOCK_Q=block_q, BLOCK_N=tiles.block_n,
        K_PAD=k_pad, NUM_SPLITS=splits, PREC=_PREC, num_warps=blocks.num_warps,
    )
    idx = torch.empty(b, hw, k_pad, dtype=torch.int32, device=dev)
    weights = torch.empty(b, hw, k_pad, dtype=torch.float32, device=dev)
    usage = torch.zeros(b, n, dtype=torch.float32, device=dev) if need_usage else None
    _topk_weights_kernel[(q_blocks, b)](
        cand, idx, weights, usage if usage is not None else weights,
        n, hw, k,
        BLOCK_Q=block_q, K_PAD=k_pad, NUM_SPLITS=splits, NEED_USAGE=need_usage, num_warps=blocks.num_warps,
    )
    return idx, weights, usage, k


def _topk_read(
    mk: torch.Tensor,
    ms: torch.Tensor | None,
    qk: torch.Tensor,
    qe: torch.Tensor | None,
    mv: torch.Tensor,
    top_k: int,
    need_usage: bool,
    blocks: Blocks,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    idx, weights, usage, k = _topk_select(mk, ms, qk, qe, top_k, need_usage, blocks)
    b, hw, k_pad = idx.shape
    c = mv.shape[1]
    readout = torch.empty(b, c, hw, dtype=mv.dtype, device=mv.device)
    _sparse_readout_kernel[(triton.cdiv(hw, blocks.query), triton.cdiv(c, blocks.channels), b)](
        idx, weights, mv, readout,
        hw, c, k,
        *mv.stride(), *readout.stride(),
        BLOCK_Q=blocks.query, BLOCK_C=blocks.channels, K_PAD=k_pad, num_warps=blocks.num_warps,
    )
    if usage is not None:
        usage = usage.to(torch.promote_types(mk.dtype, torch.float32))
    return readout, usage


def _full_forward(
    mk: torch.Tensor, r: torch.Tensor, qk: torch.Tensor, qe: torch.Tensor, mv: torch.Tensor,
    compute: torch.dtype, blocks: Blocks,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(readout B×C×HW, lse B×HW), both contiguous in the compute dtype."""
    b, ck, n = mk.shape
    hw = qk.shape[2]
    c = mv.shape[1]
    out = torch.empty(b, c, hw, dtype=compute, device=mk.device)
    lse = torch.empty(b, hw, dtype=compute, device=mk.device)
    grid = (triton.cdiv(hw, blocks.query), triton.cdiv(c, blocks.channels), b)
    _full_fwd_kernel[grid](
        mk, r, qk, qe, mv, out, lse,
        n, hw, c,
        *_key_args(mk, qk, qe), *mv.stride(),
        CK=ck, BLOCK_CK=_block_ck(ck), BLOCK_Q=blocks.query, BLOCK_N=blocks.mem, BLOCK_C=blocks.channels,
        COMPUTE=TL_DTYPES[compute], PREC=_PREC, num_warps=blocks.num_warps,
    )
    return out, lse


def _full_usage(
    mk: torch.Tensor, r: torch.Tensor, qk: torch.Tensor, qe: torch.Tensor, lse: torch.Tensor,
    compute: torch.dtype, blocks: Blocks,
) -> torch.Tensor:
    b, ck, n = mk.shape
    hw = qk.shape[2]
    usage = torch.empty(b, n, dtype=compute, device=mk.device)
    _full_usage_kernel[(triton.cdiv(n, blocks.mem), b)](
        mk, r, qk, qe, lse, usage,
        n, hw,
        *_key_args(mk, qk, qe),
        CK=ck, BLOCK_CK=_block_ck(ck), BLOCK_Q=blocks.query, BLOCK_N=blocks.mem,
        COMPUTE=TL_DTYPES[compute], PREC=_PREC, num_warps=blocks.num_warps,
    )
    return usage


class _FullSoftmaxRead(torch.autograd.Function):
    """Full-softmax read with Triton forward and backward. Outputs (readout, usage) when
    ``need_usage``, else (readout,)."""

    @staticmethod
    def forward(ctx, mk, ms, qk, qe, mv, need_usage: bool, blocks: Blocks):
        # Unused outputs (e.g. the usage) then give None gradients instead of zeros: no extra pass.
        ctx.set_materialize_grads(False)
        compute = torch.promote_types(mk.dtype, torch.float32)
        r = _row_scale(mk, ms, compute)
        qe_ = _selection(qk, qe)
        out, lse = _full_forward(mk, r, qk, qe_, mv, compute, blocks)
        outputs = (out.to(mv.dtype),)
        if need_usage:
            outputs += (_full_usage(mk, r, qk, qe_, lse, compute, blocks),)
        ctx.save_for_backward(mk, r, qk, qe_, mv, out, lse)
        ctx.blocks = blocks
        ctx.compute = compute
        ctx.dtypes = tuple(None if t is None else t.dtype for t in (mk, ms, qk, qe, mv))
        ctx.scale = 1.0 / math.sqrt(mk.shape[1])
        return outputs

    @staticmethod
    def backward(ctx, d_readout, d_usage=None):
        mk, r, qk, qe, mv, out, lse = ctx.saved_tensors
        blocks: Blocks = ctx.blocks
        compute = ctx.compute
        b, ck, n = mk.shape
        hw = qk.shape[2]
        c = mv.shape[1]
        dev = mk.device
        do = torch.zeros_like(out) if d_readout is None else d_readout.to(compute).contiguous()
        delta = (do * out).sum(dim=1)  # B×HW: Σ_c dO_cj O_cj
        has_du = d_usage is not None
        if has_du:
            du = d_usage.to(compute).contiguous()
            # Σ_i P_ij dU_i is a readout of dU as a one-channel value.
            du_read, _ = _full_forward(mk, r, qk, qe, du[:, None, :], compute, blocks)
            delta = delta + du_read[:, 0]
        else:
            du = delta  # unused by the kernels (HAS_DU False); any compute-dtype pointer
        delta = delta.contiguous()

        keys = (*_key_args(mk, qk, qe),)
        consts = dict(
            CK=ck, BLOCK_CK=_block_ck(ck), BLOCK_Q=blocks.query, BLOCK_N=blocks.mem,
            COMPUTE=TL_DTYPES[compute], PREC=_PREC, num_warps=blocks.num_warps,
        )
        dmk = torch.empty(b, ck, n, dtype=compute, device=dev)
        dr = torch.empty(b, n, dtype=compute, device=dev)
        _full_bwd_mem_kernel[(triton.cdiv(n, blocks.mem), b)](
            mk, r, qk, qe, mv, lse, delta, do, du, dmk, dr,
            n, hw, c, *keys, *mv.stride(),
            BLOCK_C=blocks.channels, HAS_DU=has_du, **consts,
        )
        dmv = torch.empty(b, c, n, dtype=compute, device=dev)
        _full_bwd_values_kernel[(triton.cdiv(n, blocks.mem), triton.cdiv(c, blocks.channels), b)](
            mk, r, qk, qe, lse, do, dmv,
            n, hw, c, *keys,
            BLOCK_C=blocks.channels, **consts,
        )
        dqk = torch.empty(b, ck, hw, dtype=compute, device=dev)
        dqe = torch.empty(b, ck, hw, dtype=compute, device=dev)
        _full_bwd_query_kernel[(triton.cdiv(hw, blocks.query), b)](
            mk, r, qk, qe, mv, lse, delta, do, du, dqk, dqe,
            n, hw, c, *keys, *mv.stride(),
            BLOCK_C=blocks.channels, HAS_DU=has_du, **consts,
        )
        mk_t, ms_t, qk_t, qe_t, mv_t = ctx.dtypes
        dms = None if ms_t is None else (dr * ctx.scale).reshape(b, 1, n).to(ms_t)
        dqe_out = None if qe_t is None else dqe.to(qe_t)
        return dmk.to(mk_t), dms, dqk.to(qk_t), dqe_out, dmv.to(mv_t), None, None


def memory_read_triton(
    mem_keys: torch.Tensor,
    mem_shrinkage: torch.Tensor | None,
    query_keys: torch.Tensor,
    query_selection: torch.Tensor | None,
    mem_values: torch.Tensor,
    top_k: int | None = 30,
    need_usage: bool = False,
    blocks: Blocks | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Triton memory read with the semantics of ``vos.model.memory_read.memory_read`` (sparse mode).

    Args:
        mem_keys: B×CK×N. mem_shrinkage: B×1×N or None (1). query_keys: B×CK×HW.
        query_selection: B×CK×HW or None (1). mem_values: B×C×N, any strides.
        top_k: softmax over the min(top_k, N) most similar elements per query pixel (inference
            kernels); None, or top_k ≥ N, is the full softmax (differentiable: Triton backward).
        need_usage: also return the usage B×N (per memory element, the summed softmax weight).
        blocks: tile sizes (tests use small ones); None = ``DEFAULT_TOPK_BLOCKS`` for a top-k read,
            ``DEFAULT_FULL_BLOCKS`` for a full-softmax one.

    Returns:
        (readout B×C×HW in mem_values' dtype, usage B×N in fp32 (fp64 for fp64 keys) or None).

    Tensors must be CUDA tensors, or CPU tensors with ``TRITON_INTERPRET=1`` set before triton
    was imported.
    """
    check_read_args(mem_keys, mem_shrinkage, query_keys, query_selection, mem_values, top_k)
    n = mem_keys.shape[2]
    if top_k is None or top_k >= n:
        blocks = DEFAULT_FULL_BLOCKS if blocks is None else blocks
        outputs = _FullSoftmaxRead.apply(
            mem_keys, mem_shrinkage, query_keys, query_selection, mem_values, need_usage, blocks
        )
        return outputs[0], (outputs[1] if need_usage else None)

    inputs = (mem_keys, mem_shrinkage, query_keys, query_selection, mem_values)
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in inputs):
        raise ValueError("the top-k read kernels have no backward: use vos.model.memory_read.memory_read, which takes the reference")
    if top_k > MAX_TOP_K:
        raise ValueError(f"top_k {top_k} exceeds the kernels' register budget MAX_TOP_K = {MAX_TOP_K}: use the reference")
    return _topk_read(*inputs, top_k, need_usage, DEFAULT_TOPK_BLOCKS if blocks is None else blocks)
