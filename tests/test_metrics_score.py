"""Scoring prediction folders end to end (``score_folders``) and writing the reports."""

import csv
import json
import math

import numpy as np
import pytest
import torch

from vos.data.io import write_mask
from vos.errors import DataError
from vos.eval.metrics import sequence_scores, summarize
from vos.eval.report import markdown_table, set_runtime, write_reports
from vos.eval.score import categories_from_meta, score_folders, seen_categories_from_meta


def _write_seq(root, name, masks, stems=None):
    stems = stems or [f"{i:05d}" for i in range(len(masks))]
    for stem, mask in zip(stems, masks):
        write_mask(root / name / f"{stem}.png", mask)


def _video(seed, t=6, h=24, w=32, objects=2):
    """Ground truth with moving rectangles and a perturbed prediction (T×H×W uint8 each)."""
    gen = torch.Generator().manual_seed(seed)
    gt = torch.zeros(t, h, w, dtype=torch.uint8)
    for o in range(1, objects + 1):
        y, x = int(torch.randint(0, h - 8, (1,), generator=gen)), int(torch.randint(0, w - 10, (1,), generator=gen))
        for f in range(t):
            gt[f, y : y + 6, min(x + f, w - 6) : min(x + f, w - 6) + 8] = o
    pred = gt.clone()
    noise = torch.rand(t, h, w, generator=gen) < 0.08
    pred[noise] = torch.randint(0, objects + 1, (int(noise.sum()),), generator=gen, dtype=torch.uint8)
    return gt, pred


@pytest.fixture
def folders(tmp_path):
    videos = {"alpha": _video(1), "beta": _video(2, objects=1)}
    for name, (gt, pred) in videos.items():
        _write_seq(tmp_path / "gt", name, gt)
        _write_seq(tmp_path / "pred", name, pred)
    return tmp_path, videos


def test_score_folders_end_to_end(folders, tmp_path):
    root, videos = folders
    report = score_folders(root / "pred", root / "gt", workers=1, progress=False)
    assert report["protocol"] == "davis"
    assert list(report["sequences"]) == ["alpha", "beta"]
    assert [(o["sequence"], o["object"]) for o in report["objects"]] == [("alpha", 1), ("alpha", 2), ("beta", 1)]

    # Per object: the same numbers as scoring the tensors directly.
    for rec in report["objects"]:
        gt, pred = videos[rec["sequence"]]
        direct = sequence_scores(pred, gt)[rec["object"]]
        assert rec["per_frame"]["frames"] == [f"{i:05d}" for i in direct.frames]
        assert rec["per_frame"]["J"] == direct.j.tolist() and rec["per_frame"]["F"] == direct.f.tolist()
        assert rec["num_frames"] == 4  # 6 frames minus first and last
        assert (rec["J-Mean"], rec["J-Recall"], rec["J-Decay"]) == summarize(direct.j)
        assert (rec["F-Mean"], rec["F-Recall"], rec["F-Decay"]) == summarize(direct.f)

    # Global: mean over all objects; J&F = (J-Mean + F-Mean) / 2.
    g = report["global"]
    j_mean = np.mean([o["J-Mean"] for o in report["objects"]])
    f_mean = np.mean([o["F-Mean"] for o in report["objects"]])
    assert g["J-Mean"] == pytest.approx(j_mean) and g["F-Mean"] == pytest.approx(f_mean)
    assert g["J&F-Mean"] == pytest.approx((j_mean + f_mean) / 2)
    assert (g["num_sequences"], g["num_objects"], g["num_objects_scored"]) == (2, 3, 3)
    assert 0.3 < g["J-Mean"] < 1.0  # the noise costs something, the prediction is not garbage
    assert report["sequences"]["beta"]["J-Mean"] == report["objects"][2]["J-Mean"]

    # Reports.
    set_runtime(report, fps=12.5, peak_memory_bytes=3 * 2**20, device="cpu")
    paths = write_reports(report, tmp_path / "out")
    loaded = json.loads(paths["json"].read_text())
    assert loaded["global"]["J&F-Mean"] == pytest.approx(g["J&F-Mean"])
    assert loaded["runtime"] == {"fps": 12.5, "peak_memory_bytes": 3 * 2**20, "device": "cpu"}
    assert len(loaded["objects"][0]["per_frame"]["J"]) == 4
    rows = list(csv.DictReader(paths["csv"].open()))
    assert [(r["sequence"], r["object"]) for r in rows] == [("alpha", "1"), ("alpha", "2"), ("beta", "1")]
    assert float(rows[0]["J-Mean"]) == report["objects"][0]["J-Mean"]
    md = paths["markdown"].read_text()
    assert "| J&F-Mean |" in md and "| alpha |" in md and "FPS: 12.50" in md and "3.0 MiB" in md
    assert f"{100 * g['J&F-Mean']:.1f}" in md
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["scores.json", "scores.md", "scores_objects.csv"]


