"""Scoring folders of predicted masks against ground truth (``vos score PRED_DIR GT_DIR``).

Both folders hold ``<sequence>/<frame>.png`` index masks (palette or grayscale). Every ground-truth
frame needs a prediction of the same name; a prediction sequence without ground truth, or (``davis``)
a prediction frame without ground truth, is an error naming it, never a reason to switch protocols.
Two protocols:

* ``davis`` — dense ground truth: each object is scored from the frame after its first appearance to
  the second-to-last frame (the DAVIS semi-supervised protocol: first and last frame excluded).
* ``youtube`` — sparse ground truth (YouTube-VOS style, fewer annotated frames than predicted ones):
  each object is scored on the annotated frames after its first appearance, the last one included.

``auto`` reads the protocol from the ground-truth layout alone: ``youtube`` when the frame numbers of
some sequence have gaps (sparse annotations), ``davis`` otherwise; the report says which and why. Ground-truth 255 is void (background for every object), as in the toolkit; with
``binary=True`` all nonzero ids form one object (DAVIS 2016, whose annotations are 0/255).

Sequences are scored in parallel (a thread or process pool); frames are read and scored in chunks,
so memory does not grow with the sequence length.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Collection, Mapping, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ProcessPoolExecutor, ThreadPoolExecutor, wait
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from vos.data.io import list_frames, read_mask
from vos.errors import DataError, VosError
from vos.progress import progress as show_progress
from vos.eval.metrics import pair_scores, summarize, youtube_g

Protocol = Literal["auto", "davis", "youtube"]

STAT_KEYS = ("J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall", "F-Decay")
# Frames × H × W pixels of id masks read per chunk of a sequence.
_CHUNK_PIXELS = 1 << 23


def score_folders(
    pred_dir: str | os.PathLike,
    gt_dir: str | os.PathLike,
    sequences: Sequence[str] | None = None,
    workers: int | None = None,
    progress: bool = True,
    *,
    protocol: Protocol = "auto",
    bound_th: float = 0.008,
    binary: bool = False,
    executor: Literal["thread", "process"] = "thread",
    categories: Mapping[str, Mapping[int, str]] | None = None,
    seen_categories: Collection[str] | None = None,
    runtime: Mapping[str, Any] | None = None,
    strict: bool = True,
) -> dict:
    """Score every sequence of ``gt_dir`` (or ``sequences``) against ``pred_dir``; return the report.

    workers: sequences scored in parallel (default: one per CPU core, at most one per sequence; ≤ 1
    scores them one after the other in this thread). executor: ``thread`` (no start-up cost; torch
    ops and PNG decoding release the GIL) or ``process`` (``spawn``ed workers, each importing torch
    first — worth it on many cores; a calling script needs the ``if __name__ == "__main__"`` guard).
    Either way each sequence runs torch on one intra-op thread. binary: merge every nonzero id (255 included) into object 1
    in both folders — the single-object DAVIS 2016 protocol, whose annotations are 0/255 masks. categories: sequence → object id → category, recorded per object; with
    seen_categories (the training categories) the report gets YouTube-VOS G under ``youtube``.
    runtime: FPS / peak-memory fields filled in by an evaluation loop (see :mod:`vos.eval.report`).
    strict: a prediction frame without ground truth is an error under ``davis``; the evaluation loop
    turns it off where it predicts every frame of sparse ground truth (Long-Time Video, scored as XMem does).
    The report holds ``global``, ``sequences`` (per sequence, with its objects) and ``objects`` (one
    record per object, with per-frame J and F).
    """
    start = time.perf_counter()
    pred_root, gt_root = Path(pred_dir), Path(gt_dir)
    if protocol not in ("auto", "davis", "youtube"):
        raise VosError(f"unknown scoring protocol {protocol!r} (expected auto, davis or youtube)")
    if executor not in ("thread", "process"):
        raise VosError(f"unknown scoring executor {executor!r} (expected thread or process)")
    for root, what in ((pred_root, "predictions"), (gt_root, "ground truth")):
        if not root.is_dir():
            raise DataError(f"{root}: {what} folder not found (expected <sequence>/<frame>.png masks)")
    names = _sequence_names(gt_root, sequences)
    for name in names:
        if not (pred_root / name).is_dir():
            raise DataError(f"{pred_root / name}: no predictions for sequence {name}")
    if sequences is None:
        stray = sorted(p.name for p in pred_root.iterdir() if p.is_dir() and p.name not in names and any(p.glob("*.png")))
        if stray:
            more = f" (and {len(stray) - 1} more)" if len(stray) > 1 else ""
            raise DataError(f"{pred_root / stray[0]}: predictions for sequence {stray[0]}, which has no ground truth in {gt_root}{more}")
    source = "given"
    if protocol == "auto":
        sparse = next((n for n in names if _sparse(gt_root / n)), None)
        protocol = "youtube" if sparse else "davis"
        source = (f"inferred: the ground truth of {sparse} skips frame numbers" if sparse
                  else "inferred: the ground-truth frames are consecutive")

    jobs = [(str(pred_root / n), str(gt_root / n), n, protocol, bound_th, binary, strict) for n in names]
    if workers is None:
        workers = os.cpu_count() or 1
    workers = max(1, min(int(workers), len(jobs)))
    results = _run(jobs, workers, executor, progress)

    report = build_report(results, categories=categories, seen_categories=seen_categories)
    report["protocol_source"] = source
    report["pred_dir"], report["gt_dir"] = str(pred_root), str(gt_root)
    report["bound_th"] = bound_th
    report["binary"] = binary
    report["scoring"] = {"seconds": time.perf_counter() - start, "workers": workers, "executor": executor}
    report["runtime"] = {"fps": None, "peak_memory_bytes": None, **dict(runtime or {})}
    return report


def score_sequence(
    pred_seq_dir: str | os.PathLike,
    gt_seq_dir: str | os.PathLike,
    name: str | None = None,
    protocol: Protocol = "auto",
    bound_th: float = 0.008,
    binary: bool = False,
    strict: bool = True,
) -> dict:
    """Score one sequence folder pair; returns per-object per-frame J and F (see :func:`build_report`)."""
    t0 = time.perf_counter()
    pred_seq_dir, gt_seq_dir = Path(pred_seq_dir), Path(gt_seq_dir)
    name = name or gt_seq_dir.name
    gt_files = [p for p in list_frames(gt_seq_dir) if p.suffix.lower() == ".png"]
    if not gt_files:
        raise DataError(f"{gt_seq_dir}: no ground-truth masks (.png) for sequence {name}")
    if not pred_seq_dir.is_dir():
        raise DataError(f"{pred_seq_dir}: no predictions for sequence {name}")
    pred_by_stem = {p.stem: p for p in list_frames(pred_seq_dir) if p.suffix.lower() == ".png"}
    missing = [g.stem for g in gt_files if g.stem not in pred_by_stem]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise DataError(f"{pred_seq_dir / (missing[0] + '.png')}: missing prediction for sequence {name}, frame {missing[0]}{more}")
    if protocol == "auto":
        protocol = "youtube" if _sparse(gt_seq_dir) else "davis"
    exclude_last = protocol == "davis"
    if protocol == "davis" and strict:
        gt_stems = {g.stem for g in gt_files}
        stray = sorted(stem for stem in pred_by_stem if stem not in gt_stems)
        if stray:
            more = f" (and {len(stray) - 1} more)" if len(stray) > 1 else ""
            raise DataError(
                f"{pred_by_stem[stray[0]]}: prediction frame {stray[0]} of sequence {name} has no ground truth{more} "
                "(the davis protocol needs one prediction per ground-truth frame; sparse ground truth: --protocol youtube)"
            )

    num = len(gt_files)
    first: dict[int, int] = {}  # object → index of its first ground-truth frame
    values: dict[int, dict[str, list]] = {}
    pred_max: list[tuple[int, str]] = []  # checked once every object of the sequence is known
    height, width = read_mask(gt_files[0]).shape
    chunk = max(1, _CHUNK_PIXELS // max(1, height * width))  # frames read and scored together
    for t in range(0, num, chunk):
        paths = gt_files[t : t + chunk]
        gts = [read_mask(p) for p in paths]
        preds = [read_mask(pred_by_stem[p.stem]) for p in paths]
        if binary:
            gts = [(g != 0).to(torch.uint8) for g in gts]
            preds = [(p != 0).to(torch.uint8) for p in preds]
        for g_path, g, p in zip(paths, gts, preds):
            if g.shape != (height, width):
                raise DataError(f"{g_path}: mask is {g.shape[1]}×{g.shape[0]}, sequence {name} is {width}×{height}")
            if p.shape != g.shape:
                raise DataError(
                    f"{pred_by_stem[g_path.stem]}: prediction is {p.shape[1]}×{p.shape[0]}, "
                    f"ground truth is {g.shape[1]}×{g.shape[0]}"
                )
        gt_chunk, pred_chunk = torch.stack(gts), torch.stack(preds)
        frame_idx, obj_idx = [], []
        for local, path in enumerate(paths):
            index = t + local
            counts = torch.bincount(gt_chunk[local].reshape(-1), minlength=256)
            for obj in (counts[1:255].nonzero().squeeze(1) + 1).tolist():
                first.setdefault(obj, index)
            pred_max.append((int(pred_chunk[local].max()), path.stem))
            if exclude_last and index == num - 1:
                continue
            for obj, appeared in first.items():
                if appeared < index:
                    frame_idx.append(local)
                    obj_idx.append(obj)
        j, f = pair_scores(pred_chunk, gt_chunk, frame_idx, obj_idx, bound_th=bound_th)
        for k, (local, obj) in enumerate(zip(frame_idx, obj_idx)):
            rec = values.setdefault(obj, {"frames": [], "J": [], "F": []})
            rec["frames"].append(paths[local].stem)
            rec["J"].append(float(j[k]))
            rec["F"].append(float(f[k]))

    if not first:
        raise DataError(
            f"{gt_seq_dir}: the ground truth of sequence {name} has no object (ids 1..254); "
            "for 0/255 single-object masks (DAVIS 2016) score with binary=True"
        )
    max_obj = max(first)
    for value, stem in pred_max:
        if value > max_obj:
            raise DataError(
                f"{pred_by_stem[stem]}: prediction has object id {value}, but the ground truth of sequence "
                f"{name} has objects only up to {max_obj}"
            )
    objects = []
    for obj in sorted(first):
        rec = values.get(obj, {"frames": [], "J": [], "F": []})
        objects.append({"object": obj, "first_frame": gt_files[first[obj]].stem, **rec})
    return {
        "sequence": name,
        "protocol": protocol,
        "num_frames": num,
        "num_predicted_frames": len(pred_by_stem),
        "height": height,
        "width": width,
        "objects": objects,
        "seconds": time.perf_counter() - t0,
    }


def build_report(
    sequence_results: Sequence[Mapping],
    categories: Mapping[str, Mapping[int, str]] | None = None,
    seen_categories: Collection[str] | None = None,
) -> dict:
    """Summaries from :func:`score_sequence` results: per object, per sequence and global.

    Global numbers follow the toolkit: each statistic is the mean over all objects of the per-object
    statistic, and J&F-Mean = (J-Mean + F-Mean) / 2. Objects with no evaluated frame (e.g. given only
    on the last frame) are listed with null statistics and left out of the means.
    """
    objects: list[dict] = []
    sequences: dict[str, dict] = {}
    protocols: set[str] = set()
    for seq in sequence_results:
        name = seq["sequence"]
        protocols.add(seq["protocol"])
        seq_objects = []
        for obj in seq["objects"]:
            jm, jr, jd = summarize(obj["J"])
            fm, fr, fd = summarize(obj["F"])
            rec = {
                "sequence": name,
                "object": int(obj["object"]),
                "first_frame": obj["first_frame"],
                "num_frames": len(obj["J"]),
                "J&F-Mean": (jm + fm) / 2,
                "J-Mean": jm,
                "J-Recall": jr,
                "J-Decay": jd,
                "F-Mean": fm,
                "F-Recall": fr,
                "F-Decay": fd,
            }
            if categories is not None:
                rec["category"] = _category(categories, name, int(obj["object"]))
            rec["per_frame"] = {"frames": list(obj["frames"]), "J": list(obj["J"]), "F": list(obj["F"])}
            objects.append(rec)
            seq_objects.append(rec)
        sequences[name] = {
            "protocol": seq["protocol"],
            "num_frames": seq["num_frames"],
            "height": seq["height"],
            "width": seq["width"],
            "num_objects": len(seq_objects),
            **_aggregate(seq_objects),
            "objects": [rec["object"] for rec in seq_objects],
            "seconds": seq.get("seconds"),
        }
    report: dict[str, Any] = {
        "protocol": sorted(protocols)[0] if len(protocols) == 1 else sorted(protocols),
        "global": {
            **_aggregate(objects),
            "num_sequences": len(sequences),
            "num_objects": len(objects),
            "num_objects_scored": sum(1 for o in objects if o["num_frames"] > 0),
        },
        "sequences": sequences,
        "objects": objects,
    }
    if categories is not None and seen_categories is not None:
        report["youtube"] = youtube_g(objects, seen_categories)
    return report


def categories_from_meta(meta: str | os.PathLike | Mapping) -> dict[str, dict[int, str]]:
    """YouTube-VOS ``meta.json`` (path or parsed) → sequence → object id → category."""
    if not isinstance(meta, Mapping):
        path = Path(meta)
        try:
            meta = json.loads(path.read_text())
        except FileNotFoundError:
            raise DataError(f"{path}: meta.json not found") from None
        except (OSError, ValueError) as exc:
            raise DataError(f"{path}: unreadable meta.json ({exc.__class__.__name__})") from None
    videos = meta.get("videos") if isinstance(meta, Mapping) else None
    if not isinstance(videos, Mapping):
        raise DataError("meta.json: expected {'videos': {video: {'objects': {id: {'category': ...}}}}}")
    out: dict[str, dict[int, str]] = {}
    for video, info in videos.items():
        objs = info.get("objects", {}) if isinstance(info, Mapping) else {}
        out[str(video)] = {int(k): str(v.get("category", "")) for k, v in objs.items() if isinstance(v, Mapping)}
    return out


def seen_categories_from_meta(train_meta: str | os.PathLike | Mapping) -> set[str]:
    """The categories of a YouTube-VOS training ``meta.json``: the 'seen' ones."""
    return {c for objs in categories_from_meta(train_meta).values() for c in objs.values() if c}


# ----------------------------------------------------------------------------------------------


def _aggregate(records: Sequence[Mapping]) -> dict[str, float]:
    scored = [r for r in records if r["num_frames"] > 0]
    out = {key: float(np.mean([r[key] for r in scored])) if scored else math.nan for key in STAT_KEYS}
    out = {"J&F-Mean": (out["J-Mean"] + out["F-Mean"]) / 2, **out}
    return out


def _category(categories: Mapping[str, Mapping[int, str]], seq: str, obj: int) -> str | None:
    objs = categories.get(seq)
    if objs is None:
        return None
    cat = objs.get(obj, objs.get(str(obj)))  # type: ignore[call-overload]
    return cat if cat else None


def _sparse(gt_seq_dir: Path) -> bool:
    """Whether a ground-truth sequence skips frame numbers (YouTube-VOS: every 5th frame annotated)."""
    numbers = sorted(int(p.stem) for p in gt_seq_dir.glob("*.png") if p.stem.isdigit())
    return any(b - a > 1 for a, b in zip(numbers, numbers[1:]))


def _sequence_names(gt_root: Path, sequences: Sequence[str] | None) -> list[str]:
    if sequences is None:
        names = sorted(p.name for p in gt_root.iterdir() if p.is_dir() and any(p.glob("*.png")))
        if not names:
            raise DataError(f"{gt_root}: no sequences (expected <sequence>/<frame>.png ground-truth masks)")
        return names
    names = [str(s) for s in sequences]
    for name in names:
        if not (gt_root / name).is_dir():
            raise DataError(f"{gt_root / name}: no ground truth for sequence {name}")
    return names


def _init_worker() -> None:
    # One intra-op thread per worker process: the parallelism is across sequences.
    torch.set_num_threads(1)


def _score_job(job: tuple) -> dict:
    return score_sequence(*job)


def _run(jobs: list[tuple], workers: int, executor: str, progress: bool) -> list[dict]:
    results: dict[str, dict] = {}
    # Scoring is many small tensor ops: intra-op threads cost more than they bring (and
    # oversubscribe a shared machine), so every sequence runs on one thread; the parallelism is
    # across sequences. Torch ops and PNG decoding release the GIL, so a thread pool scales too.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with show_progress("scoring", len(jobs), unit="sequences", enabled=progress) as display:
            if workers <= 1:
                for job in jobs:
                    results[job[2]] = _score_job(job)
                    display(1, f"scored {job[2]}")
            else:
                if executor == "process":
                    pool = ProcessPoolExecutor(workers, mp_context=get_context("spawn"), initializer=_init_worker)
                else:
                    pool = ThreadPoolExecutor(workers, thread_name_prefix="vos-score")
                with pool:
                    futures: dict[Future, str] = {pool.submit(_score_job, job): job[2] for job in jobs}
                    pending = set(futures)
                    while pending:
                        done, pending = wait(pending, return_when=FIRST_EXCEPTION)
                        for fut in done:
                            if fut.exception() is not None:
                                for other in pending:
                                    other.cancel()
                                raise fut.exception()  # type: ignore[misc]
                            results[futures[fut]] = fut.result()
                            display(1, f"scored {futures[fut]}")
    finally:
        torch.set_num_threads(threads)
    return [results[job[2]] for job in jobs]

