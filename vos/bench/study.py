"""Which weak losses matter, and how close box supervision comes to mask supervision, on the synthetic set.

Every trained variant is the ``vos demo`` configuration with one change, trained with several seeds
(seed k uses ``train.seed + k``, so seed 0 is the demo itself) and evaluated on the val split at the
frames' native resolution, with first-frame masks and with first-frame boxes:

    proj        projection loss only                               (thesis eq. 3.8–3.12)
    proj_pair   projection + pairwise colour consistency           (+ eq. 3.13–3.17)
    proj_temp   projection + temporal colour consistency           (+ eq. 3.18–3.22, soft detach)
    all_soft    all weak losses, soft detach (the demo)
    all_hard    all weak losses, hard detach
    first_mask  all weak losses + the exact mask of each clip's first frame (thesis Tables 4.5/4.6)
    oracle      mask supervision on every frame (bootstrapped CE + dice), mask first frame
    gt_box      not trained: the ground-truth box of every frame, filled, as the prediction

    python bench/study.py --root data/demo --work runs/study --out bench/results --jobs 2

Runs are separate processes (``--jobs`` at a time, ``--threads`` torch threads each: on a 2-core CPU
two single-threaded trainings finish sooner than two in a row). Each run also evaluates its
intermediate checkpoints (mask init) for the learning curves.

Resuming: a finished run's result is a file ``OUT/study/<variant>_s<seed>.json`` (committed with the
results), and a run with such a file is never re-run; within one machine an interrupted training
resumes from its last checkpoint under WORK and finished evaluations are kept. The summary
(``OUT/study.json``, ``OUT/study.md``, ``OUT/study_curves.png``) is rewritten after every run, so a
partial study is a valid, smaller one. A result recorded with other settings is refused rather
than mixed in.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path


VARIANTS: dict[str, list[str]] = {
    "proj": ["losses.w_pair=0.0", "losses.w_temp=0.0"],
    "proj_pair": ["losses.w_temp=0.0"],
    "proj_temp": ["losses.w_pair=0.0"],
    "all_soft": [],
    "all_hard": ["losses.temp_detach=hard"],
    "first_mask": ["data.supervision=first_mask", "data.first_frame_init=mask"],
    "oracle": ["data.supervision=mask", "data.first_frame_init=mask", "train.objective=oracle"],
}
BASELINE = "gt_box"
ORDER = [*VARIANTS, BASELINE]
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
# Runs in this order, seed by seed, so that a partial study already compares the main variants.
PRIORITY = ["all_soft", "oracle", "proj", "proj_pair", "proj_temp", "all_hard", "first_mask"]
# "Each added loss improves the mean": (with the loss, without it).
ADDED_LOSS = [("proj_pair", "proj"), ("proj_temp", "proj"), ("all_soft", "proj_pair"), ("all_soft", "proj_temp")]
CURVE_POINTS = 5  # checkpoints per run evaluated for the learning curves (the last is the final weights)
METRICS = ("J&F", "J", "F", "area_ratio", "single_object_J&F", "multi_object_J&F")


# ---------------------------------------------------------------------------------------------- runs
def run_config(name: str, seed: int, root: Path, work: Path, iterations: int | None, extra: list[str]):
    """The demo's config with the variant's overrides, seed ``train.seed + seed`` and checkpoints for
    the learning curve."""
    from vos.demo import demo_config

    base = demo_config(root, work)  # only for the default seed and iteration count
    its = iterations or base.train.iterations
    overrides = [
        *VARIANTS[name], *extra,
        f"train.iterations={its}",
        f"train.seed={base.train.seed + seed}",
        f"train.checkpoint_every={max(1, its // CURVE_POINTS)}",
        f"train.keep_checkpoints={CURVE_POINTS + 1}",
        "train.sample_every=0",
    ]
    return demo_config(root, work / name / f"s{seed}", overrides)


ORACLE_LOSS_KEYS = ("boot_start", "boot_end", "boot_p", "dice_eps", "oracle_frames")
# Settings added after results were recorded, with the value that reproduces the behaviour before:
# a run at that value is comparable with a record that lacks the key.
ADDED_SETTINGS = {("train", "grad_clip"): 0.0}


def comparable(config) -> dict:
    """The settings two runs must share to be pooled: everything but where files go, how often
    checkpoints and logs are written, and constants of a loss the run does not use."""
    from vos.config import to_dict

    return _relevant(to_dict(config))


def _relevant(data: dict) -> dict:
    """A run's settings (``to_dict`` form, or as recorded by ``comparable``) without those that
    cannot change its result; idempotent, so a recorded result is reduced by the same rule."""
    data = json.loads(json.dumps(data))
    data.pop("eval", None)  # a config section that no code read, recorded by earlier versions
    for key in ("out_dir", "checkpoint_every", "keep_checkpoints", "sample_every", "log_every"):
        data["train"].pop(key, None)
    if data["train"]["objective"] == "weak":  # the oracle's loss constants cannot change a weak run
        for key in ORACLE_LOSS_KEYS:
            data["losses"].pop(key, None)
    else:  # nor the weak losses' settings an oracle run
        data["losses"] = {key: data["losses"][key] for key in ORACLE_LOSS_KEYS if key in data["losses"]}
    data["data"].pop("num_workers", None)
    for (section, key), before in ADDED_SETTINGS.items():
        if data[section].get(key, before) == before:
            data[section].pop(key, None)
    for spec in data["data"]["datasets"]:
        spec.pop("root", None)
    return data


def result_path(out: Path, name: str, seed: int) -> Path:
    return out / "study" / f"{name}_s{seed}.json"


def check_recorded(path: Path, config) -> bool:
    """True if ``path`` holds a finished run made with ``config``'s settings; an error if it holds one
    made with other settings (pooling it would mix two experiments)."""
    from vos.errors import VosError

    if not path.is_file():
        return False
    recorded = json.loads(path.read_text()).get("settings")
    if recorded is None or _relevant(recorded) != comparable(config):
        raise VosError(f"{path}: recorded with other settings than this study's; "
                       f"choose another --out or remove that file to re-run it")
    return True


def lock_path(work: Path, name: str, seed: int) -> Path:
    return work / name / f"s{seed}" / "running.pid"


def running_elsewhere(work: Path, name: str, seed: int) -> bool:
    """True while another live process works on this run (its PID is in WORK/<variant>/s<seed>/running.pid)."""
    try:
        pid = int(lock_path(work, name, seed).read_text())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return False
    return pid != os.getpid()


def run_one(name: str, seed: int, root: Path, work: Path, out: Path, iterations: int | None, extra: list[str]) -> dict:
    """Train (resuming) and evaluate one (variant, seed); writes OUT/study/<variant>_s<seed>.json."""
    from vos.errors import VosError

    if running_elsewhere(work, name, seed):
        raise VosError(f"{lock_path(work, name, seed)}: this run is in progress in another process")
    lock = lock_path(work, name, seed)
    lock.parent.mkdir(parents=True, exist_ok=True)
    lock.write_text(str(os.getpid()))
    try:
        return _run_one(name, seed, root, work, out, iterations, extra)
    finally:
        lock.unlink(missing_ok=True)


def _run_one(name: str, seed: int, root: Path, work: Path, out: Path, iterations: int | None, extra: list[str]) -> dict:
    import torch

    from vos.data.datasets import open_dataset
    from vos.demo import summarise_eval
    from vos.eval.runner import evaluate
    from vos.output import claim_files
    from vos.output import write_text as atomic_write_text
    from vos.train.checkpoint import latest_checkpoint
    from vos.train.trainer import train

    config = run_config(name, seed, root, work, iterations, extra)
    path = result_path(out, name, seed)
    if check_recorded(path, config):
        return json.loads(path.read_text())
    train_dir = Path(config.train.out_dir)
    final = train_dir / "final.safetensors"
    timing_path = train_dir / "train_seconds.json"
    if not final.is_file():
        resume = latest_checkpoint(train_dir) is not None
        start = time.perf_counter()
        train(config, resume=resume, progress=False)
        spent = time.perf_counter() - start
        # a resumed run adds its slice to what earlier slices spent
        before = json.loads(timing_path.read_text())["seconds"] if resume and timing_path.is_file() else 0.0
        atomic_write_text(timing_path, json.dumps({"seconds": before + spent}))
    sequences = [v.name for v in open_dataset(root, split="val").videos]
    gt_dir = root / "Annotations" / "480p"
    run_dir = work / name / f"s{seed}"

    def score(weights: Path, init: str, folder: str) -> dict:
        eval_dir = run_dir / folder
        report = evaluate("synthetic", root, weights, eval_dir, init=init, size=-1, progress=False)
        summary = summarise_eval(report, eval_dir / "predictions", gt_dir, sequences)
        summary.update(by_object_count(report))
        return summary

    result = {
        "variant": name,
        "label": LABELS[name],
        "seed": seed,
        "train_seed": config.train.seed,
        "overrides": VARIANTS[name],
        "iterations": config.train.iterations,
        "train_seconds": json.loads(timing_path.read_text())["seconds"] if timing_path.is_file() else None,
        "threads": torch.get_num_threads(),
        "settings": comparable(config),
    }
    for init in ("mask", "box"):
        result[f"{init}_init"] = score(final, init, f"eval-{init}")
    curve = []
    for weights in sorted((train_dir / "checkpoints").glob("iter_*.safetensors")):
        iteration = int(weights.stem.split("_")[1])
        if iteration < config.train.iterations:
            point = score(weights, "mask", f"curve-{iteration:07d}")
            curve.append({"iteration": iteration, **{k: point[k] for k in ("J&F", "J", "single_object_J&F", "multi_object_J&F")}})
    m = result["mask_init"]
    curve.append({"iteration": config.train.iterations, **{k: m[k] for k in ("J&F", "J", "single_object_J&F", "multi_object_J&F")}})
    result["curve_mask_init"] = curve
    with claim_files([path]):
        atomic_write_text(path, json.dumps(result, indent=2))
    return result


def run_gt_box(root: Path, work: Path, out: Path) -> dict:
    """Score the ground-truth box of every frame as the mask (no model: one row for both inits)."""
    from vos.demo import area_ratio
    from vos.eval.baselines import write_box_predictions
    from vos.eval.score import score_folders
    from vos.output import claim_files
    from vos.output import write_text as atomic_write_text

    gt_dir = root / "Annotations" / "480p"
    pred_dir = work / BASELINE / "predictions"
    sequences = write_box_predictions(root, pred_dir, split="val")
    report = score_folders(pred_dir, gt_dir, sequences, progress=False)
    g = report["global"]
    summary = {"J&F": g["J&F-Mean"], "J": g["J-Mean"], "F": g["F-Mean"],
               "area_ratio": area_ratio(pred_dir, gt_dir, sequences), **by_object_count(report)}
    result = {"variant": BASELINE, "label": LABELS[BASELINE], "seed": 0, "overrides": [], "iterations": 0,
              "train_seconds": 0.0, "mask_init": summary, "box_init": summary}
    with claim_files([result_path(out, BASELINE, 0)]):
        atomic_write_text(result_path(out, BASELINE, 0), json.dumps(result, indent=2))
    return result


def by_object_count(report: dict) -> dict:
    """J&F over the objects of one-object videos vs. of videos with several objects: separating
    objects from each other is a skill apart from finding one object's shape."""
    counts = {name: seq["num_objects"] for name, seq in report["sequences"].items()}
    groups: dict[str, list[dict]] = {"single_object": [], "multi_object": []}
    for obj in report["objects"]:
        groups["single_object" if counts[obj["sequence"]] == 1 else "multi_object"].append(obj)
    out: dict[str, float | int | None] = {}
    for name, objs in groups.items():
        for metric in ("J&F", "J"):
            out[f"{name}_{metric}"] = sum(o[f"{metric}-Mean"] for o in objs) / len(objs) if objs else None
        out[f"{name}_objects"] = len(objs)
    return out


