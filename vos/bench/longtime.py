"""``vos bench --video longtime``: inference speed and memory over a long video (the run, its summary
and plots; the videos are in ``vos.bench.videos``, the memory, FLOP and GEMM probes in
``vos.bench.probes``).

The video is the Long-Time Video set (``root``: ``JPEGImages/<video>/`` + ``Annotations/<video>/``,
or its ``long_video`` folder) or, without a root, a built-in synthetic video generated frame by frame
in memory (textured ellipses with holes moving over a panning textured background; any length).

Several *variants* segment the same frames, interleaved frame by frame (their order rotates every
frame) so that a load change on a shared machine hits them alike and their ratio stays meaningful:

- ``ours``: our network and memory — image features computed once per frame, sparse top-k read;
  under ``torch.compile`` when ``compile`` is on.
- ``ours_eager``: the same without compilation (only when ``compile`` is on: eager vs compiled).
- ``xmem``: XMem's algorithm with the same weights — the image half of the fusion blocks and of the
  value encoder's first convolution recomputed for every object (``vos.bench.xmem_emulation.xmem_computation``)
  and the dense memory read (``MemoryConfig(read_mode="dense")``); eager (only with
  ``compare_dense``).

Per frame and variant it records the step's wall time, the per-stage times of
``InferenceCore(profile=True)`` (key encoder, memory read, decoder, value encoder, memory update),
the memory's elements and bytes, the process's resident and peak memory (and the GPU's allocated
and peak memory on CUDA). The summary gives steady-state FPS (after ``warmup`` frames and after the
memory has saturated, when it does), ratios between variants, and the arithmetic floor: the FLOPs
of every stage at the run's shapes (``torch.utils.flop_counter``; the sparse gather's k·HW·C
multiply-adds added by hand), the machine's measured fp32 GEMM rate, and from those the fastest a
variant could run and the largest speed-up ours can have over XMem's algorithm with equal weights.

``prefill``: before timing, the long-term memory of every variant is filled to its cap and the
working memory to ``max_mid_term_frames − 1`` frames by storing jittered copies of the first
frame's memory (the consolidation code itself makes the prototypes), so that a short run measures
the steady state of a full memory — what a long video reaches after ~2,000 frames.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

from vos.bench.plot import Panel, save_plot
from vos.bench.plot import available as plot_available
from vos.bench.probes import device_name, fill_memory, gemm_gflops, process_memory, stage_flops
from vos.bench.videos import file_video, long_time_videos, synthetic_long_video
from vos.bench.xmem_emulation import xmem_computation
from vos.device import synchronize
from vos.errors import DataError, VosError
from vos.memory.config import MemoryConfig
from vos.memory.core import InferenceCore
from vos.model.weights import model_from
from vos.output import claim_files, write_text
from vos.progress import progress as show_progress

# --------------------------------------------------------------------------- the run
@dataclasses.dataclass
class _Variant:
    name: str
    core: InferenceCore
    description: str
    seconds: list[float] = dataclasses.field(default_factory=list)
    stages: dict[str, list[float]] = dataclasses.field(default_factory=dict)
    elements: list[int] = dataclasses.field(default_factory=list)
    long_term: list[int] = dataclasses.field(default_factory=list)
    memory_mib: list[float] = dataclasses.field(default_factory=list)


def summarize_memory(
    host: dict[str, list], long_term: list[int], saturated: int | None, steady_from: int
) -> dict[str, object]:
    """Is the memory flat once the memory has saturated? From the per-frame process (and GPU) memory.

    The reference frame is the later of the saturation frame and the first steady frame (so that
    compilation and first-use allocations during warm-up do not count); the peak resident memory (and
    the GPU's peak allocation) must grow by less than 2 % or 16 MiB from there to the end.
    """
    peak, rss = host["peak_rss_mib"], host["rss_mib"]
    report: dict[str, object] = {"saturated_at_frame": saturated, "long_term_elements_max": max(long_term)}
    if saturated is None or not peak or peak[-1] is None:
        return report
    ref = min(max(saturated, steady_from), len(peak) - 1)
    report.update({
        "reference_frame": ref,
        "frames_after_reference": len(peak) - 1 - ref,
        "peak_rss_mib_at_reference": peak[ref],
        "peak_rss_mib_end": peak[-1],
        "peak_rss_growth_mib": peak[-1] - peak[ref],
        "rss_mib_at_reference": rss[ref],
        "rss_mib_max_after_reference": max(rss[ref:]),
    })
    flat = peak[-1] - peak[ref] <= max(16.0, 0.02 * peak[ref])
    gpu = host.get("gpu_peak_mib") or []
    if gpu:
        report.update({"gpu_peak_mib_at_reference": gpu[ref], "gpu_peak_mib_end": gpu[-1]})
        flat = flat and gpu[-1] - gpu[ref] <= max(16.0, 0.02 * gpu[ref])
    report["flat_after_saturation"] = flat
    return report


def _moving_average(values: list[float], window: int) -> list[float]:
    out, acc = [], 0.0
    for i, v in enumerate(values):
        acc += v
        if i >= window:
            acc -= values[i - window]
        out.append(acc / min(i + 1, window))
    return out


def result_files(
    out_dir: str | os.PathLike, root: str | os.PathLike | None = None, device: str | torch.device | None = None
) -> list[Path]:
    """The files :func:`run_longtime` writes: ``longtime_<device>.json`` and two plots per video."""
    out_dir = Path(out_dir)
    tag = (torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")).type
    names = ["synthetic"] if root is None else [name for name, _, _ in long_time_videos(root)]
    plots = [out_dir / f"longtime_{tag}_{name}_{kind}.png" for name in names for kind in ("fps", "memory")]
    return [out_dir / f"longtime_{tag}.json", *(plots if plot_available() else [])]


def run_longtime(
    out_dir: str | os.PathLike,
    root: str | os.PathLike | None = None,
    frames: int | None = 3000,
    size: int = 480,
    objects: int = 2,
    preset: str = "xmem",
    weights: str | os.PathLike | None = None,
    compile: bool | str | None = None,
    compare_dense: bool = True,
    device: str | torch.device | None = None,
    progress: bool = True,
    *,
    prefill: bool = False,
    memory: MemoryConfig | None = None,
    channels_last: bool | None = None,
    threads: int | None = None,
    warmup: int = 5,
    count_flops: bool = True,
    seed: int = 0,
) -> dict:
    """Benchmark inference over a long video; write ``longtime_<device>.json`` and PNG plots into
    ``out_dir`` and return the JSON's content. The files are claimed before the run
    (:func:`vos.output.claim_files`): a file of those names that vos did not write is never replaced.

    Args:
        out_dir: where the results go (created).
        root: the Long-Time Video set (every video of it is run); None = the synthetic video.
        frames: synthetic: its length; Long-Time Video: at most this many frames per video (None = all).
        size: shorter side of the processed frames (-1: native, Long-Time Video only).
        objects: objects in the synthetic video.
        preset: network preset ("xmem", "small") when ``weights`` is None (random weights: speed
            does not depend on them).
        weights: a checkpoint (official ``.pth`` or ours) instead of a random preset.
        compile: run ``ours`` under torch.compile (True: inductor; a string: that torch.compile
            backend) and add ``ours_eager``; None = on CUDA only.
        compare_dense: add ``xmem`` (XMem's algorithm, see the module docstring).
        device: "cpu", "cuda", … (None: CUDA when available).
        progress: show a progress bar.
        prefill: fill the memory to capacity after the first frame (see the module docstring).
        memory: memory settings (XMem's defaults when None); ``xmem`` uses them with the dense read.
        channels_last: passed to ``InferenceCore`` (None: its default, on) — for every variant,
            so that ``xmem`` differs from ``ours_eager`` by the algorithm only.
        threads: CPU threads (``torch.set_num_threads``; None = leave as is).
        warmup: frames excluded from the FPS at the start (compilation, allocator warm-up).
        count_flops: count every stage's FLOPs at the run's shapes (one extra pass per variant).
        seed: seed of the synthetic video and of the memory pre-fill.
    """
    out_dir = Path(out_dir)
    dev = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise VosError(f"bench: device {dev} requested but CUDA is not available")
    if frames is not None and frames < 1:
        raise VosError(f"bench: frames must be ≥ 1, got {frames}")
    if root is None and size == -1:
        raise VosError("bench: size -1 (native) needs --root; the synthetic video is made at a given size")
    # claimed before the model loads: a refusal comes before the work, not after it
    with claim_files(result_files(out_dir, root, dev), inputs=[root]):
        memory = memory if memory is not None else MemoryConfig()
        use_compile = (dev.type == "cuda" if compile is None else compile) or False
        old_threads = torch.get_num_threads()
        if threads is not None:
            torch.set_num_threads(threads)
        try:
            model, _ = model_from(weights if weights is not None else preset, device=dev)
            baseline = None
            if compare_dense:
                baseline = xmem_computation(model).to(dev).eval()
            if root is None:
                n = frames if frames is not None else 3000
                videos = [("synthetic", n, lambda n=n: synthetic_long_video(n, size, objects, seed))]
            else:
                videos = [
                    (name, len(paths[: frames or None]),
                     lambda paths=paths, first=first: file_video(paths[: frames or None], first, size))
                    for name, paths, first in long_time_videos(root)
                ]
            machine_gflops = gemm_gflops(dev) if count_flops else None
            results = []
            for name, total, make in videos:
                results.append(
                    _run_video(
                        name, total, make, model, baseline, memory, dev, use_compile, channels_last, prefill,
                        warmup, progress, seed, count_flops, machine_gflops,
                    )
                )
        finally:
            torch.set_num_threads(old_threads)

        report = {
            "benchmark": "longtime",
            "device": str(dev),
            "device_name": device_name(dev),
            "torch": torch.__version__,
            "python": platform.python_version(),
            "threads": torch.get_num_threads() if threads is None else threads,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "settings": {
                "source": "synthetic" if root is None else str(root),
                "frames": frames, "size": size, "objects": objects if root is None else None,
                "preset": preset if weights is None else None, "weights": None if weights is None else str(weights),
                "compile": ("inductor" if use_compile is True else use_compile) or False,
                "compare_dense": compare_dense, "prefill": prefill,
                "channels_last": True if channels_last is None else channels_last, "warmup": warmup, "seed": seed,
                "memory": dataclasses.asdict(memory),
            },
            "machine_gflops_fp32": max((v["flops"]["machine_gflops_fp32"] for v in results if v["flops"]), default=None),
            # per video: FPS and ratios, the arithmetic floor, whether memory stayed flat (details below)
            "summary": {v["video"]: _headline(v) for v in results},
            "videos": results,
        }
        tag = dev.type
        path = out_dir / f"longtime_{tag}.json"
        write_text(path, json.dumps(report, indent=1))
        if plot_available():
            for video in results:
                _plot(out_dir, tag, video)
        else:
            report["plots"] = "not drawn: matplotlib is not installed (pip install -e '.[plots]')"
        report["json"] = str(path)
        return report


def _run_video(
    name, frames_total, make, model, baseline, memory, dev, use_compile, channels_last, prefill, warmup, progress, seed,
    count_flops, machine_gflops,
) -> dict:
    (h, w), frames = make()
    variants = [
        _Variant("ours", InferenceCore(model, memory, profile=True, compile=use_compile, channels_last=channels_last),
                 "shared image features, sparse top-k read" + (", torch.compile" if use_compile else ", eager"))
    ]
    if use_compile:
        variants.append(_Variant(
            "ours_eager", InferenceCore(model, memory, profile=True, compile=False, channels_last=channels_last),
            "shared image features, sparse top-k read, eager",
        ))
    if baseline is not None:
        dense = dataclasses.replace(memory, read_mode="dense", backend="torch")
        variants.append(_Variant(
            "xmem", InferenceCore(baseline, dense, profile=True, compile=False, channels_last=channels_last),
            "XMem's algorithm: per-object image features, dense read, eager",
        ))
    for v in variants:
        v.stages = {s: [] for s in InferenceCore.STAGES}
    host: dict[str, list] = {"rss_mib": [], "peak_rss_mib": [], "gpu_mib": [], "gpu_peak_mib": []}
    agreement: list[float] = []
    prefilled = 0
    total = None
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    with show_progress(f"bench {name}", frames_total, unit="frames", enabled=progress) as advance:
        for t, (image, mask) in enumerate(frames):
            image = image.to(dev)
            mask = mask.to(dev) if mask is not None else None
            order = variants[t % len(variants):] + variants[: t % len(variants)]
            labels = {}
            for v in order:
                before = dict(v.core.stage_times)
                synchronize(dev)
                start = time.perf_counter()
                probs = v.core.step(image, mask)
                synchronize(dev)
                v.seconds.append(time.perf_counter() - start)
                for s in InferenceCore.STAGES:
                    v.stages[s].append(v.core.stage_times[s] - before[s])
                stats = v.core.memory_stats()
                v.elements.append(stats["working_elements"] + stats["long_term_elements"])
                v.long_term.append(stats["long_term_elements"])
                v.memory_mib.append(stats["memory_bytes"] / 2**20)
                labels[v.name] = probs.argmax(0)
            if "xmem" in labels:
                agreement.append(float((labels["ours"] == labels["xmem"]).float().mean()))
            if t == 0 and prefill:
                for v in variants:
                    prefilled = fill_memory(v.core, seed)
                    v.elements[-1] = sum(v.core.memory_stats()[k] for k in ("working_elements", "long_term_elements"))
                    v.long_term[-1] = v.core.memory_stats()["long_term_elements"]
                    v.memory_mib[-1] = v.core.memory_stats()["memory_bytes"] / 2**20
            mem = process_memory()
            host["rss_mib"].append(mem["rss_mib"])
            host["peak_rss_mib"].append(mem["peak_rss_mib"])
            if dev.type == "cuda":
                host["gpu_mib"].append(torch.cuda.memory_allocated(dev) / 2**20)
                host["gpu_peak_mib"].append(torch.cuda.max_memory_allocated(dev) / 2**20)
            seconds = variants[0].seconds[-1]
            advance(1, f"ours {1 / seconds:.2f} FPS" if seconds > 0 else "")
            total = t + 1
    if total is None:
        raise DataError(f"{name}: no frames")

    ours = variants[0]
    # saturation: the first frame at which the long-term memory reaches the size it keeps
    lt_max = max(ours.long_term)
    saturated = next((i for i, n in enumerate(ours.long_term) if lt_max > 0 and n >= lt_max), None)
    steady_from = warmup if saturated is None else max(warmup, saturated + 1)
    if total - steady_from < max(3, total // 10):  # saturation too late to measure after it
        steady_from = min(warmup, total - 1)
    window = range(steady_from, total)
    out_variants = {}
    for v in variants:
        secs = [v.seconds[i] for i in window]
        steady = sum(secs)
        out_variants[v.name] = {
            "description": v.description,
            "fps_steady": len(secs) / steady if steady > 0 else None,
            "seconds_per_frame": {
                "mean": steady / max(1, len(secs)),
                "median": sorted(secs)[len(secs) // 2] if secs else None,
                "min": min(secs) if secs else None,
                "first_frames": v.seconds[: min(total, warmup)],
            },
            "stage_seconds_per_frame": {
                s: sum(v.stages[s][i] for i in window) / max(1, len(secs)) for s in InferenceCore.STAGES
            },
            "memory_elements_steady_mean": sum(v.elements[i] for i in window) / max(1, len(secs)),
            "memory_elements_max": max(v.elements),
            "memory_store_mib_max": max(v.memory_mib),
        }
    summary: dict[str, object] = {"fps": {k: r["fps_steady"] for k, r in out_variants.items()}}
    if "xmem" in out_variants:
        summary["speedup_vs_xmem"] = out_variants["ours"]["fps_steady"] / out_variants["xmem"]["fps_steady"]
        summary["stage_speedup_vs_xmem"] = {
            s: (out_variants["xmem"]["stage_seconds_per_frame"][s] / out_variants["ours"]["stage_seconds_per_frame"][s])
            if out_variants["ours"]["stage_seconds_per_frame"][s] > 0 else None
            for s in InferenceCore.STAGES
        }
        summary["label_agreement_min"] = min(agreement) if agreement else None
        summary["label_agreement_mean"] = sum(agreement) / len(agreement) if agreement else None
    if "ours_eager" in out_variants:
        summary["speedup_compiled_vs_eager"] = (
            out_variants["ours"]["fps_steady"] / out_variants["ours_eager"]["fps_steady"]
        )
        if "xmem" in out_variants:
            summary["speedup_eager_vs_xmem"] = (
                out_variants["ours_eager"]["fps_steady"] / out_variants["xmem"]["fps_steady"]
            )

    memory_report = summarize_memory(host, ours.long_term, saturated, steady_from)

    flops = None
    if count_flops:
        # the GEMM rate again after the video: on a shared machine the better of the two is the peak
        machine_gflops = max(machine_gflops, gemm_gflops(dev))
        hp, wp = -(-h // 16) * 16, -(-w // 16) * 16
        n_objects = ours.core.memory.num_objects
        per_group = int(out_variants["ours"]["memory_elements_steady_mean"] / max(1, len(ours.core.memory.groups)))
        flops = {"memory_elements_per_group": per_group, "gflop_per_frame": {}}
        for v in variants:
            net = model if v.name != "xmem" else baseline
            flops["gflop_per_frame"][v.name] = stage_flops(net, (hp, wp), n_objects, max(1, per_group), v.core.config)
        totals = {k: f["total"] for k, f in flops["gflop_per_frame"].items()}
        flops["machine_gflops_fp32"] = machine_gflops
        flops["floor_fps"] = {k: machine_gflops / g for k, g in totals.items()}
        flops["achieved_gflops"] = {k: totals[k] * out_variants[k]["fps_steady"] for k in totals}
        flops["fraction_of_floor"] = {k: out_variants[k]["fps_steady"] / flops["floor_fps"][k] for k in totals}
        if "xmem" in totals:
            flops["max_speedup_vs_xmem"] = totals["xmem"] / totals["ours"]

    return {
        "video": name,
        "frames": total,
        "size": [h, w],
        "padded_size": [-(-h // 16) * 16, -(-w // 16) * 16],
        "objects": ours.core.memory.num_objects,
        "prefilled_memory_frames": prefilled,
        "steady_from_frame": steady_from,
        "summary": summary,
        "variants": out_variants,
        "memory": memory_report,
        "flops": flops,
        "series": {
            "seconds": {v.name: v.seconds for v in variants},
            "memory_elements": {v.name: v.elements for v in variants},
            "long_term_elements": {v.name: v.long_term for v in variants},
            "memory_store_mib": {v.name: v.memory_mib for v in variants},
            **{k: vals for k, vals in host.items() if vals},
        },
    }


def _headline(video: dict) -> dict:
    out = dict(video["summary"])
    out["frames"] = video["frames"]
    flops = video["flops"]
    if flops:
        out["gflop_per_frame"] = {k: round(f["total"], 2) for k, f in flops["gflop_per_frame"].items()}
        out["floor_fps"] = flops["floor_fps"]
        if "max_speedup_vs_xmem" in flops:
            out["max_speedup_vs_xmem"] = flops["max_speedup_vs_xmem"]
    memory = video["memory"]
    out["memory_flat_after_saturation"] = memory.get("flat_after_saturation")
    out["saturated_at_frame"] = memory.get("saturated_at_frame")
    out.pop("stage_speedup_vs_xmem", None)
    return out


def _plot(out_dir: Path, tag: str, video: dict) -> None:
    series = video["series"]
    frames = list(range(video["frames"]))
    window = max(1, min(25, video["frames"] // 20))
    fps = Panel(f"{video['video']}: FPS ({window}-frame moving average)", "frames/s")
    for name, secs in series["seconds"].items():
        fps.series[name] = (frames, [1 / s if s > 0 else None for s in _moving_average(secs, window)])
    mem = Panel(f"{video['video']}: process memory", "MiB", y_zero=False)
    mem.series["resident"] = (frames, series["rss_mib"])
    mem.series["peak resident"] = (frames, series["peak_rss_mib"])
    if "gpu_mib" in series:
        mem.series["GPU allocated"] = (frames, series["gpu_mib"])
        mem.series["GPU peak"] = (frames, series["gpu_peak_mib"])
    elements = Panel(f"{video['video']}: memory elements (working + long-term, all groups)", "elements")
    for name, values in series["memory_elements"].items():
        elements.series[name] = (frames, values)
        break  # the variants' memories are the same size; one line
    elements.series["long-term"] = (frames, next(iter(series["long_term_elements"].values())))
    store = Panel(f"{video['video']}: memory store buffers (keys, values, usage; capacity allocated)", "MiB")
    for name, values in series["memory_store_mib"].items():
        store.series[name] = (frames, values)
    stem = f"longtime_{tag}_{video['video']}"
    save_plot(out_dir / f"{stem}_fps.png", [fps], "frame")
    save_plot(out_dir / f"{stem}_memory.png", [mem, elements, store], "frame")


# ------------------------------------------------------------------------------ command line
def main(argv: list[str] | None = None) -> int:
    """`python bench/longtime.py` / `python -m vos.bench.longtime`: `run_longtime` with flags, JSON summary printed."""
    p = argparse.ArgumentParser(description="Long-video inference benchmark (the flags of `vos bench --video longtime`).")
    p.add_argument("--out", required=True, help="folder for longtime_<device>.json and the PNG plots")
    p.add_argument("--root", help="Long-Time Video set (default: the built-in synthetic video)")
    p.add_argument("--frames", type=int, default=3000)
    p.add_argument("--size", type=int, default=480)
    p.add_argument("--objects", type=int, default=2)
    p.add_argument("--preset", default="xmem")
    p.add_argument("--weights")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None)
    # --compare-dense: the name in the commands recorded with earlier results
    p.add_argument("--dense", "--compare-dense", dest="compare_dense", action=argparse.BooleanOptionalAction, default=True)
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