@pytest.mark.parametrize("executor", ["thread", "process"])
def test_score_folders_pools_match_inline(folders, executor):
    root, _ = folders
    threads = torch.get_num_threads()
    inline = score_folders(root / "pred", root / "gt", workers=1, progress=False)
    pooled = score_folders(root / "pred", root / "gt", workers=2, progress=True, executor=executor)
    assert pooled["scoring"]["workers"] == 2 and pooled["scoring"]["executor"] == executor
    assert pooled["objects"] == inline["objects"] and pooled["global"] == inline["global"]
    assert torch.get_num_threads() == threads  # scoring runs on one intra-op thread, then restores


def test_score_folders_sequence_subset(folders):
    root, _ = folders
    report = score_folders(root / "pred", root / "gt", sequences=["beta"], workers=1, progress=False)
    assert list(report["sequences"]) == ["beta"]
    with pytest.raises(DataError, match="gamma"):
        score_folders(root / "pred", root / "gt", sequences=["gamma"], workers=1, progress=False)


def test_missing_prediction_frame_names_sequence_and_frame(folders):
    root, _ = folders
    (root / "pred" / "alpha" / "00003.png").unlink()
    with pytest.raises(DataError, match=r"sequence alpha, frame 00003"):
        score_folders(root / "pred", root / "gt", workers=1, progress=False)
    for executor in ("thread", "process"):  # raised in a worker, re-raised here
        with pytest.raises(DataError, match="sequence alpha, frame 00003"):
            score_folders(root / "pred", root / "gt", workers=2, progress=False, executor=executor)


def test_missing_prediction_sequence_and_bad_ids(folders):
    root, videos = folders
    gt, pred = videos["beta"]
    bad = pred.clone()
    bad[2, 0, 0] = 7  # beta has only object 1
    _write_seq(root / "pred", "beta", bad)
    with pytest.raises(DataError, match="object id 7"):
        score_folders(root / "pred", root / "gt", sequences=["beta"], workers=1, progress=False)
    with pytest.raises(DataError, match="no predictions for sequence delta"):
        _write_seq(root / "gt", "delta", gt)
        score_folders(root / "pred", root / "gt", workers=1, progress=False)


def test_size_mismatch_is_a_clear_error(tmp_path):
    _write_seq(tmp_path / "gt", "s", torch.zeros(3, 8, 8, dtype=torch.uint8))
    _write_seq(tmp_path / "pred", "s", torch.zeros(3, 8, 9, dtype=torch.uint8))
    with pytest.raises(DataError, match="prediction is 9×8, ground truth is 8×8"):
        score_folders(tmp_path / "pred", tmp_path / "gt", workers=1, progress=False)


