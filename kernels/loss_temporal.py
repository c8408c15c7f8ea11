"""Temporal patch-matching consistency loss (eq. 3.18–3.22) in Triton, forward and backward.
Reference: ``vos.losses.temporal_loss`` / ``temporal_matches`` (same matches, tie-breaking, edges,
detach variants and normalisations).

A program owns BLOCK pixels (a flat run of one frame's H·W) of one (b, t); the C = candidates²
candidates of each pixel are the columns of a BLOCK × next_pow2(C) tile. Kernels:

1. ``_temporal_match_kernel`` — grid (pixel blocks, B·T). For the pair (t, t' = t+1 mod T):
   the squared distance between the N×N Lab patch of p in frame t and that of each candidate
   p + offset_c in frame t' is accumulated over the 3N² descriptor entries, read on the fly from
   the Lab planes (patch positions clamped to the image: replicate padding, as the reference);
   S = exp(−√d²/γ), out-of-image candidates −1. Stable top-K by rank: rank_c = #{i : S_i > S_c} +
   #{i < c : S_i = S_c} (ties go to the lower candidate index, as the reference); a candidate is
   kept when rank < K, S ≥ τ and it is in the image. Output: one bit per candidate, an int32 (int64
   for C > 31) word per pixel, B×T×H×W — kept for the backward, so matching runs once per step.
2. ``_temporal_fwd_kernel`` — grid (pixel blocks, B·T), objects in a loop: the union over the T
   frames of the object's boxes (stored, B×N×H×W, for the backward), and for every kept candidate
   and every partner pixel of its N×N patch ("patch") or its centre ("center") inside the image,
   the edge loss (``pair_edge``: symmetric for "none"/"soft", hardened partners for "hard"),
   weighted by the union box at the centre. Per (b, n, t, block) sums and edge counts, reduced
   and normalised on the host side (torch, B·N·T·blocks numbers).
3. ``_temporal_bwd_kernel`` — same grid. A pixel r of frame t gets (a) as a centre of pair t:
   Σ over its kept candidates / patch partners of ∂edge/∂x_r, times its union box; (b) as a
   partner in pair t−1 (mod T): a gather over the (candidate, patch offset) pairs (c, q) whose
   centre p = r − offset_c − q lies in the image and kept candidate c (its bit in frame t−1), of
   union(p)·∂edge/∂x_r. No atomics. Gradients per mode (``pair_edge_grad``): "none"
   σ(x) − σ(x + y); "soft" half of it — eq. 3.22 ½(L(m, sg(m')) + L(sg(m), m')) has the value of L
   and exactly half its gradient at equal values (see ``vos.losses.consistency``); "hard"
   ½(σ(x) − [y > 0]).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .checks import check_loss_shapes
from .common import (
    DEFAULT_BLOCKS,
    TL_DTYPES,
    LossBlocks,
    check_normalize,
    compute_dtype,
    detach_code,
    grid_1d,
    next_pow2,
    normalise,
    object_weight,
    pair_edge,
    pair_edge_grad,
    scalars,
    sigmoid,
    softplus,
    zero_loss,
)

TL_DTYPES_INT = {torch.int32: tl.int32, torch.int64: tl.int64}

# Candidates per pixel the bit words can hold (int64 words; int32 up to 31).
MAX_CANDIDATES = 63


@triton.jit
def _candidate_offsets(CAND: tl.constexpr, SPACING: tl.constexpr, C_PAD: tl.constexpr):
    """(column index, dy, dx) of the candidate grid, raster order; columns ≥ CAND² are padding."""
    col = tl.arange(0, C_PAD)
    half: tl.constexpr = CAND // 2
    return col, (col // CAND - half) * SPACING, (col % CAND - half) * SPACING


@triton.jit
def _clamp(v, hi):
    return tl.minimum(tl.maximum(v, 0), hi - 1)


@triton.jit
def _temporal_match_kernel(
    lab_ptr, scal_ptr, keep_ptr,
    T, H, W,
    PATCH: tl.constexpr, CAND: tl.constexpr, SPACING: tl.constexpr, TOP_K: tl.constexpr,
    C_PAD: tl.constexpr, BLOCK: tl.constexpr, COMPUTE: tl.constexpr, BITS: tl.constexpr,
):
    pid = tl.program_id(0)
    bt = tl.program_id(1).to(tl.int64)
    b = bt // T
    t = bt % T
    t2 = (t + 1) % T
    hw = H * W
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    p_mask = offs < hw
    y = offs // W
    x = offs % W
    col, dy, dx = _candidate_offsets(CAND, SPACING, C_PAD)
    cy = y[:, None] + dy[None, :]
    cx = x[:, None] + dx[None, :]
    inside = p_mask[:, None] & (col < CAND * CAND)[None, :] & (cy >= 0) & (cy < H) & (cx >= 0) & (cx < W)
    base = lab_ptr + bt * 3 * hw
    base2 = lab_ptr + (b * T + t2) * 3 * hw
    half: tl.constexpr = PATCH // 2
    d2 = tl.zeros([BLOCK, C_PAD], COMPUTE)
    # descriptor order as the reference: patch positions in raster order, channels within
    for qy in tl.static_range(PATCH):
        row = _clamp(y + (qy - half), H) * W
        row2 = _clamp(cy + (qy - half), H) * W
        for qx in tl.static_range(PATCH):
            pix = row + _clamp(x + (qx - half), W)
            pix2 = row2 + _clamp(cx + (qx - half), W)
            for c in tl.static_range(3):
                v = tl.load(base + c * hw + pix, mask=p_mask, other=0.0).to(COMPUTE)
                v2 = tl.load(base2 + c * hw + pix2, mask=inside, other=0.0).to(COMPUTE)
                diff = v[:, None] - v2
                d2 += diff * diff
    gamma = tl.load(scal_ptr + 0)
    tau = tl.load(scal_ptr + 1)
    sim = tl.where(inside, tl.exp(-tl.sqrt(d2) / gamma), -1.0)
    rank = tl.zeros([BLOCK, C_PAD], tl.int32)
    for i in tl.static_range(CAND * CAND):
        s_i = tl.max(tl.where(col[None, :] == i, sim, float("-inf")), axis=1)
        beats = (s_i[:, None] > sim) | ((s_i[:, None] == sim) & (col[None, :] > i))
        rank += beats.to(tl.int32)
    keep = inside & (rank < TOP_K) & (sim >= tau)
    bit = tl.full([C_PAD], 1, BITS) << col.to(BITS)
    bits = tl.sum(tl.where(keep, bit[None, :], 0), axis=1)
    tl.store(keep_ptr + bt * hw + offs, bits.to(BITS), mask=p_mask)


@triton.jit
def _temporal_fwd_kernel(
    logits_ptr, box_ptr, keep_ptr, union_ptr, part_sum_ptr, part_cnt_ptr,
    N, T, H, W, NB,
    CAND: tl.constexpr, SPACING: tl.constexpr, HALF_Q: tl.constexpr, DETACH: tl.constexpr,
    C_PAD: tl.constexpr, BLOCK: tl.constexpr, COMPUTE: tl.constexpr,
):
    pid = tl.program_id(0)
    bt = tl.program_id(1).to(tl.int64)
    b = bt // T
    t = bt % T
    t2 = (t + 1) % T
    hw = H * W
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    p_mask = offs < hw
    y = offs // W
    x = offs % W
    col, dy, dx = _candidate_offsets(CAND, SPACING, C_PAD)
    bits = tl.load(keep_ptr + bt * hw + offs, mask=p_mask, other=0)
    kept = ((bits[:, None] >> col.to(bits.dtype)[None, :]) & 1) != 0
    for n in range(N):
        bn = b * N + n
        union = tl.zeros([BLOCK], COMPUTE)
        for tt in range(T):
            union = tl.maximum(union, tl.load(box_ptr + (bn * T + tt) * hw + offs, mask=p_mask, other=0.0).to(COMPUTE))
        if t == 0:
            tl.store(union_ptr + bn * hw + offs, union, mask=p_mask)
        a = tl.load(logits_ptr + (bn * T + t) * hw + offs, mask=p_mask, other=0.0).to(COMPUTE)
        sp_a = softplus(a)
        partner = logits_ptr + (bn * T + t2) * hw
        acc = tl.zeros([BLOCK, C_PAD], COMPUTE)
        cnt = tl.zeros([BLOCK, C_PAD], COMPUTE)
        # Runtime loops over the patch offsets, not tl.static_range: unrolled, the BLOCK × C_PAD
        # temporaries of all offsets stayed live and ptxas spilled up to 21 KB per thread (sm_90).
        for qy in range(2 * HALF_Q + 1):
            py = y[:, None] + dy[None, :] + (qy - HALF_Q)
            for qx in range(2 * HALF_Q + 1):
                px = x[:, None] + dx[None, :] + (qx - HALF_Q)
                ok = kept & (py >= 0) & (py < H) & (px >= 0) & (px < W)
                other = tl.load(partner + tl.where(ok, py * W + px, 0), mask=ok, other=0.0).to(COMPUTE)
                okf = ok.to(COMPUTE)
                acc += pair_edge(a[:, None], sp_a[:, None], other, DETACH) * okf
                cnt += okf
        img = bn * T + t
        tl.store(part_sum_ptr + img * NB + pid, tl.sum(tl.sum(acc, axis=1) * union, axis=0))
        tl.store(part_cnt_ptr + img * NB + pid, tl.sum(tl.sum(cnt, axis=1) * union, axis=0))


@triton.jit
def _temporal_bwd_kernel(
    logits_ptr, keep_ptr, union_ptr, scale_ptr, grad_ptr,
    N, T, H, W,
    CAND: tl.constexpr, SPACING: tl.constexpr, HALF_Q: tl.constexpr, DETACH: tl.constexpr,
    C_PAD: tl.constexpr, BLOCK: tl.constexpr, COMPUTE: tl.constexpr,
):
    pid = tl.program_id(0)
    bt = tl.program_id(1).to(tl.int64)
    b = bt // T
    t = bt % T
    t_next = (t + 1) % T
    t_prev = (t + T - 1) % T
    hw = H * W
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    p_mask = offs < hw
    y = offs // W
    x = offs % W
    col, dy, dx = _candidate_offsets(CAND, SPACING, C_PAD)
    is_cand = (col < CAND * CAND)[None, :]
    bits = tl.load(keep_ptr + bt * hw + offs, mask=p_mask, other=0)
    kept = ((bits[:, None] >> col.to(bits.dtype)[None, :]) & 1) != 0
    prev_keep = keep_ptr + (b * T + t_prev) * hw
    for n in range(N):
        bn = b * N + n
        xr = tl.load(logits_ptr + (bn * T + t) * hw + offs, mask=p_mask, other=0.0).to(COMPUTE)
        s_r = sigmoid(xr)
        union_r = tl.load(union_ptr + bn * hw + offs, mask=p_mask, other=0.0)
        nxt = logits_ptr + (bn * T + t_next) * hw
        prv = logits_ptr + (bn * T + t_prev) * hw
        g_centre = tl.zeros([BLOCK, C_PAD], COMPUTE)
        g_partner = tl.zeros([BLOCK, C_PAD], COMPUTE)
        for qy in range(2 * HALF_Q + 1):  # runtime loops: see _temporal_fwd_kernel
            for qx in range(2 * HALF_Q + 1):
                # (a) r as the centre of pair t: its partner r + offset_c + q in frame t+1
                py = y[:, None] + dy[None, :] + (qy - HALF_Q)
                px = x[:, None] + dx[None, :] + (qx - HALF_Q)
                ok = kept & (py >= 0) & (py < H) & (px >= 0) & (px < W)
                other = tl.load(nxt + tl.where(ok, py * W + px, 0), mask=ok, other=0.0).to(COMPUTE)
                g_centre += tl.where(ok, pair_edge_grad(xr[:, None], s_r[:, None], other, DETACH), 0.0)
                # (b) r as the partner in pair t−1: the centre r − offset_c − q in frame t−1
                cy = y[:, None] - dy[None, :] - (qy - HALF_Q)
                cx = x[:, None] - dx[None, :] - (qx - HALF_Q)
                inside = p_mask[:, None] & is_cand & (cy >= 0) & (cy < H) & (cx >= 0) & (cx < W)
                centre = tl.where(inside, cy * W + cx, 0)
                c_bits = tl.load(prev_keep + centre, mask=inside, other=0)
                c_kept = inside & (((c_bits >> col.to(c_bits.dtype)[None, :]) & 1) != 0)
                union_c = tl.load(union_ptr + bn * hw + centre, mask=c_kept, other=0.0)
                xc = tl.load(prv + centre, mask=c_kept, other=0.0).to(COMPUTE)
                g_partner += tl.where(c_kept, union_c * pair_edge_grad(xr[:, None], s_r[:, None], xc, DETACH), 0.0)
        g = union_r * tl.sum(g_centre, axis=1) + tl.sum(g_partner, axis=1)
        scale = tl.load(scale_ptr + bn)
        tl.store(grad_ptr + (bn * T + t) * hw + offs, g * scale, mask=p_mask)


def _check_options(patch: int, candidates: int, spacing: int, top_k: int, target: str, detach: str):
    if target not in ("patch", "center"):
        raise ValueError(f"losses.temp_target: must be 'patch' or 'center', got {target!r}")
    detach_code(detach)
    for name, value in (("temp_patch", patch), ("temp_candidates", candidates)):
        if value < 1 or value % 2 == 0:
            raise ValueError(f"losses.{name}: must be a positive odd integer, got {value}")
    if spacing < 1 or top_k < 1:
        raise ValueError(f"losses.temp_spacing/temp_top_k: must be >= 1, got {spacing}, {top_k}")
    if candidates * candidates > MAX_CANDIDATES:
        raise ValueError(
            f"losses.temp_candidates: the Triton kernel supports up to {MAX_CANDIDATES} candidates "
            f"(temp_candidates <= 7), got {candidates}; use losses.backend 'torch'"
        )


def _bits_dtype(candidates: int) -> torch.dtype:
    return torch.int32 if candidates * candidates <= 31 else torch.int64


def _match_bits(
    lab: torch.Tensor, compute: torch.dtype, patch: int, candidates: int, spacing: int, top_k: int,
    gamma: float, tau: float, blocks: LossBlocks,
) -> torch.Tensor:
    """Kernel 1: kept-candidate bit words B×T×H×W (bit c = candidate c of `candidate_offsets`)."""
    batch, frames, _, height, width = lab.shape
    bits_dtype = _bits_dtype(candidates)
    keep = torch.empty(batch, frames, height, width, dtype=bits_dtype, device=lab.device)
    _temporal_match_kernel[(grid_1d(height * width, blocks.pixels), batch * frames)](
        lab.contiguous(), scalars((gamma, tau), compute, lab.device), keep, frames, height, width,
        PATCH=patch, CAND=candidates, SPACING=spacing, TOP_K=top_k, C_PAD=next_pow2(candidates * candidates),
        BLOCK=blocks.pixels, COMPUTE=TL_DTYPES[compute], BITS=TL_DTYPES_INT[bits_dtype],
        num_warps=blocks.num_warps,
    )
    return keep



def temporal_matches(
    lab: torch.Tensor,
    patch: int = 3,
    candidates: int = 3,
    spacing: int = 3,
    top_k: int = 5,
    gamma: float = 2.0,
    tau: float = 0.05,
    blocks: LossBlocks | None = None,
) -> torch.Tensor:
    """Triton version of ``vos.losses.temporal_matches``: kept candidates, bool B×T×C×H×W."""
    _check_options(patch, candidates, spacing, top_k, "patch", "none")
    blocks = DEFAULT_BLOCKS if blocks is None else blocks
    count = candidates * candidates
    keep = _match_bits(lab, compute_dtype(lab), patch, candidates, spacing, top_k, gamma, tau, blocks)
    index = torch.arange(count, device=lab.device, dtype=keep.dtype).view(1, 1, count, 1, 1)
    return ((keep[:, :, None] >> index) & 1).bool()


class _TemporalLoss(torch.autograd.Function):
    """Scalar temporal loss of logits (B×N×T×H×W); gradient for the logits only."""

    @staticmethod
    def forward(ctx, logits, lab, box, weight, options: dict, normalize: str, blocks: LossBlocks):
        batch, objects, frames, height, width = logits.shape
        compute = compute_dtype(logits)
        dev = logits.device
        x = logits.contiguous()
        box_ = (box if box.is_floating_point() else box.to(compute)).contiguous()
        o = options
        keep = _match_bits(
            lab, compute, o["patch"], o["candidates"], o["spacing"], o["top_k"], o["gamma"], o["tau"], blocks
        )
        hw = height * width
        nb = grid_1d(hw, blocks.pixels)
        union = torch.empty(batch, objects, height, width, dtype=compute, device=dev)
        part_sum = torch.empty(batch, objects, frames, nb, dtype=compute, device=dev)
        part_cnt = torch.empty_like(part_sum)
        consts = dict(
            CAND=o["candidates"], SPACING=o["spacing"],
            HALF_Q=o["patch"] // 2 if o["target"] == "patch" else 0, DETACH=detach_code(o["detach"]),
            C_PAD=next_pow2(o["candidates"] ** 2), BLOCK=blocks.pixels, COMPUTE=TL_DTYPES[compute],
            num_warps=blocks.num_warps,
        )
        _temporal_fwd_kernel[(nb, batch * frames)](
            x, box_, keep, union, part_sum, part_cnt, objects, frames, height, width, nb, **consts,
        )
        loss, factor = normalise(part_sum.sum(-1), part_cnt.sum(-1), weight, hw, normalize)
        ctx.save_for_backward(x, keep, union, weight, factor)
        ctx.consts = consts
        return loss.to(logits.dtype)

    @staticmethod
    def backward(ctx, grad_out):
        x, keep, union, weight, factor = ctx.saved_tensors
        batch, objects, frames, height, width = x.shape
        consts = ctx.consts
        scale = (weight * factor * grad_out.to(weight.dtype)).contiguous()  # B×N
        grad = torch.empty(x.shape, dtype=weight.dtype, device=x.device)
        _temporal_bwd_kernel[(grid_1d(height * width, consts["BLOCK"]), batch * frames)](
            x, keep, union, scale, grad, objects, frames, height, width, **consts,
        )
        return grad.to(x.dtype), None, None, None, None, None, None


def temporal_loss(
    logits: torch.Tensor,
    lab: torch.Tensor,
    box_mask: torch.Tensor,
    patch: int = 3,
    candidates: int = 3,
    spacing: int = 3,
    top_k: int = 5,
    tau: float = 0.05,
    target: str = "patch",
    detach: str = "soft",
    gamma: float = 2.0,
    normalize: str = "pixels",
    obj_valid: torch.Tensor | None = None,
    blocks: LossBlocks | None = None,
) -> torch.Tensor:
    """Triton temporal loss with the semantics of ``vos.losses.temporal_loss`` (scalar).

    logits: B×N×T×H×W foreground logits; lab: B×T×3×H×W; box_mask: B×N×T×H×W {0, 1}; obj_valid:
    B×N bool or None. Cyclic pairs (t, t+1 mod T); T = 1 gives 0. Differentiable in ``logits``
    (Triton backward; "soft" = half the symmetric gradient, "hard" = hardened partners). CUDA
    tensors, or CPU tensors under TRITON_INTERPRET=1. At most 7×7 candidates.
    """
    check_loss_shapes(logits, lab, box_mask)
    _check_options(patch, candidates, spacing, top_k, target, detach)
    check_normalize(normalize)
    batch, objects, frames = logits.shape[:3]
    if frames < 2 or logits.numel() == 0:
        return zero_loss(logits)
    weight = object_weight(obj_valid, batch, objects, compute_dtype(logits), logits.device)
    blocks = DEFAULT_BLOCKS if blocks is None else blocks
    options = dict(
        patch=int(patch), candidates=int(candidates), spacing=int(spacing), top_k=int(top_k),
        gamma=float(gamma), tau=float(tau), target=target, detach=detach,
    )
    return _TemporalLoss.apply(logits, lab, box_mask, weight, options, normalize, blocks)
