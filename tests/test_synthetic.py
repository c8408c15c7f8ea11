import hashlib
import json

import numpy as np
import pytest
import torch
from PIL import Image

from vos.data.datasets import available_splits, open_dataset
from vos.data.io import DAVIS_PALETTE, read_mask
from vos.data.synthetic import SyntheticSpec, _make_video, generate


def _digest(root):
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(str(path.relative_to(root)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def test_same_seed_gives_identical_files(tmp_path):
    spec = SyntheticSpec(videos=3, frames=4, height=48, width=64, seed=7)
    generate(tmp_path / "a", spec)
    generate(tmp_path / "b", spec)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    generate(tmp_path / "c", SyntheticSpec(videos=3, frames=4, height=48, width=64, seed=8))
    assert _digest(tmp_path / "a") != _digest(tmp_path / "c")


def test_davis_layout_and_disjoint_splits(synthetic_root):
    root = synthetic_root
    train = (root / "ImageSets/2017/train.txt").read_text().split()
    val = (root / "ImageSets/2017/val.txt").read_text().split()
    assert train and val and not set(train) & set(val)
    assert sorted(train + val) == sorted(p.name for p in (root / "JPEGImages/480p").iterdir())
    for name in train + val:
        frames = sorted((root / "JPEGImages/480p" / name).glob("*.jpg"))
        masks = sorted((root / "Annotations/480p" / name).glob("*.png"))
        assert [f.stem for f in frames] == [m.stem for m in masks] == [f"{t:05d}" for t in range(6)]
    assert available_splits(root) == ["train", "val"]


def test_annotations_read_by_independent_reader(synthetic_root):
    """Plain PIL + numpy, as the DAVIS toolkit reads masks: palette mode, ids 0..N, DAVIS colours."""
    palette = np.frombuffer(DAVIS_PALETTE, dtype=np.uint8).reshape(256, 3)
    assert palette[1].tolist() == [128, 0, 0] and palette[2].tolist() == [0, 128, 0] and palette[3].tolist() == [128, 128, 0]
    for video in sorted((synthetic_root / "Annotations/480p").iterdir()):
        ids = set()
        for png in sorted(video.glob("*.png")):
            img = Image.open(png)
            assert img.mode == "P"
            assert np.frombuffer(bytes(img.getpalette()[:12]), np.uint8).tolist() == palette[:4].flatten().tolist()
            ids |= set(np.unique(np.array(img)).tolist())
        first = set(np.unique(np.array(Image.open(sorted(video.glob("*.png"))[0]))).tolist())
        assert 0 in ids and max(ids) <= 3
        # every object is visible on the first frame (DAVIS semi-supervised convention)
        assert first - {0} == set(range(1, max(ids) + 1))


def test_reader_round_trip_matches_rendered_masks(tmp_path):
    spec = SyntheticSpec(videos=2, frames=5, height=48, width=80, seed=11)
    generate(tmp_path, spec)
    dataset = open_dataset(tmp_path, split="train")
    video = dataset.videos[0]
    index = int(video.name.removeprefix("synth"))
    _, frames = _make_video(spec, index, mid_video=False)
    assert len(video.frames) == len(video.annotations) == 5
    for t, (_, rendered) in enumerate(frames):
        assert torch.equal(read_mask(video.annotations[t]), rendered)


def test_fill_ratio_in_range(tmp_path):
    summary = generate(tmp_path, SyntheticSpec(videos=12, frames=8, height=96, width=160, seed=0))
    assert 0.45 <= summary["fill_ratio"] <= 0.70


def test_youtube_layout_with_mid_video_objects(tmp_path):
    spec = SyntheticSpec(videos=16, frames=10, height=48, width=80, seed=5, layout="youtube")
    generate(tmp_path, spec)
    meta = json.loads((tmp_path / "valid/meta.json").read_text())["videos"]
    valid = open_dataset(tmp_path, split="valid")
    train = open_dataset(tmp_path, split="train")
    assert valid.layout == "youtube" and len(valid) == 4 and len(train) == 12
    assert all(len(v.annotations) == v.num_frames for v in train.videos)
    assert [f.name for f in train.videos[0].frames[:3]] == ["00000.jpg", "00005.jpg", "00010.jpg"]
    mid_video = 0
    for video in valid.videos:
        first = {}
        for t, path in sorted(video.annotations.items()):
            for obj in torch.unique(read_mask(path)).tolist():
                if obj:
                    assert obj not in first, "an object is annotated again after its first appearance"
                    first[obj] = t
        objects = meta[video.name]["objects"]
        assert set(first) == {int(k) for k in objects}
        for k, t in first.items():
            assert objects[str(k)]["frames"][0] == f"{5 * t:05d}"
        mid_video += sum(t > 0 for t in first.values())
    all_meta = json.loads((tmp_path / "train/meta.json").read_text())["videos"]
    mid_video += sum(obj["frames"][0] != "00000" for v in all_meta.values() for obj in v["objects"].values())
    assert mid_video > 0


@pytest.mark.parametrize("split", ["nope"])
def test_missing_split_file_is_a_clear_error(synthetic_root, split):
    from vos.errors import DataError

    with pytest.raises(DataError, match="ImageSets/2017/nope.txt"):
        open_dataset(synthetic_root, split=split)