def test_sparse_ground_truth_youtube_protocol(tmp_path):
    # Predictions on 10 frames, ground truth on every 3rd (0, 3, 6, 9); object 2 given on frame 3.
    t = 10
    gt_full = torch.zeros(t, 16, 16, dtype=torch.uint8)
    gt_full[:, 2:7, 2:7] = 1
    gt_full[3:, 9:14, 9:14] = 2
    pred = gt_full.clone()
    pred[9, 9:14, 9:14] = 0  # object 2 lost on the last annotated frame
    stems = [f"{i:05d}" for i in range(t)]
    annotated = [0, 3, 6, 9]
    _write_seq(tmp_path / "gt", "v", gt_full[annotated], [stems[i] for i in annotated])
    _write_seq(tmp_path / "pred", "v", pred, stems)
    categories = {"v": {1: "person", 2: "okapi"}}
    report = score_folders(
        tmp_path / "pred",
        tmp_path / "gt",
        workers=1,
        progress=False,
        categories=categories,
        seen_categories={"person"},
    )
    assert report["protocol"] == "youtube"
    first, second = report["objects"]
    # Scored on annotated frames after the first appearance, the last one included.
    assert first["per_frame"]["frames"] == ["00003", "00006", "00009"] and first["per_frame"]["J"] == [1.0, 1.0, 1.0]
    assert second["first_frame"] == "00003"
    assert second["per_frame"]["frames"] == ["00006", "00009"] and second["per_frame"]["J"] == [1.0, 0.0]
    assert (first["category"], second["category"]) == ("person", "okapi")
    yt = report["youtube"]
    assert yt["J_seen"] == 1.0 and yt["J_unseen"] == 0.5 and yt["F_unseen"] == 0.5
    assert yt["G"] == pytest.approx((1.0 + 1.0 + 0.5 + 0.5) / 4)
    assert "YouTube-VOS: G 75.0" in markdown_table(report)
    # The DAVIS protocol wants one prediction per ground-truth frame: the extra ones are named, not ignored.
    with pytest.raises(DataError, match="00001.png: prediction frame 00001 of sequence v has no ground truth"):
        score_folders(tmp_path / "pred", tmp_path / "gt", workers=1, progress=False, protocol="davis")
    for stem in stems:
        if int(stem) not in annotated:
            (tmp_path / "pred" / "v" / f"{stem}.png").unlink()
    # on the annotated frames alone it drops the last one
    davis = score_folders(tmp_path / "pred", tmp_path / "gt", workers=1, progress=False, protocol="davis")
    assert davis["objects"][1]["per_frame"]["frames"] == ["00006"]


def test_object_without_evaluated_frames_is_reported_but_not_averaged(tmp_path):
    gt = torch.zeros(4, 10, 10, dtype=torch.uint8)
    gt[:, 1:4, 1:4] = 1
    gt[3, 6:9, 6:9] = 2  # appears on the last frame only
    _write_seq(tmp_path / "gt", "s", gt)
    _write_seq(tmp_path / "pred", "s", gt)
    report = score_folders(tmp_path / "pred", tmp_path / "gt", workers=1, progress=False)
    late = report["objects"][1]
    assert late["num_frames"] == 0 and math.isnan(late["J-Mean"])
    assert report["global"]["J-Mean"] == 1.0 and report["global"]["num_objects_scored"] == 1
    paths = write_reports(report, tmp_path / "out")
    assert json.loads(paths["json"].read_text())["objects"][1]["J-Mean"] is None  # NaN → null
    assert list(csv.DictReader(paths["csv"].open()))[1]["J-Mean"] == ""


def test_youtube_meta_helpers(tmp_path):
    meta = {"videos": {"v1": {"objects": {"1": {"category": "cat", "frames": ["00000"]}, "2": {"category": "dog"}}}}}
    path = tmp_path / "meta.json"
    path.write_text(json.dumps(meta))
    assert categories_from_meta(path) == {"v1": {1: "cat", 2: "dog"}}
    assert seen_categories_from_meta(meta) == {"cat", "dog"}
    with pytest.raises(DataError, match="meta.json"):
        categories_from_meta(tmp_path / "missing.json")


def test_binary_single_object_protocol(tmp_path):
    # DAVIS 2016 annotations are 0/255 masks: without binary=True there is no object to score.
    gt = torch.zeros(5, 12, 12, dtype=torch.uint8)
    gt[:, 2:8, 3:9] = 255
    pred = (gt != 0).to(torch.uint8)
    pred[1:, 2:8, 8:11] = 2  # a second predicted id merges into the single object
    _write_seq(tmp_path / "gt", "s", gt)
    _write_seq(tmp_path / "pred", "s", pred)
    with pytest.raises(DataError, match="no object.*binary=True"):
        score_folders(tmp_path / "pred", tmp_path / "gt", workers=1, progress=False)
    report = score_folders(tmp_path / "pred", tmp_path / "gt", workers=1, progress=False, binary=True)
    (obj,) = report["objects"]
    assert obj["object"] == 1 and obj["per_frame"]["J"] == [36 / 48] * 3  # 6×6 object, 6×8 prediction
