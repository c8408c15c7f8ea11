"""DAVIS / YouTube-VOS metrics against hand-computed cases and an independent naive implementation."""

import math
import warnings

import numpy as np
import pytest
import torch

from vos.eval.metrics import (
    boundary_f,
    boundary_radius,
    decay_bins,
    first_appearances,
    jaccard,
    pair_scores,
    seg2bmap,
    sequence_scores,
    summarize,
    youtube_g,
)

# ----------------------------------------------------------------------------------------------
# Naive oracle: per-pixel loops for the boundary map, scikit-image morphology for the disk dilation.


def naive_bmap(seg: np.ndarray) -> np.ndarray:
    """Toolkit boundary map, one pixel at a time: compare with the east, south and south-east
    neighbours (zero beyond the image); the last row compares east only, the last column south
    only, the bottom-right pixel is never a boundary."""
    h, w = seg.shape
    seg = seg.astype(bool)

    def at(y, x):
        return bool(seg[y, x]) if y < h and x < w else False

    out = np.zeros((h, w), dtype=bool)
    for y in range(h):
        for x in range(w):
            if y == h - 1 and x == w - 1:
                out[y, x] = False
            elif y == h - 1:
                out[y, x] = at(y, x) != at(y, x + 1)
            elif x == w - 1:
                out[y, x] = at(y, x) != at(y + 1, x)
            else:
                out[y, x] = any(at(y, x) != at(y + dy, x + dx) for dy, dx in ((0, 1), (1, 0), (1, 1)))
    return out


def naive_f(pred: np.ndarray, gt: np.ndarray, bound_th: float) -> float:
    from skimage.morphology import disk

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # binary_dilation's deprecation notice in recent scikit-image
        from skimage.morphology import binary_dilation

        radius = bound_th if bound_th >= 1 else math.ceil(bound_th * math.hypot(*pred.shape))
        pb, gb = naive_bmap(pred), naive_bmap(gt)
        footprint = disk(radius)
        pd, gd = binary_dilation(pb, footprint), binary_dilation(gb, footprint)
    n_p, n_g = int(pb.sum()), int(gb.sum())
    if n_p == 0 and n_g == 0:
        precision, recall = 1.0, 1.0
    elif n_p == 0:
        precision, recall = 1.0, 0.0
    elif n_g == 0:
        precision, recall = 0.0, 1.0
    else:
        precision, recall = (pb & gd).sum() / n_p, (gb & pd).sum() / n_g
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def naive_j(pred: np.ndarray, gt: np.ndarray) -> float:
    union = (pred | gt).sum()
    return 1.0 if union == 0 else (pred & gt).sum() / union


