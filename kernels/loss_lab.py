"""sRGB → CIE Lab in Triton, exactly as ``skimage.color.rgb2lab`` (reference: ``vos.losses.color``).

One kernel, ``_lab_kernel``: grid (pixel blocks, images). Each program reads the s×s block of RGB
input pixels under each output pixel (s = the loss stride; 1 = plain conversion), averages them,
and converts: sRGB decoding (threshold 0.04045, ((x + 0.055)/1.055)^2.4, else x/12.92), skimage's
XYZ matrix, D65 white (0.95047, 1, 1.08883), f(t) = ∛t for t > 0.008856 else 7.787t + 16/116,
L = 116 f(Y) − 16, a = 500 (f(X) − f(Y)), b = 200 (f(Y) − f(Z)). Powers are exp/log.

Precision: the conversion runs in fp64 by default, like the reference, with the constants loaded
from an fp64 tensor (Triton's float literals are fp32). Measured in the interpreter over all 52³
colours of a 5-step RGB grid plus 32,000 random uint8 colours, against skimage: fp64 max |error|
3.8e-6 (the fp32 output rounding of L ≤ 100; 1e-13 against the fp64 reference before rounding);
fp32 (``compute=torch.float32``) 1.1e-4 — over the 1e-4 budget (the powers as exp/log in fp32 lose
more than the reference's fp32 ``pow``), and on a GPU fp32 exp/log are approximate
(``ex2.approx``/``lg2.approx``). So fp64 it is: the conversion is a one-off elementwise pass over
the frames (a few MB), fp64 costs nothing that matters.

Colours are data: the result carries no gradient.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .common import DEFAULT_BLOCKS, TL_DTYPES, LossBlocks, grid_1d
from .checks import check_divisible


# The formula's constants, loaded from a tensor in the compute dtype: Triton types float literals as
# fp32, and fp32(0.412453) alone costs ~4e-6 in a and b (measured) — the constants must be exact.
_CONSTANTS = (
    0.04045, 0.055, 1.055, 2.4, 12.92,  # sRGB decoding
    0.008856, 7.787, 16.0 / 116.0,  # f(t)
    0.412453, 0.357580, 0.180423,  # skimage's XYZ-from-RGB matrix, row-major
    0.212671, 0.715160, 0.072169,
    0.019334, 0.119193, 0.950227,
    0.95047, 1.08883,  # D65 white X and Z (Y = 1)
)


@triton.jit
def _srgb_decode(x, c_ptr):
    threshold = tl.load(c_ptr + 0)
    # max() keeps the unused branch away from the log of a negative number
    xc = tl.maximum(x, threshold)
    power = tl.exp(tl.load(c_ptr + 3) * tl.log((xc + tl.load(c_ptr + 1)) / tl.load(c_ptr + 2)))
    return tl.where(x > threshold, power, x / tl.load(c_ptr + 4))


@triton.jit
def _lab_f(t, c_ptr):
    threshold = tl.load(c_ptr + 5)
    tc = tl.maximum(t, threshold)
    return tl.where(t > threshold, tl.exp(tl.log(tc) / 3.0), tl.load(c_ptr + 6) * t + tl.load(c_ptr + 7))


@triton.jit
def _xyz_row(r, g, b, c_ptr, ROW: tl.constexpr):
    m = c_ptr + 8 + 3 * ROW
    return tl.load(m) * r + tl.load(m + 1) * g + tl.load(m + 2) * b


@triton.jit
def _lab_kernel(
    src_ptr, dst_ptr, c_ptr,
    H_OUT, W_OUT, s_img, s_ch, s_row, s_col,
    STRIDE: tl.constexpr, UINT8: tl.constexpr, BLOCK: tl.constexpr, COMPUTE: tl.constexpr,
):
    """dst[img, c, y, x] (contiguous images×3×H_OUT×W_OUT) = Lab of the mean RGB of the STRIDE×STRIDE
    input block at (y, x) (uint8 input scaled by 1/255)."""
    pid = tl.program_id(0)
    img = tl.program_id(1).to(tl.int64)
    hw = H_OUT * W_OUT
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    mask = offs < hw
    y = offs // W_OUT
    x = offs % W_OUT
    base = src_ptr + img * s_img
    r = tl.zeros([BLOCK], COMPUTE)
    g = tl.zeros([BLOCK], COMPUTE)
    b = tl.zeros([BLOCK], COMPUTE)
    for dy in range(STRIDE):
        for dx in range(STRIDE):
            pix = (y * STRIDE + dy).to(tl.int64) * s_row + (x * STRIDE + dx).to(tl.int64) * s_col
            r += tl.load(base + pix, mask=mask, other=0).to(COMPUTE)
            g += tl.load(base + s_ch + pix, mask=mask, other=0).to(COMPUTE)
            b += tl.load(base + 2 * s_ch + pix, mask=mask, other=0).to(COMPUTE)
    count = STRIDE * STRIDE
    if UINT8:
        count = count * 255
    r = _srgb_decode(r / count, c_ptr)
    g = _srgb_decode(g / count, c_ptr)
    b = _srgb_decode(b / count, c_ptr)
    fx = _lab_f(_xyz_row(r, g, b, c_ptr, 0) / tl.load(c_ptr + 17), c_ptr)
    fy = _lab_f(_xyz_row(r, g, b, c_ptr, 1), c_ptr)
    fz = _lab_f(_xyz_row(r, g, b, c_ptr, 2) / tl.load(c_ptr + 18), c_ptr)
    out = dst_ptr + img * 3 * hw + offs
    ty = dst_ptr.dtype.element_ty
    tl.store(out, (116.0 * fy - 16.0).to(ty), mask=mask)
    tl.store(out + hw, (500.0 * (fx - fy)).to(ty), mask=mask)
    tl.store(out + 2 * hw, (200.0 * (fy - fz)).to(ty), mask=mask)


def _convert(
    rgb: torch.Tensor, stride: int, compute: torch.dtype, blocks: LossBlocks | None
) -> torch.Tensor:
    if rgb.dim() < 3 or rgb.shape[-3] != 3:
        raise ValueError(f"rgb must be ...×3×H×W, got shape {tuple(rgb.shape)}")
    if rgb.dtype != torch.uint8 and not rgb.is_floating_point():
        raise TypeError(f"rgb must be uint8 or floating point, got {rgb.dtype}")
    check_divisible(tuple(rgb.shape), stride)
    blocks = DEFAULT_BLOCKS if blocks is None else blocks
    *lead, _, height, width = rgb.shape
    h_out, w_out = height // stride, width // stride
    out_dtype = torch.float64 if rgb.dtype == torch.float64 else torch.float32
    images = rgb.reshape(-1, 3, height, width)  # a view for the usual contiguous layouts
    count = images.shape[0]
    out = torch.empty(count, 3, h_out, w_out, dtype=out_dtype, device=rgb.device)
    if count and h_out * w_out:
        constants = torch.tensor(_CONSTANTS, dtype=compute, device=rgb.device)
        _lab_kernel[(grid_1d(h_out * w_out, blocks.lab), count)](
            images, out, constants, h_out, w_out, *images.stride(),
            STRIDE=stride, UINT8=rgb.dtype == torch.uint8, BLOCK=blocks.lab, COMPUTE=TL_DTYPES[compute], num_warps=blocks.num_warps,
        )
    return out.reshape(*lead, 3, h_out, w_out)


def rgb_to_lab(
    rgb: torch.Tensor, compute: torch.dtype = torch.float64, blocks: LossBlocks | None = None
) -> torch.Tensor:
    """sRGB (...×3×H×W; uint8, or float in [0, 1]) → Lab (...×3×H×W, float32; float64 stays float64).

    The Triton version of ``vos.losses.rgb_to_lab``. ``compute``: fp64 (default, exact to the
    output rounding) or fp32 (see the module docstring). No gradient.
    """
    return _convert(rgb, 1, compute, blocks)


def frames_to_lab(
    frames: torch.Tensor, stride: int = 1, compute: torch.dtype = torch.float64, blocks: LossBlocks | None = None
) -> torch.Tensor:
    """RGB frames (...×3×H×W, uint8 or float in [0, 1]) → Lab at the loss resolution (...×3×H/s×W/s).

    The Triton version of ``vos.losses.frames_to_lab``, fused: the s×s area average of the RGB
    values and the conversion in one pass (the reference averages in fp32 first; this kernel sums
    in the compute dtype — a difference far below the 1e-4 Lab tolerance).
    """
    return _convert(frames, stride, compute, blocks)
