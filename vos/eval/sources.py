"""What an evaluation runs on: each benchmark turned into sequence jobs.

A :class:`SequenceJob` is one video as the evaluation loop sees it: the frames in play order, the
name each prediction is written under, the frames that carry annotations (each object is given to
the model on its first-appearance frame only) and the frames whose prediction is saved. An
:class:`EvalPlan` is all the jobs of a dataset plus how it is scored and packaged.

Layouts (``root`` is what ``vos eval --root`` receives):

* ``d16`` — DAVIS 2017 ``trainval`` root with ``ImageSets/2016/val.txt`` (as XMem); every nonzero id
  is merged into object 1 (DAVIS 2016 is single-object), scored with ``binary``.
* ``d17`` — DAVIS 2017 ``trainval`` root, ``ImageSets/2017/val.txt``; scored.
* ``d17-test`` — DAVIS 2017 ``test-dev`` root, ``ImageSets/2017/test-dev.txt``; not scored; a
  submission zip of ``<sequence>/<frame>.png``.
* ``y18`` / ``y19`` — a YouTube-VOS root holding ``valid/{JPEGImages,Annotations,meta.json}``. When
  ``all_frames/valid_all_frames/JPEGImages`` (XMem's layout) or ``valid_all_frames/JPEGImages``
  exists, every frame of it is processed; only the frames that ``meta.json`` lists (else the frames of
  ``valid/JPEGImages``) are saved. Not scored; a submission zip of ``Annotations/<video>/<frame>.png``.
* ``lv1`` — Long-Time Video: ``JPEGImages/<video>/*.jpg`` and ``Annotations/<video>/*.png`` holding the
  sparse ground truth (the root itself, or its ``long_video`` folder, XMem's download layout). Scored
  with the DAVIS protocol on the annotated frames (first and last excluded), as XMem's ``_davis``
  copies are scored with the DAVIS toolkit.
* ``lv3`` — Long-Time Video ×3: when the root has XMem's pre-extended ``long_video_x3`` folder, that
  folder is evaluated as it is. Otherwise the LV1 videos are played forward, backward, forward
  (3·n frames, the turning frames shown twice) and predictions are named by their position on that
  timeline (``00000.png`` …); the ground truth of each annotated frame is copied to each of its
  three positions for scoring.
* ``generic`` — XMem's generic layout ``JPEGImages/<video>/`` + ``Annotations/<video>/<frame>.png``,
  or ``<video>/`` frame folders directly under the root with masks in ``Annotations/<video>/`` (a mask
  named like the frame it annotates, at least the first). Every frame is saved; not scored.
* ``synthetic`` — the generated DAVIS-layout set (``vos data synthetic``), ``val`` split; scored.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from vos.data.datasets import open_dataset
from vos.data.io import list_frames
from vos.errors import DataError, VosError

DATASETS = ("d16", "d17", "d17-test", "y18", "y19", "lv1", "lv3", "generic", "synthetic")

FLAT_LAYOUT = "JPEGImages/<video>/*.jpg and Annotations/<video>/*.png"
GENERIC_LAYOUT = f"{FLAT_LAYOUT}, or <video>/*.jpg folders with Annotations/<video>/<frame>.png"


@dataclass
class SequenceJob:
    """One video to segment.

    frames: frame files in play order (a file may repeat: LV ×3). names: the output stem of each
    position. annotations: position → mask file; objects are introduced on the first position whose
    mask shows them. save: positions whose prediction is written (``None``: all). gt: for scoring a
    timeline that is not the files' own (LV ×3): output stem → ground-truth mask file.
    """

    name: str
    frames: list[Path]
    names: list[str]
    annotations: dict[int, Path]
    save: set[int] | None = None
    categories: dict[int, str] = field(default_factory=dict)
    gt: dict[str, Path] | None = None

    @property
    def num_frames(self) -> int:
        return len(self.frames)

    def saves(self, t: int) -> bool:
        return self.save is None or t in self.save

    @property
    def num_saved(self) -> int:
        return len(self.frames) if self.save is None else len(self.save)


@dataclass
class EvalPlan:
    """A dataset ready to evaluate.

    gt_dir: ground-truth ``<sequence>/<frame>.png`` folder for scoring (``None``: not scored; LV ×3
    scores against copies written into the output folder, see ``SequenceJob.gt``). binary: merge all
    object ids into one (DAVIS 2016). submission: zip layout (``youtube``: ``Annotations/<vid>/...``,
    ``davis``: ``<vid>/...``) or ``None``.
    """

    dataset: str
    root: Path
    jobs: list[SequenceJob]
    scored: bool
    gt_dir: Path | None = None
    protocol: Literal["davis", "youtube"] = "davis"
    binary: bool = False
    submission: Literal["youtube", "davis"] | None = None

    @property
    def names(self) -> list[str]:
        return [job.name for job in self.jobs]


def build_plan(dataset: str, root: str | Path) -> EvalPlan:
    """Index ``root`` as ``dataset`` (one of :data:`DATASETS`); raises DataError for a wrong layout."""
    if dataset not in DATASETS:
        raise VosError(f"unknown dataset {dataset!r} (expected one of {', '.join(DATASETS)})")
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: dataset root not found ({_expected(dataset)})")
    if dataset in ("d16", "d17", "synthetic"):
        year = "2016" if dataset == "d16" else "2017"
        ds = open_dataset(root, "val", layout="davis", year=year)
        jobs = [_plain_job(v.name, v.frames, v.annotations) for v in ds.videos]
        return EvalPlan(dataset, root, jobs, scored=True, gt_dir=root / "Annotations" / "480p", binary=dataset == "d16")
    if dataset == "d17-test":
        ds = open_dataset(root, "test-dev", layout="davis", year="2017")
        jobs = [_plain_job(v.name, v.frames, v.annotations) for v in ds.videos]
        return EvalPlan(dataset, root, jobs, scored=False, submission="davis")
    if dataset in ("y18", "y19"):
        return EvalPlan(dataset, root, _youtube_jobs(root), scored=False, submission="youtube")
    if dataset == "lv1":
        base = root / "long_video" if (root / "long_video" / "JPEGImages").is_dir() else root
        jobs = [_plain_job(*v) for v in _open_flat(base, generic=False)]
        return EvalPlan(dataset, root, jobs, scored=True, gt_dir=base / "Annotations")
    if dataset == "lv3":
        if (root / "long_video_x3" / "JPEGImages").is_dir():  # XMem's released ×3 set: use it as it is
            base = root / "long_video_x3"
            jobs = [_plain_job(*v) for v in _open_flat(base, generic=False)]
            return EvalPlan(dataset, root, jobs, scored=True, gt_dir=base / "Annotations")
        base = root / "long_video" if (root / "long_video" / "JPEGImages").is_dir() else root
        jobs = [_x3_job(*v) for v in _open_flat(base, generic=False)]
        return EvalPlan(dataset, root, jobs, scored=True, gt_dir=None)
    # generic
    jobs = [_plain_job(*v) for v in _open_flat(root, generic=True)]
    return EvalPlan(dataset, root, jobs, scored=False)


def x3_order(n: int) -> list[int]:
    """Frame indices of a video of ``n`` frames played forward, backward, forward (3·n positions)."""
    forward = list(range(n))
    return forward + forward[::-1] + forward


def shard_jobs(jobs: list[SequenceJob], shard: tuple[int, int]) -> list[SequenceJob]:
    """The jobs of shard ``i`` of ``n``: every n-th job from the i-th (round robin, which spreads long
    and short videos over the shards); the shards of one ``n`` partition the jobs."""
    i, n = shard
    return [job for k, job in enumerate(jobs) if k % n == i]


# ----------------------------------------------------------------------------------------------


def _plain_job(name: str, frames: list[Path], annotations: dict[int, Path]) -> SequenceJob:
    return SequenceJob(name=name, frames=list(frames), names=[f.stem for f in frames], annotations=dict(annotations))


def _x3_job(name: str, frames: list[Path], annotations: dict[int, Path]) -> SequenceJob:
    order = x3_order(len(frames))
    width = max(5, len(str(len(order) - 1)))
    names = [f"{t:0{width}d}" for t in range(len(order))]
    timeline_ann = {t: annotations[s] for t, s in enumerate(order) if s in annotations}
    gt = {names[t]: path for t, path in timeline_ann.items()}
    return SequenceJob(name=name, frames=[frames[s] for s in order], names=names, annotations=timeline_ann, gt=gt)


def _open_flat(root: Path, generic: bool) -> list[tuple[str, list[Path], dict[int, Path]]]:
    """(name, frames, annotations) of a JPEGImages/<video> + Annotations/<video> root (generic: or
    <video>/ frame folders beside an Annotations folder)."""
    layout = GENERIC_LAYOUT if generic else FLAT_LAYOUT
    ann_root = root / "Annotations"
    if (root / "JPEGImages").is_dir():
        img_root = root / "JPEGImages"
        videos = sorted(p for p in img_root.iterdir() if p.is_dir())
    elif generic:
        img_root = root
        videos = sorted(p for p in root.iterdir() if p.is_dir() and p.name != "Annotations" and list_frames(p))
    else:
        raise DataError(f"{root}: missing JPEGImages (expected {layout})")
    if not ann_root.is_dir():
        raise DataError(f"{root}: missing Annotations (expected {layout})")
    if not videos:
        raise DataError(f"{img_root}: no video folders (expected {layout})")
    out = []
    for video in videos:
        frames = list_frames(video)
        if not frames:
            raise DataError(f"{video}: video without frames")
        masks = sorted((ann_root / video.name).glob("*.png")) if (ann_root / video.name).is_dir() else []
        if not masks:
            raise DataError(f"{ann_root / video.name}: no annotation for video '{video.name}' (need a mask of its first frame)")
        index = {f.stem: t for t, f in enumerate(frames)}
        annotations = {}
        for mask in masks:
            if mask.stem not in index:
                raise DataError(f"{mask}: annotation matches no frame of video '{video.name}' (masks are named like their frames)")
            annotations[index[mask.stem]] = mask
        out.append((video.name, frames, annotations))
    return out


def _youtube_jobs(root: Path) -> list[SequenceJob]:
    if not (root / "valid").is_dir() and not (root / "meta.json").is_file():
        davis = (root / "JPEGImages" / "480p").is_dir() or (root / "ImageSets").is_dir()
        hint = "; it looks like a DAVIS root (--dataset d16 or d17)" if davis else ""
        raise DataError(f"{root}: not a YouTube-VOS root (expected valid/JPEGImages/<video>/ and valid/meta.json){hint}")
    ds = open_dataset(root, "valid", layout="youtube")
    base = root / "valid" if (root / "valid").is_dir() else root
    meta_frames = _meta_frames(base / "meta.json")
    all_frames = next(
        (p for p in (root / "all_frames" / "valid_all_frames" / "JPEGImages", root / "valid_all_frames" / "JPEGImages") if p.is_dir()),
        None,
    )
    jobs = []
    for video in ds.videos:
        valid_stems = [f.stem for f in video.frames]
        wanted = meta_frames.get(video.name) or valid_stems
        if all_frames is not None:
            frames = list_frames(all_frames / video.name) if (all_frames / video.name).is_dir() else []
            if not frames:
                raise DataError(f"{all_frames / video.name}: video '{video.name}' has no frames in the all-frames folder")
        else:
            frames = video.frames
        index = {f.stem: t for t, f in enumerate(frames)}
        annotations = {}
        for t, mask in video.annotations.items():
            stem = video.frames[t].stem
            if stem not in index:
                raise DataError(f"{mask}: annotated frame {stem} of video '{video.name}' is missing from {all_frames / video.name}")
            annotations[index[stem]] = mask
        missing = [s for s in wanted if s not in index]
        if missing:
            where = all_frames / video.name if all_frames is not None else video.frames[0].parent
            raise DataError(f"{where}: frame {missing[0]} of video '{video.name}' listed in meta.json is missing")
        jobs.append(
            SequenceJob(
                name=video.name,
                frames=frames,
                names=[f.stem for f in frames],
                annotations=annotations,
                save={index[s] for s in wanted},
                categories=dict(video.categories),
            )
        )
    return jobs


def _meta_frames(meta_file: Path) -> dict[str, list[str]]:
    """video → the frames meta.json lists for any of its objects (the frames to submit)."""
    if not meta_file.is_file():
        return {}
    try:
        videos = json.loads(meta_file.read_text())["videos"]
        out = {}
        for name, info in videos.items():
            stems = {str(s) for obj in info.get("objects", {}).values() for s in obj.get("frames", [])}
            out[name] = sorted(stems)
        return out
    except (ValueError, KeyError, TypeError, AttributeError):
        raise DataError(f"{meta_file}: not a YouTube-VOS meta.json (expected {{'videos': {{video: {{'objects': ...}}}}}})") from None


def _expected(dataset: str) -> str:
    if dataset in ("d16", "d17", "synthetic"):
        return "expected a DAVIS root: JPEGImages/480p, Annotations/480p, ImageSets"
    if dataset == "d17-test":
        return "expected the DAVIS 2017 test-dev root: JPEGImages/480p, Annotations/480p, ImageSets/2017/test-dev.txt"
    if dataset in ("y18", "y19"):
        return "expected a YouTube-VOS root: valid/JPEGImages, valid/Annotations, valid/meta.json"
    if dataset in ("lv1", "lv3"):
        return f"expected the Long-Time Video set: {FLAT_LAYOUT}"
    return f"expected {GENERIC_LAYOUT}"
