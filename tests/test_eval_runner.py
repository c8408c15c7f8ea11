"""The evaluation loop end to end on tiny synthetic sets, with a random small model.

The predictions of a random model are garbage; what is tested is the bookkeeping: which frames are
written where and at which resolution, what the model is given (masks / boxes on first appearance),
the reports, resume, shards, submissions and the dataset layouts.
"""

from __future__ import annotations

import csv
import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vos.data.io import list_frames, read_mask
from vos.data.synthetic import SyntheticSpec, generate
from vos.errors import VosError
from vos.eval import runner
from vos.eval.runner import evaluate, parse_shard
from vos.eval.sources import x3_order

SYNTH = SyntheticSpec(videos=4, frames=6, height=64, width=96, seed=5, val_fraction=0.75)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("eval_synthetic")
    generate(path, SYNTH)
    return path


@pytest.fixture(scope="module")
def val_names(root) -> list[str]:
    return (root / "ImageSets" / "2017" / "val.txt").read_text().split()


@pytest.fixture(scope="module")
def mask_run(root, model, tmp_path_factory):
    """The whole synthetic val split, mask init, native size: (out folder, report)."""
    out = tmp_path_factory.mktemp("eval_mask")
    return out, evaluate("synthetic", root, model, out, init="mask", size=-1, progress=False, workers=1)


def _gt(root: Path, seq: str) -> list[np.ndarray]:
    return [np.asarray(Image.open(p)) for p in list_frames(root / "Annotations" / "480p" / seq)]


def _pred(out: Path, seq: str) -> dict[str, np.ndarray]:
    return {p.stem: np.asarray(Image.open(p)) for p in sorted((out / "predictions" / seq).glob("*.png"))}


def _mtimes(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}


def test_mask_init_end_to_end(root, mask_run, val_names):
    out, report = mask_run
    assert len(val_names) == 3
    for seq in val_names:
        gts = _gt(root, seq)
        preds = _pred(out, seq)
        frames = list_frames(root / "JPEGImages" / "480p" / seq)
        assert list(preds) == [f.stem for f in frames]  # named like the input frames, every frame
        with Image.open(out / "predictions" / seq / "00000.png") as img:
            assert img.mode == "P" and img.size == (SYNTH.width, SYNTH.height)
        # Mask init at native size: the first frame's prediction is the given mask exactly.
        assert np.array_equal(preds["00000"], gts[0])
        marker = json.loads((out / "done" / f"{seq}.json").read_text())
        assert marker["frames_saved"] == marker["frames_processed"] == len(frames)
    assert set(report["sequences"]) == set(val_names)
    assert report["global"]["num_sequences"] == 3
    assert 0 <= report["global"]["J&F-Mean"] <= 1
    assert report["init"]["mode"] == "mask" and report["init"]["frame0_IoU"] == 1.0
    assert report["runtime"]["frames"] == 18
    # the run's FPS is its frames over the model-step seconds the sequences recorded
    seconds = sum(report["sequences"][name]["seconds"] for name in val_names)
    assert report["runtime"]["fps"] == pytest.approx(18 / seconds, rel=1e-6)
    assert report["runtime"]["peak_memory_bytes"] == max(report["sequences"][n]["peak_memory_bytes"] for n in val_names)
    assert report["eval"]["complete"] and report["eval"]["ran"] == val_names
    for name in ("scores.json", "scores_objects.csv", "scores.md"):
        assert (out / name).is_file()
    rows = list(csv.DictReader((out / "scores_objects.csv").open()))
    assert len(rows) == report["global"]["num_objects"] and all(r["init_IoU"] == "1.0" for r in rows)
    loaded = json.loads((out / "scores.json").read_text())
    assert loaded["global"]["J&F-Mean"] == pytest.approx(report["global"]["J&F-Mean"])
    assert "FPS:" in (out / "scores.md").read_text()
    assert not (out / "submission.zip").exists()  # scored locally, no submission


