"""Which weak losses matter, and how close box supervision comes to mask supervision, on the synthetic set.

Every trained variant is the ``vos demo`` configuration with one change, trained for
``STUDY_ITERATIONS`` with several seeds (seed k uses ``train.seed + k``, so seed 0 is the demo's
recipe; the demo itself stops earlier to fit its time, and its schedule scales) and evaluated on the val split at the
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
than mixed in. The pooling, the targets and the plot: :mod:`vos.bench.study_report`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from vos.bench.study_report import BASELINE, LABELS, ORDER, markdown, summarise

VARIANTS: dict[str, list[str]] = {
    "proj": ["losses.w_pair=0.0", "losses.w_temp=0.0"],
    "proj_pair": ["losses.w_temp=0.0"],
    "proj_temp": ["losses.w_pair=0.0"],
    "all_soft": [],
    "all_hard": ["losses.temp_detach=hard"],
    "first_mask": ["data.supervision=first_mask", "data.first_frame_init=mask"],
    "oracle": ["data.supervision=mask", "data.first_frame_init=mask", "train.objective=oracle"],
}
# Runs in this order, seed by seed, so that a partial study already compares the main variants.
PRIORITY = ["all_soft", "oracle", "proj", "proj_pair", "proj_temp", "all_hard", "first_mask"]
# The length the demo's schedule is written for (``train.schedule_reference``): the study measures
# the recipe at that length, whatever length the demo trains to fit its time.
STUDY_ITERATIONS = 1200
CURVE_POINTS = 5  # checkpoints per run evaluated for the learning curves (the last is the final weights)


# ---------------------------------------------------------------------------------------------- runs
def run_config(name: str, seed: int, root: Path, work: Path, iterations: int | None, extra: list[str]):
    """The demo's config with the variant's overrides, seed ``train.seed + seed`` and checkpoints for
    the learning curve."""
    from vos.demo import demo_config

    base = demo_config(root, work)  # only for the default seed
    its = iterations or STUDY_ITERATIONS
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
    data["train"].pop("channels_last", None)  # a memory layout: like the thread count, float order only
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
        # without a checkpoint, an earlier slice of this run (the study's own folder) stopped before
        # saving anything: start it again
        train(config, resume=resume, overwrite=not resume and train_dir.is_dir(), progress=False)
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


# ---------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", type=Path, default=Path("data/demo"), help="synthetic set (the demo's, generated when absent)")
    p.add_argument("--work", type=Path, default=Path("runs/study"), help="training and evaluation outputs")
    p.add_argument("--out", type=Path, default=Path("bench/results"), help="where study.json, study.md, study/*.json go")
    p.add_argument("--variants", nargs="*", default=ORDER, choices=ORDER)
    p.add_argument("--seeds", type=int, default=3, help="seeds per variant (seed k trains with train.seed + k)")
    p.add_argument("--iterations", type=int, help=f"iterations of every run (default {STUDY_ITERATIONS})")
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
        # an interrupted run goes first: its checkpoints are time already spent
        from vos.train.checkpoint import latest_checkpoint

        started = {key: latest_checkpoint(Path(run_config(*key, args.root, args.work, args.iterations, args.extra).train.out_dir))
                   is not None for key in pending}
        pending.sort(key=lambda key: not started[key])
        print(f"{len(pending)} runs to do" + (f", {sum(started.values())} of them resumed" if any(started.values()) else ""),
              flush=True)
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
