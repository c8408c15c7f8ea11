"""Long-video inference benchmark: a thin command line over ``vos.bench.run_longtime``.

    python bench/longtime.py --out bench/results/longtime_xmem_480p --preset xmem --size 480 \
        --frames 60 --prefill --threads 1
    python bench/longtime.py --out bench/results/longtime_small_240p --preset small --size 240 \
        --frames 3000 --no-compare-dense --threads 1

``vos bench --video longtime`` runs the same function.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from vos.bench.longtime import run_longtime  # noqa: E402
from vos.errors import VosError  # noqa: E402
from vos.memory.config import MemoryConfig  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="folder for longtime_<device>.json and the PNG plots")
    p.add_argument("--root", help="Long-Time Video set (default: the built-in synthetic video)")
    p.add_argument("--frames", type=int, default=3000)
    p.add_argument("--size", type=int, default=480)
    p.add_argument("--objects", type=int, default=2)
    p.add_argument("--preset", default="xmem")
    p.add_argument("--weights")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--compare-dense", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--device")
    p.add_argument("--prefill", action="store_true", help="fill the memory to capacity after frame 0")
    p.add_argument("--mem-every", type=int, default=5)
    p.add_argument("--threads", type=int)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--no-flops", action="store_true")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    try:
        report = run_longtime(
            args.out, root=args.root, frames=args.frames, size=args.size, objects=args.objects,
            preset=args.preset, weights=args.weights, compile=args.compile, compare_dense=args.compare_dense,
            device=args.device, progress=not args.no_progress, prefill=args.prefill,
            memory=MemoryConfig(mem_every=args.mem_every), channels_last=args.channels_last,
            threads=args.threads, warmup=args.warmup, count_flops=not args.no_flops,
        )
    except VosError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for video in report["videos"]:
        print(json.dumps({"video": video["video"], "frames": video["frames"], **video["summary"],
                          "memory": video["memory"]}, indent=1))
    print(report["json"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
