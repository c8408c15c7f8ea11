"""Weak and oracle losses (vos.losses) against deliberately naive loop implementations.

The naive references below are written independently of the library: explicit Python loops over
pixels, neighbours and candidates enumerate every edge of the thesis's equations; the loss is then
evaluated from the enumerated edges with the probability form −log(m m' + (1−m)(1−m')) rather than
the library's softplus form. Everything runs on tiny float64 tensors.
"""

from __future__ import annotations

import math
import types

import numpy as np
import pytest
import torch

from vos.errors import ConfigError, VosError
from vos.losses import (
    LossConfig,
    OracleLoss,
    WeakLoss,
    area_downsample,
    bootstrap_p,
    bootstrapped_ce,
    box_masks,
    box_prompt_masks,
    consistency,
    dice_loss,
    downsample_agg_logits,
    foreground_logits,
    frames_to_lab,
    pairwise_loss,
    projection_loss,
    rgb_to_lab,
    temporal_loss,
    temporal_matches,
)
from vos import backends

D = torch.float64


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # These tensors are tiny: OpenMP threads only add contention on shared 2-core machines.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ------------------------------------------------------------------------------------------------
# naive references


def naive_pair_prob_nll(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    ma, mb = torch.sigmoid(a), torch.sigmoid(b)
    return -torch.log(ma * mb + (1 - ma) * (1 - mb))


def naive_hard_nll(a: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    m = torch.sigmoid(a)
    return -torch.log(m * label + (1 - m) * (1 - label))


def naive_dice_p2(pred: list[torch.Tensor], target: list[float], eps: float) -> torch.Tensor:
    inter = sum(p**2 * t**2 for p, t in zip(pred, target))
    return 1 - (eps + 2 * inter) / (eps + sum(p**2 for p in pred) + sum(t**2 for t in target))


def naive_projection_image(m: torch.Tensor, box: torch.Tensor, eps: float) -> torch.Tensor:
    height, width = m.shape
    px_hat = [torch.stack([m[y, x] for y in range(height)]).max() for x in range(width)]
    py_hat = [torch.stack([m[y, x] for x in range(width)]).max() for y in range(height)]
    px = [max(float(box[y, x]) for y in range(height)) for x in range(width)]
    py = [max(float(box[y, x]) for x in range(width)) for y in range(height)]
    return naive_dice_p2(px_hat, px, eps) + naive_dice_p2(py_hat, py, eps)


def naive_projection(prob, box, eps, layout, obj_valid=None):
    batch, objects, frames = prob.shape[:3]
    images = [
        (b, n, t)
        for b in range(batch)
        for n in range(objects)
        for t in range(frames)
        if obj_valid is None or bool(obj_valid[b, n])
    ]
    if layout == "per_image":
        losses = [naive_projection_image(prob[b, n, t], box[b, n, t], eps) for b, n, t in images]
        return sum(losses) / len(losses)
    # The thesis's picture: all images stacked vertically into one (k·H)×W image.
    picture = torch.cat([prob[b, n, t] for b, n, t in images], dim=0)
    box_picture = torch.cat([box[b, n, t] for b, n, t in images], dim=0)
    return naive_projection_image(picture, box_picture, eps)


def naive_normalise(sums: dict, counts: dict, pixels: int, normalize: str, images: list):
    if normalize == "pixels":
        return sum(sums.get(key, 0.0) / pixels for key in images) / len(images)
    total = sum(sums.get(key, 0.0) for key in images)
    count = sum(counts.get(key, 0) for key in images)
    return total / max(count, 1)


def naive_pairwise(logits, lab, box, kernel, dilation, gamma, tau, normalize, obj_valid=None):
    batch, objects, frames, height, width = logits.shape
    lab_list = lab.tolist()
    half = kernel // 2
    edges = []  # (b, n, t, y, x, y2, x2)
    for b in range(batch):
        for n in range(objects):
            if obj_valid is not None and not bool(obj_valid[b, n]):
                continue
            for t in range(frames):
                for y in range(height):
                    for x in range(width):
                        if float(box[b, n, t, y, x]) == 0:
                            continue
                        for ky in range(-half, half + 1):
                            for kx in range(-half, half + 1):
                                if ky == 0 and kx == 0:
                                    continue
                                y2, x2 = y + ky * dilation, x + kx * dilation
                                if not (0 <= y2 < height and 0 <= x2 < width):
                                    continue
                                dist = math.sqrt(
                                    sum((lab_list[b][t][c][y][x] - lab_list[b][t][c][y2][x2]) ** 2 for c in range(3))
                                )
                                if math.exp(-dist / gamma) >= tau:
                                    edges.append((b, n, t, y, x, y2, x2))
    sums: dict = {}
    counts: dict = {}
    for b, n, t, y, x, y2, x2 in edges:
        value = naive_pair_prob_nll(logits[b, n, t, y, x], logits[b, n, t, y2, x2])
        sums[(b, n, t)] = sums.get((b, n, t), 0.0) + value
        counts[(b, n, t)] = counts.get((b, n, t), 0) + 1
    images = [
        (b, n, t)
        for b in range(batch)
        for n in range(objects)
        for t in range(frames)
        if obj_valid is None or bool(obj_valid[b, n])
    ]
    result = naive_normalise(sums, counts, height * width, normalize, images)
    return result if torch.is_tensor(result) else logits.sum() * 0 + result


def naive_descriptor(lab_list, b, t, y, x, patch, height, width):
    half = patch // 2
    values = []
    for qy in range(-half, half + 1):
        for qx in range(-half, half + 1):
            yy = min(max(y + qy, 0), height - 1)
            xx = min(max(x + qx, 0), width - 1)
            values.extend(lab_list[b][t][c][yy][xx] for c in range(3))
    return values


def naive_matches(lab, patch, candidates, spacing, top_k, gamma, tau):
    """{(b, t, y, x): [(cy, cx), ...]} — kept candidate positions in frame t+1 mod T."""
    batch, frames, _, height, width = lab.shape
    lab_list = lab.tolist()
    half = candidates // 2
    grid = [(dy * spacing, dx * spacing) for dy in range(-half, half + 1) for dx in range(-half, half + 1)]
    result = {}
    for b in range(batch):
        for t in range(frames):
            t2 = (t + 1) % frames
            for y in range(height):
                for x in range(width):
                    d0 = naive_descriptor(lab_list, b, t, y, x, patch, height, width)
                    scored = []
                    for index, (dy, dx) in enumerate(grid):
                        y2, x2 = y + dy, x + dx
                        if not (0 <= y2 < height and 0 <= x2 < width):
                            continue
                        d1 = naive_descriptor(lab_list, b, t2, y2, x2, patch, height, width)
                        sim = math.exp(-math.sqrt(sum((u - v) ** 2 for u, v in zip(d0, d1))) / gamma)
                        scored.append((-sim, index, y2, x2, sim))
                    scored.sort()  # most similar first, ties: lower candidate index first
                    result[(b, t, y, x)] = [(y2, x2) for _, _, y2, x2, sim in scored[:top_k] if sim >= tau]
    return result


def naive_temporal(
    logits, lab, box, patch, candidates, spacing, top_k, tau, gamma, target, detach, normalize, obj_valid=None
):
    batch, objects, frames, height, width = logits.shape
    matches = naive_matches(lab, patch, candidates, spacing, top_k, gamma, tau)
    half = patch // 2 if target == "patch" else 0
    sums: dict = {}
    counts: dict = {}
    images = []
    for b in range(batch):
        for n in range(objects):
            if obj_valid is not None and not bool(obj_valid[b, n]):
                continue
            union = [[max(float(box[b, n, t, y, x]) for t in range(frames)) for x in range(width)] for y in range(height)]
            for t in range(frames):
                images.append((b, n, t))
                if frames < 2:
                    continue
                t2 = (t + 1) % frames
                for y in range(height):
                    for x in range(width):
                        if union[y][x] == 0:
                            continue
                        for cy, cx in matches[(b, t, y, x)]:
                            for qy in range(-half, half + 1):
                                for qx in range(-half, half + 1):
                                    y2, x2 = cy + qy, cx + qx
                                    if not (0 <= y2 < height and 0 <= x2 < width):
                                        continue
                                    a = logits[b, n, t, y, x]
                                    c = logits[b, n, t2, y2, x2]
                                    if detach == "none":
                                        value = naive_pair_prob_nll(a, c)
                                    elif detach == "soft":  # eq. 3.22, literally
                                        value = 0.5 * (naive_pair_prob_nll(a, c.detach()) + naive_pair_prob_nll(a.detach(), c))
                                    else:
                                        label_c = (torch.sigmoid(c) > 0.5).to(c.dtype).detach()
                                        label_a = (torch.sigmoid(a) > 0.5).to(a.dtype).detach()
                                        value = 0.5 * (naive_hard_nll(a, label_c) + naive_hard_nll(c, label_a))
                                    sums[(b, n, t)] = sums.get((b, n, t), 0.0) + value
                                    counts[(b, n, t)] = counts.get((b, n, t), 0) + 1
    if frames < 2:
        return logits.sum() * 0
    result = naive_normalise(sums, counts, height * width, normalize, images)
    return result if torch.is_tensor(result) else logits.sum() * 0 + result


# ------------------------------------------------------------------------------------------------
# fixtures


def assert_same_loss(ours, ref, logits):
    """Our loss equals the naive sum over edges in value (non-trivially: > 0) and in its gradient."""
    assert ref.item() > 0
    assert torch.allclose(ours, ref, atol=1e-12)
    grad_ours, = torch.autograd.grad(ours, logits)
    grad_ref, = torch.autograd.grad(ref, logits)
    assert torch.allclose(grad_ours, grad_ref, atol=1e-12)


def random_boxes(generator, batch, objects, frames, height, width, absent=()):
    boxes = torch.zeros(batch, objects, frames, 4)
    valid = torch.ones(batch, objects, frames, dtype=torch.bool)
    for b in range(batch):
        for n in range(objects):
            for t in range(frames):
                x1 = int(torch.randint(0, width - 2, (1,), generator=generator))
                y1 = int(torch.randint(0, height - 2, (1,), generator=generator))
                x2 = int(torch.randint(x1 + 1, width + 1, (1,), generator=generator))
                y2 = int(torch.randint(y1 + 1, height + 1, (1,), generator=generator))
                boxes[b, n, t] = torch.tensor([x1, y1, x2, y2])
    for index in absent:
        valid[index] = False
    return box_masks(boxes, valid, (height, width)).to(D)


def smooth_lab(generator, batch, frames, height, width, scale=2.0, quantised=False):
    """Lab-like values with regions of similar colour so that thresholds select some edges."""
    # 2×2 blocks of colour shared by all frames (so patches match across frames), plus noise
    base = torch.rand(batch, 3, 2, 2, generator=generator, dtype=D) * 20
    lab = torch.nn.functional.interpolate(base, size=(height, width), mode="nearest")
    lab = lab[:, None].expand(batch, frames, 3, height, width)
    noise = torch.rand(batch, frames, 3, height, width, generator=generator, dtype=D) * scale
    lab = lab + noise
    if quantised:  # integer Lab values: many exactly equal similarities (tie-breaking)
        lab = torch.randint(0, 2, (batch, frames, 3, height, width), generator=generator).to(D)
    return lab


# ------------------------------------------------------------------------------------------------
# colour


def test_rgb_to_lab_matches_skimage_on_many_colours():
    skcolor = pytest.importorskip("skimage.color")
    generator = torch.Generator().manual_seed(0)
    levels = torch.arange(0, 256, 5, dtype=torch.uint8)  # 52 levels per channel: every combination
    r, g, b = torch.meshgrid(levels, levels, levels, indexing="ij")
    grid = torch.stack((r, g, b)).reshape(3, 52, -1)
    extra = torch.randint(0, 256, (3, 64, 500), generator=generator, dtype=torch.uint8)
    for rgb in (grid, extra):
        ours = rgb_to_lab(rgb)
        assert ours.dtype == torch.float32 and ours.shape == rgb.shape
        reference = skcolor.rgb2lab(rgb.permute(1, 2, 0).numpy())
        assert np.abs(ours.permute(1, 2, 0).numpy() - reference).max() < 1e-4
    # float input in [0, 1], batched leading dims, near both thresholds of the formula
    values = torch.tensor([0.0, 0.04045, 0.0405, 0.5, 1.0, 0.0031, 0.2], dtype=torch.float32)
    rgb = torch.stack(torch.meshgrid(values, values, values, indexing="ij")).reshape(1, 3, 7, 49)
    ours = rgb_to_lab(rgb)[0]
    reference = skcolor.rgb2lab(rgb[0].permute(1, 2, 0).double().numpy())
    assert np.abs(ours.permute(1, 2, 0).numpy() - reference).max() < 1e-4
    # the float32 computation (used on devices without float64) is within budget as well
    from vos.losses.color import _lab

    ours32 = _lab(grid.to(torch.float32) / 255)
    reference = skcolor.rgb2lab(grid.permute(1, 2, 0).numpy())
    assert np.abs(ours32.permute(1, 2, 0).numpy() - reference).max() < 1e-4


def test_frames_to_lab_area_averages_rgb_first():
    skcolor = pytest.importorskip("skimage.color")
    generator = torch.Generator().manual_seed(1)
    frames = torch.randint(0, 256, (2, 3, 3, 8, 12), generator=generator, dtype=torch.uint8)
    lab = frames_to_lab(frames, stride=4)
    assert lab.shape == (2, 3, 3, 2, 3)
    mean = frames.double().reshape(2, 3, 3, 2, 4, 3, 4).mean(dim=(-3, -1)) / 255
    reference = skcolor.rgb2lab(mean[1, 2].permute(1, 2, 0).numpy())
    assert np.abs(lab[1, 2].permute(1, 2, 0).numpy() - reference).max() < 1e-4
    with pytest.raises(VosError, match="not divisible"):
        frames_to_lab(frames, stride=5)


# ------------------------------------------------------------------------------------------------
# boxes and network output


def test_box_masks_exclusive_max_absent_and_strided():
    boxes = torch.tensor([[1.0, 2.0, 4.0, 3.0], [0.0, 0.0, 6.0, 5.0], [2.0, 1.0, 3.0, 4.0]])
    valid = torch.tensor([True, True, False])
    masks = box_masks(boxes, valid, (5, 6))
    expected = torch.zeros(3, 5, 6)
    expected[0, 2:3, 1:4] = 1
    expected[1] = 1
    assert torch.equal(masks, expected)
    # boxes at the input resolution, masks at stride 4: a pixel is in when its centre is.
    masks = box_masks(torch.tensor([[5.0, 0.0, 14.0, 16.0], [4.0, 4.0, 5.0, 5.0], [-8.0, 2.0, 3.0, 40.0]]), None, (4, 4), 4)
    assert masks[0].tolist() == [[0.0, 1.0, 1.0, 0.0]] * 4  # x 5..14 → loss columns 1, 2 (centres 6, 10)
    assert masks[1].sum() == 1 and masks[1][1, 1] == 1  # a 1-pixel box keeps the loss pixel at its centre
    assert masks[2][:, 0].tolist() == [1.0, 1.0, 1.0, 1.0] and masks[2][:, 1].sum() == 0  # clipped
    assert box_masks(torch.tensor([[3.0, 3.0, 3.0, 5.0]]), None, (6, 6)).sum() == 0  # degenerate → empty


def test_box_prompt_masks_paint_overlaps_as_inference():
    """The first-frame box prompt: the smaller box wins an overlap, a box covered completely by smaller
    ones keeps its rectangle, absent objects stay empty; batched like the trainer's B×N×4."""
    boxes = torch.tensor([[[0.0, 0.0, 6.0, 6.0], [2.0, 2.0, 4.0, 4.0], [1.0, 1.0, 2.0, 2.0], [0.0, 0.0, 1.0, 1.0]]])
    valid = torch.tensor([[True, True, True, False]])
    masks = box_prompt_masks(boxes, valid, (6, 6))
    assert masks.shape == (1, 4, 6, 6)
    big, middle, small, absent = masks[0]
    assert middle[2:4, 2:4].all() and middle.sum() == 4  # inside the big box, the smaller one wins
    assert small[1, 1] == 1 and small.sum() == 1
    assert big.sum() == 36 - 4 - 1 and big[0, 0] == 1 and absent.sum() == 0
    assert masks.sum(1).max() == 1  # no pixel belongs to two objects
    # completely covered by a smaller box (equal areas: the later object wins) → keeps its rectangle
    twins = box_prompt_masks(torch.tensor([[1.0, 1.0, 3.0, 3.0], [1.0, 1.0, 3.0, 3.0]]), None, (4, 4))
    assert twins[1].sum() == 4 and twins[0].sum() == 4


def test_foreground_logits_exact_and_stable():
    generator = torch.Generator().manual_seed(2)
    agg = torch.randn(2, 3, 4, 5, 6, generator=generator, dtype=D) * 3
    fg = foreground_logits(agg)
    assert fg.shape == (2, 3, 3, 5, 6)
    prob = torch.softmax(agg, dim=2)
    expected = torch.log(prob[:, :, 1:]) - torch.log1p(-prob[:, :, 1:])
    assert torch.allclose(fg, expected.transpose(1, 2), atol=1e-10)
    # extreme logits (p rounding to 1 or 0 in float32) stay finite and exact
    agg = torch.tensor([0.0, 60.0, -60.0]).view(1, 1, 3, 1, 1)
    fg = foreground_logits(agg)
    assert torch.isfinite(fg).all()
    assert torch.allclose(fg.flatten(), torch.tensor([60.0, -120.0 - math.log1p(math.exp(-60))]), atol=1e-4)
    assert foreground_logits(torch.zeros(1, 2, 1, 3, 3)).shape == (1, 0, 2, 3, 3)


def test_downsample_agg_logits_is_area_mean_of_probabilities():
    generator = torch.Generator().manual_seed(3)
    agg = torch.randn(1, 2, 3, 8, 8, generator=generator, dtype=D) * 4
    low = downsample_agg_logits(agg, 4)
    assert low.shape == (1, 2, 3, 2, 2)
    expected = area_downsample(torch.softmax(agg, dim=2), 4)
    assert torch.allclose(low.exp(), expected, atol=1e-12)
    assert torch.allclose(downsample_agg_logits(agg, 1).exp(), torch.softmax(agg, dim=2))
    with pytest.raises(VosError):
        downsample_agg_logits(agg, 3)


# ------------------------------------------------------------------------------------------------
# projection


@pytest.mark.parametrize("layout", ["stacked", "per_image"])
def test_projection_matches_naive(layout):
    generator = torch.Generator().manual_seed(4)
    prob = torch.rand(2, 2, 3, 5, 6, generator=generator, dtype=D).requires_grad_(True)
    box = random_boxes(generator, 2, 2, 3, 5, 6, absent=[(0, 1, 2), (1, 0, 0)])
    for obj_valid in (None, torch.tensor([[True, False], [True, True]])):
        ours = projection_loss(prob, box, eps=1e-3, layout=layout, obj_valid=obj_valid)
        ref = naive_projection(prob, box, 1e-3, layout, obj_valid)
        assert torch.allclose(ours, ref, atol=1e-12)
        grad_ours, = torch.autograd.grad(ours, prob)
        grad_ref, = torch.autograd.grad(ref, prob)
        assert torch.allclose(grad_ours, grad_ref, atol=1e-12)
    assert torch.autograd.gradcheck(lambda p: projection_loss(p, box, eps=1e-3, layout=layout), (prob,))


@pytest.mark.parametrize("layout", ["stacked", "per_image"])
def test_projection_absent_object_pushes_to_empty(layout):
    box = torch.zeros(1, 2, 1, 6, 6, dtype=D)
    box[0, 0, 0, 1:4, 2:5] = 1  # object 0 present, object 1 absent (empty box)
    prob = torch.full((1, 2, 1, 6, 6), 0.5, dtype=D)
    # The present object is the more confident one, so in "stacked" the x-projection (a max over all
    # images) is held by it and the absent image only feels its own rows.
    prob[0, 0] = 0.7
    prob.requires_grad_(True)
    loss = projection_loss(prob, box, layout=layout)
    grad, = torch.autograd.grad(loss, prob)
    absent = grad[0, 1, 0]
    assert (absent >= 0).all() and absent.sum() > 0  # descent lowers the absent object's mask
    empty = prob.detach().clone()
    empty[0, 1] = 0
    empty[0, 0] = box[0, 0]
    assert projection_loss(empty, box, layout=layout) < 1e-4  # exact mask + empty absent: loss 0
    if layout == "stacked":
        assert absent.sum() > 1e-2  # rows of the absent image are part of the dice: a real push


# ------------------------------------------------------------------------------------------------
# pairwise


@pytest.mark.parametrize("normalize", ["pixels", "edges"])
@pytest.mark.parametrize("kernel,dilation", [(3, 2), (3, 1), (5, 1)])
def test_pairwise_matches_naive(normalize, kernel, dilation):
    generator = torch.Generator().manual_seed(5)
    logits = (torch.randn(2, 2, 2, 6, 7, generator=generator, dtype=D) * 2).requires_grad_(True)
    lab = smooth_lab(generator, 2, 2, 6, 7)
    box = random_boxes(generator, 2, 2, 2, 6, 7, absent=[(1, 1, 0)])
    obj_valid = torch.tensor([[True, True], [False, True]])
    for valid in (None, obj_valid):
        kwargs = dict(kernel=kernel, dilation=dilation, gamma=2.0, tau=0.3, normalize=normalize)
        ours = pairwise_loss(logits, lab, box, obj_valid=valid, **kwargs)
        ref = naive_pairwise(logits, lab, box, obj_valid=valid, **kwargs)
        assert_same_loss(ours, ref, logits)


def test_pairwise_gradcheck():
    generator = torch.Generator().manual_seed(6)
    logits = torch.randn(1, 2, 2, 5, 5, generator=generator, dtype=D).requires_grad_(True)
    lab = smooth_lab(generator, 1, 2, 5, 5)
    box = random_boxes(generator, 1, 2, 2, 5, 5)
    assert torch.autograd.gradcheck(lambda x: pairwise_loss(x, lab, box), (logits,))
    assert torch.autograd.gradcheck(lambda x: pairwise_loss(x, lab, box, normalize="edges"), (logits,))


def test_pairwise_out_of_image_neighbours_and_box_centres():
    # uniform colour: every in-image edge is active; a 1-pixel box at the corner (0, 0)
    lab = torch.zeros(1, 1, 3, 5, 5, dtype=D)
    box = torch.zeros(1, 1, 1, 5, 5, dtype=D)
    box[..., 0, 0] = 1
    logits = torch.zeros(1, 1, 1, 5, 5, dtype=D)
    # only (0, 2), (2, 0), (2, 2) are inside the image: 3 edges of −log ½ each, over H·W = 25
    assert torch.isclose(pairwise_loss(logits, lab, box), torch.tensor(3 * math.log(2) / 25, dtype=D))
    assert torch.isclose(pairwise_loss(logits, lab, box, normalize="edges"), torch.tensor(math.log(2), dtype=D))
    # no centre inside a box (absent object): no loss, no gradient
    logits.requires_grad_(True)
    loss = pairwise_loss(logits, lab, torch.zeros_like(box))
    assert loss.item() == 0 and torch.autograd.grad(loss, logits)[0].abs().sum() == 0


# ------------------------------------------------------------------------------------------------
# temporal


def test_temporal_matches_agree_with_naive_including_ties():
    generator = torch.Generator().manual_seed(7)
    for quantised in (False, True):
        lab = smooth_lab(generator, 2, 3, 7, 8, scale=1.5, quantised=quantised)
        kept = temporal_matches(lab, patch=3, candidates=3, spacing=2, top_k=4, gamma=2.0, tau=0.05)
        ref = naive_matches(lab, 3, 3, 2, 4, 2.0, 0.05)
        grid = [(dy * 2, dx * 2) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
        for (b, t, y, x), positions in ref.items():
            ours = [(y + dy, x + dx) for c, (dy, dx) in enumerate(grid) if kept[b, t, c, y, x]]
            assert sorted(ours) == sorted(positions), (quantised, b, t, y, x)
        assert 0 < kept.sum() < kept.numel()


@pytest.mark.parametrize("target", ["patch", "center"])
@pytest.mark.parametrize("detach", ["soft", "hard", "none"])
def test_temporal_matches_naive(target, detach):
    generator = torch.Generator().manual_seed(8)
    logits = (torch.randn(1, 2, 3, 6, 7, generator=generator, dtype=D) * 2).requires_grad_(True)
    lab = smooth_lab(generator, 1, 3, 6, 7, scale=1.0)
    box = random_boxes(generator, 1, 2, 3, 6, 7, absent=[(0, 1, 1)])
    kwargs = dict(patch=3, candidates=3, spacing=2, top_k=3, tau=0.05, gamma=2.0, target=target, detach=detach)
    for normalize, valid in (("pixels", None), ("edges", None), ("pixels", torch.tensor([[False, True]]))):
        ours = temporal_loss(logits, lab, box, normalize=normalize, obj_valid=valid, **kwargs)
        ref = naive_temporal(logits, lab, box, normalize=normalize, obj_valid=valid, **kwargs)
        assert_same_loss(ours, ref, logits)


def test_temporal_default_grid_and_quantised_colours_match_naive():
    generator = torch.Generator().manual_seed(9)
    logits = torch.randn(1, 1, 2, 8, 8, generator=generator, dtype=D).requires_grad_(True)
    lab = smooth_lab(generator, 1, 2, 8, 8, quantised=True)
    box = random_boxes(generator, 1, 1, 2, 8, 8)
    ours = temporal_loss(logits, lab, box)  # defaults: 3×3 patches, 3×3 candidates spaced 3, top-5
    ref = naive_temporal(logits, lab, box, 3, 3, 3, 5, 0.05, 2.0, "patch", "soft", "pixels")
    assert torch.allclose(ours, ref, atol=1e-12)
    assert torch.allclose(torch.autograd.grad(ours, logits)[0], torch.autograd.grad(ref, logits)[0], atol=1e-12)


def test_temporal_gradcheck_symmetric():
    generator = torch.Generator().manual_seed(10)
    logits = torch.randn(1, 1, 2, 5, 5, generator=generator, dtype=D).requires_grad_(True)
    lab = smooth_lab(generator, 1, 2, 5, 5)
    box = random_boxes(generator, 1, 1, 2, 5, 5)
    for target in ("patch", "center"):
        fn = lambda x: temporal_loss(x, lab, box, spacing=2, detach="none", target=target)  # noqa: E731
        assert torch.autograd.gradcheck(fn, (logits,))


def test_detach_soft_is_half_the_symmetric_gradient_and_hard_differs():
    generator = torch.Generator().manual_seed(11)
    logits = torch.randn(1, 2, 3, 6, 6, generator=generator, dtype=D).requires_grad_(True)
    lab = smooth_lab(generator, 1, 3, 6, 6)
    box = random_boxes(generator, 1, 2, 3, 6, 6)
    values, grads = {}, {}
    for mode in ("none", "soft", "hard"):
        values[mode] = temporal_loss(logits, lab, box, spacing=2, detach=mode)
        grads[mode], = torch.autograd.grad(values[mode], logits)
    # eq. 3.22 has the value of the symmetric loss and exactly half its gradient (at equal values)
    assert torch.allclose(values["soft"], values["none"], atol=1e-14)
    assert grads["none"].abs().sum() > 0
    assert torch.allclose(grads["soft"], 0.5 * grads["none"], atol=1e-14)
    # the literal eq. 3.22 of the naive reference agrees with the half-gradient identity
    ref = naive_temporal(logits, lab, box, 3, 3, 2, 5, 0.05, 2.0, "patch", "soft", "pixels")
    assert torch.allclose(torch.autograd.grad(ref, logits)[0], 0.5 * grads["none"], atol=1e-12)
    # the hardened partner really changes the value and the gradient direction
    assert not torch.allclose(values["hard"], values["none"])
    cosine = torch.nn.functional.cosine_similarity(grads["hard"].flatten(), grads["none"].flatten(), dim=0)
    assert cosine < 0.99


def test_consistency_modes_per_edge():
    generator = torch.Generator().manual_seed(15)
    a = (torch.randn(50, generator=generator, dtype=D) * 3).requires_grad_(True)
    b = (torch.randn(50, generator=generator, dtype=D) * 3).requires_grad_(True)
    symmetric = naive_pair_prob_nll(a, b)
    literal_soft = 0.5 * (naive_pair_prob_nll(a, b.detach()) + naive_pair_prob_nll(a.detach(), b))
    hard = 0.5 * (naive_hard_nll(a, (b > 0).to(D).detach()) + naive_hard_nll(b, (a > 0).to(D).detach()))
    for mode, ref in (("none", symmetric), ("soft", literal_soft), ("hard", hard)):
        ours = consistency(a, b, mode)
        assert torch.allclose(ours, ref, atol=1e-12)
        grads = torch.autograd.grad(ours.sum(), (a, b))
        grads_ref = torch.autograd.grad(ref.sum(), (a, b))
        assert all(torch.allclose(g, r, atol=1e-12) for g, r in zip(grads, grads_ref))


def test_temporal_absent_objects_and_single_frame():
    generator = torch.Generator().manual_seed(12)
    logits = torch.randn(1, 2, 2, 6, 6, generator=generator, dtype=D).requires_grad_(True)
    lab = smooth_lab(generator, 1, 2, 6, 6)
    box = torch.zeros(1, 2, 2, 6, 6, dtype=D)
    box[0, 0, 0, 1:4, 1:4] = 1  # object 0 boxed in frame 0 only; object 1 absent everywhere
    loss = temporal_loss(logits, lab, box)
    grad, = torch.autograd.grad(loss, logits)
    assert loss > 0 and grad[0, 0].abs().sum() > 0
    assert grad[0, 1].abs().sum() == 0  # an object absent in every frame gets no temporal signal
    # centres in frame 1 use the union of the boxes: frame 1's own (empty) box does not switch it off
    assert grad[0, 0, 1, 1:4, 1:4].abs().sum() > 0
    single = temporal_loss(logits[:, :, :1], lab[:, :1], box[:, :, :1])
    assert single.item() == 0  # T = 1 has no frame pair


def test_option_errors():
    logits = torch.zeros(1, 1, 2, 4, 4)
    lab = torch.zeros(1, 2, 3, 4, 4)
    box = torch.ones(1, 1, 2, 4, 4)
    with pytest.raises(VosError, match="temp_detach"):
        temporal_loss(logits, lab, box, detach="half")
    with pytest.raises(VosError, match="temp_target"):
        temporal_loss(logits, lab, box, target="edge")
    with pytest.raises(VosError, match="normalize"):
        pairwise_loss(logits, lab, box, normalize="area")
    with pytest.raises(VosError, match="layout"):
        projection_loss(logits, box, layout="tiled")
    with pytest.raises(ConfigError, match="losses.temp_candidates"):
        LossConfig(temp_candidates=4)
    with pytest.raises(ConfigError, match="losses.boot_end"):
        LossConfig(boot_start=10, boot_end=5)
    with pytest.raises(ConfigError, match="losses.layout"):
        LossConfig(layout="grid")


# ------------------------------------------------------------------------------------------------
# backend dispatch


def test_backend_dispatch(monkeypatch):
    logits = torch.zeros(1, 1, 2, 4, 4)
    lab = torch.zeros(1, 2, 3, 4, 4)
    box = torch.ones(1, 1, 2, 4, 4)
    monkeypatch.setattr(backends, "kernel_modules", lambda: ({}, "cannot import vos.kernels (test)"))
    with pytest.raises(VosError, match="cannot import vos.kernels"):
        pairwise_loss(logits, lab, box, backend="triton")
    with pytest.raises(VosError, match="backend"):
        pairwise_loss(logits, lab, box, backend="cuda")
    assert pairwise_loss(logits, lab, box, backend="auto").item() == pairwise_loss(logits, lab, box, backend="torch").item()
    calls = []
    fake = types.SimpleNamespace(pairwise_loss=lambda *args, **kwargs: calls.append(kwargs) or torch.tensor(7.0))
    monkeypatch.setattr(backends, "kernel_modules", lambda: ({"losses": fake}, ""))
    assert pairwise_loss(logits, lab, box, backend="triton").item() == 7.0  # explicit: runs even on CPU
    assert calls and calls[0]["dilation"] == 2 and "backend" not in calls[0]
    assert pairwise_loss(logits, lab, box, backend="auto").item() != 7.0  # auto: CPU tensors → torch
    with pytest.raises(VosError, match="has no temporal_loss"):
        temporal_loss(logits, lab, box, backend="triton")


# ------------------------------------------------------------------------------------------------
# criteria


def test_weak_loss_end_to_end_and_warmup():
    generator = torch.Generator().manual_seed(13)
    batch, frames, objects, size = 2, 3, 2, 16
    agg = torch.randn(batch, frames, objects + 1, size, size, generator=generator, requires_grad=True)
    rgb = torch.randint(0, 256, (batch, frames, 3, size, size), generator=generator, dtype=torch.uint8)
    boxes = torch.tensor([2.0, 3.0, 11.0, 14.0]).expand(batch, objects, frames, 4).clone()
    box_valid = torch.ones(batch, objects, frames, dtype=torch.bool)
    box_valid[1, 1, 2] = False
    config = LossConfig(stride=4, warmup_iters=100)
    criterion = WeakLoss(config)
    total, parts = criterion(agg, rgb, boxes, box_valid, iteration=50)
    assert parts["w_pair"].item() == pytest.approx(0.5) and parts["w_temp"].item() == pytest.approx(0.5)
    # the same numbers from the public pieces, at the loss resolution
    logits = foreground_logits(downsample_agg_logits(agg, 4))
    lab = frames_to_lab(rgb, 4)
    box = box_masks(boxes, box_valid, (4, 4), 4)
    proj = projection_loss(torch.sigmoid(logits), box)
    pair = pairwise_loss(logits, lab, box)
    temp = temporal_loss(logits, lab, box)
    assert torch.allclose(total, proj + 0.5 * pair + 0.5 * temp, atol=1e-6)
    assert torch.allclose(parts["temp"], temp.detach())
    total.backward()
    assert agg.grad is not None and torch.isfinite(agg.grad).all() and agg.grad.abs().sum() > 0
    # ablation: switched-off terms are not computed and report 0
    _, parts = WeakLoss(LossConfig(stride=4, w_pair=0.0, w_temp=0.0))(agg, rgb, boxes, box_valid, iteration=10**6)
    assert parts["pair"].item() == 0 and parts["temp"].item() == 0 and parts["proj"].item() > 0
    assert WeakLoss(LossConfig(warmup_iters=0)).weights(0) == (1.0, 1.0, 1.0)


def test_weak_loss_temporal_stride_runs_the_temporal_term_at_its_own_resolution():
    generator = torch.Generator().manual_seed(17)
    batch, frames, objects, size = 2, 3, 2, 16
    agg = torch.randn(batch, frames, objects + 1, size, size, generator=generator)
    # smooth colours so that patches match and the temporal term is not 0
    rgb = torch.linspace(0, 255, size).round().to(torch.uint8).expand(batch, frames, 3, size, size).clone()
    boxes = torch.tensor([2.0, 3.0, 11.0, 14.0]).expand(batch, objects, frames, 4).clone()
    total, parts = WeakLoss(LossConfig(stride=1, temp_stride=2, warmup_iters=0))(agg, rgb, boxes)
    fine = foreground_logits(downsample_agg_logits(agg, 1)), frames_to_lab(rgb, 1), box_masks(boxes, None, (16, 16), 1)
    coarse = foreground_logits(downsample_agg_logits(agg, 2)), frames_to_lab(rgb, 2), box_masks(boxes, None, (8, 8), 2)
    proj = projection_loss(torch.sigmoid(fine[0]), fine[2])
    pair = pairwise_loss(*fine)
    temp = temporal_loss(*coarse)
    assert temp.item() > 0 and temp.item() != pytest.approx(temporal_loss(*fine).item())
    assert torch.allclose(parts["temp"], temp) and torch.allclose(parts["pair"], pair)
    assert torch.allclose(total, proj + pair + temp, atol=1e-6)
    # unset, the temporal term follows `stride`
    assert LossConfig(stride=2).temporal_stride == 2 and LossConfig(stride=2, temp_stride=4).temporal_stride == 4
    with pytest.raises(ConfigError, match="temp_stride"):
        LossConfig(temp_stride=0)


def naive_bootstrapped_ce(agg, labels, p):
    batch, frames = labels.shape[:2]
    per_frame = []
    for t in range(frames):
        values = []
        for b in range(batch):
            losses = []
            for y in range(labels.shape[2]):
                for x in range(labels.shape[3]):
                    logit = agg[b, t, :, y, x]
                    losses.append(-(logit[labels[b, t, y, x]] - torch.logsumexp(logit, 0)))
            losses.sort(key=lambda v: -float(v.detach()))
            k = max(1, int(len(losses) * p))
            values.append(sum(losses[:k]) / k)
        per_frame.append(sum(values) / batch)
    return per_frame


def test_oracle_losses_match_naive():
    generator = torch.Generator().manual_seed(14)
    agg = (torch.randn(2, 3, 3, 4, 5, generator=generator, dtype=D) * 2).requires_grad_(True)
    labels = torch.randint(0, 3, (2, 3, 4, 5), generator=generator)
    for p in (1.0, 0.3):
        per_frame = naive_bootstrapped_ce(agg, labels, p)
        assert torch.allclose(bootstrapped_ce(agg, labels, p, frames="sum"), sum(per_frame), atol=1e-12)
        assert torch.allclose(bootstrapped_ce(agg, labels, p, frames="mean"), sum(per_frame) / 3, atol=1e-12)
    # XMem's schedule
    assert bootstrap_p(0) == 1.0 and bootstrap_p(20_000) == 1.0 and bootstrap_p(70_000) == 0.15
    assert bootstrap_p(45_000) == pytest.approx(0.575) and bootstrap_p(10**6) == 0.15
    # dice per object and frame, ε = 1 (p = 1)
    prob = torch.softmax(agg, dim=2)[:, :, 1:].transpose(1, 2)
    target = torch.stack([(labels == i).to(D) for i in (1, 2)], dim=1)
    expected = 0.0
    for t in range(3):
        per_object = [
            1 - (1 + 2 * (prob[b, n, t] * target[b, n, t]).sum()) / (1 + prob[b, n, t].sum() + target[b, n, t].sum())
            for b in range(2)
            for n in range(2)
        ]
        expected = expected + sum(per_object) / 4
    assert torch.allclose(dice_loss(prob, target, eps=1.0, frames="sum"), expected, atol=1e-12)
    total, parts = OracleLoss(LossConfig())(agg, labels, iteration=45_000)
    assert parts["p"].item() == pytest.approx(0.575)
    assert torch.allclose(total.double(), parts["ce"].double() + parts["dice"].double())
    assert torch.allclose(parts["ce"].double(), bootstrapped_ce(agg.float(), labels, 0.575, frames="sum").double())
    assert torch.autograd.gradcheck(lambda a: bootstrapped_ce(a, labels, 0.5) + dice_loss(
        torch.softmax(a, 2)[:, :, 1:].transpose(1, 2), target), (agg,))
    # padded object slot: removed from the softmax and from the dice average
    valid = torch.tensor([[True, True], [True, False]])
    labels_valid = labels.clone()
    labels_valid[1][labels_valid[1] == 2] = 0
    masked = bootstrapped_ce(agg, labels_valid, 1.0, obj_valid=valid)
    by_hand = (
        bootstrapped_ce(agg[:1], labels_valid[:1], 1.0) + bootstrapped_ce(agg[1:, :, :2], labels_valid[1:], 1.0)
    ) / 2
    assert torch.allclose(masked, by_hand, atol=1e-12)


def test_edge_sums_visit_only_centres_and_chunking_changes_nothing(monkeypatch):
    """The colour losses visit only in-box centre pixels, in chunks: a chunk of 7 pixels (many
    chunks, partners of one pixel split across them) gives the same values and gradients as one
    chunk, and pixels outside every box get no gradient as centres."""
    import vos.losses.weak as weak

    generator = torch.Generator().manual_seed(21)
    logits = (torch.randn(2, 2, 3, 9, 10, generator=generator, dtype=D) * 2).requires_grad_(True)
    lab = smooth_lab(generator, 2, 3, 9, 10)
    box = random_boxes(generator, 2, 2, 3, 9, 10, absent=[(1, 0, 2)])
    results = []
    for chunk in (1 << 16, 7):
        monkeypatch.setattr(weak, "_CENTRE_CHUNK", chunk)
        for loss in (
            lambda: temporal_loss(logits, lab, box, spacing=2, detach="hard"),
            lambda: temporal_loss(logits, lab, box, spacing=2, detach="soft", normalize="edges"),
            lambda: pairwise_loss(logits, lab, box),
        ):
            value = loss()
            results.append((value.detach(), torch.autograd.grad(value, logits)[0]))
    for (value_one, grad_one), (value_many, grad_many) in zip(results[:3], results[3:]):
        assert value_one.item() > 0
        assert torch.allclose(value_one, value_many, atol=1e-14)
        assert torch.allclose(grad_one, grad_many, atol=1e-14)
    # every pairwise edge starts in a box: with one 2×2 box, only pixels within the dilated
    # kernel's reach (2) of it get a gradient
    small = torch.zeros_like(box)
    small[0, 0, 0, 3:5, 4:6] = 1
    grad, = torch.autograd.grad(pairwise_loss(logits, lab, small), logits)
    reach = torch.zeros_like(box)
    reach[0, 0, 0, 1:7, 2:8] = 1
    assert (grad[reach == 0] == 0).all()
    assert (grad[small > 0] != 0).all()