# ------------------------------------------------------------------------------------------- summary
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


# ---------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", type=Path, default=Path("data/demo"), help="synthetic set (the demo's, generated when absent)")
    p.add_argument("--work", type=Path, default=Path("runs/study"), help="training and evaluation outputs")
    p.add_argument("--out", type=Path, default=Path("bench/results"), help="where study.json, study.md, study/*.json go")
    p.add_argument("--variants", nargs="*", default=ORDER, choices=ORDER)
    p.add_argument("--seeds", type=int, default=3, help="seeds per variant (seed k trains with train.seed + k)")
    p.add_argument("--iterations", type=int, help="override the demo's iteration count (same for every run)")
    p.add_argument("--set", dest="extra", action="append", default=[], help="extra config override for every run")
    p.add_argument("--jobs", type=int, default=2, help="runs at once (separate processes)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per run")
    p.add_argument("--only", choices=list(VARIANTS), help=argparse.SUPPRESS)  # one run, in this process
    p.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    from vos.demo import ensure_demo_data
    from vos.errors import VosError

    try:
        if args.only:
            import torch

            torch.set_num_threads(args.threads)
            run_one(args.only, args.seed, args.root, args.work, args.out, args.iterations, args.extra)
            return 0
        ensure_demo_data(args.root, log=lambda m: print(m, flush=True))
        command = "python bench/study.py " + " ".join(argv if argv is not None else sys.argv[1:])
        if BASELINE in args.variants:
            run_gt_box(args.root, args.work, args.out)
        pending = []
        for seed in range(args.seeds):
            for name in PRIORITY:
                if name not in args.variants or check_recorded(
                    result_path(args.out, name, seed), run_config(name, seed, args.root, args.work, args.iterations, args.extra)
                ):
                    continue
                if running_elsewhere(args.work, name, seed):
                    print(f"{name} seed {seed}: in progress in another process, left to it", flush=True)
                    continue
                pending.append((name, seed))
        print(f"{len(pending)} runs to do", flush=True)
        running: list[tuple[tuple[str, int], subprocess.Popen]] = []
        failed = []
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
        args.work.mkdir(parents=True, exist_ok=True)
        while pending or running:
            while pending and len(running) < args.jobs:
                name, seed = pending.pop(0)
                if running_elsewhere(args.work, name, seed) or result_path(args.out, name, seed).is_file():
                    continue  # another launcher took it since this one started
                cmd = [sys.executable, "-m", "vos.bench.study", "--only", name, "--seed", str(seed), "--root", str(args.root),
                       "--work", str(args.work), "--out", str(args.out), "--threads", str(args.threads)]
                cmd += ["--iterations", str(args.iterations)] if args.iterations else []
                for extra in args.extra:
                    cmd += ["--set", extra]
                log_path = args.work / f"{name}_s{seed}.log"
                print(f"[{time.strftime('%H:%M:%S')}] start {name} seed {seed} (log {log_path})", flush=True)
                with open(log_path, "a") as log:
                    running.append(((name, seed), subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)))
            time.sleep(5)
            for key, proc in list(running):
                if proc.poll() is not None:
                    running.remove((key, proc))
                    status = "done" if proc.returncode == 0 else f"FAILED (exit {proc.returncode})"
                    print(f"[{time.strftime('%H:%M:%S')}] {key[0]} seed {key[1]} {status}", flush=True)
                    if proc.returncode != 0:
                        failed.append(key)
                    summarise(args.out, command)
        study = summarise(args.out, command)
    except VosError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(markdown(study))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
