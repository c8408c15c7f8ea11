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

import torch

from vos.config import Config, load_config
from vos.data.datasets import open_dataset
from vos.data.io import read_image, read_mask, write_image
from vos.data.synthetic import SyntheticSpec, generate
from vos.eval.runner import evaluate
from vos.train.checkpoint import latest_checkpoint
from vos.train.samples import COLOURS


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


def overlay_strip(root: Path, sequence: str, pred_dir: Path, path: Path, frames: int = 4) -> None:
    """Rows: frame | ground truth | first-frame box | prediction, at ``frames`` evenly spaced times."""
    video = open_dataset(root, split="val")[sequence]
    first_gt = read_mask(video.annotations[0])
    times = torch.linspace(0, video.num_frames - 1, frames).round().long().tolist()
    rows = []
    for t in times:
        rgb = read_image(video.frames[t]).float()
        gt = read_mask(video.annotations[t])
        pred = read_mask(pred_dir / sequence / f"{video.frames[t].stem}.png")
        tiles = [rgb, _tint(rgb, gt), _boxes(rgb, first_gt) if t == 0 else _tint(rgb, gt * 0), _tint(rgb, pred)]
        rows.append(torch.cat(tiles, dim=2))
    write_image(path, torch.cat(rows, dim=1).clamp(0, 255).to(torch.uint8))


def _tint(rgb: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    out = rgb.clone()
    for obj in torch.unique(ids).tolist():
        if obj in (0, 255):
            continue
        colour = COLOURS[(obj - 1) % len(COLOURS)].view(3, 1, 1)
        m = (ids == obj)[None]
        out = torch.where(m, 0.45 * out + 0.55 * colour, out)
    return out


def _boxes(rgb: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """The first frame with each object's tight box filled (what box init gives the model)."""
    box_ids = torch.zeros_like(ids)
    for obj in torch.unique(ids).tolist():
        if obj in (0, 255):
            continue
        ys, xs = torch.nonzero(ids == obj, as_tuple=True)
        box_ids[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1] = obj
    return _tint(rgb, box_ids)


def run_demo(root: str | Path = "data/synthetic", out: str | Path = "runs/demo", overrides: list[str] | tuple[str, ...] = (), progress: bool = True, log=print) -> dict:
    """Run the demo end to end (resumable); returns the report dict also written to OUT/demo.json."""
    from vos.train.trainer import train

    root, out = Path(root), Path(out)
    if not (root / "ImageSets" / "2017" / "val.txt").is_file():
        log(f"generating the synthetic set in {root} …")
        summary = generate(root, SyntheticSpec())
        log(f"  {summary['train_videos']} train + {summary['val_videos']} val videos, mask/box fill {summary['fill_ratio']:.3f}")
    config = demo_config(root, out, overrides)
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
    overlay_strip(root, sequences[0], out / "eval-box" / "predictions", out / "overlay.png")
    record = {
        "weights": str(final),
        "iterations": config.train.iterations,
        "train_seconds": train_seconds,
        "device": "cuda" if torch.cuda.is_available() else f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)",
        "torch": torch.__version__,
        "mask_init": results["mask"],
        "box_init": results["box"],
    }
    (out / "demo.json").write_text(json.dumps(record, indent=2))
    (out / "demo.md").write_text(markdown(record))
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
    lines.append(f"weights {record['weights']}, {record['iterations']} iterations, {record['device']}, torch {record['torch']}")
    return "\n".join(lines) + "\n"
