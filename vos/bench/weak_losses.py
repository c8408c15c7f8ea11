"""Weak-loss benchmark: Triton kernels vs the PyTorch reference, forward + backward,
and the share of a training iteration the weak loss takes.

    python bench/weak_losses.py --out bench/results            # full run
    python bench/weak_losses.py --out bench/results --quick    # small shapes, a smoke run

Loss shapes (the training recipe): B = 8 samples, N = 3 objects, T = 8 frames of 384×384
input, at loss stride 4 (96×96) and 1 (384×384). Inputs: logits ~ 2·N(0, 1) (fp32, the loss
runs in fp32 under AMP too), Lab of blocky random colour frames (so the thresholds keep part of
the edges), random boxes with some absent objects and one padded object slot. Default loss
settings (`LossConfig()`). Each variant computes the loss and its gradient with respect to the
logits (the projection loss includes the sigmoid):

- ``torch``: the PyTorch reference (`backend="torch"`).
- ``triton``: the kernels (`backend="triton"`); CUDA only — on the CPU the Triton kernels run only
  in the interpreter, which is not a performance path. On CUDA, values and gradients are also
  compared with the reference (``max_abs_diff``).

Losses: ``projection``, ``pairwise``, ``temporal``, and ``weak_total`` (`WeakLoss.from_loss_inputs`,
all three weighted).

Iteration share: one `ClipRecurrence` forward + backward (the network's part of a training step)
against one `WeakLoss` forward + backward from the aggregated logits at the same shape (including
the downsampling, Lab and box rasterisation it does); share = loss / (network + loss). On CUDA:
the ``xmem`` preset at the training shape with bf16 autocast (as the trainer); on the CPU: the
``small`` preset at a reduced shape (stated in the JSON).

On the CPU the reference is slow (the temporal loss alone takes ~40 s at stride 4 on 2 shared
cores), so stride 1 runs at B = 1 there and every variant is timed once or twice; the reduced
shapes are recorded. Timing: variants interleaved per repeat after a warm-up call (CUDA), median
and minimum. Writes ``<out>/weak_losses_<device type>.json``.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from collections.abc import Callable
from contextlib import nullcontext
from datetime import datetime, timezone
from pathlib import Path

import torch

from vos.bench.environment import default_device, environment, kernel_bench_main
from vos.device import synchronize
from vos.output import claim_files, write_text
from vos.progress import log_lines


from vos.losses import (
    LossConfig,
    WeakLoss,
    box_masks,
    frames_to_lab,
    pairwise_loss,
    projection_loss,
    temporal_loss,
)

TRAIN_SHAPE = {"batch": 8, "objects": 3, "frames": 8, "size": 384}
STRIDES = (4, 1)
LOSSES = ("projection", "pairwise", "temporal", "weak_total")


# ------------------------------------------------------------------------------------------ inputs
def _frames(batch: int, frames: int, size: int, gen: torch.Generator) -> torch.Tensor:
    """uint8 B×T×3×S×S: 32-pixel blocks of random colour (shared over frames, shifted a little per
    frame) plus noise — regions of similar colour so that the similarity thresholds matter."""
    cells = size // 32
    base = torch.randint(0, 256, (batch, 1, 3, cells, cells), generator=gen).float()
    base = base.repeat_interleave(32, -2).repeat_interleave(32, -1)
    shifts = [torch.roll(base[:, 0], shifts=(2 * t, 3 * t), dims=(-2, -1)) for t in range(frames)]
    video = torch.stack(shifts, 1) + torch.randn(batch, frames, 3, size, size, generator=gen) * 6
    return video.clamp(0, 255).to(torch.uint8)


def _boxes(batch: int, objects: int, frames: int, size: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """XYXY input-pixel boxes B×N×T×4 and box_valid B×N×T (one object absent in two frames)."""
    lo = torch.randint(0, size // 2, (batch, objects, frames, 2), generator=gen)
    extent = torch.randint(size // 8, size // 2, (batch, objects, frames, 2), generator=gen)
    boxes = torch.cat((lo, (lo + extent).clamp(max=size)), -1).float()
    valid = torch.ones(batch, objects, frames, dtype=torch.bool)
    valid[0, -1, 1:3] = False
    return boxes, valid


def loss_inputs(batch: int, objects: int, frames: int, size: int, stride: int, device: torch.device, seed: int = 0):
    """(logits B×N×T×h×w, lab B×T×3×h×w, box_mask B×N×T×h×w, obj_valid B×N) at the loss resolution."""
    gen = torch.Generator().manual_seed(seed)
    h = size // stride
    logits = torch.randn(batch, objects, frames, h, h, generator=gen) * 2
    lab = frames_to_lab(_frames(batch, frames, size, gen), stride)
    boxes, box_valid = _boxes(batch, objects, frames, size, gen)
    box = box_masks(boxes, box_valid, (h, h), stride)
    obj_valid = torch.ones(batch, objects, dtype=torch.bool)
    if batch > 1:
        obj_valid[-1, -1] = False  # a padded object slot, as in samples with fewer objects
    return logits.to(device), lab.to(device), box.to(device), obj_valid.to(device)


def _loss_fn(name: str, backend: str, cfg: LossConfig) -> Callable:
    """fn(logits, lab, box, obj_valid) → (loss, ∂loss/∂logits)."""

    def run(logits, lab, box, obj_valid):
        x = logits.detach().requires_grad_(True)
        if name == "projection":
            loss = projection_loss(torch.sigmoid(x), box, eps=cfg.eps, layout=cfg.layout, obj_valid=obj_valid, backend=backend)
        elif name == "pairwise":
            loss = pairwise_loss(
                x, lab, box, kernel=cfg.kernel, dilation=cfg.dilation, gamma=cfg.gamma, tau=cfg.tau,
                normalize=cfg.normalize, obj_valid=obj_valid, backend=backend,
            )
        elif name == "temporal":
            loss = temporal_loss(
                x, lab, box, patch=cfg.temp_patch, candidates=cfg.temp_candidates, spacing=cfg.temp_spacing,
                top_k=cfg.temp_top_k, tau=cfg.temp_tau, target=cfg.temp_target, detach=cfg.temp_detach,
                gamma=cfg.temp_gamma, normalize=cfg.normalize, obj_valid=obj_valid, backend=backend,
            )
        else:
            criterion = WeakLoss(LossConfig(warmup_iters=0, backend=backend))
            loss, _ = criterion.from_loss_inputs(x, lab, box, obj_valid=obj_valid)
        grad, = torch.autograd.grad(loss, x)
        return loss.detach(), grad

    return run


# ----------------------------------------------------------------------------------------- timing
def _timed(fn: Callable, device: torch.device) -> tuple[float, object]:
    synchronize(device)
    start = time.perf_counter()
    out = fn()
    synchronize(device)
    return (time.perf_counter() - start) * 1e3, out


def _measure(variants: dict[str, Callable], device: torch.device, repeats: int, warmup: bool) -> tuple[dict, dict]:
    """Interleaved timing → ({name: [ms, …]}, {name: output of the first call})."""
    outputs, times = {}, {name: [] for name in variants}
    for name, fn in variants.items():
        ms, outputs[name] = _timed(fn, device)
        if not warmup:
            times[name].append(ms)
    for _ in range(repeats - (0 if warmup else 1)):
        for name, fn in variants.items():
            times[name].append(_timed(fn, device)[0])
    return times, outputs


def _summary(times: list[float]) -> dict:
    return {"median_ms": round(statistics.median(times), 3), "min_ms": round(min(times), 3), "n": len(times)}


# ------------------------------------------------------------------------------------ loss timings
def bench_losses(shape: dict, stride: int, device: torch.device, repeats: int, warmup: bool, log) -> dict:
    cfg = LossConfig()
    inputs = loss_inputs(shape["batch"], shape["objects"], shape["frames"], shape["size"], stride, device)
    backends = ["torch"] + (["triton"] if device.type == "cuda" else [])
    row = {"stride": stride, "loss_hw": [inputs[0].shape[-2], inputs[0].shape[-1]], **shape, "losses": {}}
    for name in LOSSES:
        variants = {b: (lambda fn=_loss_fn(name, b, cfg): fn(*inputs)) for b in backends}
        times, outputs = _measure(variants, device, repeats, warmup)
        entry = {b: _summary(t) for b, t in times.items()}
        entry["value"] = float(outputs["torch"][0])
        if "triton" in outputs:
            (v_ref, g_ref), (v_k, g_k) = outputs["torch"], outputs["triton"]
            entry["speedup"] = round(entry["torch"]["median_ms"] / entry["triton"]["median_ms"], 2)
            entry["max_abs_diff"] = {"value": float((v_k - v_ref).abs()), "grad": float((g_k - g_ref).abs().max())}
            entry["grad_scale"] = float(g_ref.abs().max())
        row["losses"][name] = entry
        log(
            f"stride {stride} B={shape['batch']} {name:10s} "
            + "  ".join(f"{b}={entry[b]['median_ms']:10.1f}ms" for b in backends)
            + (f"  speedup={entry['speedup']:.2f}" if "speedup" in entry else "")
        )
        del outputs
    return row


# ------------------------------------------------------------------------------------ iteration share
def bench_share(
    preset: str, shape: dict, device: torch.device, repeats: int, warmup: bool, log
) -> dict:
    """Network (ClipRecurrence forward + backward) vs WeakLoss (forward + backward) at one shape."""
    from vos.model.config import ModelConfig
    from vos.model.network import XMem
    from vos.train.recurrence import ClipRecurrence

    batch, objects, frames, size = shape["batch"], shape["objects"], shape["frames"], shape["size"]
    torch.manual_seed(0)
    model = XMem(ModelConfig(preset=preset)).to(device)
    model.train()
    recurrence = ClipRecurrence(model)
    gen = torch.Generator().manual_seed(1)
    rgb = (_frames(batch, frames, size, gen).float() / 255).to(device)
    boxes, box_valid = _boxes(batch, objects, frames, size, gen)
    boxes, box_valid = boxes.to(device), box_valid.to(device)
    first = box_masks(boxes[:, :, 0], box_valid[:, :, 0], (size, size)).to(device)
    obj_valid = torch.ones(batch, objects, dtype=torch.bool, device=device)
    amp = device.type == "cuda"
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if amp else nullcontext

    def network():
        model.zero_grad(set_to_none=True)
        with autocast():
            out = recurrence(rgb, first, obj_valid)
        agg = out["agg_logits"].float()
        # any upstream gradient costs the same backward; this one stands in for the loss's
        agg.backward(torch.ones_like(agg) * 1e-3)
        return agg.detach()

    _, agg = _timed(network, device)  # also the logits the loss variants start from

    def loss_fn(backend: str) -> Callable:
        criterion = WeakLoss(LossConfig(warmup_iters=0, backend=backend))

        def run():
            x = agg.detach().requires_grad_(True)
            loss, _ = criterion(x, rgb[:, 1:], boxes[:, :, 1:], box_valid[:, :, 1:], obj_valid=obj_valid)
            grad, = torch.autograd.grad(loss, x)
            return grad

        return run

    variants = {"network": network, "weak_loss_torch": loss_fn("torch")}
    if device.type == "cuda":
        variants["weak_loss_triton"] = loss_fn("triton")
    times, _ = _measure(variants, device, repeats, warmup)
    entry = {k: _summary(v) for k, v in times.items()}
    net = entry["network"]["median_ms"]
    for k in list(entry):
        if k.startswith("weak_loss_"):
            entry[f"share_{k[len('weak_loss_'):]}"] = round(entry[k]["median_ms"] / (net + entry[k]["median_ms"]), 4)
    result = {"preset": preset, "amp_bf16": amp, **shape, "loss_stride": LossConfig().stride, "times": entry}
    log(f"iteration share ({preset}, B={batch} T={frames} {size}²): " + json.dumps(entry))
    return result


# ---------------------------------------------------------------------------------------- the run
def run(
    out_dir: str | Path,
    quick: bool = False,
    device: str | None = None,
    repeats: int | None = None,
    log: Callable[[str], None] = print,
) -> Path:
    """Run the benchmark and write ``<out_dir>/weak_losses_<device type>.json``; returns its path.
    A file of that name that vos did not write is never replaced (:func:`vos.output.claim_files`).

    quick: B = 1, N = 2, T = 3, 128² at stride 4 only, and a small iteration-share shape (a smoke run).
    device: "cpu" or "cuda" (default: CUDA when available). repeats: timed calls per variant
    (default 10 on CUDA after a warm-up; 2 on the CPU at stride 4 and 1 at stride 1, no warm-up).
    """
    dev = default_device(device)
    path = result_file(out_dir, dev.type)
    cuda = dev.type == "cuda"
    warmup = cuda
    started = time.perf_counter()
    load_before = os.getloadavg()
    notes = []
    loss_rows = []
    if quick:
        plan = [({"batch": 1, "objects": 2, "frames": 3, "size": 128}, 4, repeats or (3 if cuda else 1))]
        share_plan = ("small", {"batch": 1, "objects": 3, "frames": 3, "size": 64})
        notes.append("quick: reduced shapes (B=1, N=2, T=3, 128x128, stride 4 only), smoke run")
    elif cuda:
        plan = [(TRAIN_SHAPE, s, repeats or 10) for s in STRIDES]
        share_plan = ("xmem", dict(TRAIN_SHAPE))
    else:
        plan = [(TRAIN_SHAPE, 4, repeats or 2), (TRAIN_SHAPE, 1, repeats or 1)]
        share_plan = ("small", {"batch": 1, "objects": 3, "frames": 4, "size": 128})
        notes.append(
            "CPU: stride 1 timed once (tens of seconds per call); "
            "iteration share with the small preset at B=1, T=4, 128x128 (stride-4 loss: 32x32)"
        )
    if not cuda:
        notes.append(
            "no CUDA device: only the PyTorch reference is timed; the Triton kernels were validated in the "
            "interpreter only (tests/test_kernels_losses.py), not natively, and not timed"
        )
    # claimed before the work: a file of that name that vos did not write stops the run now
    with claim_files([path]):
        with log_lines("weak_losses", len(plan) + 1, unit="shapes") as advance:
            for shape, stride, reps in plan:
                loss_rows.append(bench_losses(shape, stride, dev, reps, warmup, log))
                advance()
            preset, share_shape = share_plan
            try:
                share = bench_share(preset, share_shape, dev, repeats or (5 if cuda else 2), warmup, log)
            except torch.cuda.OutOfMemoryError as error:  # the xmem preset at B=8 on a smaller GPU
                share = {"preset": preset, **share_shape, "error": f"out of memory: {error}".splitlines()[0]}
                log(f"iteration share skipped: {share['error']}")
            advance()
        report = {
            "benchmark": "weak_losses",
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "device": dev.type,
            "environment": environment(dev),
            "settings": {
                "loss_config": "LossConfig() defaults (stacked projection, pairwise K=3 d=2, temporal 3x3 patches, "
                "3x3 candidates spaced 3, top-5, target patch, detach soft, normalize pixels)",
                "dtype": "float32",
                "measured": "loss forward + gradient w.r.t. the logits",
                "warmup": warmup,
                "quick": quick,
                "statistic": "median",
            },
            "notes": notes,
            "load_average_before": [round(x, 2) for x in load_before],
            "load_average_after": [round(x, 2) for x in os.getloadavg()],
            "wall_s": round(time.perf_counter() - started, 1),
            "losses": loss_rows,
            "iteration_share": share,
        }
        write_text(path, json.dumps(report, indent=2) + "\n")
        log(f"wrote {path}")
        return path


def result_file(out_dir: str | Path, device: str | None = None) -> Path:
    """The file :func:`run` writes: ``<out_dir>/weak_losses_<device type>.json``."""
    return Path(out_dir) / f"weak_losses_{default_device(device).type}.json"


def main(argv: list[str] | None = None) -> None:
    kernel_bench_main(__doc__, "weak_losses", run, argv, quick="small shapes, a smoke run")


if __name__ == "__main__":
    main()
