"""``vos demo``: the project's main job on its embedded default.

Generates the synthetic set if absent, trains the small preset **box-only with all weak losses**,
evaluates mask init and box init on the synthetic val split, and writes a report (markdown + JSON +
an overlay strip: frame, ground truth, box, prediction). Every step resumes: an existing dataset is
reused, training continues from its last checkpoint (or is skipped when final weights exist), and
evaluation skips finished sequences.
"""

from __future__ import annotations

import json
import platform
import time
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from vos.config import Config, load_config, to_dict
from vos.data.boxes import box_index_map, tight_boxes
from vos.data.datasets import open_dataset
from vos.data.io import read_image, read_mask, write_image
from vos.data.video import overlay
from vos.data.synthetic import SyntheticSpec, generate
from vos.eval.runner import evaluate
from vos.output import claim_output, write_text
from vos.train.checkpoint import check_resume_settings, latest_checkpoint


def demo_config_path() -> Path:
    return Path(str(resources.files("vos") / "resources" / "demo.yaml"))


def demo_config(root: Path, out: Path, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    base = [
        f"data.datasets=[{{kind: synthetic, root: '{root}', split: train, weight: 1.0}}]",
        f"train.out_dir={out / 'train'}",
    ]
    return load_config(demo_config_path(), [*base, *overrides])


def area_ratio(pred_dir: Path, gt_dir: Path, sequences: list[str]) -> float:
    """Mean over objects of Σ predicted area / Σ true area (frames where the object is in the ground
    truth). Near 1 for good masks; well below 1 exposes degenerate small masks, above 1 box-like ones."""
    ratios = []
    for seq in sequences:
        pred_area: dict[int, float] = {}
        true_area: dict[int, float] = {}
        for gt_path in sorted((gt_dir / seq).glob("*.png")):
            gt = read_mask(gt_path)
            pred = read_mask(pred_dir / seq / gt_path.name)
            for obj in torch.unique(gt).tolist():
                if obj in (0, 255):
                    continue
                true_area[obj] = true_area.get(obj, 0.0) + float((gt == obj).sum())
                pred_area[obj] = pred_area.get(obj, 0.0) + float((pred == obj).sum())
        ratios += [pred_area[o] / true_area[o] for o in true_area if true_area[o] > 0]
    return sum(ratios) / len(ratios) if ratios else float("nan")


def summarise_eval(report: dict, pred_dir: Path, gt_dir: Path, sequences: list[str]) -> dict:
    """The figures the demo and the study report for one evaluation (fractions, not percent)."""
    g = report["global"]
    return {
        "J&F": g["J&F-Mean"],
        "J": g["J-Mean"],
        "F": g["F-Mean"],
        "frame0_IoU": report.get("init", {}).get("frame0_IoU"),
        "area_ratio": area_ratio(pred_dir, gt_dir, sequences),
        "fps": report.get("runtime", {}).get("fps"),
    }


def overlay_strip(root: Path, sequence: str, pred_dir: Path, path: Path, frames: int = 5, scale: int = 2) -> None:
    """A labelled strip: one row per time (``frames`` evenly spaced), columns frame | ground truth |
    box given at frame 0 | prediction; tiles enlarged ``scale``× (nearest) so small frames stay legible."""
    from PIL import Image, ImageDraw

    video = open_dataset(root, split="val")[sequence]
    first_gt = read_mask(video.annotations[0])
    tight = tight_boxes(first_gt)

    def tint(rgb: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        return overlay(rgb, torch.where(index == 255, 0, index))  # 255 = void, not an object

    def grow(tile: torch.Tensor) -> torch.Tensor:
        return tile.repeat_interleave(scale, 1).repeat_interleave(scale, 2)

    times = torch.linspace(0, video.num_frames - 1, frames).round().long().tolist()
    rows = []
    for t in times:
        rgb = read_image(video.frames[t])
        gt = read_mask(video.annotations[t])
        pred = read_mask(pred_dir / sequence / f"{video.frames[t].stem}.png")
        given = overlay(rgb, box_index_map(tight, tuple(first_gt.shape)), tight) if t == 0 else rgb
        rows.append(torch.cat([grow(tile) for tile in (rgb, tint(rgb, gt), given, tint(rgb, pred))], dim=2))
    strip = torch.cat(rows, dim=1)
    header, label_width = 18, 44
    tile_w = strip.shape[2] // 4
    canvas = Image.new("RGB", (label_width + strip.shape[2], header + strip.shape[1]), "white")
    canvas.paste(Image.fromarray(strip.permute(1, 2, 0).numpy()), (label_width, header))
    draw = ImageDraw.Draw(canvas)
    for k, title in enumerate(("frame", "ground truth", "box (frame 0 only)", "prediction")):
        draw.text((label_width + k * tile_w + 4, 3), title, fill="black")
    row_h = strip.shape[1] // len(times)
    for r, t in enumerate(times):
        draw.text((4, header + r * row_h + row_h // 2 - 5), f"t={t}", fill="black")
    path.parent.mkdir(parents=True, exist_ok=True)
    write_image(path, torch.from_numpy(np.array(canvas)).permute(2, 0, 1).contiguous())


# The demo's synthetic set: square 128² frames evaluated at their native size, 1–2 objects whose wavy
# bodies span several stride-16 feature cells and start apart, fewer exits from the frame than the
# default set; 72 train + 24 val videos.
DEMO_DATA = SyntheticSpec(videos=96, frames=24, height=128, width=128, object_size=(0.5, 0.8), max_objects=2,
                          leave_probability=0.15)


def ensure_demo_data(root: Path, log=print) -> None:
    """Generate the demo's synthetic set in ``root`` unless a set is already there."""
    if (root / "ImageSets" / "2017" / "val.txt").is_file():
        return
    log(f"generating the synthetic set in {root} …")
    summary = generate(root, DEMO_DATA)
    log(f"  {summary['train_videos']} train + {summary['val_videos']} val videos, mask/box fill {summary['fill_ratio']:.3f}")


# Settings that may differ when the demo reuses its earlier run: logging and checkpoint cadence only.
# Anything else (more iterations included: the schedule is scaled to them) changes the weights.
DEMO_MAY_DIFFER = ("train.log_every", "train.checkpoint_every", "train.sample_every", "train.keep_checkpoints",
                   "data.num_workers", "train.channels_last")


def run_demo(root: str | Path = "data/demo", out: str | Path = "runs/demo", overrides: list[str] | tuple[str, ...] = (),
             progress: bool = True, log=print, overwrite: bool = False) -> dict:
    """Run the demo end to end (resumable with the same settings); returns the report dict also
    written to OUT/demo.json. ``overwrite`` replaces an earlier demo run in ``out`` (:mod:`vos.output`)."""
    started = time.perf_counter()
    root, out = Path(root), Path(out)
    ensure_demo_data(root, log)
    config = demo_config(root, out, overrides)
    settings = {"root": str(root.resolve()), **to_dict(config)}
    train_dir = Path(config.train.out_dir)
    if not overwrite:  # also for a run written before manifests existed: its saved config decides
        check_resume_settings(train_dir, to_dict(config), DEMO_MAY_DIFFER)
    with claim_output(out, "demo", settings, inputs=[root], overwrite=overwrite, resumable=True, may_differ=DEMO_MAY_DIFFER,
                      adopt=lambda path: (path / "train" / "config.yaml").is_file()):
        return _run_demo(root, out, config, progress, log, started)


def _run_demo(root: Path, out: Path, config: Config, progress: bool, log, started: float) -> dict:
    from vos.train.trainer import train

    train_dir = Path(config.train.out_dir)
    final = train_dir / "final.safetensors"
    train_seconds = None
    if final.is_file():
        log(f"using trained weights {final}")
    else:
        resume = latest_checkpoint(train_dir) is not None
        log(f"{'resuming' if resume else 'training'}: small preset, box-only, all weak losses, "
            f"{config.train.iterations} iterations (batch {config.train.batch_size}, {config.data.size}², T={config.data.num_frames})")
        start = time.perf_counter()
        final = train(config, resume=resume, progress=progress)
        train_seconds = time.perf_counter() - start
    val = open_dataset(root, split="val")
    sequences = [v.name for v in val.videos]
    gt_dir = root / "Annotations" / "480p"
    results = {}
    for init in ("mask", "box"):
        log(f"evaluating on the val split with {init} init …")
        eval_dir = out / f"eval-{init}"
        report = evaluate("synthetic", root, final, eval_dir, init=init, size=-1, progress=progress)
        results[init] = summarise_eval(report, eval_dir / "predictions", gt_dir, sequences)
    # the strip shows the val video with the most objects (separating them is the hard part)
    counts = {v.name: len([i for i in torch.unique(read_mask(v.annotations[0])).tolist() if i not in (0, 255)]) for v in val.videos}
    shown = max(sequences, key=lambda name: counts[name])
    overlay_strip(root, shown, out / "eval-box" / "predictions", out / "overlay.png")
    frame = read_image(val.videos[0].frames[0]).shape[1:]
    record = {
        "weights": str(final),
        "root": str(root),
        "frames": f"{frame[0]}x{frame[1]} (evaluated at native size)",
        "training": f"{config.data.size}² {config.data.geometry}, {config.data.num_frames} frames, batch "
                    f"{config.train.batch_size}, lr {config.train.lr:g}, projection layout {config.losses.layout}",
        "iterations": config.train.iterations,
        "train_seconds": train_seconds,
        # this invocation from start to report: data generation when needed, training (None when
        # the weights were already there), both evaluations, the overlay
        "wall_seconds": time.perf_counter() - started,
        "device": "cuda" if torch.cuda.is_available() else f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)",
        "torch": torch.__version__,
        "mask_init": results["mask"],
        "box_init": results["box"],
    }
    write_text(out / "demo.json", json.dumps(record, indent=2))
    write_text(out / "demo.md", markdown(record))
    return record


def markdown(record: dict) -> str:
    def pct(v):
        return "–" if v is None else f"{100 * v:.1f}"

    lines = [
        "| init | J&F | J | F | frame-0 IoU | pred/true area | FPS |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for key in ("mask_init", "box_init"):
        r = record[key]
        fps = "–" if r["fps"] is None else f"{r['fps']:.1f}"
        lines.append(f"| {key.split('_')[0]} | {pct(r['J&F'])} | {pct(r['J'])} | {pct(r['F'])} | {pct(r['frame0_IoU'])} | {r['area_ratio']:.2f} | {fps} |")
    lines.append("")
    lines.append(f"weights {record['weights']}, {record['iterations']} iterations ({record.get('training', '')}), "
                 f"frames {record.get('frames', '')}, {record['device']}, torch {record['torch']}")
    if record.get("wall_seconds") is not None:
        trained = "weights reused" if record["train_seconds"] is None else f"training {record['train_seconds'] / 60:.1f} min"
        lines.append("")
        lines.append(f"time: {record['wall_seconds'] / 60:.1f} min in all ({trained})")
    return "\n".join(lines) + "\n"
