"""The thesis's claims on the synthetic set (issue #10): weak-loss ablations vs. the mask oracle.

Every trained variant is the ``vos demo`` configuration (small preset, random initialisation,
96² clips of 4 frames, batch 4) with one change, trained for the same number of iterations with the
same seed (so the same clips in the same order), then evaluated on the synthetic val split with
first-frame masks and with first-frame boxes:

    proj        projection loss only
    proj_pair   projection + pairwise colour consistency
    proj_temp   projection + temporal colour consistency (soft detach)
    all_soft    all weak losses, soft detach (the demo itself)
    all_hard    all weak losses, hard detach
    oracle      mask supervision on every frame (bootstrapped CE + dice), mask first frame
    gt_box      not trained: the ground-truth box of every frame, filled, as the prediction

    python bench/study.py --root data/synthetic --work runs/study --out bench/results --jobs 2

Variants run as separate processes (``--jobs`` at a time, ``--threads`` torch threads each: on a
2-core CPU two single-threaded trainings finish sooner than two in a row). Everything resumes: a
variant with final weights is not retrained, a finished evaluation is not redone, and the summary
``OUT/study.json`` is rewritten from the per-variant results after each variant.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

VARIANTS: dict[str, list[str]] = {
    "proj": ["losses.w_pair=0.0", "losses.w_temp=0.0"],
    "proj_pair": ["losses.w_temp=0.0"],
    "proj_temp": ["losses.w_pair=0.0"],
    "all_soft": [],
    "all_hard": ["losses.temp_detach=hard"],
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
    "oracle": "oracle (mask-supervised)",
    "gt_box": "ground-truth box of every frame",
}


def run_variant(name: str, root: Path, work: Path, iterations: int | None, extra: list[str]) -> dict:
    """Train (unless final weights exist) and evaluate one variant; writes and returns WORK/NAME/result.json."""
    import torch

    from vos.data.datasets import open_dataset
    from vos.demo import demo_config, summarise_eval
    from vos.eval.runner import evaluate
    from vos.train.checkpoint import latest_checkpoint
    from vos.train.trainer import train

    out = work / name
    overrides = [*VARIANTS[name], *extra] + ([f"train.iterations={iterations}"] if iterations else [])
    config = demo_config(root, out, overrides)
    final = Path(config.train.out_dir) / "final.safetensors"
    timing_path = out / "train_seconds.json"
    if not final.is_file():
        resume = latest_checkpoint(Path(config.train.out_dir)) is not None
        start = time.perf_counter()
        train(config, resume=resume, progress=False)
        spent = time.perf_counter() - start
        # a resumed run adds its slice to what earlier slices spent
        before = json.loads(timing_path.read_text())["seconds"] if resume and timing_path.is_file() else 0.0
        timing_path.write_text(json.dumps({"seconds": before + spent}))
    sequences = [v.name for v in open_dataset(root, split="val").videos]
    gt_dir = root / "Annotations" / "480p"
    result = {
        "variant": name,
        "label": LABELS[name],
        "overrides": VARIANTS[name],
        "iterations": config.train.iterations,
        "train_seconds": json.loads(timing_path.read_text())["seconds"] if timing_path.is_file() else None,
        "threads": torch.get_num_threads(),
    }
    for init in ("mask", "box"):
        eval_dir = out / f"eval-{init}"
        report = evaluate("synthetic", root, final, eval_dir, init=init, size=-1, progress=False)
        result[f"{init}_init"] = summarise_eval(report, eval_dir / "predictions", gt_dir, sequences)
    (out / "result.json").write_text(json.dumps(result, indent=2))
    return result


def run_gt_box(root: Path, work: Path) -> dict:
    """Score the ground-truth box of every frame as the mask (no model, so one row for both inits)."""
    from vos.demo import area_ratio
    from vos.eval.score import score_folders
    from vos.eval.baselines import write_box_predictions

    out = work / BASELINE
    gt_dir = root / "Annotations" / "480p"
    pred_dir = out / "predictions"
    sequences = write_box_predictions(root, pred_dir, split="val")
    report = score_folders(pred_dir, gt_dir, sequences, progress=False)
    out.mkdir(parents=True, exist_ok=True)
    (out / "scores.json").write_text(json.dumps(report))
    g = report["global"]
    summary = {"J&F": g["J&F-Mean"], "J": g["J-Mean"], "F": g["F-Mean"],
               "area_ratio": area_ratio(pred_dir, gt_dir, sequences)}
    result = {"variant": BASELINE, "label": LABELS[BASELINE], "overrides": [], "iterations": 0,
              "train_seconds": 0.0, "mask_init": summary, "box_init": summary}
    out.mkdir(parents=True, exist_ok=True)
    (out / "result.json").write_text(json.dumps(result, indent=2))
    return result


def by_object_count(scores_path: Path) -> dict:
    """J&F over the objects of one-object videos vs. of videos with several objects (from a saved
    scores.json): separating objects from each other is a separate skill from finding one's shape."""
    report = json.loads(scores_path.read_text())
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