def random_masks(rng, batch, h, w):
    """Mixture of salt-and-pepper noise and blocky blobs."""
    if rng.random() < 0.5:
        return rng.random((batch, h, w)) < rng.random()
    cells = rng.random((batch, h // 3 + 1, w // 3 + 1)) < rng.random()
    return np.kron(cells, np.ones((1, 3, 3), dtype=bool))[:, :h, :w]


# ----------------------------------------------------------------------------------------------
# J


def test_jaccard_hand_cases():
    empty = torch.zeros(4, 5, dtype=torch.bool)
    block = empty.clone()
    block[1:3, 1:4] = True  # 6 pixels
    half = empty.clone()
    half[1:3, 1:2] = True  # 2 pixels inside the block
    shifted = empty.clone()
    shifted[2:4, 1:4] = True  # overlaps the block on 3 pixels, union 9
    assert jaccard(empty, empty).item() == 1.0  # both empty
    assert jaccard(block, empty).item() == 0.0
    assert jaccard(empty, block).item() == 0.0
    assert jaccard(half, block).item() == pytest.approx(2 / 6)
    assert jaccard(shifted, block).item() == pytest.approx(3 / 9)
    batch = jaccard(torch.stack([empty, half]), torch.stack([empty, block]))
    assert batch.dtype == torch.float64 and batch.tolist() == pytest.approx([1.0, 1 / 3])
    void = empty.clone()
    void[2, :] = True  # ignore row 2: block 3 px, half 1 px
    assert jaccard(half, block, void=void).item() == pytest.approx(1 / 3)


# ----------------------------------------------------------------------------------------------
# Boundaries


def test_seg2bmap_hand_cases():
    seg = torch.zeros(5, 6, dtype=torch.bool)
    seg[2, 3] = True  # one interior pixel: it and its N, W, NW neighbours see a change
    expected = torch.zeros_like(seg)
    expected[1:3, 2:4] = True
    assert torch.equal(seg2bmap(seg), expected)

    corner = torch.zeros(3, 4, dtype=torch.bool)
    corner[2, 3] = True  # bottom-right pixel: never a boundary itself
    expected = torch.zeros_like(corner)
    expected[2, 2] = True  # last row compares east
    expected[1, 3] = True  # last column compares south
    expected[1, 2] = True  # interior compares south-east
    assert torch.equal(seg2bmap(corner), expected)

    assert not seg2bmap(torch.ones(4, 4, dtype=torch.bool)).any()  # a full mask has no boundary
    assert not seg2bmap(torch.zeros(4, 4, dtype=torch.bool)).any()


def test_seg2bmap_matches_naive_loops():
    rng = np.random.default_rng(1)
    for _ in range(40):
        h, w = rng.integers(1, 16, size=2)
        masks = random_masks(rng, 3, h, w)
        ours = seg2bmap(torch.from_numpy(masks)).numpy()
        for b in range(3):
            assert np.array_equal(ours[b], naive_bmap(masks[b]))
        assert np.array_equal(seg2bmap(torch.from_numpy(masks[0])).numpy(), naive_bmap(masks[0]))


def test_boundary_radius():
    assert boundary_radius(480, 854) == 8  # DAVIS 480p: ceil(0.008 · 979.6)
    assert boundary_radius(100, 200) == 2  # ceil(1.79)
    assert boundary_radius(60, 80) == 1  # ceil(0.8)
    assert boundary_radius(10, 10, bound_th=3) == 3  # ≥ 1: pixels
    with pytest.raises(ValueError):
        boundary_radius(10, 10, bound_th=2.5)


def test_boundary_f_empty_conventions():
    empty = torch.zeros(20, 30, dtype=torch.bool)
    blob = empty.clone()
    blob[5:10, 5:12] = True
    full = torch.ones_like(empty)
    assert boundary_f(empty, empty).item() == 1.0  # no boundary on either side: P = R = 1
    assert boundary_f(empty, blob).item() == 0.0  # P = 1, R = 0
    assert boundary_f(blob, empty).item() == 0.0  # P = 0, R = 1
    assert boundary_f(blob, blob).item() == 1.0
    # The toolkit's conventions are about boundary maps: a full-frame mask has none.
    assert boundary_f(full, full).item() == 1.0
    assert boundary_f(full, empty).item() == 1.0
    assert boundary_f(full, blob).item() == 0.0


def test_boundary_f_tolerance_edge_stripes():
    # 100×200: tolerance ceil(0.008 · 223.6) = 2 pixels. A left stripe [0, c) has its boundary on
    # column c-1 (all rows); a stripe d columns wider is matched iff d ≤ 2.
    h, w, c = 100, 200, 50
    gt = torch.zeros(h, w, dtype=torch.bool)
    gt[:, :c] = True
    for d, expected in ((0, 1.0), (1, 1.0), (2, 1.0), (3, 0.0), (4, 0.0)):
        pred = torch.zeros_like(gt)
        pred[:, : c + d] = True
        assert boundary_f(pred, gt).item() == expected, d
    # Half the rows offset by 2 (inside), half by 3 (outside). The step adds one boundary pixel at
    # (49, 52), 3 columns from the ground truth: P = 50/101 (rows 0-49 on column 51), R = 50/100
    # (rows where the prediction is 2 away; for the others the nearest is ≥ 3 away or diagonal
    # √(3² + 1²) > 2).
    pred = torch.zeros_like(gt)
    pred[:50, : c + 2] = True
    pred[50:, : c + 3] = True
    precision, recall = 50 / 101, 50 / 100
    assert boundary_f(pred, gt).item() == pytest.approx(2 * precision * recall / (precision + recall))
    assert boundary_f(pred, gt).item() == pytest.approx(naive_f(pred.numpy(), gt.numpy(), 0.008))


def test_boundary_f_tolerance_edge_diagonal():
    # A single interior pixel has a 2×2 boundary block; with a 5-pixel tolerance a (3, 4) offset is
    # exactly at the edge (9 + 16 = 25) for the farthest pair, a (4, 4) offset leaves one pixel of
    # each block out (4² + 4² = 32 > 25): P = R = 3/4. Horizontally, a (0, 6) offset leaves one
    # column of each block 6 > 5 away (F = 1/2), a (0, 7) offset both.
    gt = torch.zeros(30, 30, dtype=torch.bool)
    gt[10, 10] = True
    for (dy, dx), expected in (((3, 4), 1.0), ((4, 3), 1.0), ((4, 4), 0.75), ((0, 5), 1.0), ((0, 6), 0.5), ((0, 7), 0.0)):
        pred = torch.zeros_like(gt)
        pred[10 + dy, 10 + dx] = True
        assert boundary_f(pred, gt, bound_th=5).item() == pytest.approx(expected), (dy, dx)


@pytest.mark.parametrize("bound_th", [0.008, 0.05, 1, 2, 3, 5])
def test_boundary_f_matches_skimage_oracle(bound_th):
    rng = np.random.default_rng(int(bound_th * 1000))
    for _ in range(12):
        h, w = rng.integers(1, 36, size=2)
        pred, gt = random_masks(rng, 3, h, w), random_masks(rng, 3, h, w)
        ours = boundary_f(torch.from_numpy(pred), torch.from_numpy(gt), bound_th).numpy()
        expected = np.array([naive_f(pred[b], gt[b], bound_th) for b in range(3)])
        assert np.array_equal(ours, expected)  # bit-identical, like the toolkit


def test_boundary_f_void_removes_pixels():
    gt = torch.zeros(20, 20, dtype=torch.bool)
    gt[5:15, 5:15] = True
    pred = gt.clone()
    pred[5:15, 15:19] = True  # far right edge off by 4
    void = torch.zeros_like(gt)
    void[:, 12:] = True  # hides both right edges
    assert boundary_f(pred, gt, bound_th=1).item() < 1.0
    assert boundary_f(pred, gt, bound_th=1, void=void).item() == 1.0


def test_pair_scores_match_per_object_oracle():
    # Multi-object id maps (with void 255 in the ground truth) scored straight from the id maps must
    # equal per-object binary J and F.
    rng = np.random.default_rng(7)
    for trial in range(10):
        t, h, w = 3, int(rng.integers(2, 30)), int(rng.integers(2, 30))
        k = int(rng.integers(1, 5))
        if trial % 2:
            pred = rng.integers(0, k + 1, (t, h, w))
            gt = rng.integers(0, k + 1, (t, h, w))
        else:
            blocks = lambda: np.kron(rng.integers(0, k + 1, (t, h // 3 + 1, w // 3 + 1)), np.ones((1, 3, 3), int))
            pred, gt = blocks()[:, :h, :w], blocks()[:, :h, :w]
        gt[rng.random((t, h, w)) < 0.05] = 255
        pred, gt = pred.astype(np.uint8), gt.astype(np.uint8)
        frames = [f for f in range(t) for _ in range(k)]
        objs = [o for _ in range(t) for o in range(1, k + 1)]
        j, f = pair_scores(torch.from_numpy(pred), torch.from_numpy(gt), frames, objs, bound_th=2)
        for i, (fr, o) in enumerate(zip(frames, objs)):
            assert j[i] == naive_j(pred[fr] == o, gt[fr] == o)
            assert f[i] == naive_f(pred[fr] == o, gt[fr] == o, 2)


# ----------------------------------------------------------------------------------------------
# Sequences and statistics


def test_summarize_hand_cases():
    mean, recall, decay = summarize([1.0, 0.8, 0.6, 0.4, 0.2])
    # 5 values: bins [0,1], [1,2], [2,3], [3,4]; decay = mean(1, .8) − mean(.4, .2)
    assert mean == pytest.approx(0.6)
    assert recall == pytest.approx(0.6)  # 1, .8, .6 are > 0.5
    assert decay == pytest.approx(0.9 - 0.3)
    assert summarize([0.7]) == pytest.approx((0.7, 1.0, 0.0))
    assert summarize(np.array([0.5, 0.5])) == pytest.approx((0.5, 0.0, 0.0))  # recall is strict > 0.5
    assert all(math.isnan(v) for v in summarize([]))
    assert summarize([1.0, float("nan"), 0.0])[0] == pytest.approx(0.5)  # NaNs ignored in the mean
    assert decay_bins(2) == [(0, 0), (0, 1), (1, 1), (1, 1)]
    assert decay_bins(9) == [(0, 2), (2, 4), (4, 6), (6, 8)]


def test_decay_bins_match_quartile_rounding():
    for n in range(1, 1200):
        # Toolkit edges: round(linspace(1, n, 5)) − 1 with halves rounded up.
        edges = np.floor(np.linspace(1, n, 5) + 0.5).astype(np.int64) - 1
        assert decay_bins(n) == [(int(edges[i]), int(edges[i + 1])) for i in range(4)]


def test_decay_long_sequence_has_no_uint8_wraparound():
    n = 300
    values = np.r_[np.ones(150), np.zeros(150)]
    # Edges 0, 75, 150, 224, 299: first bin all ones, last all zeros. With the toolkit's uint8 cast
    # the last edge would wrap to 43 and the last bin would be empty.
    assert decay_bins(n)[3] == (224, 299)
    assert summarize(values)[2] == 1.0
    assert summarize(np.r_[np.ones(250), np.linspace(1, 0, 100)])[2] == pytest.approx(1 - np.mean(np.linspace(1, 0, 100)[12:]))


def test_decay_long_sequence_end_to_end():
    t = 302  # 300 evaluated frames (first and last excluded)
    gt = torch.zeros(t, 6, 6, dtype=torch.uint8)
    gt[:, 1:4, 1:4] = 1
    pred = gt.clone()
    pred[151:] = 0  # evaluated frames 1..150 right, 151..300 lost
    scores = sequence_scores(pred, gt)[1]
    assert scores.frames.tolist() == list(range(1, 301))
    j_mean, j_recall, j_decay = summarize(scores.j)
    assert (j_mean, j_recall, j_decay) == (0.5, 0.5, 1.0)
    assert summarize(scores.f)[2] == 1.0


def test_first_and_last_frames_excluded():
    t = 5
    gt = torch.zeros(t, 8, 8, dtype=torch.uint8)
    gt[:, 2:6, 2:6] = 1
    pred = gt.clone()
    pred[0] = 0  # wrong on the first and last frame only
    pred[-1] = 0
    scores = sequence_scores(pred, gt)[1]
    assert scores.frames.tolist() == [1, 2, 3]
    assert scores.j.tolist() == [1.0, 1.0, 1.0] and scores.f.tolist() == [1.0, 1.0, 1.0]
    kept_last = sequence_scores(pred, gt, exclude_last=False)[1]
    assert kept_last.frames.tolist() == [1, 2, 3, 4]
    assert kept_last.j.tolist() == [1.0, 1.0, 1.0, 0.0]


def test_objects_appearing_mid_video():
    t = 8
    gt = torch.zeros(t, 10, 10, dtype=torch.uint8)
    gt[:, 1:4, 1:4] = 1
    gt[3:, 6:9, 6:9] = 2  # object 2 appears on frame 3
    pred = gt.clone()
    pred[:3, 0:2, 7:9] = 2  # predictions of object 2 before it exists are not scored
    pred[5, 6:9, 6:9] = 0  # object 2 lost on frame 5
    assert first_appearances(gt) == {1: 0, 2: 3}
    scores = sequence_scores(pred, gt)
    assert scores[1].frames.tolist() == [1, 2, 3, 4, 5, 6]
    assert scores[2].first_frame == 3
    assert scores[2].frames.tolist() == [4, 5, 6]
    assert scores[2].j.tolist() == [1.0, 0.0, 1.0]
    assert scores[2].f.tolist() == [1.0, 0.0, 1.0]
    # The same with explicit ids and first frames.
    explicit = sequence_scores(pred, gt, object_ids=[2], first_frames={2: 3})
    assert list(explicit) == [2] and explicit[2].j.tolist() == [1.0, 0.0, 1.0]


def test_sequence_scores_matches_binary_functions():
    gen = torch.Generator().manual_seed(3)
    gt = torch.randint(0, 4, (6, 12, 17), generator=gen, dtype=torch.uint8)
    pred = torch.randint(0, 4, (6, 12, 17), generator=gen, dtype=torch.uint8)
    scores = sequence_scores(pred, gt)
    for obj, rec in scores.items():
        idx = torch.as_tensor(rec.frames)
        assert np.array_equal(rec.j, jaccard(pred[idx] == obj, gt[idx] == obj).numpy())
        assert np.array_equal(rec.f, boundary_f(pred[idx] == obj, gt[idx] == obj).numpy())


def test_youtube_g():
    records = [
        {"category": "cat", "J-Mean": 0.8, "F-Mean": 0.9},
        {"category": "cat", "J-Mean": 0.6, "F-Mean": 0.7},
        {"category": "okapi", "J-Mean": 0.4, "F-Mean": 0.5},
        {"category": "dog", "J-Mean": float("nan"), "F-Mean": float("nan")},  # never evaluated: skipped
        {"category": None, "J-Mean": 0.0, "F-Mean": 0.0},  # unknown category: skipped
    ]
    g = youtube_g(records, seen_categories={"cat", "dog"})
    assert g["J_seen"] == pytest.approx(0.7) and g["F_seen"] == pytest.approx(0.8)
    assert g["J_unseen"] == pytest.approx(0.4) and g["F_unseen"] == pytest.approx(0.5)
    assert g["G"] == pytest.approx((0.7 + 0.8 + 0.4 + 0.5) / 4)
    assert (g["num_seen"], g["num_unseen"]) == (2, 1)
    only_seen = youtube_g(records[:2], seen_categories={"cat"})
    assert math.isnan(only_seen["J_unseen"]) and only_seen["G"] == pytest.approx(0.75)
