"""Writing score reports: JSON (global, per sequence, per object), a per-object CSV, a markdown table.

All files are written atomically (temporary file + rename), so a partial file never looks complete.
NaN statistics (objects without an evaluated frame) are written as JSON ``null`` / empty CSV cells.

The ``runtime`` block of a report carries what only the evaluation loop can measure: ``fps`` (frames
per second timed around the model step and the resize back, I/O excluded), ``peak_memory_bytes``
and anything else the loop adds through :func:`set_runtime`.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from vos.output import write_text

CSV_COLUMNS = (
    "sequence",
    "object",
    "category",
    "first_frame",
    "num_frames",
    "J&F-Mean",
    "J-Mean",
    "J-Recall",
    "J-Decay",
    "F-Mean",
    "F-Recall",
    "F-Decay",
)
_GLOBAL_COLUMNS = ("J&F-Mean", "J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall", "F-Decay")


def set_runtime(report: dict, fps: float | None = None, peak_memory_bytes: int | None = None, **extra: Any) -> dict:
    """Fill the report's runtime fields (FPS, peak memory, e.g. ``frames``, ``device``); returns it."""
    runtime = report.setdefault("runtime", {})
    if fps is not None:
        runtime["fps"] = float(fps)
    if peak_memory_bytes is not None:
        runtime["peak_memory_bytes"] = int(peak_memory_bytes)
    runtime.update(extra)
    runtime.setdefault("fps", None)
    runtime.setdefault("peak_memory_bytes", None)
    return report


def to_json(report: Mapping, per_frame: bool = True) -> str:
    """The report as JSON text; NaN → null. ``per_frame=False`` drops the per-frame J/F lists."""
    data = _clean(report)
    if not per_frame:
        for obj in data.get("objects", []):
            obj.pop("per_frame", None)
    return json.dumps(data, indent=2, allow_nan=False) + "\n"


def object_csv(report: Mapping) -> str:
    """One CSV row per object (columns :data:`CSV_COLUMNS`, then ``init_IoU`` when the evaluation loop
    recorded the IoU of each object's initial mask)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    objects = report.get("objects", [])
    columns = CSV_COLUMNS + (("init_IoU",) if any("init_IoU" in obj for obj in objects) else ())
    writer.writerow(columns)
    for obj in objects:
        writer.writerow([_csv_cell(obj.get(col)) for col in columns])
    return buf.getvalue()


def markdown_table(report: Mapping) -> str:
    """A markdown summary: global scores (with FPS / peak memory / YouTube G / box-init frame-0 IoU
    when present) and one row per sequence."""
    glob = report.get("global", {})
    lines = ["| " + " | ".join(_GLOBAL_COLUMNS) + " | objects |", "|" + "---:|" * (len(_GLOBAL_COLUMNS) + 1)]
    # the objects column counts objects as the per-sequence rows do; those without a frame to score
    # (a 1-frame video, an object first seen on the last frame) are named in a note instead
    total, scored = glob.get("num_objects", glob.get("num_objects_scored", "")), glob.get("num_objects_scored")
    lines.append("| " + " | ".join(_pct(glob.get(c)) for c in _GLOBAL_COLUMNS) + f" | {total} |")
    extra = []
    if isinstance(total, int) and isinstance(scored, int) and scored < total:
        extra.append(f"{total - scored} of {total} objects have no frame to score (first and last frame excluded) "
                     "and are left out of the means")
    youtube = report.get("youtube")
    if youtube:
        parts = [f"G {_pct(youtube.get('G'))}"]
        parts += [f"{k} {_pct(youtube.get(k))}" for k in ("J_seen", "F_seen", "J_unseen", "F_unseen")]
        extra.append("YouTube-VOS: " + ", ".join(parts))
    init = report.get("init") or {}
    if init.get("mode") == "box":
        extra.append(f"Box init frame-0 IoU: {_pct(init.get('frame0_IoU'))}")
    runtime = report.get("runtime") or {}
    if runtime.get("fps") is not None:
        extra.append(f"FPS: {runtime['fps']:.2f}")
    if runtime.get("peak_memory_bytes") is not None:
        extra.append(f"Peak memory: {runtime['peak_memory_bytes'] / 2**20:.1f} MiB")
    out = ["## Scores", "", *lines, ""]
    if extra:
        out += [*(f"- {e}" for e in extra), ""]
    sequences = report.get("sequences", {})
    if sequences:
        out += ["## Sequences", "", "| sequence | objects | J&F-Mean | J-Mean | F-Mean |", "|---|---:|---:|---:|---:|"]
        for name, seq in sequences.items():
            out.append(
                f"| {name} | {seq.get('num_objects', '')} | {_pct(seq.get('J&F-Mean'))} | "
                f"{_pct(seq.get('J-Mean'))} | {_pct(seq.get('F-Mean'))} |"
            )
        out.append("")
    return "\n".join(out)


def write_reports(report: Mapping, out_dir: str | os.PathLike, stem: str = "scores") -> dict[str, Path]:
    """Write ``<stem>.json``, ``<stem>_objects.csv`` and ``<stem>.md`` into ``out_dir``; return paths."""
    out = Path(out_dir)
    paths = {"json": out / f"{stem}.json", "csv": out / f"{stem}_objects.csv", "markdown": out / f"{stem}.md"}
    write_text(paths["json"], to_json(report))
    write_text(paths["csv"], object_csv(report))
    write_text(paths["markdown"], markdown_table(report))
    return paths


def _clean(value: Any) -> Any:
    if isinstance(value, float):
        return None if math.isnan(value) or math.isinf(value) else value
    if isinstance(value, Mapping):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # numpy / torch scalars
        return _clean(value.item())
    return value


def _csv_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "" if math.isnan(value) else repr(value)
    return str(value)


def _pct(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{100 * float(value):.1f}"