def summarise(work: Path, out: Path) -> dict:
    """Collect WORK/*/result.json into OUT/study.json (+ relative-to-oracle figures) and OUT/study.md."""
    import torch

    from vos.bench.environment import environment

    rows = {}
    for name in ORDER:
        path = work / name / "result.json"
        if path.is_file():
            rows[name] = json.loads(path.read_text())
    for name, row in rows.items():
        for init in ("mask", "box"):
            scores = work / name / (f"eval-{init}" if name != BASELINE else "") / "scores.json"
            if scores.is_file():
                row[f"{init}_init"].update(by_object_count(scores))
    oracle = rows.get("oracle")
    for row in rows.values():
        for init in ("mask_init", "box_init"):
            if oracle is not None and row.get(init) and oracle[init]["J&F"] > 0:
                row[init]["relative_to_oracle"] = row[init]["J&F"] / oracle[init]["J&F"]
    study = {
        "device": "cuda" if torch.cuda.is_available() else f"cpu ({platform.processor() or platform.machine()})",
        "environment": environment(torch.device("cuda" if torch.cuda.is_available() else "cpu")),
        "command": "python bench/study.py --root data/synthetic --work runs/study --out bench/results --jobs 2",
        "variants": [rows[n] for n in ORDER if n in rows],
    }
    if "all_soft" in rows and BASELINE in rows and "proj" in rows:
        weak = rows["all_soft"]
        study["targets"] = {
            "mask_init_relative_to_oracle>=0.85": weak["mask_init"].get("relative_to_oracle"),
            "box_init_relative_to_oracle>=0.90": weak["box_init"].get("relative_to_oracle"),
            "J_minus_gt_box_J>=0.15": weak["mask_init"]["J"] - rows[BASELINE]["mask_init"]["J"],
            "all_minus_proj_J&F_mask_init>0": weak["mask_init"]["J&F"] - rows["proj"]["mask_init"]["J&F"],
            "all_minus_proj_J&F_box_init>0": weak["box_init"]["J&F"] - rows["proj"]["box_init"]["J&F"],
        }
    out.mkdir(parents=True, exist_ok=True)
    (out / "study.json").write_text(json.dumps(study, indent=2))
    (out / "study.md").write_text(markdown(study))
    return study


def markdown(study: dict) -> str:
    def pct(v):
        return "–" if v is None else f"{100 * v:.1f}"

    lines = [
        "| variant | mask init J&F | J | F | rel. oracle | box init J&F | J | F | rel. oracle | pred/true area (mask init) "
        "| mask init J&F: 1-object / multi-object videos | iterations | train min |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in study["variants"]:
        m, b = row["mask_init"], row["box_init"]
        minutes = "–" if not row.get("train_seconds") else f"{row['train_seconds'] / 60:.1f}"
        lines.append(
            f"| {row['label']} | {pct(m['J&F'])} | {pct(m['J'])} | {pct(m['F'])} | {pct(m.get('relative_to_oracle'))} "
            f"| {pct(b['J&F'])} | {pct(b['J'])} | {pct(b['F'])} | {pct(b.get('relative_to_oracle'))} "
            f"| {m['area_ratio']:.2f} | {pct(m.get('single_object_J&F'))} / {pct(m.get('multi_object_J&F'))} "
            f"| {row['iterations']} | {minutes} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", type=Path, default=Path("data/synthetic"), help="synthetic set (generated when absent)")
    p.add_argument("--work", type=Path, default=Path("runs/study"), help="training and evaluation outputs")
    p.add_argument("--out", type=Path, default=Path("bench/results"), help="where study.json / study.md go")
    p.add_argument("--variants", nargs="*", default=ORDER, choices=ORDER)
    p.add_argument("--iterations", type=int, help="override the demo's iteration count (same for every variant)")
    p.add_argument("--set", dest="extra", action="append", default=[], help="extra config override for every variant")
    p.add_argument("--jobs", type=int, default=2, help="variants trained at once (separate processes)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per variant process")
    p.add_argument("--only", choices=list(VARIANTS), help=argparse.SUPPRESS)  # one variant, in this process
    args = p.parse_args(argv)

    from vos.data.synthetic import SyntheticSpec, generate
    from vos.errors import VosError

    try:
        if args.only:
            import torch

            torch.set_num_threads(args.threads)
            run_variant(args.only, args.root, args.work, args.iterations, args.extra)
            return 0
        if not (args.root / "ImageSets" / "2017" / "val.txt").is_file():
            print(f"generating the synthetic set in {args.root} …", flush=True)
            generate(args.root, SyntheticSpec())
        if BASELINE in args.variants:
            run_gt_box(args.root, args.work)
        pending = [v for v in args.variants if v != BASELINE]
        running: list[tuple[str, subprocess.Popen]] = []
        failed = []
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
        args.work.mkdir(parents=True, exist_ok=True)
        while pending or running:
            while pending and len(running) < args.jobs:
                name = pending.pop(0)
                cmd = [sys.executable, __file__, "--only", name, "--root", str(args.root), "--work", str(args.work),
                       "--threads", str(args.threads)]
                cmd += ["--iterations", str(args.iterations)] if args.iterations else []
                for extra in args.extra:
                    cmd += ["--set", extra]
                log = open(args.work / f"{name}.log", "a")
                print(f"[{time.strftime('%H:%M:%S')}] start {name} (log {args.work / f'{name}.log'})", flush=True)
                running.append((name, subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)))
            time.sleep(5)
            for name, proc in list(running):
                if proc.poll() is not None:
                    running.remove((name, proc))
                    status = "done" if proc.returncode == 0 else f"FAILED (exit {proc.returncode})"
                    print(f"[{time.strftime('%H:%M:%S')}] {name} {status}", flush=True)
                    if proc.returncode != 0:
                        failed.append(name)
                    summarise(args.work, args.out)
        study = summarise(args.work, args.out)
    except VosError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(markdown(study))
    if "targets" in study:
        print(json.dumps(study["targets"], indent=1))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
