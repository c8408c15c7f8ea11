"""Memory-read benchmark: Triton vs PyTorch sparse vs XMem's dense read at DAVIS shapes.

    python bench/memory_read.py --out bench/results            # full grid
    python bench/memory_read.py --out bench/results --quick    # two shapes, no torch.compile

Shapes: HW = 1,620 query pixels (480p at stride 16: 30×54), CK = 64, CV = 512 per object,
top_k = 30, memory N ∈ {1,620 … 26,200} (1 frame … 10 working frames + 10,000 long-term), 1–5
objects stacked along the value channels, batch 1, fp32, under ``torch.inference_mode()``.
Values are stored element-major (B×N×C, passed transposed) as the inference memory keeps them.

Variants (each one reads with usage, as the inference memory does with long-term memory on):

- ``triton``: the fused kernels (``backend="triton"``); CUDA only.
- ``sparse_torch`` / ``sparse_torch_compiled``: ``vos.model.memory_read`` sparse mode, eager / torch.compile.
- ``dense`` / ``dense_compiled``: ``vos.model.memory_read`` dense mode — XMem's algorithm (dense N×HW
  affinity with the top-k kept, then values × affinity) on our one-GEMM similarity. The baseline
  of ``speedup_vs_dense``.
- ``xmem``: XMem's op sequence as XMem runs it at inference (similarity as three terms
  −a² + 2ab − b², scaled in two more passes; top-k over N, exp without max subtraction,
  in-place zero + scatter, values (channel-major) × affinity). Reported as ``speedup_vs_xmem``.

Timing: variants are interleaved round-robin for every repeat (so a burst of load from other
processes hits all of them alike), after one warm-up call each (for compiled variants the warm-up is
the compilation); the median and the minimum are reported (speedups from both), with the load
average before, after and at every shape.
Writes ``<out>/memory_read_<device type>.json``.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import torch

from vos.bench.environment import default_device, environment, kernel_bench_main
from vos.device import synchronize
from vos.output import claim_files, write_text
from vos.progress import log_lines


from vos.model.memory_read import memory_read

HW = 1620
CK = 64
CV = 512
TOP_K = 30
MEMORY_SIZES = (1620, 6480, 13100, 26200)
OBJECTS = (1, 2, 5)


def xmem_dense_read(
    mk: torch.Tensor, ms: torch.Tensor, qk: torch.Tensor, qe: torch.Tensor, mv: torch.Tensor, top_k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """XMem's inference read, step by step as XMem executes it: mk B×CK×N, ms B×1×N, qk/qe B×CK×HW,
    mv B×C×N channel-major → (readout B×C×HW, usage B×N)."""
    mk_t = mk.transpose(1, 2)
    a_sq = mk_t.pow(2) @ qe  # B×N×HW
    two_ab = 2 * (mk_t @ (qk * qe))
    b_sq = (qe * qk.pow(2)).sum(1, keepdim=True)
    sim = -a_sq + two_ab - b_sq
    sim = sim * ms.transpose(1, 2) / math.sqrt(mk.shape[1])
    values, indices = torch.topk(sim, k=top_k, dim=1)
    weights = values.exp_()
    weights /= weights.sum(dim=1, keepdim=True)
    affinity = sim.zero_().scatter_(1, indices, weights)
    return torch.bmm(mv, affinity), affinity.sum(dim=2)


def _inputs(n: int, objects: int, device: torch.device, seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    c = CV * objects
    tensors = {
        "mk": torch.randn(1, CK, n, generator=gen),
        "ms": torch.rand(1, 1, n, generator=gen) + 1.0,
        "qk": torch.randn(1, CK, HW, generator=gen),
        "qe": torch.rand(1, CK, HW, generator=gen),
        "values": torch.randn(1, n, c, generator=gen),  # element-major, as the inference memory
    }
    tensors = {k: v.to(device) for k, v in tensors.items()}
    tensors["mv_channel_major"] = tensors["values"].transpose(1, 2).contiguous()  # XMem's layout
    return tensors


def _variants(device: torch.device, compile_: bool) -> tuple[dict[str, Callable], dict[str, str]]:
    """name → fn(tensors) returning (readout, usage); and name → reason for each skipped variant."""

    def read(mode: str, backend: str) -> Callable:
        def fn(t):
            return memory_read(
                t["mk"], t["ms"], t["qk"], t["qe"], t["values"].transpose(1, 2),
                top_k=TOP_K, mode=mode, backend=backend, need_usage=True,
            )

        return fn

    variants: dict[str, Callable] = {}
    skipped: dict[str, str] = {}
    if device.type == "cuda":
        variants["triton"] = read("sparse", "triton")
    else:
        skipped["triton"] = "no CUDA device (the Triton kernels run on CPU only through the interpreter)"
    variants["sparse_torch"] = read("sparse", "torch")
    variants["dense"] = read("dense", "torch")
    variants["xmem"] = lambda t: xmem_dense_read(t["mk"], t["ms"], t["qk"], t["qe"], t["mv_channel_major"], TOP_K)
    if compile_:
        variants["sparse_torch_compiled"] = torch.compile(read("sparse", "torch"), dynamic=False)
        variants["dense_compiled"] = torch.compile(read("dense", "torch"), dynamic=False)
    else:
        skipped["sparse_torch_compiled"] = skipped["dense_compiled"] = "torch.compile variants switched off"
    return variants, skipped


def _time(fn: Callable, tensors: dict, device: torch.device) -> tuple[float, tuple]:
    synchronize(device)
    start = time.perf_counter()
    out = fn(tensors)
    synchronize(device)
    return (time.perf_counter() - start) * 1e3, out


def run(
    out_dir: str | Path,
    quick: bool = False,
    device: str | None = None,
    repeats: int | None = None,
    compile_: bool | None = None,
    log: Callable[[str], None] = print,
) -> Path:
    """Run the benchmark and write ``<out_dir>/memory_read_<device type>.json``; returns its path.
    A file of that name that vos did not write is never replaced (:func:`vos.output.claim_files`).

    quick: N ∈ {1,620, 26,200} with 2 objects, 3 repeats, no torch.compile. device: "cpu", "cuda"
    (default: CUDA when available). repeats: timed calls per variant (default 5 on CPU, 20 on CUDA).
    compile_: include the torch.compile variants (default: not in quick mode).
    """
    dev = default_device(device)
    path = result_file(out_dir, dev.type)
    repeats = repeats or (3 if quick else (20 if dev.type == "cuda" else 5))
    compile_ = (not quick) if compile_ is None else compile_
    sizes = (MEMORY_SIZES[0], MEMORY_SIZES[-1]) if quick else MEMORY_SIZES
    objects_list = (2,) if quick else OBJECTS

    # claimed before the work: a file of that name that vos did not write stops the run now
    with claim_files([path]):
        results = []
        load_before = os.getloadavg()
        started = time.perf_counter()
        skipped: dict[str, str] = {}
        with torch.inference_mode(), log_lines("memory_read", len(sizes) * len(objects_list), unit="shapes") as advance:
            for n in sizes:
                for objects in objects_list:
                    if compile_:
                        torch._dynamo.reset()  # fresh compiled graphs per shape: no recompile-limit fallback
                    variants, skipped = _variants(dev, compile_)
                    tensors = _inputs(n, objects, dev)
                    outputs = {}
                    warmup_ms = {}
                    for name, fn in variants.items():
                        warmup_ms[name], out = _time(fn, tensors, dev)
                        outputs[name] = (out[0].float(), out[1].float())
                    times: dict[str, list[float]] = {name: [] for name in variants}
                    for _ in range(repeats):
                        for name, fn in variants.items():
                            times[name].append(_time(fn, tensors, dev)[0])
                    ref_readout, ref_usage = outputs["dense"]
                    median = {k: statistics.median(v) for k, v in times.items()}
                    row = {
                        "n": n,
                        "hw": HW,
                        "objects": objects,
                        "channels": CV * objects,
                        "times_ms": {k: round(v, 3) for k, v in median.items()},
                        "times_ms_min": {k: round(min(v), 3) for k, v in times.items()},
                        "first_call_ms": {k: round(v, 1) for k, v in warmup_ms.items()},
                        "speedup_vs_dense": {k: round(median["dense"] / v, 2) for k, v in median.items()},
                        "speedup_vs_xmem": {k: round(median["xmem"] / v, 2) for k, v in median.items()},
                        # From the fastest calls: the least disturbed by other processes on a shared machine.
                        "speedup_vs_dense_min": {k: round(min(times["dense"]) / min(v), 2) for k, v in times.items()},
                        "load_average_1min": round(os.getloadavg()[0], 2),
                        "max_abs_diff_vs_dense": {
                            k: {
                                "readout": float((o[0] - ref_readout).abs().max()),
                                "usage": float((o[1] - ref_usage).abs().max()),
                            }
                            for k, o in outputs.items()
                        },
                    }
                    results.append(row)
                    log(
                        f"N={n:6d} objects={objects}  "
                        + "  ".join(f"{k}={v:9.1f}ms" for k, v in row["times_ms"].items())
                        + "  speedup_vs_dense(sparse_torch)="
                        + f"{row['speedup_vs_dense']['sparse_torch']:.2f}"
                    )
                    del tensors, outputs
                    advance()

        report = {
            "benchmark": "memory_read",
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "device": dev.type,
            "environment": environment(dev),
            "settings": {
                "hw": HW, "ck": CK, "cv_per_object": CV, "top_k": TOP_K, "batch": 1, "dtype": "float32",
                "need_usage": True, "repeats": repeats, "quick": quick, "statistic": "median",
            },
            "load_average_before": [round(x, 2) for x in load_before],
            "load_average_after": [round(x, 2) for x in os.getloadavg()],
            "wall_s": round(time.perf_counter() - started, 1),
            "skipped_variants": skipped,
            "results": results,
        }
        write_text(path, json.dumps(report, indent=2) + "\n")
        log(f"wrote {path}")
        return path


def result_file(out_dir: str | Path, device: str | None = None) -> Path:
    """The file :func:`run` writes: ``<out_dir>/memory_read_<device type>.json``."""
    return Path(out_dir) / f"memory_read_{default_device(device).type}.json"


def main(argv: list[str] | None = None) -> None:
    kernel_bench_main(__doc__, "memory_read", run, argv, quick="two shapes, 3 repeats, no torch.compile", compile_flag=True)


if __name__ == "__main__":
    main()
