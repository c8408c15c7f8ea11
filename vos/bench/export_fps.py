"""ONNX export: onnxruntime's memory loop against PyTorch's, on the same frames in the same run.

    python bench/export_fps.py --out bench/results                       # small preset, random weights
    python bench/export_fps.py --weights runs/demo/train/final.safetensors --out bench/results

Exports the network (``vos.deploy.export_onnx``), then segments one synthetic video twice at once:
``InferenceCore`` with the PyTorch network (eager, fp32, channels-last — the CPU defaults) and
``InferenceCore`` with ``OnnxXMem`` (onnxruntime's CPU provider). The two loops step frame by frame in
turn, so load from other processes falls on both alike; each step is timed on its own. Both use the
same number of threads (``--threads``, for torch and for each onnxruntime session).

Reports per-frame seconds (median, mean over the frames after the first ``--warmup``), FPS, the ratio
onnxruntime / PyTorch, and the equivalence: the largest absolute probability difference over all
frames and the fraction of pixels whose argmax label differs. Writes ``<out>/export_fps_cpu.json``.
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

import torch

from vos.bench.environment import environment
from vos.data.synthetic import SyntheticSpec, generate
from vos.data.io import list_frames, read_image, read_mask
from vos.memory.config import MemoryConfig
from vos.memory.core import InferenceCore
from vos.model.weights import model_from
from vos.errors import VosError
from vos.output import claim_files, io_error, write_text


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default="small", help="checkpoint or preset (default: small, random weights)")
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    parser.add_argument("--size", default="240x432", help="frame size HxW of the synthetic video")
    # 80 frames: 16 memory frames, so the working memory is consolidated into long-term memory
    parser.add_argument("--frames", type=int, default=80)
    parser.add_argument("--objects", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args(argv)
    path = args.out / "export_fps_cpu.json"
    with claim_files([path]):  # bench/results is shared: replace only a result vos wrote there
        report = measure(args, argv)
        write_text(path, json.dumps(report, indent=1) + "\n")
    per = report["per_frame"]
    print(f"torch {per['torch']['fps_median']:.2f} FPS, onnxruntime {per['onnxruntime']['fps_median']:.2f} FPS "
          f"(ratio {report['fps_ratio_onnxruntime_over_torch']:.2f}); "
          f"max |Δp| {report['equivalence']['max_abs_probability_difference']:.2e}; {path}")
    return report


def measure(args: argparse.Namespace, argv: list[str] | None) -> dict:
    """Export, then run both loops over the same frames; the report as written to the JSON."""
    import onnxruntime

    from vos.deploy import OnnxXMem, export_onnx

    torch.set_num_threads(args.threads)
    height, width = (int(v) for v in args.size.lower().split("x"))
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for seed in range(100):  # the first seed whose video has the requested number of objects
            root = tmp / f"video{seed}"
            generate(root, SyntheticSpec(videos=1, frames=args.frames, height=height, width=width,
                                         max_objects=args.objects, val_fraction=0.0, seed=seed))
            seq = next((root / "JPEGImages" / "480p").iterdir()).name
            first = read_mask(root / "Annotations" / "480p" / seq / "00000.png").long()
            if len(first.unique()) - 1 == args.objects:
                break
        frames = [read_image(p) for p in list_frames(root / "JPEGImages" / "480p" / seq)]
        model, _ = model_from(args.weights)
        start = time.perf_counter()
        export_onnx(model, tmp / "onnx", source=str(args.weights))
        export_seconds = time.perf_counter() - start
        memory = MemoryConfig()
        cores = {"torch": InferenceCore(model, memory), "onnxruntime": InferenceCore(OnnxXMem(tmp / "onnx", threads=args.threads), memory)}
        seconds = {name: [] for name in cores}
        max_diff, label_diff, pixels = 0.0, 0, 0
        for t, frame in enumerate(frames):
            out = {}
            for name, core in cores.items():
                start = time.perf_counter()
                out[name] = core.step(frame, mask=first if t == 0 else None)
                seconds[name].append(time.perf_counter() - start)
            a, b = out["torch"], out["onnxruntime"]
            max_diff = max(max_diff, float((a - b).abs().max()))
            label_diff += int((a.argmax(0) != b.argmax(0)).sum())
            pixels += a[0].numel()
        stats = cores["torch"].memory_stats()
    load_after = os.getloadavg()

    def summary(values: list[float]) -> dict:
        steady = values[args.warmup:]
        return {"median_s": statistics.median(steady), "mean_s": statistics.fmean(steady),
                "fps_median": 1 / statistics.median(steady)}

    per = {name: summary(values) for name, values in seconds.items()}
    report = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": "python bench/export_fps.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "environment": {**environment(torch.device("cpu")), "onnxruntime": onnxruntime.__version__,
                        "load_average_before": load_before, "load_average_after": load_after},
        "settings": {"weights": str(args.weights), "video_seed": seed, "preset": model.config.preset, "frame_size": [height, width],
                     "frames": args.frames, "objects": stats["objects"], "threads": args.threads,
                     "warmup_frames": args.warmup, "memory": "MemoryConfig() (XMem's DAVIS defaults)",
                     "torch_loop": "eager fp32, channels-last", "onnxruntime_provider": "CPUExecutionProvider"},
        "export_seconds": export_seconds,
        "per_frame": per,
        "fps_ratio_onnxruntime_over_torch": per["onnxruntime"]["fps_median"] / per["torch"]["fps_median"],
        "equivalence": {"max_abs_probability_difference": max_diff, "argmax_label_mismatch_fraction": label_diff / pixels},
        "memory": stats,
        "seconds_per_frame": seconds,
    }
    return report


def cli(argv: list[str] | None = None) -> int:
    """`main` with a user's mistakes (a bad path, unreadable weights) as one error line and exit 1."""
    try:
        main(argv)
    except (VosError, OSError) as exc:
        print(f"error: {io_error(exc)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(cli())