def test_box_init_gives_filled_tight_boxes(root, model, val_names, tmp_path):
    report = evaluate("synthetic", root, model, tmp_path, init="box", size=-1, overlay=True, progress=False, workers=1)
    got = {(o["sequence"], o["object"]): o["init_IoU"] for o in report["objects"]}
    expected = {}
    for seq in val_names:
        gts = _gt(root, seq)
        first = {}
        for t, gt in enumerate(gts):
            for obj in np.unique(gt).tolist():
                if obj and obj not in first:
                    first[obj] = t
        # Independent rasterisation of the boxes of the objects present on the first frame.
        gt0 = gts[0]
        boxes = {}
        for obj in (o for o, t in first.items() if t == 0):
            ys, xs = np.nonzero(gt0 == obj)
            boxes[obj] = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
        labels = np.zeros_like(gt0)
        for obj, (x0, y0, x1, y1) in sorted(boxes.items(), key=lambda kv: -(kv[1][2] - kv[1][0]) * (kv[1][3] - kv[1][1])):
            labels[y0:y1, x0:x1] = obj
        assert np.array_equal(_pred(tmp_path, seq)["00000"], labels)
        for obj in boxes:
            given, truth = labels == obj, gt0 == obj
            expected[(seq, obj)] = (given & truth).sum() / (given | truth).sum()
    assert expected and all(got[k] == pytest.approx(v) for k, v in expected.items())
    assert all(0 < v < 1 for v in got.values())  # a box is a poor mask of these shapes
    assert report["init"]["frame0_IoU"] == pytest.approx(np.mean(list(got.values())))
    assert "Box init frame-0 IoU" in (tmp_path / "scores.md").read_text()
    overlays = sorted((tmp_path / "overlays" / val_names[0]).glob("*.jpg"))
    assert len(overlays) == SYNTH.frames and Image.open(overlays[0]).size == (SYNTH.width, SYNTH.height)


def test_resume_redoes_only_the_interrupted_sequence(root, model, val_names, tmp_path, monkeypatch):
    out = tmp_path / "run"
    writes = {"n": 0}
    real_write = runner.write_mask

    def failing_write(path, mask):
        writes["n"] += 1
        if writes["n"] == SYNTH.frames + 3:  # the third frame of the second sequence
            raise KeyboardInterrupt
        real_write(path, mask)

    monkeypatch.setattr(runner, "write_mask", failing_write)
    with pytest.raises(KeyboardInterrupt):
        evaluate("synthetic", root, model, out, size=32, progress=False, workers=1)
    first, second = val_names[0], val_names[1]
    assert (out / "done" / f"{first}.json").is_file()
    assert not (out / "done" / f"{second}.json").exists()
    assert len(list((out / "predictions" / second).glob("*.png"))) == 2  # partial, not marked done
    (out / "predictions" / second / "99999.png").write_bytes(b"stale")
    kept = _mtimes(out / "predictions" / first)

    monkeypatch.setattr(runner, "write_mask", real_write)
    report = evaluate("synthetic", root, model, out, size=32, progress=False, workers=1)
    assert report["eval"]["skipped"] == [first] and report["eval"]["ran"] == val_names[1:]
    assert _mtimes(out / "predictions" / first) == kept  # untouched
    assert not (out / "predictions" / second / "99999.png").exists()
    assert report["runtime"]["frames"] == 3 * SYNTH.frames  # the skipped sequence's timing is kept

    clean = evaluate("synthetic", root, model, tmp_path / "clean", size=32, progress=False, workers=1)
    for seq in val_names:
        a, b = _pred(out, seq), _pred(tmp_path / "clean", seq)
        assert list(a) == list(b) and all(np.array_equal(a[k], b[k]) for k in a)
        assert a["00000"].shape == (SYNTH.height, SYNTH.width)  # resized back to the ground truth
    assert report["global"]["J&F-Mean"] == pytest.approx(clean["global"]["J&F-Mean"])
    assert report["sequences"][first]["process_size"] == [32, 48]

    with pytest.raises(VosError, match="init"):  # the folder holds another evaluation
        evaluate("synthetic", root, model, out, init="box", size=32, progress=False)


def test_object_appearing_later_is_given_on_its_first_frame(root, model, val_names, tmp_path):
    davis = tmp_path / "davis"
    shutil.copytree(root, davis)
    seq = val_names[2]
    (davis / "ImageSets" / "2017" / "val.txt").write_text(f"{seq}\n")
    ann = davis / "Annotations" / "480p" / seq
    for t in range(3):  # object 2 enters on frame 3
        img = Image.open(ann / f"{t:05d}.png")
        index = np.asarray(img).copy()
        index[index == 2] = 0
        out = Image.fromarray(index, mode="P")
        out.putpalette(img.getpalette())
        out.save(ann / f"{t:05d}.png")
    report = evaluate("d17", davis, model, tmp_path / "out", size=-1, progress=False, workers=1)
    first = {o["object"]: o["first_frame"] for o in report["objects"]}
    assert first == {1: "00000", 2: "00003", 3: "00000"}
    preds = _pred(tmp_path / "out", seq)
    gt3 = np.asarray(Image.open(ann / "00003.png"))
    assert (preds["00003"][gt3 == 2] == 2).all()
    assert not (np.stack([preds[f"{t:05d}"] for t in range(3)]) == 2).any()  # unknown before it is given
    # Objects given on frame 0 are never given again: frame 3 keeps their predictions elsewhere.
    assert not np.array_equal(preds["00003"], gt3)


