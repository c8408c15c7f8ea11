"""Pairwise colour-consistency loss (eq. 3.13–3.17) in Triton, forward and backward.
Reference: ``vos.losses.pairwise_loss`` (same edges, weights and normalisations).

Layout: a program owns BLOCK pixels (a flat run of one frame's H·W) of one (b, t) and holds its
K² − 1 neighbours as the columns of a BLOCK × next_pow2(K²) tile (the padded columns and the
centre are masked off). The neighbours are read directly from the logits / Lab planes at
(y + ky·d, x + kx·d) — no unfolded copy. The Lab similarity S = exp(−‖ΔLab‖₂/γ) and the
threshold S ≥ τ are computed once per (b, t) tile and reused for the N objects (a loop inside
the program).

- ``_pairwise_fwd_kernel`` — grid (pixel blocks, B·T): per object, Σ over in-box centres and
  active in-image neighbours of softplus(a) + softplus(b) − softplus(a + b) (the stable
  −log(m m' + (1−m)(1−m'))), and the number of such edges (box-weighted), written per (b, n, t,
  block) — deterministic partial sums, reduced and normalised on the host side (torch, B·N·T·blocks
  numbers; "pixels" or "edges", see ``kernels.common.normalise``).
- ``_pairwise_bwd_kernel`` — same grid. The neighbourhood is symmetric (δ and −δ) and so are S,
  the threshold and "in image"; a pixel p's gradient gathers, over its neighbours q, both the
  edge it centres (weight box_p) and the edge q centres with p as neighbour (weight box_q):
  ∂L/∂x_p = s_bn · Σ_q active(p, q)·(box_p + box_q)·(σ(x_p) − σ(x_p + x_q)), with
  s_bn = weight[b, n] · ∂loss/∂sum. No atomics, one write per pixel.
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


@triton.jit
def _active_edges(
    lab_ptr, scal_ptr, bt, offs, H, W,
    K: tl.constexpr, DIL: tl.constexpr, KK_PAD: tl.constexpr, BLOCK: tl.constexpr, COMPUTE: tl.constexpr,
):
    """(active BLOCK×KK_PAD bool, neighbour pixel index BLOCK×KK_PAD) for pixels ``offs`` of frame
    (b, t) = ``bt``: active when the neighbour is in the image and S ≥ τ."""
    hw = H * W
    y = offs // W
    x = offs % W
    col = tl.arange(0, KK_PAD)
    half: tl.constexpr = K // 2
    dy = (col // K - half) * DIL
    dx = (col % K - half) * DIL
    is_nb = (col < K * K) & (col != half * K + half)  # the centre is not its own neighbour
    ny = y[:, None] + dy[None, :]
    nx = x[:, None] + dx[None, :]
    ok = (offs < hw)[:, None] & is_nb[None, :] & (ny >= 0) & (ny < H) & (nx >= 0) & (nx < W)
    nidx = tl.where(ok, ny * W + nx, 0)
    base = lab_ptr + bt * 3 * hw
    d2 = tl.zeros([BLOCK, KK_PAD], COMPUTE)
    for c in tl.static_range(3):
        centre = tl.load(base + c * hw + offs, mask=offs < hw, other=0.0).to(COMPUTE)
        other = tl.load(base + c * hw + nidx, mask=ok, other=0.0).to(COMPUTE)
        diff = centre[:, None] - other
        d2 += diff * diff
    gamma = tl.load(scal_ptr + 0)
    tau = tl.load(scal_ptr + 1)
    similarity = tl.exp(-tl.sqrt(d2) / gamma)
    return ok & (similarity >= tau), nidx


@triton.jit
def _pairwise_fwd_kernel(
    logits_ptr, lab_ptr, box_ptr, scal_ptr, part_sum_ptr, part_cnt_ptr,
    N, T, H, W, NB,
    K: tl.constexpr, DIL: tl.constexpr, KK_PAD: tl.constexpr, BLOCK: tl.constexpr, COMPUTE: tl.constexpr,
):
    pid = tl.program_id(0)
    bt = tl.program_id(1).to(tl.int64)
    b = bt // T
    t = bt % T
    hw = H * W
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    p_mask = offs < hw
    active, nidx = _active_edges(lab_ptr, scal_ptr, bt, offs, H, W, K, DIL, KK_PAD, BLOCK, COMPUTE)
    act = active.to(COMPUTE)
    for n in range(N):
        img = (b * N + n) * T + t
        a = tl.load(logits_ptr + img * hw + offs, mask=p_mask, other=0.0).to(COMPUTE)
        box = tl.load(box_ptr + img * hw + offs, mask=p_mask, other=0.0).to(COMPUTE)
        other = tl.load(logits_ptr + img * hw + nidx, mask=active, other=0.0).to(COMPUTE)
        edge = pair_edge(a[:, None], softplus(a)[:, None], other, 0)
        weight = act * box[:, None]
        tl.store(part_sum_ptr + img * NB + pid, tl.sum(tl.sum(edge * weight, axis=1), axis=0))
        tl.store(part_cnt_ptr + img * NB + pid, tl.sum(tl.sum(weight, axis=1), axis=0))


@triton.jit
def _pairwise_bwd_kernel(
    logits_ptr, lab_ptr, box_ptr, scal_ptr, scale_ptr, grad_ptr,
    N, T, H, W,
    K: tl.constexpr, DIL: tl.constexpr, KK_PAD: tl.constexpr, BLOCK: tl.constexpr, COMPUTE: tl.constexpr,
):
    pid = tl.program_id(0)
    bt = tl.program_id(1).to(tl.int64)
    b = bt // T
    t = bt % T
    hw = H * W
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    p_mask = offs < hw
    active, nidx = _active_edges(lab_ptr, scal_ptr, bt, offs, H, W, K, DIL, KK_PAD, BLOCK, COMPUTE)
    act = active.to(COMPUTE)
    for n in range(N):
        img = (b * N + n) * T + t
        x = tl.load(logits_ptr + img * hw + offs, mask=p_mask, other=0.0).to(COMPUTE)
        box = tl.load(box_ptr + img * hw + offs, mask=p_mask, other=0.0).to(COMPUTE)
        other = tl.load(logits_ptr + img * hw + nidx, mask=active, other=0.0).to(COMPUTE)
        box_other = tl.load(box_ptr + img * hw + nidx, mask=active, other=0.0).to(COMPUTE)
        d = pair_edge_grad(x[:, None], sigmoid(x)[:, None], other, 0)
        g = tl.sum(act * (box[:, None] + box_other) * d, axis=1)
        scale = tl.load(scale_ptr + b * N + n)
        tl.store(grad_ptr + img * hw + offs, g * scale, mask=p_mask)


class _PairwiseLoss(torch.autograd.Function):
    """Scalar pairwise loss of logits (B×N×T×H×W); gradient for the logits only."""

    @staticmethod
    def forward(ctx, logits, lab, box, weight, kernel, dilation, gamma, tau, normalize, blocks):
        batch, objects, frames, height, width = logits.shape
        compute = compute_dtype(logits)
        dev = logits.device
        x = logits.contiguous()
        lab_ = lab.contiguous()
        box_ = (box if box.is_floating_point() else box.to(compute)).contiguous()
        scal = scalars((gamma, tau), compute, dev)
        hw = height * width
        nb = grid_1d(hw, blocks.pixels)
        part_sum = torch.empty(batch, objects, frames, nb, dtype=compute, device=dev)
        part_cnt = torch.empty_like(part_sum)
        consts = dict(
            K=kernel, DIL=dilation, KK_PAD=next_pow2(kernel * kernel), BLOCK=blocks.pixels,
            COMPUTE=TL_DTYPES[compute], num_warps=blocks.num_warps,
        )
        _pairwise_fwd_kernel[(nb, batch * frames)](
            x, lab_, box_, scal, part_sum, part_cnt, objects, frames, height, width, nb, **consts,
        )
        loss, factor = normalise(part_sum.sum(-1), part_cnt.sum(-1), weight, hw, normalize)
        ctx.save_for_backward(x, lab_, box_, scal, weight, factor)
        ctx.consts = consts
        return loss.to(logits.dtype)

    @staticmethod
    def backward(ctx, grad_out):
        x, lab_, box_, scal, weight, factor = ctx.saved_tensors
        batch, objects, frames, height, width = x.shape
        consts = ctx.consts
        scale = (weight * factor * grad_out.to(weight.dtype)).contiguous()  # B×N
        grad = torch.empty(x.shape, dtype=weight.dtype, device=x.device)
        _pairwise_bwd_kernel[(grid_1d(height * width, consts["BLOCK"]), batch * frames)](
            x, lab_, box_, scal, scale, grad, objects, frames, height, width, **consts,
        )
        return grad.to(x.dtype), None, None, None, None, None, None, None, None, None


def pairwise_loss(
    logits: torch.Tensor,
    lab: torch.Tensor,
    box_mask: torch.Tensor,
    kernel: int = 3,
    dilation: int = 2,
    gamma: float = 2.0,
    tau: float = 0.3,
    normalize: str = "pixels",
    obj_valid: torch.Tensor | None = None,
    blocks: LossBlocks | None = None,
) -> torch.Tensor:
    """Triton pairwise loss with the semantics of ``vos.losses.pairwise_loss`` (scalar).

    logits: B×N×T×H×W foreground logits; lab: B×T×3×H×W; box_mask: B×N×T×H×W {0, 1}; obj_valid:
    B×N bool or None. Differentiable in ``logits`` (Triton backward). CUDA tensors, or CPU tensors
    under TRITON_INTERPRET=1.
    """
    check_loss_shapes(logits, lab, box_mask)
    if kernel < 3 or kernel % 2 == 0 or dilation < 1:
        raise ValueError(f"losses.kernel/dilation: need an odd kernel >= 3 and dilation >= 1, got {kernel}, {dilation}")
    check_normalize(normalize)
    if logits.numel() == 0:
        return zero_loss(logits)
    batch, objects = logits.shape[:2]
    weight = object_weight(obj_valid, batch, objects, compute_dtype(logits), logits.device)
    blocks = DEFAULT_BLOCKS if blocks is None else blocks
    return _PairwiseLoss.apply(
        logits, lab, box_mask, weight, int(kernel), int(dilation), float(gamma), float(tau), normalize, blocks
    )
