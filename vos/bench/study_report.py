"""The study's report: per-run records (``OUT/study/<variant>_s<seed>.json``) pooled over seeds into
``OUT/study.json``, ``OUT/study.md`` and the learning-curve plot ``OUT/study_curves.png``, with the
targets computed from them. The runs themselves are made by :mod:`vos.bench.study`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

# The table's rows in order: the trained variants (their overrides: `vos.bench.study.VARIANTS`),
# then the untrained baseline.
BASELINE = "gt_box"
ORDER = ["proj", "proj_pair", "proj_temp", "all_soft", "all_hard", "first_mask", "oracle", BASELINE]
LABELS = {
    "proj": "projection only",
    "proj_pair": "projection + pairwise",
    "proj_temp": "projection + temporal",
    "all_soft": "all losses, soft detach (demo)",
    "all_hard": "all losses, hard detach",
    "first_mask": "all losses + first-frame mask",
    "oracle": "oracle (mask-supervised)",
    "gt_box": "ground-truth box of every frame",
}
# "Each added loss improves the mean": (with the loss, without it).
ADDED_LOSS = [("proj_pair", "proj"), ("proj_temp", "proj"), ("all_soft", "proj_pair"), ("all_soft", "proj_temp")]
METRICS = ("J&F", "J", "F", "area_ratio", "single_object_J&F", "multi_object_J&F")


def _stats(values: list[float | None]) -> dict | None:
    values = [v for v in values if v is not None]
    if not values:
        return None
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return {"mean": mean, "std": std, "min": min(values), "max": max(values), "n": len(values), "values": values}


def summarise(out: Path, command: str = "") -> dict:
    """Pool OUT/study/*.json per variant (mean ± sample std over seeds), compute the targets, write
    OUT/study.json, OUT/study.md and the learning-curve plot OUT/study_curves.png."""
    import torch

    from vos.bench.environment import environment
    from vos.output import claim_files
    from vos.output import write_text as atomic_write_text

    runs: dict[str, list[dict]] = {}
    for path in sorted((out / "study").glob("*_s*.json")):
        run = json.loads(path.read_text())
        runs.setdefault(run["variant"], []).append(run)
    rows = []
    for name in ORDER:
        group = sorted(runs.get(name, []), key=lambda r: r["seed"])
        if not group:
            continue
        row = {"variant": name, "label": LABELS[name], "seeds": [r["seed"] for r in group],
               "iterations": group[0]["iterations"],
               "train_minutes": _stats([r["train_seconds"] / 60 if r.get("train_seconds") else None for r in group])}
        for init in ("mask_init", "box_init"):
            row[init] = {m: _stats([r[init].get(m) for r in group]) for m in METRICS}
        if name != BASELINE:
            row["curve_mask_init"] = _pool_curves([r["curve_mask_init"] for r in group])
        rows.append(row)
    by_name = {row["variant"]: row for row in rows}
    oracle = by_name.get("oracle")
    for row in rows:
        for init in ("mask_init", "box_init"):
            if oracle is not None and oracle[init]["J&F"]["mean"] > 0:
                row[init]["relative_to_oracle"] = row[init]["J&F"]["mean"] / oracle[init]["J&F"]["mean"]
    study = {
        "environment": environment(torch.device("cpu")),
        "command": command or "python bench/study.py --root data/demo --work runs/study --out bench/results --jobs 2",
        "spread": "mean ± sample standard deviation over seeds (n = seeds)",
        "variants": rows,
        "targets": targets(by_name),
    }
    files = [out / "study.json", out / "study.md", out / "study_curves.png"]
    with claim_files(files):  # bench/results is shared: replace only files vos wrote there
        atomic_write_text(files[0], json.dumps(study, indent=2))
        atomic_write_text(files[1], markdown(study))
        plot_curves(rows, by_name.get(BASELINE), files[2])
    return study


def _pool_curves(curves: list[list[dict]]) -> list[dict]:
    """Per iteration: the mean and min/max over seeds of the curve points."""
    by_iteration: dict[int, list[dict]] = {}
    for curve in curves:
        for point in curve:
            by_iteration.setdefault(point["iteration"], []).append(point)
    return [{"iteration": it, **{k: _stats([p.get(k) for p in points]) for k in ("J&F", "J", "multi_object_J&F")}}
            for it, points in sorted(by_iteration.items())]


def targets(rows: dict[str, dict]) -> dict:
    """The issue's targets, each with the measured value and whether it is met (None: not yet measurable)."""

    def mean(name: str, init: str, metric: str = "J&F") -> float | None:
        row = rows.get(name)
        stat = row[init].get(metric) if row else None
        return stat["mean"] if stat else None

    def seeds(*names: str) -> int:
        return min((rows[n]["mask_init"]["J&F"]["n"] for n in names if n in rows), default=0)

    def target(value: float | None, threshold: float, description: str, *names: str) -> dict:
        return {"description": description, "value": value, "threshold": threshold, "seeds": seeds(*names),
                "met": None if value is None else bool(value >= threshold - 1e-9)}  # float noise of the means

    def diff(a: float | None, b: float | None) -> float | None:
        return None if a is None or b is None else a - b

    def ratio(a: float | None, b: float | None) -> float | None:
        return None if a is None or not b else a / b

    out = {
        "oracle_vs_gt_box": target(diff(mean("oracle", "mask_init"), mean(BASELINE, "mask_init")), 0.20,
                                   "oracle J&F − GT-box J&F (mask init)", "oracle"),
        "oracle_multi_object": target(mean("oracle", "mask_init", "multi_object_J&F"), 0.70,
                                      "oracle J&F on multi-object videos (mask init)", "oracle"),
        "weak_vs_oracle_mask_init": target(ratio(mean("all_soft", "mask_init"), mean("oracle", "mask_init")), 0.90,
                                           "all losses (soft) J&F / oracle J&F, mask init", "all_soft", "oracle"),
        "weak_vs_oracle_box_init": target(ratio(mean("all_soft", "box_init"), mean("oracle", "box_init")), 0.92,
                                          "all losses (soft) J&F / oracle J&F, box init", "all_soft", "oracle"),
        "weak_beats_boxes": target(diff(mean("all_soft", "mask_init", "J"), mean(BASELINE, "mask_init", "J")), 0.15,
                                   "all losses (soft) J − GT-box J (mask init)", "all_soft"),
    }
    for with_loss, without in ADDED_LOSS:
        for init in ("mask_init", "box_init"):
            a = rows.get(with_loss, {}).get(init, {}).get("J&F")
            b = rows.get(without, {}).get(init, {}).get("J&F")
            key = f"{with_loss}_over_{without}_{init}"
            if a and b:
                gain, spread = a["mean"] - b["mean"], a["std"] + b["std"]
                out[key] = {"description": f"J&F gain of {with_loss} over {without} ({init.replace('_', ' ')}) "
                                           f"beyond the seeds' spread (sum of the two standard deviations)",
                            "value": gain, "threshold": spread, "seeds": min(a["n"], b["n"]),
                            "met": bool(gain > spread) if min(a["n"], b["n"]) > 1 else None}
            else:
                out[key] = {"description": f"J&F gain of {with_loss} over {without} ({init.replace('_', ' ')})",
                            "value": None, "threshold": None, "seeds": 0, "met": None}
    return out


def markdown(study: dict) -> str:
    def pm(stat: dict | None, scale: float = 100.0, digits: int = 1) -> str:
        if not stat:
            return "–"
        if stat["n"] == 1:
            return f"{scale * stat['mean']:.{digits}f}"
        return f"{scale * stat['mean']:.{digits}f} ± {scale * stat['std']:.{digits}f}"

    def pct(v):
        return "–" if v is None else f"{100 * v:.1f}"

    lines = [
        "| variant | mask init J&F | J | F | rel. oracle | box init J&F | J | F | rel. oracle "
        "| pred/true area | 1-object / multi-object J&F (mask init) | seeds | iterations | train min |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in study["variants"]:
        m, b = row["mask_init"], row["box_init"]
        single, multi = m["single_object_J&F"], m["multi_object_J&F"]
        lines.append(
            f"| {row['label']} | {pm(m['J&F'])} | {pm(m['J'])} | {pm(m['F'])} | {pct(m.get('relative_to_oracle'))} "
            f"| {pm(b['J&F'])} | {pm(b['J'])} | {pm(b['F'])} | {pct(b.get('relative_to_oracle'))} "
            f"| {pm(m['area_ratio'], 1.0, 2)} | {pm(single)} / {pm(multi)} | {len(row['seeds'])} "
            f"| {row['iterations']} | {pm(row['train_minutes'], 1.0) if row['variant'] != BASELINE else '–'} |"
        )
    lines += ["", "| target | value | threshold | met | seeds |", "|---|---:|---:|---|---:|"]
    for t in study["targets"].values():
        value = "–" if t["value"] is None else f"{t['value']:.3f}"
        threshold = "–" if t["threshold"] is None else f"{t['threshold']:.3f}"
        met = {True: "yes", False: "**no**", None: "not yet measured"}[t["met"]]
        lines.append(f"| {t['description']} | {value} | {threshold} | {met} | {t['seeds']} |")
    return "\n".join(lines) + "\n"


def plot_curves(rows: list[dict], baseline: dict | None, path: Path) -> None:
    """J&F (mask init) against training iterations: mean over seeds, min–max band; GT boxes as a line."""
    from vos.bench.plot import pyplot, save_figure

    plt = pyplot()
    fig, (ax_all, ax_multi) = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    for row in rows:
        if row["variant"] == BASELINE:
            continue
        its = [p["iteration"] for p in row["curve_mask_init"]]
        for ax, key in ((ax_all, "J&F"), (ax_multi, "multi_object_J&F")):
            stats = [p[key] for p in row["curve_mask_init"]]
            if any(s is None for s in stats):
                continue
            style = {"linewidth": 2.5} if row["variant"] in ("all_soft", "oracle") else {"linewidth": 1.2, "alpha": 0.8}
            line, = ax.plot(its, [100 * s["mean"] for s in stats], marker="o", markersize=3, label=row["label"], **style)
            ax.fill_between(its, [100 * s["min"] for s in stats], [100 * s["max"] for s in stats], color=line.get_color(), alpha=0.12)
    if baseline is not None:
        for ax, key in ((ax_all, "J&F"), (ax_multi, "multi_object_J&F")):
            stat = baseline["mask_init"][key]
            if stat:
                ax.axhline(100 * stat["mean"], color="black", linestyle="--", linewidth=1, label=LABELS[BASELINE])
    ax_all.set_title("all val videos")
    ax_multi.set_title("videos with several objects")
    for ax in (ax_all, ax_multi):
        ax.set_xlabel("training iteration")
        ax.grid(alpha=0.3)
    ax_all.set_ylabel("J&F, mask init (%)")
    if ax_multi.get_legend_handles_labels()[0]:  # a set without multi-object val videos has no lines here
        ax_multi.legend(fontsize=8, loc="lower right")
    fig.suptitle("Learning curves on the synthetic val split (mean over seeds; band: min–max)")
    fig.tight_layout()
    save_figure(fig, path)