def test_shards_partition_the_dataset(root, model, val_names, mask_run, tmp_path):
    whole_out, whole = mask_run
    r0 = evaluate("synthetic", root, model, tmp_path, size=-1, shard=parse_shard("0/2"), progress=False, workers=1)
    assert not r0["eval"]["complete"]
    assert (tmp_path / "scores_shard0of2.json").is_file() and not (tmp_path / "scores.json").exists()
    assert set(r0["sequences"]) == set(r0["eval"]["ran"]) == {val_names[0], val_names[2]}
    r1 = evaluate("synthetic", root, model, tmp_path, size=-1, shard=(1, 2), progress=False, workers=1)
    assert r1["eval"]["complete"] and r1["eval"]["ran"] == [val_names[1]]
    assert set(r0["eval"]["ran"]) | set(r1["eval"]["ran"]) == set(val_names)
    assert (tmp_path / "scores_shard1of2.json").is_file()
    merged = json.loads((tmp_path / "scores.json").read_text())
    assert set(merged["sequences"]) == set(val_names) == set(r1["sequences"])
    for key in ("J&F-Mean", "J-Mean", "F-Mean", "num_objects"):
        assert merged["global"][key] == pytest.approx(whole["global"][key])
    for seq in val_names:
        a, b = _pred(tmp_path, seq), _pred(whole_out, seq)
        assert all(np.array_equal(a[k], b[k]) for k in b)


def test_parse_shard():
    assert parse_shard("1/4") == (1, 4) and parse_shard(" 0/1 ") == (0, 1)
    for bad in ("4/4", "-1/2", "1", "a/b", "1/2/3", "0/0"):
        with pytest.raises(VosError):
            parse_shard(bad)


