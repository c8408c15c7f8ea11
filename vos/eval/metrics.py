"""Video object segmentation metrics: the DAVIS semi-supervised protocol and YouTube-VOS G.

The numbers match the official DAVIS 2017 toolkit (``davis2017-evaluation``, used by the CodaLab
servers) frame for frame:

* J is the IoU of the binary masks, 1 when both are empty.
* F is the boundary F-measure. Boundaries are the toolkit's ``seg2bmap`` maps (a pixel is on the
  boundary when it differs from its east, south or south-east neighbour; the last row and column only
  compare along the border; the bottom-right pixel never is). A boundary pixel is matched when a
  boundary pixel of the other mask lies inside a disk of radius ``ceil(0.008 · image diagonal)``
  (``x² + y² ≤ r²``, the toolkit's ``skimage.morphology.disk``; pixels outside the image never match).
  Precision/recall conventions for empty *boundary* maps follow the toolkit: both empty → P = R = 1;
  prediction empty → P = 1, R = 0; ground truth empty → P = 0, R = 1; F = 0 when P + R = 0.
* Per object the frame values are summarised as Mean, Recall (fraction > 0.5) and Decay (mean of the
  first temporal quarter minus mean of the last). The quarters are the toolkit's: bin edges
  ``round_half_up(k·(N−1)/4)`` for k = 0..4, each bin inclusive of both edges (so neighbouring bins
  share a frame). Unlike the toolkit, the edges are not cast to uint8, so sequences longer than 256
  evaluated frames get the intended quarters instead of wrapped-around ones.

Nothing is dilated. A boundary pixel (y, x) lies in the disk dilation of another boundary iff for
some |dy| ≤ r the nearest other-boundary pixel in row y + dy is at horizontal distance dx with
dx² + dy² ≤ r². Boundary pixels are kept as sorted flat indices, so that nearest pixel is found by a
binary search (``torch.searchsorted``): the cost is O(boundary length · (2r+1) · log), independent of
the image size. For several objects of an id mask at once (:func:`pair_scores`), J comes from three
256-bin id histograms per frame (prediction, ground truth, agreeing pixels), and the boundary pixels
of every object come from one pass over the id map: a pixel that differs from its east, south or south-east neighbour is a
boundary pixel of its own object and of each differing neighbour's object.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

# Boundary pixels × row offsets looked up at once (bounds the K × (2r+1) index tensors).
_POINT_CHUNK = 1 << 20
# Pixels (frames × H × W) of id masks scored in one vectorised chunk.
_FRAME_PIXELS = 1 << 23


# ----------------------------------------------------------------------------------------------
# Per-frame measures


def jaccard(pred: torch.Tensor, gt: torch.Tensor, void: torch.Tensor | None = None) -> torch.Tensor:
    """Region similarity J (IoU) of binary masks.

    pred, gt: B×H×W (or H×W) masks, nonzero = object. void: optional mask of pixels to ignore.
    Returns float64 B (or a 0-d tensor): |pred ∩ gt| / |pred ∪ gt|, 1 where the union is empty.
    """
    pred, gt = _as_bool(pred), _as_bool(gt)
    if pred.shape != gt.shape:
        raise ValueError(f"jaccard: prediction {tuple(pred.shape)} and ground truth {tuple(gt.shape)} differ")
    inter = pred & gt
    union = pred | gt
    if void is not None:
        keep = ~_as_bool(void)
        inter, union = inter & keep, union & keep
    inter_n, union_n = _count(inter).double(), _count(union).double()
    return torch.where(union_n == 0, torch.ones_like(union_n), inter_n / union_n.clamp_min(1))


def seg2bmap(mask: torch.Tensor) -> torch.Tensor:
    """One-pixel-wide boundary map of a binary mask, as the DAVIS toolkit's ``seg2bmap``.

    mask: H×W or B×H×W (nonzero = object). Returns a bool tensor of the same shape: a pixel is a
    boundary pixel when it differs from its east, south or south-east neighbour. On the last row only
    the east neighbour is compared, on the last column only the south one, and the bottom-right pixel
    is never a boundary (so a mask covering the whole image has an empty boundary).
    """
    seg = _as_bool(mask)
    out = torch.zeros_like(seg)
    if seg.shape[-1] == 0 or seg.shape[-2] == 0:
        return out
    here = seg[..., :-1, :-1]
    out[..., :-1, :-1] = (here ^ seg[..., :-1, 1:]) | (here ^ seg[..., 1:, :-1]) | (here ^ seg[..., 1:, 1:])
    out[..., -1, :-1] = seg[..., -1, :-1] ^ seg[..., -1, 1:]
    out[..., :-1, -1] = seg[..., :-1, -1] ^ seg[..., 1:, -1]
    return out


def boundary_radius(height: int, width: int, bound_th: float = 0.008) -> int:
    """Matching tolerance in pixels: ``bound_th`` itself when ≥ 1, else ceil(bound_th · diagonal)."""
    if bound_th >= 1:
        if bound_th != int(bound_th):
            raise ValueError(f"boundary tolerance of {bound_th} pixels must be a whole number")
        return int(bound_th)
    if bound_th < 0:
        raise ValueError(f"boundary tolerance must be >= 0, got {bound_th}")
    # sqrt of the exact integer sum is what numpy's norm of the shape gives (correctly rounded).
    return int(math.ceil(bound_th * math.sqrt(height * height + width * width)))


def boundary_f(
    pred: torch.Tensor, gt: torch.Tensor, bound_th: float = 0.008, void: torch.Tensor | None = None
) -> torch.Tensor:
    """Contour accuracy F of binary masks (the DAVIS boundary F-measure).

    pred, gt: B×H×W (or H×W) masks. bound_th: tolerance as a fraction of the image diagonal (< 1) or
    in pixels (≥ 1). void: optional mask of pixels removed from both masks before taking boundaries.
    Returns float64 B (or a 0-d tensor).
    """
    pred, gt = _as_bool(pred), _as_bool(gt)
    if pred.shape != gt.shape:
        raise ValueError(f"boundary_f: prediction {tuple(pred.shape)} and ground truth {tuple(gt.shape)} differ")
    squeeze = pred.dim() == 2
    if squeeze:
        pred, gt = pred.unsqueeze(0), gt.unsqueeze(0)
    if void is not None:
        keep = ~_as_bool(void).expand_as(pred)
        pred, gt = pred & keep, gt & keep
    batch, height, width = pred.shape
    pred_pts = seg2bmap(pred).reshape(-1).nonzero().squeeze(1)
    gt_pts = seg2bmap(gt).reshape(-1).nonzero().squeeze(1)
    f = _f_measure(pred_pts, gt_pts, batch, height, width, boundary_radius(height, width, bound_th))
    return f[0] if squeeze else f


def _f_measure(pred_pts: torch.Tensor, gt_pts: torch.Tensor, batch: int, height: int, width: int, radius: int):
    """F (float64 ``batch``) from sorted flat indices of boundary pixels in a batch×H×W volume."""
    plane = height * width
    n_pred = torch.bincount(pred_pts // plane, minlength=batch).double()
    n_gt = torch.bincount(gt_pts // plane, minlength=batch).double()
    pred_hits = _hits(pred_pts, gt_pts, batch, height, width, radius).double()
    gt_hits = _hits(gt_pts, pred_pts, batch, height, width, radius).double()

    one, zero = torch.ones_like(n_pred), torch.zeros_like(n_pred)
    precision = pred_hits / n_pred.clamp_min(1)
    recall = gt_hits / n_gt.clamp_min(1)
    pred_empty, gt_empty = n_pred == 0, n_gt == 0
    precision = torch.where(pred_empty, one, torch.where(gt_empty, zero, precision))
    recall = torch.where(gt_empty, one, torch.where(pred_empty, zero, recall))
    total = precision + recall
    # Same operation order as the toolkit (2·P·R / (P + R)) so that float64 results agree bit for bit.
    return torch.where(total == 0, zero, 2 * precision * recall / torch.where(total == 0, one, total))


def _hits(points: torch.Tensor, targets: torch.Tensor, batch: int, height: int, width: int, radius: int):
    """Per batch item, how many ``points`` lie in the radius-r disk dilation of ``targets``.

    points, targets: flat indices into a batch×H×W volume; targets sorted ascending. For each point
    and each row offset dy the nearest target in row y + dy is one of the two neighbours of the query
    in the sorted targets (same flat row index = same item and row). Returns int64 ``batch``.
    """
    counts = torch.zeros(batch, dtype=torch.int64, device=points.device)
    if points.numel() == 0 or targets.numel() == 0:
        return counts
    plane = height * width
    last = targets.numel() - 1
    dy = torch.arange(-radius, radius + 1, device=points.device)
    reach = radius * radius - dy * dy  # dx² allowed per row offset
    step = max(1, _POINT_CHUNK // dy.numel())
    for start in range(0, points.numel(), step):
        idx = points[start : start + step]
        rows = ((idx % plane) // width).unsqueeze(1) + dy  # K × (2r+1) row inside the frame
        query = idx.unsqueeze(1) + dy * width
        row_id = torch.div(query, width, rounding_mode="floor")
        pos = torch.searchsorted(targets, query)
        right = targets[pos.clamp(max=last)]
        left = targets[(pos - 1).clamp(min=0)]
        far = torch.full_like(query, radius + 1)
        dx_right = torch.where((pos <= last) & (right // width == row_id), right - query, far)
        dx_left = torch.where((pos > 0) & (left // width == row_id), query - left, far)
        dx = torch.minimum(dx_right, dx_left)
        hit = ((rows >= 0) & (rows < height) & (dx * dx <= reach)).any(dim=1)
        counts.index_add_(0, idx // plane, hit.long())
    return counts


def _count(mask: torch.Tensor) -> torch.Tensor:
    """True pixels per item of a …×H×W bool tensor (summing the bytes is much faster than bool sums)."""
    return mask.view(torch.uint8).sum(dim=(-2, -1), dtype=torch.int32).long()


def _as_ids(masks: torch.Tensor) -> torch.Tensor:
    """Id masks as uint8 (ids are counted in 256-bin histograms)."""
    if masks.dtype == torch.uint8:
        return masks
    if masks.numel() and (int(masks.min()) < 0 or int(masks.max()) > 255):
        raise ValueError("id masks must hold ids 0..255")
    return masks.to(torch.uint8)


def _as_bool(mask: torch.Tensor | np.ndarray) -> torch.Tensor:
    if isinstance(mask, np.ndarray):
        mask = torch.from_numpy(np.ascontiguousarray(mask))
    return mask if mask.dtype == torch.bool else mask != 0


# ----------------------------------------------------------------------------------------------
# Sequences


@dataclass
class ObjectScores:
    """Per-frame scores of one object over its evaluated frames (indices into the sequence)."""

    object_id: int
    first_frame: int
    frames: np.ndarray  # int64 N
    j: np.ndarray  # float64 N
    f: np.ndarray  # float64 N


def evaluated_frames(num_frames: int, first_frame: int, exclude_last: bool = True) -> list[int]:
    """Frames on which an object is scored: after the frame it is given on, and not the last frame
    of the sequence unless ``exclude_last`` is False (YouTube-VOS keeps it)."""
    end = num_frames - 1 if exclude_last else num_frames
    return list(range(first_frame + 1, end))


def first_appearances(gt_masks: torch.Tensor, object_ids: Iterable[int] | None = None) -> dict[int, int]:
    """Object id → index of the first frame whose ground truth contains it.

    gt_masks: T×H×W id masks (255 = void, not an object). Objects never present map to frame 0.
    """
    present = _ids_per_frame(gt_masks)
    ids = sorted(set().union(*present)) if object_ids is None else [int(o) for o in object_ids]
    first = {}
    for obj in ids:
        first[obj] = next((t for t, frame_ids in enumerate(present) if obj in frame_ids), 0)
    return first


def sequence_scores(
    pred_masks: torch.Tensor,
    gt_masks: torch.Tensor,
    object_ids: Iterable[int] | None = None,
    first_frames: Mapping[int, int] | None = None,
    *,
    exclude_last: bool = True,
    bound_th: float = 0.008,
) -> dict[int, ObjectScores]:
    """Per-object J and F over the evaluated frames of one sequence (DAVIS protocol).

    pred_masks, gt_masks: T×H×W integer id masks (0 background; 255 in the ground truth is void and
    counts as background, as in the toolkit). object_ids: objects to score (default: every id in the
    ground truth). first_frames: object → frame on which it is given (default: its first appearance in
    the ground truth); it is scored on the frames after that, excluding the sequence's last frame
    unless ``exclude_last`` is False.
    """
    if pred_masks.shape != gt_masks.shape or pred_masks.dim() != 3:
        raise ValueError(
            f"sequence_scores: expected equal T×H×W masks, got {tuple(pred_masks.shape)} and {tuple(gt_masks.shape)}"
        )
    if first_frames is None:
        first_frames = first_appearances(gt_masks, object_ids)
    ids = sorted(first_frames) if object_ids is None else [int(o) for o in object_ids]
    num_frames = gt_masks.shape[0]
    frame_idx: list[int] = []
    obj_idx: list[int] = []
    for obj in ids:
        for t in evaluated_frames(num_frames, int(first_frames.get(obj, 0)), exclude_last):
            frame_idx.append(t)
            obj_idx.append(obj)
    j, f = pair_scores(pred_masks, gt_masks, frame_idx, obj_idx, bound_th=bound_th)
    out = {}
    frame_arr, obj_arr = np.asarray(frame_idx, dtype=np.int64), np.asarray(obj_idx, dtype=np.int64)
    for obj in ids:
        sel = obj_arr == obj
        out[obj] = ObjectScores(obj, int(first_frames.get(obj, 0)), frame_arr[sel], j[sel], f[sel])
    return out


def pair_scores(
    pred_masks: torch.Tensor,
    gt_masks: torch.Tensor,
    frame_idx: Sequence[int],
    obj_idx: Sequence[int],
    bound_th: float = 0.008,
) -> tuple[np.ndarray, np.ndarray]:
    """J and F (float64 K) for K (frame, object) pairs of T×H×W id masks (ids 0..255).

    Works on the id maps directly (no per-object binary masks), a chunk of frames at a time.
    Ground-truth 255 (void) is background for every object, as in the toolkit.
    """
    count = len(frame_idx)
    j_out = np.zeros(count, dtype=np.float64)
    f_out = np.zeros(count, dtype=np.float64)
    if count == 0:
        return j_out, f_out
    if pred_masks.shape != gt_masks.shape or gt_masks.dim() != 3:
        raise ValueError(f"pair_scores: expected equal T×H×W masks, got {tuple(pred_masks.shape)} and {tuple(gt_masks.shape)}")
    pred_masks, gt_masks = _as_ids(pred_masks), _as_ids(gt_masks)
    objects = sorted({int(o) for o in obj_idx})
    if objects[0] < 1 or objects[-1] > 254:
        raise ValueError(f"pair_scores: object ids must be in 1..254, got {objects[0]}..{objects[-1]}")
    height, width = gt_masks.shape[-2:]
    radius = boundary_radius(height, width, bound_th)
    frames = np.asarray(frame_idx, dtype=np.int64)
    objs = np.asarray(obj_idx, dtype=np.int64)
    unique_frames = np.unique(frames)
    per_chunk = max(1, _FRAME_PIXELS // max(1, height * width))
    for start in range(0, unique_frames.size, per_chunk):
        chunk = unique_frames[start : start + per_chunk]
        sel = np.nonzero(np.isin(frames, chunk))[0]
        j, f = _pair_scores_chunk(pred_masks, gt_masks, chunk, frames[sel], objs[sel], radius)
        j_out[sel], f_out[sel] = j, f
    return j_out, f_out


def _pair_scores_chunk(pred_masks, gt_masks, chunk, frames, objs, radius):
    device = gt_masks.device
    _, height, width = gt_masks.shape
    objects = sorted(set(objs.tolist()))
    slots = len(objects)
    lut = torch.full((256,), -1, dtype=torch.long, device=device)
    lut[torch.tensor(objects, device=device)] = torch.arange(slots, device=device)
    # Pair k ↔ batch item (position of its frame in the chunk) · slots + slot of its object.
    items = np.searchsorted(chunk, frames) * slots + np.searchsorted(np.asarray(objects), objs)
    items_t = torch.from_numpy(items).to(device)
    batch = chunk.size * slots
    wanted = torch.zeros(batch, dtype=torch.bool, device=device)
    wanted[items_t] = True

    frame_t = torch.from_numpy(chunk).to(device)
    pred, gt = pred_masks.index_select(0, frame_t), gt_masks.index_select(0, frame_t)
    inter, n_pred, n_gt = _overlaps(pred, gt, lut)
    union = (n_pred + n_gt - inter).reshape(-1)
    jac = torch.where(union == 0, 1.0, inter.reshape(-1).double() / union.clamp_min(1).double())
    pred_pts = _id_boundary_points(pred, lut, slots, wanted)
    gt_pts = _id_boundary_points(gt, lut, slots, wanted)
    f = _f_measure(pred_pts, gt_pts, batch, height, width, radius)
    return jac[items_t].cpu().numpy(), f[items_t].cpu().numpy()


def _overlaps(pred: torch.Tensor, gt: torch.Tensor, lut: torch.Tensor):
    """|pred ∩ gt|, |pred|, |gt| per (frame, object slot) as int64 F×slots, from id histograms
    (256 bins) of each frame — one pass per frame for all objects."""
    objects = (lut >= 0).nonzero().squeeze(1)
    inter, n_pred, n_gt = [], [], []
    for p, g in zip(pred.reshape(pred.shape[0], -1), gt.reshape(gt.shape[0], -1)):
        n_pred.append(torch.bincount(p, minlength=256))
        n_gt.append(torch.bincount(g, minlength=256))
        inter.append(torch.bincount(torch.where(p == g, p, 0), minlength=256))
    return torch.stack(inter)[:, objects], torch.stack(n_pred)[:, objects], torch.stack(n_gt)[:, objects]


def _id_boundary_points(ids: torch.Tensor, lut: torch.Tensor, slots: int, wanted: torch.Tensor) -> torch.Tensor:
    """Boundary pixels of every object of F×H×W id maps, as sorted flat indices into a
    (F·slots)×H×W volume (item = frame · slots + slot), keeping only ``wanted`` items.

    A pixel whose id differs from an existing east, south or south-east neighbour is on the
    ``seg2bmap`` boundary of its own object and of each differing neighbour's object; objects not in
    ``lut`` (background, void, unscored ids) are dropped.
    """
    num, height, width = ids.shape
    plane = height * width
    east = ids[:, :, :-1] != ids[:, :, 1:]
    south = ids[:, :-1, :] != ids[:, 1:, :]
    diag = ids[:, :-1, :-1] != ids[:, 1:, 1:]
    cand = torch.zeros(ids.shape, dtype=torch.bool, device=ids.device)
    cand[:, :, :-1] |= east
    cand[:, :-1, :] |= south
    cand[:, :-1, :-1] |= diag
    flat_ids = ids.reshape(-1)
    pix = cand.reshape(-1).nonzero().squeeze(1)
    if pix.numel() == 0:
        return pix
    x = pix % width
    y = (pix % plane) // width
    own = flat_ids[pix].long()
    labels = [own]
    pixels = [pix]
    last = flat_ids.numel() - 1
    for ok, offset in ((x < width - 1, 1), (y < height - 1, width), ((x < width - 1) & (y < height - 1), width + 1)):
        other = flat_ids[(pix + offset).clamp(max=last)].long()
        keep = ok & (other != own)
        labels.append(other[keep])
        pixels.append(pix[keep])
    label = torch.cat(labels)
    pixel = torch.cat(pixels)
    slot = lut[label]
    frame = pixel // plane
    item = frame * slots + slot.clamp(min=0)
    keep = (slot >= 0) & wanted[item]
    keys = item[keep] * plane + pixel[keep] % plane
    return torch.unique(keys)  # sorted, and a pixel bordering one object on two sides counts once


def _ids_per_frame(gt_masks: torch.Tensor) -> list[set[int]]:
    """Object ids (1..254) present in each frame of T×H×W id masks."""
    present = []
    for frame in _as_ids(gt_masks).reshape(gt_masks.shape[0], -1):
        counts = torch.bincount(frame, minlength=256)[1:255]
        present.append(set((counts.nonzero().squeeze(1) + 1).tolist()))
    return present


# ----------------------------------------------------------------------------------------------
# Statistics


def decay_bins(count: int) -> list[tuple[int, int]]:
    """The toolkit's four temporal bins over ``count`` values as inclusive (start, end) index pairs.

    Edges are round-half-up(k·(count−1)/4), k = 0..4; bin i spans edge i to edge i+1 inclusive.
    Computed in exact integers, with no uint8 wrap-around.
    """
    edges = [(k * (count - 1) + 2) // 4 for k in range(5)]
    return [(edges[i], edges[i + 1]) for i in range(4)]


def summarize(values: np.ndarray | torch.Tensor | Sequence[float]) -> tuple[float, float, float]:
    """(Mean, Recall, Decay) of one object's per-frame values, as the toolkit's ``db_statistics``.

    Mean ignores NaNs; Recall is the fraction of values > 0.5; Decay is the mean of the first temporal
    quarter minus that of the last (see :func:`decay_bins`). All NaN for an empty input.
    """
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().double().numpy()
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    if values.size == 0:
        return math.nan, math.nan, math.nan
    mean = _nanmean(values)
    recall = float(np.mean(values > 0.5))
    bins = decay_bins(values.size)
    first, last = bins[0], bins[3]
    decay = _nanmean(values[first[0] : first[1] + 1]) - _nanmean(values[last[0] : last[1] + 1])
    return mean, recall, decay


def _nanmean(values: np.ndarray) -> float:
    finite = values[~np.isnan(values)]
    return float(np.mean(finite)) if finite.size else math.nan


def youtube_g(
    per_object_scores: Iterable[Mapping],
    seen_categories: Collection[str],
) -> dict:
    """YouTube-VOS overall score G = mean(J_seen, F_seen, J_unseen, F_unseen).

    per_object_scores: records with ``category``, ``J-Mean`` and ``F-Mean`` (as in a score report's
    ``objects``); records without a category or with a NaN/None mean (no evaluated frame) are skipped.
    seen_categories: the categories of the training set. Each of the four terms is the mean over the
    objects of its group; G averages the terms whose group is not empty.
    """
    seen_set = set(seen_categories)
    groups: dict[str, dict[str, list[float]]] = {"seen": {"J": [], "F": []}, "unseen": {"J": [], "F": []}}
    for rec in per_object_scores:
        category = rec.get("category")
        jm, fm = rec.get("J-Mean"), rec.get("F-Mean")
        if category is None or jm is None or fm is None or math.isnan(jm) or math.isnan(fm):
            continue
        group = groups["seen" if category in seen_set else "unseen"]
        group["J"].append(float(jm))
        group["F"].append(float(fm))
    out: dict = {}
    terms = []
    for name, group in groups.items():
        for measure in ("J", "F"):
            value = float(np.mean(group[measure])) if group[measure] else math.nan
            out[f"{measure}_{name}"] = value
            if not math.isnan(value):
                terms.append(value)
        out[f"num_{name}"] = len(group["J"])
    out["G"] = float(np.mean(terms)) if terms else math.nan
    return out
