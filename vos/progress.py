"""Plain progress lines for logs and CI, where a redrawn bar would be lost or garble the file.

Commands show a rich bar when stdout is a terminal and these lines otherwise: one line about every
5 % of the work (and at the end), each with the count, the rate and the time left, plus whatever the
caller adds (the loss while training).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TextIO


def is_terminal(stream: TextIO | None = None) -> bool:
    stream = stream if stream is not None else sys.stdout
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _clock(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


@contextmanager
def progress_lines(
    label: str, total: int | None, unit: str = "items", start: int = 0, stream: TextIO | None = None, lines: int = 20
) -> Iterator[Callable[..., None]]:
    """Yield ``advance(n=1, info="")``; prints ``label: done/total unit, rate unit/s, ETA h:mm:ss[, info]``
    about ``lines`` times over ``total`` (every 50 when the total is unknown) and after the last step.

    start: work already done before this run (a resumed training); the rate counts this run only.
    """
    out = stream if stream is not None else sys.stdout
    every = max(1, (total - start) // lines) if total else 50
    state = {"done": start, "t0": time.perf_counter(), "printed": start}

    def advance(n: int = 1, info: str = "") -> None:
        state["done"] += n
        done = state["done"]
        if done - state["printed"] < every and done != total:
            return
        state["printed"] = done
        elapsed = time.perf_counter() - state["t0"]
        rate = (done - start) / elapsed if elapsed > 0 else 0.0
        parts = [f"{label}: {done}/{total if total else '?'} {unit}", f"{rate:.2f} {unit}/s"]
        if total and rate > 0:
            parts.append(f"ETA {_clock((total - done) / rate)}")
        if info:
            parts.append(info)
        print(", ".join(parts), file=out, flush=True)

    yield advance


@contextmanager
def log_lines(label: str, total: int | None, unit: str = "items") -> Iterator[Callable[..., None]]:
    """``advance()`` for work whose own output already shows progress on a terminal: plain progress
    lines off a terminal (logs, CI), nothing on one."""
    if is_terminal():
        yield lambda n=1, info="": None
        return
    with progress_lines(label, total, unit=unit) as advance:
        yield advance


@contextmanager
def progress(
    label: str, total: int | None, unit: str = "items", start: int = 0, enabled: bool = True
) -> Iterator[Callable[..., None]]:
    """Yield ``advance(n=1, info="")``: a rich bar on a terminal (``info``, e.g. the loss, beside it),
    :func:`progress_lines` otherwise, nothing when not ``enabled``. The one progress display of the
    long-running commands."""
    if not enabled:
        yield lambda n=1, info="": None
        return
    if not is_terminal():
        with progress_lines(label, total, unit=unit, start=start) as advance:
            yield advance
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
               TextColumn("{task.fields[info]}"))
    with Progress(*columns, transient=False) as bar:
        task = bar.add_task(label, total=total, completed=start, info="")

        def advance(n: int = 1, info: str = "") -> None:
            bar.update(task, advance=n, info=info)

        yield advance
