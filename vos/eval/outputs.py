"""What an evaluation leaves in its output folder: per-sequence done markers, the report assembled from
them (scores, runtime, init statistics), the re-timed ground truth of LV ×3, and submission zips.
The layout is described in :mod:`vos.eval.runner`."""

from __future__ import annotations

import json
import math
import shutil
import zipfile
from pathlib import Path

from vos.eval.report import set_runtime
from vos.eval.score import score_folders
from vos.eval.sources import EvalPlan, SequenceJob
from vos.output import atomic_write

PREDICTIONS = "predictions"
DONE = "done"
OVERLAYS = "overlays"
GROUND_TRUTH = "ground_truth"  # LV ×3: the ground truth copied onto the ×3 timeline
SUBMISSION = "submission.zip"


def load_marker(out: Path, job: SequenceJob) -> dict | None:
    """The done marker of a complete sequence (all its PNGs present), else None."""
    path = out / DONE / f"{job.name}.json"
    if not path.is_file():
        return None
    try:
        stats = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    pred_dir = out / PREDICTIONS / job.name
    pngs = sum(1 for p in pred_dir.iterdir() if p.suffix == ".png" and not p.name.startswith(".")) if pred_dir.is_dir() else 0
    if not isinstance(stats, dict) or pngs != job.num_saved or stats.get("frames_saved") != job.num_saved:
        return None
    return stats


def clear_sequence(out: Path, name: str) -> None:
    """Remove what an interrupted run left of a sequence (its marker, PNGs and overlays)."""
    (out / DONE / f"{name}.json").unlink(missing_ok=True)
    for sub in (PREDICTIONS, OVERLAYS):
        folder = out / sub / name
        if folder.is_dir():
            shutil.rmtree(folder)


def build_report(
    plan: EvalPlan, jobs: list[SequenceJob], markers: dict[str, dict | None], out: Path, init: str,
    info: dict, workers: int | None, progress: bool,
) -> dict:
    """Score (when the dataset has ground truth) the given jobs and add runtime and init statistics."""
    names = [job.name for job in jobs]
    stats = {name: markers[name] for name in names if markers.get(name) is not None}
    scored = plan.scored and bool(names) and len(stats) == len(names)
    if scored:
        gt_dir = plan.gt_dir
        if gt_dir is None:  # LV ×3: ground truth copied onto the ×3 timeline
            gt_dir = out / GROUND_TRUTH
            for job in jobs:
                write_timeline_gt(gt_dir / job.name, job)
        report = score_folders(
            out / PREDICTIONS, gt_dir, sequences=names, workers=workers, progress=progress,
            protocol=plan.protocol, binary=plan.binary, strict=False,
        )
    else:
        report = {
            "protocol": None,
            "global": {"num_sequences": len(names)},
            "sequences": {name: {} for name in names},
            "objects": [],
        }
        for job in jobs:
            for rec in sorted((stats.get(job.name) or {}).get("objects", []), key=lambda r: r["object"]):
                report["objects"].append({"sequence": job.name, "object": rec["object"], "first_frame": rec["frame"]})
        report["global"]["num_objects"] = len(report["objects"])

    by_object = {
        (name, rec["object"]): rec for name, st in stats.items() for rec in st.get("objects", [])
    }
    categories = {job.name: job.categories for job in jobs}
    for obj in report["objects"]:
        rec = by_object.get((obj["sequence"], obj["object"]))
        obj["init_IoU"] = rec["IoU"] if rec is not None else None
        if rec is not None and rec.get("box") is not None:
            obj["init_box"] = rec["box"]
        cat = categories.get(obj["sequence"], {}).get(obj["object"])
        if cat:
            obj["category"] = cat
    for name in names:
        st = stats.get(name)
        if st is not None:
            seq = report["sequences"].setdefault(name, {})
            seq.update({k: st.get(k) for k in ("frames", "frames_processed", "frames_saved", "seconds", "fps",
                                               "peak_memory_bytes", "process_size", "output_size")})
    ious = [o["init_IoU"] for o in report["objects"] if o.get("init_IoU") is not None]
    report["init"] = {"mode": init, "frame0_IoU": sum(ious) / len(ious) if ious else math.nan, "num_objects": len(ious)}

    frames = sum(st["frames_processed"] for st in stats.values())
    seconds = sum(st["seconds"] for st in stats.values())
    peaks = [st["peak_memory_bytes"] for st in stats.values() if st.get("peak_memory_bytes") is not None]
    kinds = sorted({st["peak_memory_kind"] for st in stats.values() if st.get("peak_memory_kind")})
    set_runtime(
        report,
        fps=frames / seconds if seconds > 0 else None,
        peak_memory_bytes=max(peaks) if peaks else None,
        frames=frames,
        seconds=seconds,
        device=info["device"],
        peak_memory_kind=kinds[0] if len(kinds) == 1 else (kinds or None),
        timing="model step + resize back (I/O excluded); CUDA events on GPU",
    )
    report["eval"] = {**info, "sequences": names, "scored": scored}
    return report


def write_timeline_gt(folder: Path, job: SequenceJob) -> None:
    """Copy the ground truth of a re-timed video (LV ×3) under its timeline names (atomically)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, src in (job.gt or {}).items():
        dst = folder / f"{name}.png"
        if dst.is_file():
            continue
        with atomic_write(dst) as tmp:
            shutil.copyfile(src, tmp)


def write_submission(path: Path, pred_dir: Path, names: list[str], layout: str) -> None:
    """The zip a benchmark server takes: ``Annotations/<video>/<frame>.png`` (YouTube-VOS) or
    ``<sequence>/<frame>.png`` (DAVIS test-dev); written under a temporary name, then renamed."""
    prefix = "Annotations/" if layout == "youtube" else ""
    with atomic_write(path) as tmp, zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as zf:
        for name in names:  # PNGs are compressed already, hence stored
            for png in sorted((pred_dir / name).glob("*.png")):
                zf.write(png, f"{prefix}{name}/{png.name}")
