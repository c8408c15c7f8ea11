"""The weak losses doing their job without a network: a free logit map, optimised with only the box.

A synthetic frame holds a non-convex object (a plus sign: mask area / box area ≈ 0.52) of one
colour on a smoothly varying background. We optimise a free per-pixel logit map against the losses
and measure the IoU of (logit > 0) with the true mask:

- projection alone can only say "something in every row and column of the box": it stays box-like
  (IoU ≈ the box's own IoU);
- projection + pairwise recovers the shape: background pixels inside the box are tied by colour to
  the background outside it, the object's pixels only to each other;
- the same over two frames (the object moves) with projection + temporal, and with all three.

How the free map is optimised, and why (the losses are the library's, unchanged):
- Start: logit 0 (undecided) inside the box, −4 (background) outside — the box's own information.
- Plain gradient descent, and the projection term ramped in over the first steps.
  The colour-consistency terms are "ferromagnetic": near m = ½, −log(m m' + (1−m)(1−m')) ≈ log 2 −
  a·b/4 in the logits a, b, so each pixel is pushed towards the sign of its similar neighbours. If the
  projection fills the box first (all box pixels tie for the row/column maxima and rise together),
  the filled box is a stable state of a free map: every in-box background pixel agrees with most of
  its neighbours, and edges crossing a boundary inside the box are counted from both ends while those
  leaving the box only once. A network escapes this because its output for a colour is shared by
  all pixels of that colour; a free map has no such coupling, so the colour terms act first here.
  With the thesis's order (projection first, pairwise warmed up) a free map stays box-shaped.
  (Adam is avoided: it rescales every pixel's step to the same size, so the pairwise term drags the
  pixels just outside the box up as fast as the projection can push them down.)

Run `python tests/test_losses_recovery.py` to print the numbers.
"""

from __future__ import annotations

import pytest
import torch

from vos.losses import box_masks, frames_to_lab, pairwise_loss, projection_loss, temporal_loss

SIZE = 40


def plus_scene(shift: tuple[int, int] = (0, 0), seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(RGB uint8 3×SIZE×SIZE, mask bool SIZE×SIZE): an orange textured plus on a bluish gradient."""
    generator = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(
        torch.arange(SIZE, dtype=torch.float32), torch.arange(SIZE, dtype=torch.float32), indexing="ij"
    )
    dy, dx = yy - (SIZE // 2 + shift[0]), xx - (SIZE // 2 - 2 + shift[1])
    mask = ((dy.abs() < 4) & (dx.abs() < 13)) | ((dx.abs() < 4) & (dy.abs() < 13))
    background = torch.stack((60 + 20 * yy / SIZE, 90 + 15 * xx / SIZE, 150 - 10 * yy / SIZE))
    foreground = torch.stack((torch.full_like(yy, 210.0), 120 + 10 * torch.sin(xx / 3), torch.full_like(yy, 40.0)))
    image = torch.where(mask, foreground, background) + torch.randn(3, SIZE, SIZE, generator=generator)
    return image.round().clamp(0, 255).to(torch.uint8), mask


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # Small tensors: OpenMP threads only add contention on shared 2-core machines.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def bounding_box(mask: torch.Tensor) -> list[float]:
    ys, xs = torch.nonzero(mask, as_tuple=True)
    return [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)]


def iou(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a & b).sum()) / float((a | b).sum())


def recover(
    w_pair: float = 0.0,
    w_temp: float = 0.0,
    frames: int = 1,
    steps: int = 200,
    ramp: int = 120,
    lr: float = 1500.0,
) -> tuple[list[float], list[float]]:
    """Optimise a free logit map; returns (IoU with the true mask per frame, the box's IoU per frame)."""
    scenes = [plus_scene(shift=(2 * t, 3 * t), seed=t) for t in range(frames)]
    rgb = torch.stack([image for image, _ in scenes])[None]  # 1×T×3×H×W
    masks = torch.stack([mask for _, mask in scenes])
    lab = frames_to_lab(rgb)
    boxes = torch.tensor([bounding_box(mask) for mask in masks])[None, None]  # 1×1×T×4
    box = box_masks(boxes, None, (SIZE, SIZE))
    logits = torch.where(box > 0, 0.0, -4.0).requires_grad_(True)
    optimiser = torch.optim.SGD([logits], lr=lr)
    for step in range(steps):
        loss = min(1.0, step / ramp) * projection_loss(torch.sigmoid(logits), box)
        if w_pair:
            loss = loss + w_pair * pairwise_loss(logits, lab, box)
        if w_temp:
            loss = loss + w_temp * temporal_loss(logits, lab, box)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    pred = logits.detach()[0, 0] > 0
    return [iou(pred[t], masks[t]) for t in range(frames)], [iou(box[0, 0, t] > 0, masks[t]) for t in range(frames)]


def test_projection_alone_stays_box_like():
    got, box_iou = recover()
    assert 0.45 < box_iou[0] < 0.6  # the box is a poor mask
    assert abs(got[0] - box_iou[0]) < 0.05


def test_projection_and_pairwise_recover_the_shape():
    got, box_iou = recover(w_pair=1.0)
    assert got[0] > 0.9 and got[0] > box_iou[0] + 0.35


def test_projection_and_temporal_recover_the_shape_over_two_frames():
    got, box_iou = recover(w_temp=0.3, frames=2)
    assert min(got) > 0.9 and min(got) > max(box_iou) + 0.35


if __name__ == "__main__":
    torch.set_num_threads(1)
    for name, kwargs in (
        ("projection", {}),
        ("projection + pairwise", {"w_pair": 1.0}),
        ("projection, 2 frames", {"frames": 2}),
        ("projection + temporal, 2 frames", {"w_temp": 0.3, "frames": 2}),
        ("projection + pairwise + temporal, 2 frames", {"w_pair": 1.0, "w_temp": 0.3, "frames": 2}),
    ):
        got, box_iou = recover(**kwargs)
        print(f"{name:44s} IoU {' '.join(f'{v:.3f}' for v in got)}   (box IoU {' '.join(f'{v:.3f}' for v in box_iou)})")