def test_youtube_all_frames_saves_meta_frames_and_zips(model, tmp_path):
    yt = tmp_path / "yt"
    generate(yt, SyntheticSpec(videos=2, frames=4, height=48, width=64, seed=7, val_fraction=0.5, layout="youtube"))
    meta = json.loads((yt / "valid" / "meta.json").read_text())["videos"]
    # All frames at 30 fps: the valid frames (every 5th) and the ones in between.
    all_root = yt / "all_frames" / "valid_all_frames" / "JPEGImages"
    for video in meta:
        valid = list_frames(yt / "valid" / "JPEGImages" / video)
        (all_root / video).mkdir(parents=True)
        for k in range(5 * (len(valid) - 1) + 1):
            shutil.copyfile(valid[k // 5], all_root / video / f"{k:05d}.jpg")
    out = tmp_path / "out"
    report = evaluate("y18", yt, model, out, size=-1, progress=False, workers=1)
    names = []
    for video, info in meta.items():
        wanted = sorted({s for obj in info["objects"].values() for s in obj["frames"]})
        assert sorted(p.stem for p in (out / "predictions" / video).glob("*.png")) == wanted
        names += [f"Annotations/{video}/{s}.png" for s in wanted]
        stats = json.loads((out / "done" / f"{video}.json").read_text())
        assert stats["frames_processed"] == 5 * (len(list_frames(yt / "valid" / "JPEGImages" / video)) - 1) + 1
        # Objects appearing mid-video are given on their annotated frame.
        for ann in list_frames(yt / "valid" / "Annotations" / video):
            mask = read_mask(ann).numpy()
            pred = np.asarray(Image.open(out / "predictions" / video / ann.name))
            assert (pred[mask > 0] == mask[mask > 0]).all()
    assert any(o["first_frame"] != "00000" for o in report["objects"])  # a mid-video object was tested
    assert sorted(zipfile.ZipFile(out / "submission.zip").namelist()) == sorted(names)
    assert not report["eval"]["scored"] and report["runtime"]["fps"] > 0
    cats = {(o["sequence"], o["object"]): o.get("category") for o in report["objects"]}
    assert all(cats[(v, int(k))] == o["category"] for v, info in meta.items() for k, o in info["objects"].items())


def _flat_copy(root: Path, dst: Path, seq: str, annotated: list[int]) -> None:
    """A Long-Time-Video-style root (JPEGImages/<v>, Annotations/<v> on some frames) from a synthetic video."""
    frames = list_frames(root / "JPEGImages" / "480p" / seq)
    (dst / "JPEGImages" / seq).mkdir(parents=True)
    (dst / "Annotations" / seq).mkdir(parents=True)
    for t, f in enumerate(frames):
        shutil.copyfile(f, dst / "JPEGImages" / seq / f.name)
        if t in annotated:
            shutil.copyfile(root / "Annotations" / "480p" / seq / f"{f.stem}.png", dst / "Annotations" / seq / f"{f.stem}.png")


def test_long_time_video_x3_timeline(root, model, val_names, tmp_path):
    assert x3_order(3) == [0, 1, 2, 2, 1, 0, 0, 1, 2]
    lv = tmp_path / "lv"
    seq = val_names[0]
    _flat_copy(root, lv, seq, annotated=[0, 2, 5])
    r1 = evaluate("lv1", lv, model, tmp_path / "lv1", size=-1, progress=False, workers=1)
    assert len(list((tmp_path / "lv1" / "predictions" / seq).glob("*.png"))) == SYNTH.frames
    assert r1["eval"]["scored"] and r1["objects"][0]["per_frame"]["frames"] == ["00002"]  # first and last excluded

    r3 = evaluate("lv3", lv, model, tmp_path / "lv3", size=-1, progress=False, workers=1)
    preds = sorted((tmp_path / "lv3" / "predictions" / seq).glob("*.png"))
    assert [p.stem for p in preds] == [f"{t:05d}" for t in range(3 * SYNTH.frames)]
    order = x3_order(SYNTH.frames)
    gt_names = sorted(p.stem for p in (tmp_path / "lv3" / "ground_truth" / seq).glob("*.png"))
    assert gt_names == [f"{t:05d}" for t, s in enumerate(order) if s in (0, 2, 5)]
    assert r3["eval"]["scored"] and r3["runtime"]["frames"] == 3 * SYNTH.frames
    # The backward pass shows frame 5 at position 6 and 0 at position 11: same ground truth.
    assert np.array_equal(read_mask(tmp_path / "lv3" / "ground_truth" / seq / "00011.png"), read_mask(lv / "Annotations" / seq / "00000.png"))


def test_generic_d16_and_test_dev(root, model, val_names, tmp_path):
    gen = tmp_path / "generic"
    seq = val_names[1]
    for f in list_frames(root / "JPEGImages" / "480p" / seq):
        (gen / seq).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(f, gen / seq / f.name)
    (gen / "Annotations" / seq).mkdir(parents=True)
    shutil.copyfile(root / "Annotations" / "480p" / seq / "00000.png", gen / "Annotations" / seq / "00000.png")
    r = evaluate("generic", gen, model, tmp_path / "g", size=-1, progress=False)
    assert len(list((tmp_path / "g" / "predictions" / seq).glob("*.png"))) == SYNTH.frames
    assert not r["eval"]["scored"] and "J-Mean" not in r["global"]

    davis = tmp_path / "davis"
    shutil.copytree(root, davis)
    (davis / "ImageSets" / "2016").mkdir()
    (davis / "ImageSets" / "2016" / "val.txt").write_text(f"{seq}\n")
    r16 = evaluate("d16", davis, model, tmp_path / "d16", size=-1, progress=False, workers=1)
    pred = _pred(tmp_path / "d16", seq)
    assert set(np.unique(np.stack(list(pred.values()))).tolist()) <= {0, 1}  # single object
    assert np.array_equal(pred["00000"], (_gt(root, seq)[0] > 0).astype(np.uint8))
    assert r16["binary"] and r16["global"]["num_objects"] == 1

    (davis / "ImageSets" / "2017" / "test-dev.txt").write_text(f"{val_names[0]}\n{seq}\n")
    rt = evaluate("d17-test", davis, model, tmp_path / "dt", size=-1, progress=False)
    assert not rt["eval"]["scored"]
    names = zipfile.ZipFile(tmp_path / "dt" / "submission.zip").namelist()
    assert sorted(names) == sorted(f"{s}/{t:05d}.png" for s in (val_names[0], seq) for t in range(SYNTH.frames))


def test_user_errors(root, model, tmp_path):
    with pytest.raises(VosError, match="nowhere"):
        evaluate("d17", tmp_path / "nowhere", model, tmp_path / "o", progress=False)
    with pytest.raises(VosError, match="unknown dataset"):
        evaluate("davis", root, model, tmp_path / "o", progress=False)
    with pytest.raises(VosError, match="--init"):
        evaluate("synthetic", root, model, tmp_path / "o", init="points", progress=False)
    with pytest.raises(VosError, match="--size"):
        evaluate("synthetic", root, model, tmp_path / "o", size=8, progress=False)
    with pytest.raises(VosError, match="JPEGImages"):
        evaluate("lv1", root, model, tmp_path / "o", progress=False)
    with pytest.raises(VosError, match="test-dev"):
        evaluate("d17-test", root, model, tmp_path / "o", progress=False)
