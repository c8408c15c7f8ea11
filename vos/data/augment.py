"""Geometric and photometric augmentation of training clips, in torch.

Every geometric transform is one affine map per frame (resize to S×S folded in), applied to frames,
masks and box corners alike, so boxes computed after augmentation describe what the model sees.
Static images become pseudo-videos through an affine map plus a thin-plate-spline warp per copy.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

# Fill for pixels that come from outside the source image: ImageNet's mean colour (as XMem does).
FILL_RGB = (0.485, 0.456, 0.406)


def affine_matrix(
    src_hw: tuple[int, int],
    out_size: int,
    angle: float = 0.0,
    shear: float = 0.0,
    scale: float = 1.0,
    translate: tuple[float, float] = (0.0, 0.0),
    flip: bool = False,
) -> torch.Tensor:
    """3×3 matrix mapping output pixel coordinates (x, y) of an S×S image to source pixel coordinates.

    The forward transform resizes the H×W source to S×S, then rotates by ``angle`` degrees and shears
    by ``shear`` degrees about the centre, scales, translates (fractions of S) and optionally flips.
    """
    h, w = src_hw
    s = out_size
    c = (s - 1) / 2
    a, sh = math.radians(angle), math.radians(shear)
    rot = torch.tensor([[math.cos(a), -math.sin(a), 0.0], [math.sin(a), math.cos(a), 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    shear_m = torch.tensor([[1.0, math.tan(sh), 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    scale_m = torch.diag(torch.tensor([scale, scale, 1.0], dtype=torch.float64))
    to_centre = torch.tensor([[1.0, 0, -c], [0, 1.0, -c], [0, 0, 1.0]], dtype=torch.float64)
    from_centre = torch.tensor([[1.0, 0, c + translate[0] * s], [0, 1.0, c + translate[1] * s], [0, 0, 1.0]], dtype=torch.float64)
    flip_m = torch.tensor([[-1.0, 0, s - 1], [0, 1.0, 0], [0, 0, 1.0]], dtype=torch.float64) if flip else torch.eye(3, dtype=torch.float64)
    # source pixel centres → output pixel centres for the resize (align pixel centres)
    resize = torch.tensor([[s / w, 0, 0.5 * s / w - 0.5], [0, s / h, 0.5 * s / h - 0.5], [0, 0, 1.0]], dtype=torch.float64)
    forward = flip_m @ from_centre @ scale_m @ rot @ shear_m @ to_centre @ resize
    return torch.linalg.inv(forward)


def warp(images: torch.Tensor, inverses: torch.Tensor, out_size: int, fill: tuple[float, ...] | float = 0.0, flows: torch.Tensor | None = None) -> torch.Tensor:
    """Resample T×C×H×W ``images`` to T×C×S×S, frame t through ``inverses[t]`` (3×3, output pixel →
    source pixel), bilinearly; out-of-image pixels get ``fill`` (a scalar or one value per channel).

    ``flows`` (T×S×S×2, output pixels): an extra displacement applied before the affine map (TPS warp).
    """
    t_count, c, h, w = images.shape
    s = out_size
    ar = torch.arange(s, dtype=torch.float32)
    ys, xs = ar.view(1, s, 1).expand(t_count, s, s), ar.view(1, 1, s).expand(t_count, s, s)
    if flows is not None:
        xs, ys = xs + flows[..., 0], ys + flows[..., 1]
    m = inverses.float()[:, :2, :].reshape(t_count, 6, 1, 1)
    src_x = m[:, 0] * xs + m[:, 1] * ys + m[:, 2]
    src_y = m[:, 3] * xs + m[:, 4] * ys + m[:, 5]
    grid = torch.stack((2 * (src_x + 0.5) / w - 1, 2 * (src_y + 0.5) / h - 1), dim=-1)
    fill_t = torch.as_tensor(fill, dtype=torch.float32).reshape(1, -1, 1, 1).expand(1, c, 1, 1)
    # sample (image − fill) with zero padding, then add fill back: out-of-image pixels become `fill`
    out = F.grid_sample(images.float() - fill_t, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out + fill_t


def transform_boxes(boxes: torch.Tensor, valid: torch.Tensor, inverse: torch.Tensor, out_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Boxes (O×4 XYXY, exclusive max) through the forward map of ``inverse``: the bounding box of the
    four transformed corners, clipped to the S×S image; boxes that leave the image become invalid."""
    forward = torch.linalg.inv(inverse).float()
    x0, y0, x1, y1 = boxes.float().unbind(-1)
    # corners of the covered pixel area (pixel centres at integer coordinates: area is [x0-0.5, x1-0.5])
    xs = torch.stack((x0, x1, x0, x1), -1) - 0.5
    ys = torch.stack((y0, y0, y1, y1), -1) - 0.5
    tx = forward[0, 0] * xs + forward[0, 1] * ys + forward[0, 2]
    ty = forward[1, 0] * xs + forward[1, 1] * ys + forward[1, 2]
    out = torch.stack((tx.amin(-1) + 0.5, ty.amin(-1) + 0.5, tx.amax(-1) + 0.5, ty.amax(-1) + 0.5), -1)
    out = torch.stack((out[:, 0].floor(), out[:, 1].floor(), out[:, 2].ceil(), out[:, 3].ceil()), -1).clamp(0, out_size)
    new_valid = valid & (out[:, 2] > out[:, 0]) & (out[:, 3] > out[:, 1])
    return torch.where(new_valid[:, None], out, torch.zeros_like(out)), new_valid


