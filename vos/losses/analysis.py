"""Dataset analyses from the thesis: how well a box and the colour assumptions fit a dataset.

``temporal_consistency`` (Table 3.1): how often the temporal colour-matching assumption — "two
patches of similar colour in consecutive frames belong to the same object" — holds, for a range of
similarity thresholds τ. Clips are drawn exactly as in training (``ClipDataset``: frame sampling,
augmentation, resize/crop) and compared at the loss resolution with the temporal loss's own matcher
(``vos.losses.weak.temporal_matches``: N×N Lab patches, the candidate grid in the next frame of the
cyclic tube, top-K), then for every object:

- a *match* is a kept candidate (p in frame t, p' = p + offset in frame t+1 mod T) with S ≥ τ;
- it is a true positive when p and p' carry the same label for that object (both inside or both
  outside its mask), a false positive otherwise;
- supervision proportion = matches / (K · T · N_o · H · W) (the thesis's denominator: every pixel of
  every frame, object and batch element, times the K candidates a pixel may keep);
  precision = TP / (TP + FP).

Both are computed per clip and averaged over clips, as in the thesis. At τ = 0 every in-image top-K
candidate is kept, so the proportion is just below 100 % (pixels near the border have fewer than K
candidates inside the image).

``fill_ratios`` (Fig. A.2): for every object in every annotated frame, mask area / tight-box area —
how much of its box an object fills, i.e. how much a box tells about the shape.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import torch

from vos.data.config import DataConfig, DatasetSpec
from vos.data.datasets import detect_layout, open_dataset
from vos.data.io import read_mask
from vos.errors import DataError
from vos.losses.color import frames_to_lab
from vos.losses.config import LossConfig
from vos.losses.resample import area_downsample
from vos.losses.weak import candidate_offsets, temporal_matches

TABLE_3_1_TAUS = (0.0, 0.005, 0.01, 0.05, 0.1, 0.2, 0.3)


def _dataset_kind(root: Path) -> str:
    return "youtube" if detect_layout(root) == "youtube" else "davis"


def temporal_consistency(
    root: str | os.PathLike,
    taus: tuple[float, ...] = TABLE_3_1_TAUS,
    clips: int = 200,
    data: DataConfig | None = None,
    losses: LossConfig | None = None,
    split: str = "train",
    seed: int = 0,
    progress=None,
) -> dict:
    """Table 3.1 for the dataset at ``root``: {"taus", "proportion", "precision", "clips", settings}.

    ``data`` gives the training pre-processing (frames per clip, size, max objects, augmentation;
    default ``DataConfig()``: the thesis's 8 frames at 384²) — its dataset list is replaced by
    ``root``; ``losses`` the matcher's constants (patch, candidates, spacing, top-K, γ, stride).
    ``progress``: optional callable ``(done, total)``.
    """
    from vos.data.clips import ClipDataset  # heavy imports (augmentation) only when used

    root = Path(root)
    data = data or DataConfig()
    losses = losses or LossConfig()
    spec = DatasetSpec(kind=_dataset_kind(root), root=str(root), split=split, weight=1.0)
    data = replace(data, datasets=[spec], supervision="mask")
    dataset = ClipDataset(data, seed=seed, total_draws=clips)
    sums_prop = torch.zeros(len(taus), dtype=torch.float64)
    sums_prec = torch.zeros(len(taus), dtype=torch.float64)
    counted_prec = torch.zeros(len(taus), dtype=torch.float64)
    for draw in range(clips):
        sample = dataset[draw]
        proportion, precision = _clip_consistency(sample, taus, losses)
        sums_prop += proportion
        has = ~torch.isnan(precision)
        sums_prec += torch.where(has, precision, 0.0)
        counted_prec += has.double()
        if progress is not None:
            progress(draw + 1, clips)
    return {
        "root": str(root),
        "split": split,
        "clips": clips,
        "frames": data.num_frames,
        "size": data.size,
        "stride": losses.temporal_stride,
        "taus": list(taus),
        "proportion": (sums_prop / clips).tolist(),
        # clips with no match at some τ have no precision there; averaged over the clips that do
        "precision": (sums_prec / counted_prec.clamp_min(1)).where(counted_prec > 0, torch.nan).tolist(),
    }


def _clip_consistency(sample: dict, taus: tuple[float, ...], losses: LossConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-τ supervision proportion and precision of one clip (T×3×S×S frames, T×O×S×S masks)."""
    stride = losses.temporal_stride
    lab = frames_to_lab(sample["rgb"][None], stride)  # 1×T×3×h×w
    valid = sample["object_valid"]
    masks = sample["masks"][:, valid]  # T×N_o×S×S
    labels = area_downsample(masks.float(), stride) > 0.5  # T×N_o×h×w, the label of a loss pixel
    frames, objects, height, width = labels.shape
    following = (torch.arange(frames) + 1) % frames
    offsets = candidate_offsets(losses.temp_candidates, losses.temp_spacing)
    radius = max(max(abs(dy), abs(dx)) for dy, dx in offsets)
    # same[c]: p and p + offset_c in the next frame carry the same label, per object (T×N_o×h×w)
    padded = torch.nn.functional.pad(labels[following].float(), (radius,) * 4, value=-1.0)
    same = torch.stack(
        [padded[..., radius + dy : radius + dy + height, radius + dx : radius + dx + width] == labels.float()
         for dy, dx in offsets],
        dim=2,
    )  # T×N_o×C×h×w
    denominator = losses.temp_top_k * frames * objects * height * width
    proportion = torch.zeros(len(taus), dtype=torch.float64)
    precision = torch.full((len(taus),), torch.nan, dtype=torch.float64)
    for i, tau in enumerate(taus):
        kept = temporal_matches(
            lab, losses.temp_patch, losses.temp_candidates, losses.temp_spacing, losses.temp_top_k,
            losses.temp_gamma, tau,
        )[0]  # T×C×h×w, the same for every object
        kept = kept[:, None].expand(-1, objects, -1, -1, -1)
        matches = int(kept.sum())
        proportion[i] = matches / denominator
        if matches:
            precision[i] = int((kept & same).sum()) / matches
    return proportion, precision


def fill_ratios(root: str | os.PathLike, split: str | None = None, max_videos: int | None = None) -> list[float]:
    """Mask area / tight-box area of every object in every annotated frame of ``split`` (Fig. A.2)."""
    dataset = open_dataset(root, split=split)
    if not dataset.videos:
        raise DataError(f"{root}: no videos in split {dataset.split!r}")
    ratios = []
    for video in dataset.videos[:max_videos]:
        for path in video.annotations.values():
            ids = read_mask(path)
            for obj in torch.unique(ids).tolist():
                if obj in (0, 255):
                    continue
                ys, xs = torch.nonzero(ids == obj, as_tuple=True)
                box_area = (int(ys.max()) - int(ys.min()) + 1) * (int(xs.max()) - int(xs.min()) + 1)
                ratios.append(len(ys) / box_area)
    return ratios


def histogram(values: list[float], bins: int = 20, lo: float = 0.0, hi: float = 1.0) -> tuple[list[float], list[int]]:
    """Equal-width bins over [lo, hi] (the last one closed): (left edges, counts)."""
    counts = [0] * bins
    width = (hi - lo) / bins
    for v in values:
        if lo <= v <= hi:
            counts[min(bins - 1, int((v - lo) / width))] += 1
    return [lo + i * width for i in range(bins)], counts
