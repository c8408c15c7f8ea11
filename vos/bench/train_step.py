"""Training-step benchmark: seconds per iteration of the demo's training under settings that should
not change what it learns (memory layout, data loading, compilation).

    python bench/train_step.py --out bench/results
    python bench/train_step.py --variant base= --variant cl=train.channels_last=true --iterations 20

Each variant is the ``vos demo`` configuration plus its overrides (comma-separated ``key=value``),
trained from scratch for ``--skip`` + ``--iterations`` iterations in this process, into a temporary
folder; its time per iteration is taken from the training's own log over the last ``--iterations``
(the first ``--skip`` include start-up and, with ``train.compile``, compilation). Variants run in
turn, ``--rounds`` times (A B C A B C …), so that a drift of the machine's speed touches all of them;
the JSON keeps every round and the median. Meant for an otherwise idle CPU: the load average is
recorded before and after. Writes ``<out>/train_step_<device type>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

DEFAULT_VARIANTS = [
    "one_worker=data.num_workers=1,train.channels_last=false",
    "channels_last=data.num_workers=1,train.channels_last=true",
    "in_process=data.num_workers=0,train.channels_last=false",
    "in_process_channels_last=data.num_workers=0,train.channels_last=true",
]


def parse_variant(text: str) -> tuple[str, list[str]]:
    """``name=key=value,key=value`` (or ``name=`` for the configuration as it is) → (name, overrides)."""
    from vos.errors import VosError

    name, sep, rest = text.partition("=")
    if not sep or not name:
        raise VosError(f"--variant {text!r}: expected NAME=key=value[,key=value…] (or NAME= for no change)")
    return name, [item for item in rest.split(",") if item]


def time_variant(root: Path, overrides: list[str], skip: int, iterations: int) -> list[float]:
    """Seconds per iteration of each logged window after the first ``skip`` iterations."""
    from vos.demo import demo_config
    from vos.train.trainer import train

    stamps: list[tuple[int, float]] = []
    with tempfile.TemporaryDirectory(prefix="vos-train-step-") as tmp:
        config = demo_config(root, Path(tmp), [
            *overrides, "train.log_every=5", "train.checkpoint_every=100000", "train.sample_every=0",
        ])
        train(config, progress=False, stop_at=skip + iterations,
              on_log=lambda record: stamps.append((record["iteration"], time.perf_counter())))
    windows = [(b[1] - a[1]) / (b[0] - a[0]) for a, b in zip(stamps, stamps[1:]) if a[0] >= skip]
    return windows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", type=Path, default=Path("data/demo"), help="the demo's synthetic set (generated when absent)")
    p.add_argument("--out", type=Path, default=Path("bench/results"), help="folder for train_step_<device>.json")
    p.add_argument("--variant", action="append", help="NAME=key=value[,key=value…] (repeatable; default: "
                   "one loader worker vs in-process loading, each with and without channels-last)")
    p.add_argument("--skip", type=int, default=10, help="iterations not timed, at the start of each run")
    p.add_argument("--iterations", type=int, default=25, help="iterations timed per run (a multiple of 5)")
    p.add_argument("--rounds", type=int, default=2, help="times each variant runs, in turn")
    args = p.parse_args(argv)

    import torch

    from vos.bench.environment import environment
    from vos.demo import ensure_demo_data
    from vos.errors import VosError
    from vos.output import claim_files, write_text

    try:
        variants = [parse_variant(v) for v in (args.variant or DEFAULT_VARIANTS)]
        if args.iterations < 10 or args.iterations % 5:
            raise VosError("--iterations: a multiple of 5, at least 10 (the time is read from 5-iteration log windows)")
        if args.skip % 5:
            raise VosError("--skip: a multiple of 5")
        ensure_demo_data(args.root, log=lambda m: print(m, flush=True))
        load_before = os.getloadavg()
        rounds: dict[str, list[float]] = {name: [] for name, _ in variants}
        for r in range(args.rounds):
            for name, overrides in variants:
                windows = time_variant(args.root, overrides, args.skip, args.iterations)
                rounds[name].append(statistics.mean(windows))
                print(f"round {r + 1}/{args.rounds} {name}: {rounds[name][-1]:.3f} s/it", flush=True)
        result = {
            "what": "seconds per training iteration of the vos demo configuration (mean over the timed "
                    "iterations of one run; one value per round) and the median over rounds",
            "command": "python bench/train_step.py " + " ".join(argv if argv is not None else sys.argv[1:]),
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "skip": args.skip, "iterations": args.iterations, "rounds": args.rounds,
            "load_average_before": [round(x, 2) for x in load_before],
            "load_average_after": [round(x, 2) for x in os.getloadavg()],
            "variants": {name: {"overrides": overrides, "sec_per_it_rounds": [round(x, 4) for x in rounds[name]],
                                "sec_per_it_median": round(statistics.median(rounds[name]), 4)}
                         for name, overrides in variants},
            "environment": environment(torch.device("cpu")),
        }
        path = args.out / "train_step_cpu.json"
        with claim_files([path]):
            write_text(path, json.dumps(result, indent=2))
        print(f"wrote {path}")
    except VosError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
