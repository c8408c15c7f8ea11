"""sRGB → CIE Lab exactly as `skimage.color.rgb2lab` (D65, 2° observer), in PyTorch."""

from __future__ import annotations

import torch

from vos.losses.resample import area_downsample

# skimage.color's sRGB → XYZ matrix and D65 reference white; the Lab colour similarity of the
# pairwise and temporal losses is defined on exactly these numbers.
_XYZ_FROM_RGB = (
    (0.412453, 0.357580, 0.180423),
    (0.212671, 0.715160, 0.072169),
    (0.019334, 0.119193, 0.950227),
)
_WHITE_D65 = (0.95047, 1.0, 1.08883)


def _to_unit_float(rgb: torch.Tensor) -> torch.Tensor:
    """uint8 → float32 in [0, 1]; floats kept (half precision promoted to float32)."""
    if rgb.dtype == torch.uint8:
        return rgb.to(torch.float32) / 255.0
    if not rgb.is_floating_point():
        raise TypeError(f"rgb must be uint8 or floating point, got {rgb.dtype}")
    return rgb if rgb.dtype == torch.float64 else rgb.to(torch.float32)


def _compute_dtype(device: torch.device) -> torch.dtype:
    # float32 loses ~7e-5 in a and b (500·(f(X) − f(Y)) amplifies the rounding of f ≈ 1), close to
    # the 1e-4 budget; float64 is exact to ~1e-6 after the final cast. MPS has no float64.
    return torch.float32 if device.type == "mps" else torch.float64


def rgb_to_lab(rgb: torch.Tensor) -> torch.Tensor:
    """sRGB (...×3×H×W; uint8, or float in [0, 1]) → Lab (...×3×H×W, float32; float64 input stays float64).

    Same formulas and constants as `skimage.color.rgb2lab`: sRGB decoding with threshold 0.04045,
    skimage's XYZ matrix, D65 white (0.95047, 1, 1.08883), f(t) = ∛t for t > 0.008856 else
    7.787·t + 16/116; L = 116·f(Y) − 16, a = 500·(f(X) − f(Y)), b = 200·(f(Y) − f(Z)).
    Computed in float64 (float32 on MPS) and matches skimage to 1e-4 on every uint8 colour in
    either precision. Colours are data (no gradient is needed), but the operations are differentiable.
    """
    if rgb.dim() < 3 or rgb.shape[-3] != 3:
        raise ValueError(f"rgb must be ...×3×H×W, got shape {tuple(rgb.shape)}")
    compute = _compute_dtype(rgb.device)
    if rgb.dtype == torch.uint8:
        return _lab(rgb.to(compute) / 255.0).to(torch.float32)
    x = _to_unit_float(rgb)
    return _lab(x.to(compute)).to(x.dtype)


def _lab(x: torch.Tensor) -> torch.Tensor:
    """The conversion itself, in the dtype of `x` (float in [0, 1], ...×3×H×W)."""
    # The clamp keeps the unused branch of torch.where finite (a negative base to the power 2.4).
    linear = torch.where(x > 0.04045, ((x.clamp_min(0.04045) + 0.055) / 1.055) ** 2.4, x / 12.92)
    r, g, b = linear.unbind(-3)
    fs = []
    for row, white in zip(_XYZ_FROM_RGB, _WHITE_D65):
        t = (row[0] * r + row[1] * g + row[2] * b) / white
        fs.append(torch.where(t > 0.008856, t.clamp_min(0.008856) ** (1.0 / 3.0), 7.787 * t + 16.0 / 116.0))
    fx, fy, fz = fs
    return torch.stack((116.0 * fy - 16.0, 500.0 * (fx - fy), 200.0 * (fy - fz)), dim=-3)


def frames_to_lab(frames: torch.Tensor, stride: int = 1) -> torch.Tensor:
    """RGB frames (...×3×H×W, uint8 or float in [0, 1]) → Lab at the loss resolution (...×3×H/s×W/s).

    The RGB values are area-averaged over s×s blocks first ("from uint8 RGB averaged down
    to the loss resolution"), then converted, so a loss pixel's colour is the mean colour of the
    input pixels it covers. Frames must be raw RGB, not ImageNet-normalised network input.
    """
    x = _to_unit_float(frames)
    return rgb_to_lab(area_downsample(x, stride))
