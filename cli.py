"""The ``vos`` command line: a thin Typer layer that parses arguments and calls the library.

Errors a user can cause (:class:`vos.errors.VosError`) are printed as one line on stderr with exit
code 1; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import contextlib
import re
from pathlib import Path
from typing import Iterator, Optional

import typer
from rich.console import Console
from rich.table import Table

from vos.errors import VosError

app = typer.Typer(
    name="vos",
    help="Box-supervised video object segmentation (XMem memory network, weak losses, Triton kernels).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Generate and check datasets.", no_args_is_help=True)
app.add_typer(data_app, name="data")

console = Console()


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Turn a VosError into one line on stderr and exit code 1."""
    try:
        yield
    except VosError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None


def _progress():
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console, transient=False)


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
) -> None:
    """Write the procedural synthetic set (DAVIS layout by default)."""
    from vos.data.synthetic import SyntheticSpec, generate

    with user_errors():
        if layout not in ("davis", "youtube"):
            raise VosError(f"--layout {layout!r}: expected davis or youtube")
        h, w = _parse_size(size)
        spec = SyntheticSpec(videos=videos, frames=frames, height=h, width=w, seed=seed, layout=layout)
        with _progress() as progress:
            task = progress.add_task("generating", total=videos)
            summary = generate(out, spec, progress=lambda done: progress.update(task, completed=done))
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
        with _progress() as progress:
            for dataset in datasets:
                task = progress.add_task(f"checking {dataset.layout}/{dataset.split}", total=len(dataset))
                reports.append(check_dataset(dataset, progress=lambda: progress.advance(task)))
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


def main() -> None:
    app()


if __name__ == "__main__":
    main()
