"""Projection loss (eq. 3.8–3.12) in Triton: row/column max projections and the p = 2 dice, both
layouts, forward and backward. Reference: ``vos.losses.projection_loss`` (same semantics, incl.
``obj_valid`` and the even split of the gradient between tied maxima).

Images are the I = B·N·T planes H×W of ``prob`` / ``box_mask``. Kernels:

1. ``_proj_image_kernel`` — grid (I,): one program per image streams its rows in steps of BLOCK_H
   rows × next_pow2(W) columns and writes the row maxima of prob and box with the number of tied
   maxima per row (I×H), the column maxima and tie counts (I×W, merged across the row steps), and
   the image's six dice sums (Σa²b², Σa², Σb² for the x and the y projection).
2. ``_proj_finalize_kernel`` — grid (1,): "per_image": the per-image dice losses, averaged over the
   valid images. "stacked" (one B·N·T·H × W picture): the y dice from the summed per-image row
   sums, and the x projection as the column maxima over all images (tie counts summed over the
   images holding the maximum), its dice, the loss. Writes the dice numerators/denominators for
   the backward.
3. ``_proj_backward_kernel`` — grid (I,): ∂dice/∂a_k = 2a_k(num − 2b_k²·den)/den² per projection
   entry, divided by its tie count, routed back to the pixels equal to their row / column maximum.

"stacked" multiplies prob and box by the object weight (as the reference does), so a padded slot
adds zeros: nothing to the sums, but its zeros do count as ties of an all-zero column — exactly as
in the reference's amax.
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
    compute_dtype,
    next_pow2,
    object_weight,
    scalars,
    zero_loss,
)


@triton.jit
def _proj_image_kernel(
    prob_ptr, box_ptr, weight_ptr,
    rowp_ptr, rowb_ptr, rowc_ptr, colp_ptr, colb_ptr, colc_ptr, sums_ptr,
    H, W, T,
    STACKED: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr, COMPUTE: tl.constexpr,
):
    i = tl.program_id(0).to(tl.int64)
    w = tl.load(weight_ptr + i // T)
    offs_w = tl.arange(0, BLOCK_W)
    w_mask = offs_w < W
    col_p = tl.full([BLOCK_W], float("-inf"), COMPUTE)
    col_c = tl.zeros([BLOCK_W], COMPUTE)
    col_b = tl.full([BLOCK_W], float("-inf"), COMPUTE)
    acc_a = tl.zeros([BLOCK_H], COMPUTE)
    acc_b = tl.zeros([BLOCK_H], COMPUTE)
    acc_ab = tl.zeros([BLOCK_H], COMPUTE)
    for h0 in range(0, H, BLOCK_H):
        offs_h = h0 + tl.arange(0, BLOCK_H)
        h_mask = offs_h < H
        mask = h_mask[:, None] & w_mask[None, :]
        pix = i * H * W + offs_h[:, None] * W + offs_w[None, :]
        p = tl.load(prob_ptr + pix, mask=mask, other=0.0).to(COMPUTE)
        bx = tl.load(box_ptr + pix, mask=mask, other=0.0).to(COMPUTE)
        if STACKED:
            p = p * w
            bx = bx * w
        p = tl.where(mask, p, float("-inf"))
        bx = tl.where(mask, bx, float("-inf"))
        # rows: complete within this step
        r_p = tl.max(p, axis=1)
        r_b = tl.max(bx, axis=1)
        r_c = tl.sum((p == r_p[:, None]).to(COMPUTE), axis=1)
        tl.store(rowp_ptr + i * H + offs_h, r_p, mask=h_mask)
        tl.store(rowb_ptr + i * H + offs_h, r_b, mask=h_mask)
        tl.store(rowc_ptr + i * H + offs_h, r_c, mask=h_mask)
        a2 = tl.where(h_mask, r_p * r_p, 0.0)
        b2 = tl.where(h_mask, r_b * r_b, 0.0)
        acc_a += a2
        acc_b += b2
        acc_ab += a2 * b2
        # columns: merge this step's maxima (and their tie counts) into the running ones
        c_p = tl.max(p, axis=0)
        c_c = tl.sum((p == c_p[None, :]).to(COMPUTE), axis=0)
        new = tl.maximum(col_p, c_p)
        col_c = tl.where(col_p == new, col_c, 0.0) + tl.where(c_p == new, c_c, 0.0)
        col_p = new
        col_b = tl.maximum(col_b, tl.max(bx, axis=0))
    tl.store(colp_ptr + i * W + offs_w, col_p, mask=w_mask)
    tl.store(colb_ptr + i * W + offs_w, col_b, mask=w_mask)
    tl.store(colc_ptr + i * W + offs_w, col_c, mask=w_mask)
    a2 = tl.where(w_mask, col_p * col_p, 0.0)
    b2 = tl.where(w_mask, col_b * col_b, 0.0)
    tl.store(sums_ptr + i * 6 + 0, tl.sum(a2 * b2, axis=0))
    tl.store(sums_ptr + i * 6 + 1, tl.sum(a2, axis=0))
    tl.store(sums_ptr + i * 6 + 2, tl.sum(b2, axis=0))
    tl.store(sums_ptr + i * 6 + 3, tl.sum(acc_ab, axis=0))
    tl.store(sums_ptr + i * 6 + 4, tl.sum(acc_a, axis=0))
    tl.store(sums_ptr + i * 6 + 5, tl.sum(acc_b, axis=0))


@triton.jit
def _proj_finalize_kernel(
    sums_ptr, weight_ptr, scal_ptr, colp_ptr, colb_ptr, colc_ptr, gcolp_ptr, gcolb_ptr, gcolc_ptr,
    loss_ptr, stats_ptr,
    I, W, T,
    STACKED: tl.constexpr, BLOCK_I: tl.constexpr, BLOCK_W: tl.constexpr, COMPUTE: tl.constexpr,
):
    eps = tl.load(scal_ptr)
    if STACKED:
        acc_ab = tl.zeros([BLOCK_I], COMPUTE)
        acc_a = tl.zeros([BLOCK_I], COMPUTE)
        acc_b = tl.zeros([BLOCK_I], COMPUTE)
        for i0 in range(0, I, BLOCK_I):
            offs_i = i0 + tl.arange(0, BLOCK_I)
            i_mask = offs_i < I
            acc_ab += tl.load(sums_ptr + offs_i * 6 + 3, mask=i_mask, other=0.0)
            acc_a += tl.load(sums_ptr + offs_i * 6 + 4, mask=i_mask, other=0.0)
            acc_b += tl.load(sums_ptr + offs_i * 6 + 5, mask=i_mask, other=0.0)
        num_y = eps + 2.0 * tl.sum(acc_ab, axis=0)
        den_y = eps + tl.sum(acc_a, axis=0) + tl.sum(acc_b, axis=0)
        x_ab = tl.zeros([BLOCK_W], COMPUTE)
        x_a = tl.zeros([BLOCK_W], COMPUTE)
        x_b = tl.zeros([BLOCK_W], COMPUTE)
        for w0 in range(0, W, BLOCK_W):
            offs_w = w0 + tl.arange(0, BLOCK_W)
            w_mask = offs_w < W
            g_p = tl.full([BLOCK_W], float("-inf"), COMPUTE)
            g_c = tl.zeros([BLOCK_W], COMPUTE)
            g_b = tl.full([BLOCK_W], float("-inf"), COMPUTE)
            for i0 in range(0, I, BLOCK_I):
                offs_i = i0 + tl.arange(0, BLOCK_I)
                mask = (offs_i < I)[:, None] & w_mask[None, :]
                idx = offs_i[:, None] * W + offs_w[None, :]
                c_p = tl.load(colp_ptr + idx, mask=mask, other=float("-inf"))
                c_c = tl.load(colc_ptr + idx, mask=mask, other=0.0)
                c_b = tl.load(colb_ptr + idx, mask=mask, other=float("-inf"))
                m = tl.max(c_p, axis=0)
                cnt = tl.sum(tl.where(c_p == m[None, :], c_c, 0.0), axis=0)
                new = tl.maximum(g_p, m)
                g_c = tl.where(g_p == new, g_c, 0.0) + tl.where(m == new, cnt, 0.0)
                g_p = new
                g_b = tl.maximum(g_b, tl.max(c_b, axis=0))
            tl.store(gcolp_ptr + offs_w, g_p, mask=w_mask)
            tl.store(gcolb_ptr + offs_w, g_b, mask=w_mask)
            tl.store(gcolc_ptr + offs_w, g_c, mask=w_mask)
            a2 = tl.where(w_mask, g_p * g_p, 0.0)
            b2 = tl.where(w_mask, g_b * g_b, 0.0)
            x_ab += a2 * b2
            x_a += a2
            x_b += b2
        num_x = eps + 2.0 * tl.sum(x_ab, axis=0)
        den_x = eps + tl.sum(x_a, axis=0) + tl.sum(x_b, axis=0)
        tl.store(loss_ptr, (1.0 - num_x / den_x) + (1.0 - num_y / den_y))
        tl.store(stats_ptr + 0, num_x)
        tl.store(stats_ptr + 1, den_x)
        tl.store(stats_ptr + 2, num_y)
        tl.store(stats_ptr + 3, den_y)
    else:
        acc = tl.zeros([BLOCK_I], COMPUTE)
        acc_w = tl.zeros([BLOCK_I], COMPUTE)
        for i0 in range(0, I, BLOCK_I):
            offs_i = i0 + tl.arange(0, BLOCK_I)
            i_mask = offs_i < I
            s = sums_ptr + offs_i * 6
            x_ab = tl.load(s + 0, mask=i_mask, other=0.0)
            x_a = tl.load(s + 1, mask=i_mask, other=0.0)
            x_b = tl.load(s + 2, mask=i_mask, other=0.0)
            y_ab = tl.load(s + 3, mask=i_mask, other=0.0)
            y_a = tl.load(s + 4, mask=i_mask, other=0.0)
            y_b = tl.load(s + 5, mask=i_mask, other=0.0)
            w = tl.load(weight_ptr + offs_i // T, mask=i_mask, other=0.0)
            loss = (1.0 - (eps + 2.0 * x_ab) / (eps + x_a + x_b)) + (1.0 - (eps + 2.0 * y_ab) / (eps + y_a + y_b))
            acc += tl.where(i_mask, loss * w, 0.0)
            acc_w += w
        images = tl.maximum(tl.sum(acc_w, axis=0), 1.0)
        tl.store(loss_ptr, tl.sum(acc, axis=0) / images)
        tl.store(stats_ptr, images)


@triton.jit
def _dice_grad(a, b, num, den):
    """∂(1 − num/den)/∂a_k with num = ε + 2Σa²b², den = ε + Σa² + Σb²."""
    return 2.0 * a * (num - 2.0 * b * b * den) / (den * den)


@triton.jit
def _proj_backward_kernel(
    prob_ptr, weight_ptr, scal_ptr, gout_ptr,
    rowp_ptr, rowb_ptr, rowc_ptr, colp_ptr, colb_ptr, colc_ptr, sums_ptr, stats_ptr, grad_ptr,
    H, W, T,
    STACKED: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr, COMPUTE: tl.constexpr,
):
    i = tl.program_id(0).to(tl.int64)
    w = tl.load(weight_ptr + i // T)
    g = tl.load(gout_ptr).to(COMPUTE)
    offs_w = tl.arange(0, BLOCK_W)
    w_mask = offs_w < W
    if STACKED:
        num_x = tl.load(stats_ptr + 0)
        den_x = tl.load(stats_ptr + 1)
        num_y = tl.load(stats_ptr + 2)
        den_y = tl.load(stats_ptr + 3)
        coef = g
        col = offs_w.to(tl.int64)  # the global column maxima (one vector for all images)
    else:
        eps = tl.load(scal_ptr)
        s = sums_ptr + i * 6
        num_x = eps + 2.0 * tl.load(s + 0)
        den_x = eps + tl.load(s + 1) + tl.load(s + 2)
        num_y = eps + 2.0 * tl.load(s + 3)
        den_y = eps + tl.load(s + 4) + tl.load(s + 5)
        coef = g * w / tl.load(stats_ptr)
        col = i * W + offs_w
    c_p = tl.load(colp_ptr + col, mask=w_mask, other=0.0)
    c_b = tl.load(colb_ptr + col, mask=w_mask, other=0.0)
    c_c = tl.load(colc_ptr + col, mask=w_mask, other=1.0)
    g_x = coef * _dice_grad(c_p, c_b, num_x, den_x) / c_c
    for h0 in range(0, H, BLOCK_H):
        offs_h = h0 + tl.arange(0, BLOCK_H)
        h_mask = offs_h < H
        mask = h_mask[:, None] & w_mask[None, :]
        pix = i * H * W + offs_h[:, None] * W + offs_w[None, :]
        p = tl.load(prob_ptr + pix, mask=mask, other=0.0).to(COMPUTE)
        if STACKED:
            p = p * w  # the same values the maxima were taken over
        r_p = tl.load(rowp_ptr + i * H + offs_h, mask=h_mask, other=0.0)
        r_b = tl.load(rowb_ptr + i * H + offs_h, mask=h_mask, other=0.0)
        r_c = tl.load(rowc_ptr + i * H + offs_h, mask=h_mask, other=1.0)
        g_y = coef * _dice_grad(r_p, r_b, num_y, den_y) / r_c
        d = tl.where(p == r_p[:, None], g_y[:, None], 0.0) + tl.where(p == c_p[None, :], g_x[None, :], 0.0)
        if STACKED:
            d = d * w
        tl.store(grad_ptr + pix, d, mask=mask)


def _as_float(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return (x if x.is_floating_point() else x.to(dtype)).contiguous()


class _ProjectionLoss(torch.autograd.Function):
    """Scalar projection loss of prob (B×N×T×H×W); gradient for prob only."""

    @staticmethod
    def forward(ctx, prob, box, weight, eps: float, stacked: bool, blocks: LossBlocks):
        batch, objects, frames, height, width = prob.shape
        compute = compute_dtype(prob)
        dev = prob.device
        images = batch * objects * frames
        p = prob.contiguous()
        bx = _as_float(box, compute)
        scal = scalars((eps,), compute, dev)
        new = lambda *shape: torch.empty(*shape, dtype=compute, device=dev)  # noqa: E731
        rowp, rowb, rowc = new(images, height), new(images, height), new(images, height)
        colp, colb, colc = new(images, width), new(images, width), new(images, width)
        gcolp, gcolb, gcolc = new(width), new(width), new(width)
        sums, loss, stats = new(images, 6), new(1), new(4)
        block_w = next_pow2(width)
        block_h = max(1, min(blocks.rows, next_pow2(height)))
        tl_compute = TL_DTYPES[compute]
        _proj_image_kernel[(images,)](
            p, bx, weight, rowp, rowb, rowc, colp, colb, colc, sums,
            height, width, frames,
            STACKED=stacked, BLOCK_H=block_h, BLOCK_W=block_w, COMPUTE=tl_compute, num_warps=blocks.num_warps,
        )
        _proj_finalize_kernel[(1,)](
            sums, weight, scal, colp, colb, colc, gcolp, gcolb, gcolc, loss, stats,
            images, width, frames,
            STACKED=stacked, BLOCK_I=blocks.images, BLOCK_W=min(block_w, 128), COMPUTE=tl_compute,
            num_warps=blocks.num_warps,
        )
        if stacked:
            colp, colb, colc = gcolp, gcolb, gcolc
        ctx.save_for_backward(p, weight, scal, rowp, rowb, rowc, colp, colb, colc, sums, stats)
        ctx.stacked = stacked
        ctx.blocks = blocks
        ctx.shape = (height, width, frames, block_h, block_w, images)
        return loss[0].to(prob.dtype)

    @staticmethod
    def backward(ctx, grad_out):
        p, weight, scal, rowp, rowb, rowc, colp, colb, colc, sums, stats = ctx.saved_tensors
        height, width, frames, block_h, block_w, images = ctx.shape
        compute = weight.dtype
        grad = torch.empty(p.shape, dtype=compute, device=p.device)
        gout = grad_out.reshape(1).to(compute)
        _proj_backward_kernel[(images,)](
            p, weight, scal, gout, rowp, rowb, rowc, colp, colb, colc, sums, stats, grad,
            height, width, frames,
            STACKED=ctx.stacked, BLOCK_H=block_h, BLOCK_W=block_w, COMPUTE=TL_DTYPES[compute],
            num_warps=ctx.blocks.num_warps,
        )
        return grad.to(p.dtype), None, None, None, None, None


def projection_loss(
    prob: torch.Tensor,
    box_mask: torch.Tensor,
    eps: float = 1e-5,
    layout: str = "stacked",
    obj_valid: torch.Tensor | None = None,
    blocks: LossBlocks | None = None,
) -> torch.Tensor:
    """Triton projection loss with the semantics of ``vos.losses.projection_loss`` (scalar).

    prob: B×N×T×H×W foreground probabilities; box_mask: B×N×T×H×W {0, 1}; obj_valid: B×N bool or
    None. Differentiable in ``prob`` (Triton backward). CUDA tensors, or CPU tensors under
    TRITON_INTERPRET=1. ``blocks``: tile sizes (tests use small ones).
    """
    check_loss_shapes(prob, None, box_mask)
    if layout not in ("stacked", "per_image"):
        raise ValueError(f"losses.layout: must be 'stacked' or 'per_image', got {layout!r}")
    if prob.numel() == 0:
        return zero_loss(prob)
    batch, objects = prob.shape[:2]
    weight = object_weight(obj_valid, batch, objects, compute_dtype(prob), prob.device)
    blocks = DEFAULT_BLOCKS if blocks is None else blocks
    return _ProjectionLoss.apply(prob, box_mask, weight, float(eps), layout == "stacked", blocks)
