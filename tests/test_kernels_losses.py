"""Triton weak-loss kernels (vos.kernels.losses) against the PyTorch reference (vos.losses), in the
Triton interpreter (TRITON_INTERPRET=1, set by conftest before triton is imported).

Values and gradients are compared in fp64 (the kernels compute in fp64 for fp64 input) to ~1e-12,
plus one fp32 check per loss. Shapes are tiny — the interpreter runs every program in Python — and
small tiles are passed so that several programs / row steps / reduction steps run.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

os.environ.setdefault("TRITON_INTERPRET", "1")
import vos.kernels.losses as losses  # noqa: E402

from vos.losses import (  # noqa: E402
    LossConfig,
    WeakLoss,
    box_masks,
    frames_to_lab,
    pairwise_loss,
    projection_loss,
    rgb_to_lab,
    temporal_loss,
    temporal_matches,
)
from vos import backends  # noqa: E402

D = torch.float64
SMALL = losses.LossBlocks(pixels=16, lab=64, rows=2, images=4)  # several programs / steps
ONE = losses.LossBlocks(pixels=64, lab=64, rows=4, images=4)  # one pixel block per frame (faster)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def boxes(generator, batch, objects, frames, height, width, absent=()):
    """Random box masks B×N×T×H×W (fp64), some touching the image border; `absent` (b, n, t) empty."""
    lo = torch.randint(0, 3, (batch, objects, frames, 2), generator=generator)
    size = torch.randint(1, 6, (batch, objects, frames, 2), generator=generator)
    xyxy = torch.cat((lo, lo + size), dim=-1).to(torch.float32)
    valid = torch.ones(batch, objects, frames, dtype=torch.bool)
    for index in absent:
        valid[index] = False
    return box_masks(xyxy, valid, (height, width)).to(D)


def lab_colours(generator, batch, frames, height, width, noise=1.5, quantised=False):
    """Lab-like B×T×3×H×W with a few colour regions, so the thresholds select some edges; quantised:
    values in {0, 1} — many exactly equal similarities (ties)."""
    if quantised:
        return torch.randint(0, 2, (batch, frames, 3, height, width), generator=generator).to(D)
    base = torch.rand(batch, 1, 3, 2, 2, generator=generator, dtype=D) * 20
    base = base.repeat_interleave((height + 1) // 2, -2)[..., :height, :]
    base = base.repeat_interleave((width + 1) // 2, -1)[..., :width]
    return base + torch.rand(batch, frames, 3, height, width, generator=generator, dtype=D) * noise


def assert_same(kernel_value, ref_value, inputs, atol=1e-12):
    assert torch.allclose(kernel_value, ref_value, atol=atol, rtol=0), (kernel_value.item(), ref_value.item())
    grad_k, = torch.autograd.grad(kernel_value, inputs)
    grad_r, = torch.autograd.grad(ref_value, inputs)
    assert torch.allclose(grad_k, grad_r, atol=atol, rtol=0), (grad_k - grad_r).abs().max().item()
    return grad_k


# ------------------------------------------------------------------------------------------------ Lab


def test_lab_matches_skimage_and_reference():
    skcolor = pytest.importorskip("skimage.color")
    levels = torch.arange(0, 256, 5, dtype=torch.uint8)
    r, g, b = torch.meshgrid(levels, levels, levels, indexing="ij")
    grid = torch.stack((r, g, b)).reshape(3, 52, -1)  # every combination of 52 levels
    big = losses.LossBlocks(lab=8192)
    ours = losses.rgb_to_lab(grid, blocks=big)
    assert ours.dtype == torch.float32 and ours.shape == grid.shape
    reference = skcolor.rgb2lab(grid.permute(1, 2, 0).numpy())
    assert np.abs(ours.permute(1, 2, 0).numpy() - reference).max() < 1e-4
    # float input near both thresholds of the formula, leading dims, fp64 stays fp64
    values = torch.tensor([0.0, 0.04045, 0.0405, 0.5, 1.0, 0.0031, 0.2], dtype=D)
    rgb = torch.stack(torch.meshgrid(values, values, values, indexing="ij")).reshape(1, 3, 7, 49)
    ours = losses.rgb_to_lab(rgb, blocks=SMALL)
    assert ours.dtype == D and torch.allclose(ours, rgb_to_lab(rgb), atol=1e-10, rtol=0)
    # fused area average at the loss stride, uint8 frames B×T×3×H×W
    generator = torch.Generator().manual_seed(1)
    frames = torch.randint(0, 256, (2, 3, 3, 8, 12), generator=generator, dtype=torch.uint8)
    ours = losses.frames_to_lab(frames, 4, blocks=SMALL)
    assert ours.shape == (2, 3, 3, 2, 3) and ours.dtype == torch.float32
    assert torch.allclose(ours, frames_to_lab(frames, 4), atol=5e-5, rtol=0)
    strided = frames.transpose(-1, -2).contiguous().transpose(-1, -2)  # non-contiguous input
    assert torch.allclose(losses.frames_to_lab(strided, 2, blocks=SMALL), frames_to_lab(frames, 2), atol=5e-5, rtol=0)


# ----------------------------------------------------------------------------------------- projection


@pytest.mark.parametrize("layout", ["stacked", "per_image"])
def test_projection_matches_reference_with_ties_and_absent_objects(layout):
    generator = torch.Generator().manual_seed(4)
    prob = torch.rand(2, 2, 3, 5, 6, generator=generator, dtype=D)
    prob[0, 0, 0, 1, :3] = 0.9  # tied row maxima
    prob[0, 0, 0, 1, 5] = 0.9
    prob[1, 1, 1, :, 2] = 0.95  # a column of tied maxima
    prob[:, :, :, :, 4] = 0.0  # an all-zero column: every image ties (padded slots too, "stacked")
    prob.requires_grad_(True)
    box = boxes(generator, 2, 2, 3, 5, 6, absent=[(0, 1, 2), (1, 0, 0)])
    for valid in (None, torch.tensor([[True, False], [True, True]])):
        ours = projection_loss(prob, box, eps=1e-3, layout=layout, obj_valid=valid, backend="triton")
        ref = projection_loss(prob, box, eps=1e-3, layout=layout, obj_valid=valid, backend="torch")
        grad = assert_same(ours, ref, prob)
        assert grad.abs().sum() > 0
    # the kernel module directly, several row steps and reduction steps, fp32
    prob32 = prob.detach().float().requires_grad_(True)
    ours = losses.projection_loss(prob32, box.float(), layout=layout, blocks=SMALL)
    ref = projection_loss(prob32, box.float(), layout=layout, backend="torch")
    assert ours.dtype == torch.float32
    assert_same(ours, ref, prob32, atol=1e-6)


# ------------------------------------------------------------------------------------------- pairwise


@pytest.mark.parametrize("kernel,dilation,normalize", [(3, 2, "pixels"), (3, 2, "edges"), (5, 1, "pixels")])
def test_pairwise_matches_reference(kernel, dilation, normalize):
    generator = torch.Generator().manual_seed(5)
    logits = (torch.randn(2, 2, 2, 6, 7, generator=generator, dtype=D) * 2).requires_grad_(True)
    lab = lab_colours(generator, 2, 2, 6, 7)
    box = boxes(generator, 2, 2, 2, 6, 7, absent=[(1, 1, 0)])
    kwargs = dict(kernel=kernel, dilation=dilation, gamma=2.0, tau=0.3, normalize=normalize)
    for valid in (None, torch.tensor([[True, True], [False, True]])):
        ours = losses.pairwise_loss(logits, lab, box, obj_valid=valid, blocks=SMALL, **kwargs)
        ref = pairwise_loss(logits, lab, box, obj_valid=valid, backend="torch", **kwargs)
        assert ref.item() > 0
        assert_same(ours, ref, logits)


def test_pairwise_borders_empty_boxes_and_fp32():
    # uniform colour, a 1-pixel box in the corner: only 3 neighbours at distance 2 are in the image
    lab = torch.zeros(1, 1, 3, 5, 5, dtype=D)
    box = torch.zeros(1, 1, 1, 5, 5, dtype=D)
    box[..., 0, 0] = 1
    logits = torch.zeros(1, 1, 1, 5, 5, dtype=D, requires_grad=True)
    ours = pairwise_loss(logits, lab, box, backend="triton")
    assert torch.isclose(ours, torch.tensor(3 * np.log(2) / 25, dtype=D))
    assert_same(ours, pairwise_loss(logits, lab, box, backend="torch"), logits)
    # no centre in a box (absent object): zero loss, zero gradient
    empty = losses.pairwise_loss(logits, lab, torch.zeros_like(box), normalize="edges")
    assert empty.item() == 0 and torch.autograd.grad(empty, logits)[0].abs().sum() == 0
    generator = torch.Generator().manual_seed(6)
    logits = torch.randn(1, 2, 2, 6, 6, generator=generator).requires_grad_(True)
    lab = lab_colours(generator, 1, 2, 6, 6).float()
    box = boxes(generator, 1, 2, 2, 6, 6).float()
    ours = losses.pairwise_loss(logits, lab, box, blocks=ONE)
    assert ours.dtype == torch.float32
    assert_same(ours, pairwise_loss(logits, lab, box, backend="torch"), logits, atol=1e-6)


# ------------------------------------------------------------------------------------------- temporal


def test_temporal_matches_agree_including_ties():
    generator = torch.Generator().manual_seed(7)
    for quantised, blocks in ((False, SMALL), (True, ONE)):
        lab = lab_colours(generator, 2, 3, 7, 8, quantised=quantised)
        ours = losses.temporal_matches(lab, patch=3, candidates=3, spacing=2, top_k=4, blocks=blocks)
        ref = temporal_matches(lab, patch=3, candidates=3, spacing=2, top_k=4)
        assert ours.shape == ref.shape and torch.equal(ours, ref)
        assert 0 < ref.sum() < ref.numel()
    # 5×5 candidates (25 bits), default patch, the default spacing
    lab = lab_colours(generator, 1, 2, 6, 7, quantised=True)
    ours = losses.temporal_matches(lab, candidates=5, spacing=1, top_k=7, blocks=ONE)
    assert torch.equal(ours, temporal_matches(lab, candidates=5, spacing=1, top_k=7))


@pytest.mark.parametrize(
    "target,detach,normalize",
    [("patch", "soft", "pixels"), ("patch", "hard", "edges"), ("center", "none", "edges"), ("center", "hard", "pixels")],
)
def test_temporal_matches_reference(target, detach, normalize):
    generator = torch.Generator().manual_seed(8)
    logits = (torch.randn(1, 2, 3, 6, 7, generator=generator, dtype=D) * 2).requires_grad_(True)
    lab = lab_colours(generator, 1, 3, 6, 7, noise=1.0)
    box = boxes(generator, 1, 2, 3, 6, 7, absent=[(0, 1, 1)])
    kwargs = dict(patch=3, candidates=3, spacing=2, top_k=3, tau=0.05, gamma=2.0, target=target, detach=detach,
                  normalize=normalize)
    blocks = SMALL if target == "center" else ONE
    for valid in (None, torch.tensor([[False, True]])):
        ours = losses.temporal_loss(logits, lab, box, obj_valid=valid, blocks=blocks, **kwargs)
        ref = temporal_loss(logits, lab, box, obj_valid=valid, backend="torch", **kwargs)
        assert ref.item() > 0
        assert_same(ours, ref, logits)


def test_temporal_cyclic_tubes_ties_and_detach_identity():
    generator = torch.Generator().manual_seed(9)
    # T = 2 (the pairs (0, 1) and (1, 0)), default grid, quantised colours: many tied similarities
    logits = torch.randn(1, 1, 2, 6, 6, generator=generator, dtype=D).requires_grad_(True)
    lab = lab_colours(generator, 1, 2, 6, 6, quantised=True)
    box = boxes(generator, 1, 1, 2, 6, 6)
    assert_same(temporal_loss(logits, lab, box, backend="triton"), temporal_loss(logits, lab, box, backend="torch"), logits)
    # T = 8 cyclic tube (frame 7 pairs with frame 0)
    logits = torch.randn(1, 1, 8, 5, 5, generator=generator, dtype=D).requires_grad_(True)
    lab = lab_colours(generator, 1, 8, 5, 5, noise=1.0)
    box = boxes(generator, 1, 1, 8, 5, 5)
    values, grads = {}, {}
    for mode in ("none", "soft"):
        values[mode] = losses.temporal_loss(logits, lab, box, spacing=2, detach=mode, blocks=ONE)
        ref = temporal_loss(logits, lab, box, spacing=2, detach=mode, backend="torch")
        grads[mode] = assert_same(values[mode], ref, logits)
    # eq. 3.22 on the kernel path: the value of the symmetric loss and exactly half its gradient
    assert torch.allclose(values["soft"], values["none"], atol=1e-14)
    assert grads["none"].abs().sum() > 0 and torch.allclose(grads["soft"], 0.5 * grads["none"], atol=1e-14)


def test_temporal_absent_objects_single_frame_and_fp32():
    generator = torch.Generator().manual_seed(12)
    logits = torch.randn(1, 2, 2, 6, 6, generator=generator, dtype=D).requires_grad_(True)
    lab = lab_colours(generator, 1, 2, 6, 6)
    box = torch.zeros(1, 2, 2, 6, 6, dtype=D)
    box[0, 0, 0, 1:4, 1:4] = 1  # object 0 boxed in frame 0 only; object 1 absent everywhere
    ours = losses.temporal_loss(logits, lab, box, blocks=ONE)
    grad = assert_same(ours, temporal_loss(logits, lab, box, backend="torch"), logits)
    assert grad[0, 1].abs().sum() == 0 and grad[0, 0, 1, 1:4, 1:4].abs().sum() > 0
    single = losses.temporal_loss(logits[:, :, :1], lab[:, :1], box[:, :, :1])
    assert single.item() == 0 and single.requires_grad
    logits32 = logits.detach().float().requires_grad_(True)
    ours = losses.temporal_loss(logits32, lab.float(), box.float(), target="center", blocks=ONE)
    assert ours.dtype == torch.float32
    assert_same(ours, temporal_loss(logits32, lab.float(), box.float(), target="center", backend="torch"), logits32,
                atol=1e-6)


# ------------------------------------------------------------------------------------- whole criterion


def test_weak_loss_triton_backend_matches_torch():
    assert backends.kernel_modules()[0]["losses"] is losses  # the registry imports the real kernels
    generator = torch.Generator().manual_seed(13)
    # Default tiles (blocks=None, what runs on a GPU): the 20×20 loss maps span 4 blocks of 128 pixels.
    batch, frames, objects, size = 1, 3, 2, 40
    agg = torch.randn(batch, frames, objects + 1, size, size, generator=generator, requires_grad=True)
    rgb = torch.randint(0, 256, (batch, frames, 3, size, size), generator=generator, dtype=torch.uint8)
    xyxy = torch.tensor([2.0, 3.0, 31.0, 34.0]).expand(batch, objects, frames, 4).clone()
    box_valid = torch.ones(batch, objects, frames, dtype=torch.bool)
    box_valid[0, 1, 2] = False
    results = {}
    for backend in ("torch", "triton"):
        criterion = WeakLoss(LossConfig(stride=2, warmup_iters=0, backend=backend))
        total, parts = criterion(agg, rgb, xyxy, box_valid, obj_valid=torch.tensor([[True, True]]))
        results[backend] = (parts, torch.autograd.grad(total, agg)[0])
    for key in ("proj", "pair", "temp"):
        assert torch.allclose(results["triton"][0][key], results["torch"][0][key], atol=1e-5), key
    assert torch.allclose(results["triton"][1], results["torch"][1], atol=1e-6)


def test_option_errors():
    # called directly the kernels refuse bad options with ValueError (vos validates the config first)
    logits = torch.zeros(1, 1, 2, 4, 4)
    lab = torch.zeros(1, 2, 3, 4, 4)
    box = torch.ones(1, 1, 2, 4, 4)
    with pytest.raises(ValueError, match="layout"):
        losses.projection_loss(logits, box, layout="tiled")
    with pytest.raises(ValueError, match="normalize"):
        losses.pairwise_loss(logits, lab, box, normalize="area")
    with pytest.raises(ValueError, match="temp_detach"):
        losses.temporal_loss(logits, lab, box, detach="half")
    with pytest.raises(ValueError, match="temp_candidates"):
        losses.temporal_loss(logits, lab, box, candidates=9)
    with pytest.raises(ValueError, match="power of two"):
        losses.LossBlocks(pixels=48)
