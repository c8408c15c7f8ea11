"""What every benchmark records about the machine it ran on (device, versions, CPU, commit)."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path

import torch


def default_device(device: str | None = None) -> torch.device:
    """``device``, or CUDA when available, else the CPU."""
    return torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))


def environment(device: torch.device) -> dict:
    env = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
    }
    try:
        import triton

        env["triton"] = triton.__version__
    except ImportError:
        env["triton"] = None
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    env["cpu"] = cpu
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
        env["cuda"] = torch.version.cuda
    try:
        root = Path(__file__).resolve().parents[2]
        env["git_commit"] = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10
        ).stdout.strip() or None
        # Tracked files edited since that commit: the result is not exactly reproducible from it.
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True, text=True,
            timeout=10,
        )
        env["git_dirty"] = bool(status.stdout.strip()) if status.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        env["git_commit"] = env["git_dirty"] = None
    return env


def kernel_bench_main(doc: str, result: str, run, argv: list[str] | None, quick: str, compile_flag: bool = False) -> None:
    """The command line shared by the kernel benchmarks (``python bench/<name>.py``): --out, --quick,
    --device, --repeats (and --no-compile where the benchmark times torch.compile variants); a
    user's error ends the run with one ``error:`` line."""
    import argparse
    import sys

    from vos.errors import VosError
    from vos.output import io_error

    parser = argparse.ArgumentParser(description=doc.split("\n", 1)[0])
    parser.add_argument("--out", default="bench/results", help=f"folder for {result}_<device>.json")
    parser.add_argument("--quick", action="store_true", help=quick)
    parser.add_argument("--device", choices=["cpu", "cuda"], default=None)
    parser.add_argument("--repeats", type=int, default=None)
    if compile_flag:
        parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile variants")
    args = parser.parse_args(argv)
    options = {"quick": args.quick, "device": args.device, "repeats": args.repeats}
    if compile_flag:
        options["compile_"] = False if args.no_compile else None
    try:
        run(args.out, **options)
    except (VosError, OSError) as exc:
        sys.exit(f"error: {io_error(exc)}")
