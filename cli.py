"""The ``vos`` command line: a thin Typer layer that parses arguments and calls the library.

Errors a user can cause (:class:`vos.errors.VosError`) and I/O failures (``OSError``: permission,
a full disk, a read-only file system) are printed as one line on stderr with exit code 1; anything
else is a bug and keeps its traceback. Output folders follow the contract of :mod:`vos.output`.
"""

from __future__ import annotations

import contextlib
import math
import re
from pathlib import Path
from typing import Iterator, Optional

import typer
from rich.console import Console
from rich.table import Table

from vos.errors import VosError
from vos.progress import progress as show_progress

app = typer.Typer(
    name="vos",
    help="Box-supervised video object segmentation (XMem memory network, weak losses, Triton kernels).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Generate and check datasets.", no_args_is_help=True)
app.add_typer(data_app, name="data")
analyze_app = typer.Typer(help="Dataset analyses from the thesis (Table 3.1, Fig. A.2).", no_args_is_help=True)
app.add_typer(analyze_app, name="analyze")

console = Console()


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Turn a VosError into one line on stderr and exit code 1."""
    try:
        yield
    except VosError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    except OSError as exc:
        from vos.output import io_error

        typer.echo(f"error: {io_error(exc)}", err=True)
        raise typer.Exit(1) from None


_OVERWRITE = typer.Option(False, "--overwrite", help="Replace what an earlier vos run wrote in the output (nothing else is ever removed).")


def _to_done(advance):
    """An ``on_progress(done)`` callback (absolute count) for a ``vos.progress.progress`` display."""
    state = {"done": 0}

    def update(done: int, *_) -> None:
        advance(done - state["done"])
        state["done"] = done

    return update


def _parse_size(text: str) -> tuple[int, int]:
    match = re.fullmatch(r"\s*(\d+)\s*[xX×]\s*(\d+)\s*", text)
    if not match:
        raise VosError(f"--size {text!r}: expected HxW, e.g. 240x432")
    h, w = int(match.group(1)), int(match.group(2))
    if h < 32 or w < 32:
        raise VosError(f"--size {text}: frames must be at least 32x32")
    return h, w


@data_app.command("synthetic")
def data_synthetic(
    out: Path = typer.Argument(..., help="Folder to write the dataset into."),
    videos: int = typer.Option(48, min=1, help="Number of videos (a quarter go to the val split)."),
    frames: int = typer.Option(24, min=2, help="Frames per video."),
    size: str = typer.Option("240x432", help="Frame size HxW."),
    seed: int = typer.Option(0, help="Random seed; the same seed gives byte-identical files."),
    layout: str = typer.Option("davis", help="davis | youtube"),
    object_size: str = typer.Option("0.45,0.75", help="LO,HI: an object's extent as a fraction of the frame's shorter side, drawn per object."),
    max_objects: int = typer.Option(3, min=1, help="Objects per video are drawn from 1..max."),
    leave_probability: float = typer.Option(0.3, min=0.0, max=1.0, help="Chance that an object leaves the frame and comes back."),
    overwrite: bool = _OVERWRITE,
) -> None:
    """Write the procedural synthetic set (DAVIS layout by default). `vos demo` generates its own set:
    --size 128x128 --videos 96 --object-size 0.5,0.8 --max-objects 2 --leave-probability 0.15."""
    from vos.data.synthetic import SyntheticSpec, generate

    with user_errors():
        if layout not in ("davis", "youtube"):
            raise VosError(f"--layout {layout!r}: expected davis or youtube")
        h, w = _parse_size(size)
        try:
            lo, hi = (float(v) for v in object_size.split(","))
        except ValueError:
            raise VosError(f"--object-size {object_size!r}: expected LO,HI, e.g. 0.45,0.75") from None
        if not 0 < lo <= hi <= 2:
            raise VosError(f"--object-size {object_size!r}: need 0 < LO <= HI <= 2")
        spec = SyntheticSpec(videos=videos, frames=frames, height=h, width=w, seed=seed, layout=layout,
                             object_size=(lo, hi), max_objects=max_objects, leave_probability=leave_probability)
        with show_progress("generating", videos, unit="videos") as advance:
            summary = generate(out, spec, progress=_to_done(advance), overwrite=overwrite)
    console.print(
        f"wrote {summary['train_videos']} train + {summary['val_videos']} val videos, "
        f"{summary['frames']} frames ({summary['layout']} layout) to {out}; "
        f"mean mask-area/box-area {summary['fill_ratio']:.3f}"
    )


@data_app.command("check")
def data_check(
    root: Path = typer.Argument(..., help="Dataset root (DAVIS or YouTube-VOS layout)."),
    split: Optional[str] = typer.Option(None, help="One split (DAVIS train|val, YouTube train|valid); default: every split."),
    year: str = typer.Option("2017", help="DAVIS ImageSets year."),
) -> None:
    """Validate a dataset root: print videos / frames / objects / fill ratio, or one line per problem."""
    from vos.data.check import check_dataset
    from vos.data.datasets import available_splits, open_dataset

    reports = []
    with user_errors():
        splits = [split] if split else available_splits(root, year=year)
        datasets = [open_dataset(root, split=s, year=year) for s in splits]
        for dataset in datasets:
            with show_progress(f"checking {dataset.layout}/{dataset.split}", len(dataset), unit="videos") as advance:
                reports.append(check_dataset(dataset, progress=advance))
    problems = [p for r in reports for p in r.problems]
    for line in problems:
        typer.echo(f"error: {line}", err=True)
    table = Table(title=f"{root} ({reports[0].layout})")
    for column in ("split", "videos", "frames", "objects", "mask/box fill"):
        table.add_column(column, justify="right")
    for r in reports:
        table.add_row(r.split, str(len(r.videos)), str(r.num_frames), str(r.num_objects), f"{r.fill_ratio:.3f}")
    console.print(table)
    if problems:
        raise typer.Exit(1)


def _device(name: str):
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise VosError(f"--device {name!r}: not a torch device (cpu, cuda, cuda:1, auto)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise VosError(f"--device {name}: CUDA is not available on this machine")
    return device


def _parse_box(text: str) -> tuple[float, float, float, float]:
    parts = text.replace(" ", "").split(",")
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        values = ()
    if len(values) != 4:
        raise VosError(f"--box {text!r}: expected x0,y0,x1,y1 in pixels")
    if not all(math.isfinite(v) for v in values):
        raise VosError(f"--box {text!r}: coordinates must be finite numbers (x0,y0,x1,y1 in pixels)")
    return values  # type: ignore[return-value]


def _memory_config(items: list[str]):
    """MemoryConfig from ``key=value`` overrides (``memory.`` prefix optional)."""
    import yaml

    from vos.config import from_dict
    from vos.memory.config import MemoryConfig

    overrides = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise VosError(f"--set {item}: expected key=value")
        overrides[key.strip().removeprefix("memory.")] = yaml.safe_load(value)
    return from_dict(MemoryConfig, overrides, source="--set", prefix="memory.")


def _model(weights: str, device=None):
    """Trained weights, or — for a preset name — a random network, with a loud warning on stderr."""
    from vos.model.weights import model_from

    model, _ = model_from(weights, device=device if device is not None else "cpu")
    _warn_untrained(weights)
    return model


def _warn_untrained(weights: str) -> None:
    from vos.model.config import PRESETS

    if str(weights) in PRESETS and not Path(weights).exists():
        typer.secho(
            f"warning: '{weights}' is a preset, not a checkpoint: the network has RANDOM, UNTRAINED weights "
            "and its masks mean nothing (fine for timing and tests; pass a .safetensors/.pth to segment)",
            err=True, fg="yellow", bold=True,
        )


@app.command("segment")
def segment(
    input: Path = typer.Argument(..., help="A folder of frames or a video file (mp4 needs the video extra)."),
    out: Path = typer.Option(..., "--out", help="Folder for the masks (see --format)."),
    weights: str = typer.Option(..., "--weights", help="Checkpoint: our .safetensors, an official XMem .pth, or an export folder."),
    mask: Optional[Path] = typer.Option(None, "--mask", help="Index mask of frame --frame (palette/grayscale PNG)."),
    box: list[str] = typer.Option([], "--box", help="Box x0,y0,x1,y1 on frame --frame (exclusive max); repeat for more objects (ids 1, 2, …)."),
    frame: int = typer.Option(0, "--frame", help="Index of the frame the mask or boxes are on (0 = first)."),
    direction: str = typer.Option("forward", "--direction", help="forward | backward | both, from --frame."),
    format: str = typer.Option("davis", "--format", help="davis (palette PNG per frame) | binary (OUT/<id>/<frame>.png) | coco (OUT/masks.json, RLE)."),
    size: int = typer.Option(480, help="Largest shorter side the network sees (XMem's 480p); larger frames are shrunk, masks come back at full size; -1 = native."),
    device: str = typer.Option("auto", help="auto | cpu | cuda | cuda:N"),
    overlay: Optional[Path] = typer.Option(None, help="Also write masks blended over frames: a folder or an .mp4."),
    set_: list[str] = typer.Option([], "--set", help="Memory setting override, e.g. --set top_k=20."),
    overwrite: bool = _OVERWRITE,
) -> None:
    """Segment a video from a mask or boxes on one frame, forward, backward or both ways."""
    from vos.memory.segment import segment_video

    with user_errors():
        if (mask is None) == (not box):
            raise VosError("give exactly one initialisation: --mask PNG or one or more --box x0,y0,x1,y1")
        if size != -1 and size < 16:
            raise VosError(f"--size {size}: use -1 (native) or a shorter side >= 16")
        if frame < 0:
            raise VosError(f"--frame {frame}: must be a frame index >= 0")
        memory = _memory_config(set_)
        boxes = [_parse_box(b) for b in box] or None
        model = _model(weights, _device(device))
        stats = segment_video(input, out, model, memory, mask_path=mask, boxes=boxes, size=size, overlay=overlay,
                              overwrite=overwrite, frame=frame, direction=direction, fmt=format)
    (ih, iw), (ph, pw) = stats["input_size"], stats["process_size"]
    if (ph, pw) != (ih, iw):
        console.print(f"frames are {iw}x{ih}: the network saw them at {pw}x{ph} (--size {size}); masks are at {iw}x{ih}")
    console.print(
        f"segmented frames {stats['first']}–{stats['last']} ({stats['frames']}), {len(stats['objects'])} object(s): "
        f"{stats['fps']:.2f} FPS (model step) → {out}"
    )


@app.command("app")
def app_cmd(
    video: Path = typer.Argument(..., help="A video file or a folder of frames."),
    weights: str = typer.Option(..., "--weights", help="Checkpoint: our .safetensors, an official XMem .pth, or an export folder."),
    workspace: Optional[Path] = typer.Option(None, help="Folder for annotations, results and exports (default: workspace/<video name>); an earlier one is resumed."),
    host: str = typer.Option("127.0.0.1", help="Address to listen on (127.0.0.1: this computer only)."),
    port: int = typer.Option(8765, help="Port (0: any free one)."),
    size: int = typer.Option(480, help="Largest shorter side the network sees, as in vos segment; -1 = native."),
    device: str = typer.Option("auto", help="auto | cpu | cuda | cuda:N"),
    set_: list[str] = typer.Option([], "--set", help="Memory setting override, e.g. --set top_k=20."),
) -> None:
    """Annotate a video in the browser: boxes or brush on any frame, propagate, correct, export."""
    with user_errors():
        try:
            from vos.app import Annotator, Server
        except ImportError as exc:
            raise VosError(f"vos app needs its extra: pip install -e '.[app]' ({exc.name} is missing)") from None
        from vos.memory.session import VideoPredictor

        if size != -1 and size < 16:
            raise VosError(f"--size {size}: use -1 (native) or a shorter side >= 16")
        if not 0 <= port <= 65535:
            raise VosError(f"--port {port}: must be 0–65535")
        memory = _memory_config(set_)
        model = _model(weights, _device(device))
        predictor = VideoPredictor(model, memory, max_internal_size=None if size == -1 else size)
        folder = workspace if workspace is not None else Path("workspace") / video.stem
        with Annotator(predictor, video, folder) as annotator:
            server = Server(annotator, host, port)
            console.print(f"vos app: {server.url}  (workspace {folder}; Ctrl-C stops)")
            server.run()


@app.command("demo")
def demo_cmd(
    root: Path = typer.Option(Path("data/demo"), help="Synthetic set (the demo's is generated here if absent)."),
    out: Path = typer.Option(Path("runs/demo"), "--out", help="Training run, evaluations and the report."),
    set_: list[str] = typer.Option([], "--set", help="Override the demo config, e.g. --set train.iterations=200."),
    overwrite: bool = _OVERWRITE,
) -> None:
    """Train box-only on the synthetic set, evaluate mask and box init, print the report (resumable)."""
    from vos.demo import markdown, run_demo

    with user_errors():
        record = run_demo(root, out, overrides=set_, log=console.print, overwrite=overwrite)
    console.print(markdown(record))
    console.print(f"report: {out / 'demo.md'}, {out / 'demo.json'}; overlays: {out / 'overlay.png'}")


@app.command("train")
def train_cmd(
    config: Path = typer.Argument(..., help="YAML config, e.g. configs/full.yaml (may `extends:` another)."),
    set_: list[str] = typer.Option([], "--set", help="Override one field: --set train.lr=1e-4 (repeatable)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Output folder (default: train.out_dir of the config)."),
    resume: bool = typer.Option(False, "--resume", help="Continue exactly from OUT/checkpoints/latest.json (same settings; more iterations or other logging allowed)."),
    overwrite: bool = _OVERWRITE,
) -> None:
    """Train a model (box-supervised with the weak losses, or the mask oracle). Works under torchrun."""
    from vos.config import load_config
    from vos.train.trainer import train

    with user_errors():
        cfg = load_config(config, list(set_))
        if out is not None:
            cfg.train.out_dir = str(out)
        final = train(cfg, resume=resume, overwrite=overwrite)
    console.print(f"final weights: {final}")


@app.command("eval")
def eval_cmd(
    weights: str = typer.Option(..., "--weights", help="Checkpoint (.safetensors or official .pth)."),
    dataset: str = typer.Option("synthetic", help="d16 | d17 | d17-test | y18 | y19 | lv1 | lv3 | generic | synthetic"),
    root: Path = typer.Option(Path("data/synthetic"), help="Dataset root."),
    init: str = typer.Option("mask", help="mask: first-frame masks; box: their tight boxes as filled rectangles."),
    out: Optional[Path] = typer.Option(None, "--out", help="Output folder (default runs/eval/<dataset>-<init>)."),
    size: int = typer.Option(480, help="Shorter side the model sees; -1 keeps the native resolution."),
    shard: str = typer.Option("0/1", help="i/n: evaluate every n-th sequence from i (parallel processes share --out)."),
    overlay: bool = typer.Option(False, help="Also write inspection overlays."),
    device: str = typer.Option("auto", help="auto | cpu | cuda | cuda:N"),
    workers: Optional[int] = typer.Option(None, help="Scoring threads."),
    set_: list[str] = typer.Option([], "--set", help="Memory setting override, e.g. --set top_k=20."),
    tensorboard: Optional[Path] = typer.Option(
        None, "--tensorboard", help="Training folder (vos train --out) whose TensorBoard gets the final J, F, J&F."
    ),
    overwrite: bool = _OVERWRITE,
) -> None:
    """Evaluate on a dataset: palette PNGs, J&F reports (JSON/CSV/markdown), FPS; resumes where it stopped."""
    from vos.eval.report import markdown_table
    from vos.eval.runner import evaluate, parse_shard
    from vos.eval.sources import DATASETS

    with user_errors():
        if dataset not in DATASETS:
            raise VosError(f"--dataset {dataset!r}: expected one of {', '.join(DATASETS)}")
        if init not in ("mask", "box"):
            raise VosError(f"--init {init!r}: expected mask or box")
        if size != -1 and size < 16:
            raise VosError(f"--size {size}: use -1 (native) or a shorter side >= 16")
        out_dir = out if out is not None else Path("runs/eval") / f"{dataset}-{init}"
        if tensorboard is not None:
            from vos.output import output_command

            if output_command(tensorboard) != "train":
                raise VosError(f"--tensorboard {tensorboard}: not the output folder of a `vos train` run")
        _warn_untrained(weights)
        report = evaluate(
            dataset, root, weights, out_dir, init=init, size=size, memory=_memory_config(set_),
            shard=parse_shard(shard), overlay=overlay, device=_device(device), workers=workers, overwrite=overwrite,
        )
    if report.get("global"):
        console.print(markdown_table(report))
        if tensorboard is not None:
            from vos.train.log import log_evaluation

            scores = {k: report["global"][f"{k}-Mean"] for k in ("J&F", "J", "F")}
            with user_errors():
                step = log_evaluation(tensorboard, scores, weights)
            console.print(f"TensorBoard: eval/J&F at iteration {step} in {tensorboard}" if step is not None
                          else "TensorBoard is not installed (pip install -e '.[tensorboard]'): nothing logged")
    console.print(f"results in {out_dir}")


@app.command("score")
def score_cmd(
    pred: Path = typer.Argument(..., help="Predictions: <seq>/<frame>.png index or palette PNGs."),
    gt: Path = typer.Argument(..., help="Ground truth in the same layout (e.g. DAVIS Annotations/480p)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Write scores.json, scores_objects.csv, scores.md here."),
    workers: Optional[int] = typer.Option(None, help="Sequences scored in parallel (default: one per core)."),
    protocol: str = typer.Option("auto", help="davis (dense GT; first and last frame excluded) | youtube (sparse GT) | auto: from the GT layout (printed)."),
    binary: bool = typer.Option(False, help="Merge all object ids into one (DAVIS 2016's 0/255 masks)."),
    overwrite: bool = _OVERWRITE,
) -> None:
    """Score prediction folders with the DAVIS protocol (J, F, J&F; per object Mean / Recall / Decay)."""
    from vos.eval.report import markdown_table, write_reports
    from vos.eval.score import score_folders

    with user_errors():
        if protocol not in ("auto", "davis", "youtube"):
            raise VosError(f"--protocol {protocol!r}: expected auto, davis or youtube")
        report = score_folders(pred, gt, workers=workers, protocol=protocol, binary=binary)
        if out is not None:
            from vos.output import claim_output

            settings = {"pred": str(pred.resolve()), "gt": str(gt.resolve()), "protocol": report["protocol"], "binary": binary}
            with claim_output(out, "score", settings, inputs=[pred, gt], overwrite=overwrite):
                write_reports(report, out)
    console.print(markdown_table(report))
    how = "given" if protocol != "auto" else report.get("protocol_source", "inferred")
    console.print(f"protocol: {report['protocol']} ({how})")


@app.command("bench")
def bench_cmd(
    video: Optional[str] = typer.Option(None, "--video", help="longtime: FPS and memory over a long video."),
    kernels: bool = typer.Option(False, "--kernels", help="Run the kernel benchmarks (memory read, weak losses)."),
    root: Optional[Path] = typer.Option(None, help="Long-Time Video root (default: a built-in synthetic long video)."),
    frames: int = typer.Option(3000, help="Frames of the synthetic long video."),
    size: int = typer.Option(480, help="Shorter side."),
    objects: int = typer.Option(2, help="Objects in the synthetic long video."),
    preset: str = typer.Option("xmem", help="Model preset when no --weights (random weights: speed only)."),
    weights: Optional[str] = typer.Option(None, help="Checkpoint to benchmark."),
    compile_: Optional[bool] = typer.Option(None, "--compile/--no-compile", help="torch.compile (default: where it pays)."),
    dense: bool = typer.Option(True, "--dense/--no-dense", help="Also run XMem's algorithm (dense read) for the ratio."),
    device: str = typer.Option("auto", help="auto | cpu | cuda | cuda:N"),
    prefill: bool = typer.Option(False, help="Fill the memory to its caps after frame 0 (steady state at once)."),
    threads: Optional[int] = typer.Option(None, help="CPU threads for the run (default: torch's)."),
    mem_every: int = typer.Option(5, help="Longtime: a memory frame every this many frames."),
    channels_last: Optional[bool] = typer.Option(None, "--channels-last/--no-channels-last", help="Longtime: channels-last convolutions (default: on)."),
    warmup: int = typer.Option(5, help="Longtime: frames left out of the FPS summary."),
    flops: bool = typer.Option(True, "--flops/--no-flops", help="Longtime: count each stage's FLOPs."),
    quick: bool = typer.Option(False, help="Kernel benchmarks: fewer shapes and repeats."),
    out: Path = typer.Option(Path("bench/results"), "--out", help="Where the JSON results and plots go."),
) -> None:
    """Benchmarks: `--video longtime` (FPS, per-stage times, memory over time) and `--kernels`."""
    with user_errors():
        if video is None and not kernels:
            raise VosError("choose --video longtime and/or --kernels")
        if video is not None and video != "longtime":
            raise VosError(f"--video {video!r}: the only video benchmark is 'longtime'")
        from vos.output import claim_files

        from vos.bench import memory_read as read_bench
        from vos.bench import weak_losses as loss_bench

        scripts = [read_bench, loss_bench] if kernels else []
        files = [script.result_file(out) for script in scripts]
        if video == "longtime":
            from vos.bench.longtime import result_files, run_longtime
            from vos.memory.config import MemoryConfig

            files += result_files(out, root, _device(device))
        # every file of the run is claimed before the first benchmark starts, so that a refusal
        # (a result file vos did not write) comes before minutes of work, not after them
        with claim_files(files, inputs=[root]):
            for script in scripts:
                script.run(out, quick=quick)
            if video == "longtime":
                result = run_longtime(out, root=root, frames=frames, size=size, objects=objects, preset=preset,
                                      weights=weights, compile=compile_, compare_dense=dense, device=_device(device),
                                      prefill=prefill, threads=threads, memory=MemoryConfig(mem_every=mem_every),
                                      channels_last=channels_last, warmup=warmup, count_flops=flops)
                console.print_json(data=result.get("summary", {}))
    console.print(f"results in {out}")


@analyze_app.command("consistency")
def analyze_consistency(
    root: Path = typer.Argument(..., help="DAVIS- or YouTube-VOS-layout root (with masks)."),
    split: str = typer.Option("train", help="Split to sample clips from."),
    clips: int = typer.Option(200, help="Clips drawn with the training pre-processing."),
    config: Optional[Path] = typer.Option(None, help="Training config whose data/losses settings to use (default: the thesis's: 8 frames, 384², stride 4)."),
    set_: list[str] = typer.Option([], "--set", help="Override a field of that config, e.g. --set data.size=96."),
    seed: int = typer.Option(0, help="Clip sampling seed."),
    out: Optional[Path] = typer.Option(None, "--out", help="Also write the table as JSON here."),
) -> None:
    """Table 3.1: supervision proportion and precision of temporal colour matching per threshold τ."""
    import json

    from vos.config import load_config
    from vos.losses.analysis import temporal_consistency
    from vos.output import claim_files, write_text

    with user_errors(), claim_files([out] if out is not None else [], inputs=[root, config]):
        if clips < 1:
            raise VosError(f"--clips must be >= 1, got {clips}")
        cfg = load_config(config, list(set_))
        with show_progress("clips", clips, unit="clips") as advance:
            result = temporal_consistency(root, clips=clips, data=cfg.data, losses=cfg.losses, split=split, seed=seed,
                                          progress=_to_done(advance))
        if out is not None:
            write_text(out, json.dumps(result, indent=2))
    table = Table(title=f"temporal colour matching on {root} ({split}, {clips} clips, {result['frames']}×{result['size']}², stride {result['stride']})")
    table.add_column("τ")
    for tau in result["taus"]:
        table.add_column(f"{tau:g}", justify="right")
    table.add_row("supervision proportion", *[f"{100 * v:.2f}%" for v in result["proportion"]])
    table.add_row("precision", *["–" if v != v else f"{v:.3f}" for v in result["precision"]])
    console.print(table)
    if out is not None:
        console.print(f"wrote {out}")


@analyze_app.command("fill")
def analyze_fill(
    root: Path = typer.Argument(..., help="DAVIS- or YouTube-VOS-layout root (with masks)."),
    split: Optional[str] = typer.Option(None, help="Split (default: DAVIS val / YouTube valid)."),
    out: Path = typer.Option(Path("fill.png"), "--out", help="Histogram PNG (a .json with the counts is written beside it)."),
    bins: int = typer.Option(20, help="Histogram bins over [0, 1]."),
    max_videos: Optional[int] = typer.Option(None, help="Only the first N videos (the thesis used 1,000)."),
) -> None:
    """Fig. A.2: histogram of mask area / tight-box area over every object in every annotated frame."""
    import json
    import statistics

    from vos.bench.plot import save_histogram
    from vos.losses.analysis import fill_ratios, histogram
    from vos.output import claim_files, write_text

    with user_errors():
        if out.suffix.lower() != ".png":  # the counts go to the same name with .json
            raise VosError(f"--out {out}: the histogram is a PNG; give a name ending in .png")
        if bins < 1:
            raise VosError(f"--bins must be >= 1, got {bins}")
        with claim_files([out, out.with_suffix(".json")], inputs=[root]):
            ratios = fill_ratios(root, split=split, max_videos=max_videos)
            if not ratios:
                raise VosError(f"{root}: no annotated objects found")
            edges, counts = histogram(ratios, bins)
            mean, median = statistics.fmean(ratios), statistics.median(ratios)
            write_text(out.with_suffix(".json"), json.dumps(
                {"root": str(root), "split": split, "count": len(ratios), "mean": mean, "median": median,
                 "bin_edges": edges, "counts": counts}, indent=2))
            save_histogram(out, edges, counts, title=f"fraction of the box covered by the mask: {root}",
                           xlabel="mask area / box area", note=f"{len(ratios)} objects × frames, mean {mean:.3f}, median {median:.3f}")
    console.print(f"{len(ratios)} objects×frames: mean fill {mean:.3f}, median {median:.3f}; histogram {out}")


@app.command("export")
def export_cmd(
    weights: str = typer.Argument(..., help="Checkpoint (.safetensors or official .pth) or a preset name."),
    out: Path = typer.Argument(..., help="Output folder for the graphs and deploy.json."),
    format: str = typer.Option("onnx", "--format", help="onnx (the only format so far)."),
    opset: int = typer.Option(18, help="ONNX opset (18 or newer)."),
    overwrite: bool = _OVERWRITE,
) -> None:
    """Export the network's per-frame stages (key encoder, value encoder, decoder) for onnxruntime.

    Segment with the export as with a checkpoint: vos segment FRAMES --weights OUT ...
    """
    from vos.deploy import export_onnx

    with user_errors():
        if format != "onnx":
            raise VosError(f"--format {format!r}: only onnx is supported")
        if opset < 18:
            raise VosError(f"--opset {opset}: the exporter needs opset 18 or newer")
        model = _model(weights)
        manifest = export_onnx(model, out, source=str(weights), opset=opset, overwrite=overwrite)
    console.print(f"wrote {', '.join(s['file'] for s in manifest['stages'].values())} and deploy.json "
                  f"(opset {manifest['opset']}) to {out}")


@app.command("convert")
def convert(
    src: Path = typer.Argument(..., help="Official XMem checkpoint (.pth) or any checkpoint load_model reads."),
    dst: Path = typer.Argument(..., help="Output .safetensors (a .json of the model config is written beside it)."),
) -> None:
    """Convert a checkpoint to our safetensors format."""
    from vos.model.weights import convert_checkpoint
    from vos.output import claim_files

    with user_errors():
        if dst.suffix != ".safetensors":
            raise VosError(f"{dst}: the output must end in .safetensors")
        with claim_files([dst, dst.with_suffix(".json")], inputs=[src], way_out="choose another DST"):
            out = convert_checkpoint(src, dst)
    console.print(f"wrote {out} and {Path(out).with_suffix('.json')}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