def tps_flow(rng: np.random.Generator, size: int, points: int = 5, magnitude: float = 0.04) -> torch.Tensor:
    """A smooth thin-plate-spline displacement field S×S×2 (pixels): control points on a grid are
    moved by up to ``magnitude``·S and the TPS interpolant through them gives every pixel's shift."""
    g = torch.linspace(0, size - 1, points, dtype=torch.float64)
    cy, cx = torch.meshgrid(g, g, indexing="ij")
    ctrl = torch.stack((cx.flatten(), cy.flatten()), -1)  # P×2
    disp = torch.from_numpy(rng.uniform(-magnitude, magnitude, size=ctrl.shape) * size)
    disp[(ctrl[:, 0] == 0) | (ctrl[:, 0] == size - 1) | (ctrl[:, 1] == 0) | (ctrl[:, 1] == size - 1)] *= 0.3

    def kernel(r2: torch.Tensor) -> torch.Tensor:  # U(r) = r² log r², 0 at r = 0
        return torch.where(r2 > 0, r2 * torch.log(r2.clamp_min(1e-12)), torch.zeros_like(r2))

    p = ctrl.shape[0]
    k = kernel(torch.cdist(ctrl, ctrl) ** 2)
    poly = torch.cat((torch.ones(p, 1, dtype=torch.float64), ctrl), 1)
    system = torch.zeros(p + 3, p + 3, dtype=torch.float64)
    system[:p, :p] = k
    system[:p, p:] = poly
    system[p:, :p] = poly.T
    rhs = torch.cat((disp, torch.zeros(3, 2, dtype=torch.float64)), 0)
    coef = torch.linalg.solve(system, rhs)
    ys, xs = torch.meshgrid(torch.arange(size, dtype=torch.float64), torch.arange(size, dtype=torch.float64), indexing="ij")
    pix = torch.stack((xs.flatten(), ys.flatten()), -1)
    basis = torch.cat((kernel(torch.cdist(pix, ctrl) ** 2), torch.ones(len(pix), 1, dtype=torch.float64), pix), 1)
    return (basis @ coef).reshape(size, size, 2).float()


def color_jitter(frames: torch.Tensor, rng: np.random.Generator, brightness: float, contrast: float, saturation: float) -> torch.Tensor:
    """Brightness / contrast / saturation jitter of T×3×H×W frames in [0,1] with one draw for all T."""
    b = 1 + rng.uniform(-brightness, brightness)
    c = 1 + rng.uniform(-contrast, contrast)
    s = 1 + rng.uniform(-saturation, saturation)
    out = frames * b
    # contrast pivots on each frame's mean grey level (torchvision's convention)
    mean = (0.299 * out[:, 0] + 0.587 * out[:, 1] + 0.114 * out[:, 2]).mean(dim=(-1, -2))[:, None, None, None]
    out = (out - mean) * c + mean
    gray = (0.299 * out[:, 0] + 0.587 * out[:, 1] + 0.114 * out[:, 2])[:, None]
    out = (out - gray) * s + gray
    return out.clamp(0, 1)
