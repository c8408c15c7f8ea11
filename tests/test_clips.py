"""Training clips: sampling, augmentation, boxes after augmentation, supervision modes."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from vos.data.augment import affine_matrix, transform_boxes, warp
from vos.data.boxes import masks_to_boxes
from vos.data.clips import ClipDataset, DrawSampler, collate, max_skip_at, sample_frame_indices
from vos.data.config import DataConfig, DatasetSpec
from vos.errors import DataError


def _config(root, **kw):
    return DataConfig(datasets=[DatasetSpec(kind="synthetic", root=str(root), split="train")], size=64, num_frames=4, **kw)


def test_box_supervision_batch_has_no_mask_tensor(synthetic_root):
    """Box mode: only frames and boxes leave the loader — no tensor of mask shape at all."""
    ds = ClipDataset(_config(synthetic_root), seed=0, total_draws=10)
    batch = collate([ds[i] for i in range(3)])
    assert set(batch) == {"rgb", "boxes", "box_valid", "object_valid", "name"}
    for key, value in batch.items():
        if isinstance(value, torch.Tensor) and key != "rgb":
            assert value.shape[-2:] != (64, 64), key
    assert batch["rgb"].shape == (3, 4, 3, 64, 64)
    assert batch["boxes"].shape == (3, 4, 3, 4)


def test_mask_mode_boxes_are_the_tight_boxes_of_augmented_masks(synthetic_root):
    ds = ClipDataset(_config(synthetic_root, supervision="mask", first_frame_init="mask"), seed=0, total_draws=10)
    for draw in range(4):
        s = ds[draw]
        boxes, valid = masks_to_boxes(s["masks"])
        assert torch.equal(boxes, s["boxes"]) and torch.equal(valid, s["box_valid"])
        assert s["object_valid"].any()
        assert ((s["masks"].sum((-1, -2)) > 0) == s["box_valid"]).all()


def test_first_mask_mode_gives_only_the_first_frame_mask(synthetic_root):
    ds = ClipDataset(_config(synthetic_root, supervision="first_mask"), seed=0, total_draws=10)
    s = ds[0]
    assert "masks" not in s and s["first_mask"].shape == (3, 64, 64)
    boxes, _ = masks_to_boxes(s["first_mask"])
    assert torch.equal(boxes[s["object_valid"]], s["boxes"][0][s["object_valid"]])


def test_a_draw_is_reproducible(synthetic_root):
    ds = ClipDataset(_config(synthetic_root), seed=5, total_draws=10)
    a, b = ds[7], ds[7]
    assert a["name"] == b["name"] and torch.equal(a["rgb"], b["rgb"]) and torch.equal(a["boxes"], b["boxes"])
    assert not torch.equal(ds[8]["rgb"], a["rgb"])


def test_frame_sampling_respects_max_jump():
    rng = np.random.default_rng(0)
    for _ in range(200):
        idx = sample_frame_indices(rng, 50, 8, 3)
        ordered = sorted(idx)
        assert len(set(idx)) == 8 and idx in (ordered, ordered[::-1])
        # XMem's rule: each new frame lies within max_jump of a frame taken before
        assert max(b - a for a, b in zip(ordered, ordered[1:])) <= 3
    short = sample_frame_indices(rng, 3, 5, 2)
    assert len(short) == 5 and set(short) == {0, 1, 2}


def test_max_skip_curriculum():
    cfg = DataConfig(max_skip=(5, 10, 15, 5), max_skip_steps=(0.1, 0.3, 0.8, 1.0))
    assert [max_skip_at(cfg, p) for p in (0.0, 0.2, 0.5, 0.9, 1.0)] == [5, 10, 15, 5, 5]


def test_draw_sampler_resumes_and_splits_ranks():
    full = list(DrawSampler(0, 4, 2))
    assert full == list(range(8))
    assert list(DrawSampler(2, 4, 2)) == full[4:]
    r0, r1 = list(DrawSampler(0, 2, 2, rank=0, world_size=2)), list(DrawSampler(0, 2, 2, rank=1, world_size=2))
    assert not set(r0) & set(r1) and sorted(r0 + r1) == list(range(8))


def test_box_transform_matches_warped_mask():
    """A box pushed through the affine map contains the box of the warped mask it came from."""
    mask = torch.zeros(1, 1, 40, 60)
    mask[..., 10:25, 20:45] = 1
    box, valid = masks_to_boxes(mask[0])
    inv = affine_matrix((40, 60), 64, angle=12.0, shear=5.0, scale=0.95, flip=True)
    warped = warp(mask, inv[None], 64)[0] > 0.5
    wbox, _ = masks_to_boxes(warped.float())
    tbox, tvalid = transform_boxes(box, valid, inv, 64)
    assert tvalid.all()
    assert (tbox[0, :2] <= wbox[0, :2]).all() and (tbox[0, 2:] >= wbox[0, 2:]).all()
    assert (tbox[0, 2:] - tbox[0, :2] - (wbox[0, 2:] - wbox[0, :2])).abs().max() <= 4


def test_box_only_source(tmp_path):
    video = tmp_path / "boxes" / "v1"
    video.mkdir(parents=True)
    boxes = {}
    for t in range(5):
        Image.fromarray(np.full((48, 64, 3), 40 * t, np.uint8)).save(video / f"{t:05d}.jpg")
        boxes[f"{t:05d}"] = [10 + t, 8, 30 + t, 28]
    (video / "boxes.json").write_text(json.dumps({"objects": {"1": boxes}}))
    cfg = DataConfig(datasets=[DatasetSpec(kind="boxes", root=str(tmp_path / "boxes"))], size=32, num_frames=3)
    s = ClipDataset(cfg, seed=0, total_draws=4)[0]
    assert set(s) == {"rgb", "boxes", "box_valid", "object_valid", "name"}
    assert s["box_valid"][:, 0].all() and not s["box_valid"][:, 1:].any()
    w = s["boxes"][:, 0, 2] - s["boxes"][:, 0, 0]
    assert ((w > 8) & (w < 16)).all()  # a 20-px box at 64→32 scale, slightly grown by rotation
    bad = DataConfig(datasets=[DatasetSpec(kind="boxes", root=str(tmp_path / "boxes"))], supervision="mask")
    with pytest.raises(DataError, match="box-only data cannot give masks"):
        ClipDataset(bad, seed=0, total_draws=4)


def test_static_pseudo_videos(tmp_path):
    root = tmp_path / "static"
    root.mkdir()
    img = np.random.default_rng(0).integers(0, 255, (40, 50, 3), dtype=np.uint8)
    mask = np.zeros((40, 50), np.uint8)
    mask[10:30, 15:35] = 255
    Image.fromarray(img).save(root / "a.jpg")
    Image.fromarray(mask, mode="L").save(root / "a.png")
    cfg = DataConfig(datasets=[DatasetSpec(kind="static", root=str(root))], size=48, num_frames=3, supervision="mask")
    s = ClipDataset(cfg, seed=0, total_draws=2)[0]
    assert s["masks"].shape == (3, 3, 48, 48)
    assert s["box_valid"][:, 0].all()
    # the three copies are deformed differently
    assert not torch.equal(s["masks"][0, 0], s["masks"][1, 0])


def test_clip_whose_objects_all_leave_is_redrawn(synthetic_root, monkeypatch):
    """A clip with no object left in its first frame after augmentation never reaches training."""
    ds = ClipDataset(_config(synthetic_root), seed=0, total_draws=10)
    calls = []
    original = ClipDataset._geometry

    def shift_out_first(self, rng, hw, strong, flip=False, window=None):
        matrix = original(self, rng, hw, strong, flip, window)
        calls.append(1)
        if len(calls) <= 4:  # the first clip's frames: everything far outside the image
            matrix = matrix.clone()
            matrix[:2, 2] += 10_000
        return matrix

    monkeypatch.setattr(ClipDataset, "_geometry", shift_out_first)
    sample = ds[0]
    assert len(calls) > 4 and sample["object_valid"].any()


def test_crop_geometry_keeps_the_frame_scale(synthetic_root):
    """Crop mode: one size×size window per clip at the frame's own scale (XMem's crops); squash mode
    resizes the whole 64×96 frame to size×size."""
    crop = ClipDataset(_config(synthetic_root, geometry="crop"), seed=0, total_draws=10)
    squash = ClipDataset(_config(synthetic_root), seed=0, total_draws=10)
    rng = np.random.default_rng(0)
    windows = [crop._window(rng, (64, 96)) for _ in range(50)]
    assert all(w[2] == 64 and 0 <= w[0] <= 32 and w[1] == 0 for w in windows)  # the 64-pixel side fits once
    assert len({round(w[0], 3) for w in windows}) > 40  # random horizontal placement
    for dataset, expected in ((crop, 1.0), (squash, 96 * 64 / 64**2)):
        frames = dataset._sequence_geometry(np.random.default_rng(1), (64, 96))
        dets = [abs(float(torch.linalg.det(m[:2, :2]))) for m in frames]
        assert all(0.85 * expected < d < 1.15 * expected for d in dets)  # source pixels per output pixel
    sample = crop[0]
    assert sample["rgb"].shape == (4, 3, 64, 64) and sample["object_valid"].any()
