"""`vos analyze` (Table 3.1, Fig. A.2), the box-of-every-frame baseline, and trainable BN statistics."""

import json

import pytest
import torch
from typer.testing import CliRunner

from cli import app
from vos.losses.analysis import _clip_consistency, fill_ratios, histogram
from vos.data.io import read_mask, write_image, write_mask
from vos.eval.baselines import filled_boxes, write_box_predictions
from vos.losses.config import LossConfig


def _tiny_davis(root, masks: list[torch.Tensor]):
    """One video 'v' with the given H×W id masks (and grey frames) in DAVIS layout, val split."""
    for t, ids in enumerate(masks):
        write_image(root / "JPEGImages" / "480p" / "v" / f"{t:05d}.jpg", torch.full((3, *ids.shape), 128, dtype=torch.uint8))
        write_mask(root / "Annotations" / "480p" / "v" / f"{t:05d}.png", ids)
    (root / "ImageSets" / "2017").mkdir(parents=True)
    (root / "ImageSets" / "2017" / "val.txt").write_text("v\n")


def test_fill_ratios_and_histogram(tmp_path):
    ids = torch.zeros(20, 30, dtype=torch.uint8)
    ids[2:6, 2:6] = 1  # a full square: fills its box
    ids[10:19, 10:19] = 2
    ids[10:19, 10:19][torch.ones(9, 9).triu(1).bool()] = 0  # a triangle: 45 of 81 pixels
    ids[0, 29] = 255  # void is not an object
    _tiny_davis(tmp_path, [ids])
    ratios = sorted(fill_ratios(tmp_path, split="val"))
    assert ratios == pytest.approx([45 / 81, 1.0])
    edges, counts = histogram(ratios, bins=4)
    assert edges == [0.0, 0.25, 0.5, 0.75] and counts == [0, 0, 1, 1]  # 1.0 falls in the closed last bin


def test_cli_fill_writes_png_and_counts(synthetic_root, tmp_path):
    result = CliRunner().invoke(app, ["analyze", "fill", str(synthetic_root), "--split", "train", "--out", str(tmp_path / "fill.png")])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "fill.json").read_text())
    assert (tmp_path / "fill.png").stat().st_size > 0
    assert sum(summary["counts"]) == summary["count"] > 0 and 0.2 < summary["mean"] < 0.9


def _static_clip(frames: int = 2, size: int = 16):
    """Left half red, right half blue, the object = the left half; nothing moves."""
    rgb = torch.zeros(frames, 3, size, size)
    rgb[:, 0, :, : size // 2] = 1.0
    rgb[:, 2, :, size // 2 :] = 1.0
    masks = torch.zeros(frames, 1, size, size)
    masks[:, 0, :, : size // 2] = 1.0
    return {"rgb": rgb, "masks": masks, "object_valid": torch.tensor([True])}


def test_consistency_counts_on_a_two_colour_clip():
    losses = LossConfig(stride=1, temp_candidates=3, temp_spacing=1, temp_top_k=9)
    proportion, precision = _clip_consistency(_static_clip(), (0.0, 0.5), losses)
    size, k = 16, 9
    # τ = 0 keeps every in-image candidate: all 9 offsets inside, minus the border's missing ones
    in_image = sum((size - abs(dy)) * (size - abs(dx)) for dy in (-1, 0, 1) for dx in (-1, 0, 1))
    assert proportion[0].item() == pytest.approx(in_image / (k * size * size))
    # across the colour edge (columns 7|8) candidates change label: they lower τ = 0's precision …
    assert precision[0].item() < 1.0
    # … while a high threshold keeps only same-colour (hence same-label) matches
    assert precision[1].item() == 1.0 and 0.0 < proportion[1].item() < proportion[0].item()


def test_cli_consistency_table(synthetic_root, tmp_path):
    result = CliRunner().invoke(app, [
        "analyze", "consistency", str(synthetic_root), "--clips", "2", "--set", "data.size=32",
        "--set", "data.num_frames=3", "--set", "data.num_workers=0", "--out", str(tmp_path / "c.json"),
    ])
    assert result.exit_code == 0, result.output
    table = json.loads((tmp_path / "c.json").read_text())
    assert table["taus"] == [0.0, 0.005, 0.01, 0.05, 0.1, 0.2, 0.3]
    assert table["proportion"] == sorted(table["proportion"], reverse=True)  # a higher τ keeps fewer
    # 8×8 loss pixels with a radius-3 grid: the border loses many candidates, so well below 100 %
    assert 0.5 < table["proportion"][0] <= 1.0 and "precision" in result.output


def test_cli_analyze_missing_root_is_one_line(tmp_path):
    result = CliRunner().invoke(app, ["analyze", "fill", str(tmp_path / "nope")])
    assert result.exit_code == 1 and result.output.startswith("error:") and "Traceback" not in result.output


def test_filled_boxes_keep_small_objects_visible(tmp_path):
    ids = torch.zeros(12, 12, dtype=torch.uint8)
    ids[0:10, 0] = 1
    ids[0, 0:10] = 1  # an L: its box is 10×10
    ids[4:6, 4:6] = 2  # inside object 1's box
    ids[11, 11] = 255
    boxes = filled_boxes(ids)
    assert (boxes[4:6, 4:6] == 2).all() and int((boxes == 1).sum()) == 100 - 4 and int((boxes == 255).sum()) == 0
    _tiny_davis(tmp_path, [ids])
    assert write_box_predictions(tmp_path, tmp_path / "pred", split="val") == ["v"]
    assert torch.equal(read_mask(tmp_path / "pred" / "v" / "00000.png"), boxes)


def test_bn_statistics_update_switches_frozen_layers():
    from vos.model.resnet import FrozenBatchNorm2d, update_batchnorm_statistics_

    layers = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), FrozenBatchNorm2d(4))
    x = torch.randn(2, 3, 5, 5) * 3 + 1
    layers.train()
    assert not layers[1].training  # frozen: train() is ignored, running stats untouched
    layers(x)
    assert torch.equal(layers[1].running_mean, torch.zeros(4))
    assert update_batchnorm_statistics_(layers) == 1
    layers.train()
    out = layers(x)
    assert layers[1].training and not torch.equal(layers[1].running_mean, torch.zeros(4))
    assert out.mean(dim=(0, 2, 3)).abs().max() < 1e-5  # normalised with the batch statistics
    layers.eval()
    assert not layers[1].training
