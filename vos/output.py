"""The output contract: every folder or named file a command writes is claimed, recorded and written atomically.

A command that writes a folder (``segment``, ``eval``, ``score --out``, ``data synthetic``, ``demo``,
``train``, ``export``) first calls :func:`claim_output`, which

* refuses an ``--out`` that is a file, that is (or lies inside, or contains) one of the command's
  inputs, or that is a non-empty folder vos did not write;
* refuses a folder of ours written by another command, or by the same command with other settings,
  naming the keys that differ (a short per-command allow-list, e.g. more iterations or logging, may
  differ), or any earlier run of a command that does not resume;
* with ``overwrite=True`` first removes exactly the files an earlier run of ours recorded, and only
  when nothing else is in the folder;
* writes ``vos-manifest.json`` (command, settings, vos version) and opens ``.vos-written``, a log with
  one relative path per line of every file written through :func:`atomic_write` while the claim is
  active. The log is appended *before* a file is renamed into place, so after a crash (even
  ``kill -9``) every file of ours is listed; listed files that never appeared are skipped.

:func:`atomic_write` is the one writer: a temporary ``.<name>.vos-tmp<pid>`` in the same folder,
renamed into place on success and removed on any failure. Temporaries of dead processes are removed
when a folder is claimed again; those of live processes (parallel ``vos eval --shard`` runs on one
folder) are left alone.

Commands whose results are *named files* (``bench``, ``analyze consistency|fill``, ``convert``)
write into folders they do not own: ``bench/results`` is shared by several benchmarks and scripts and
is committed, and an ``--out FILE`` may sit among the user's files. Claiming the whole folder would
refuse every such run, so these commands call :func:`claim_files` with the exact paths they will
write, before any work starts, and

* refuse a path that is a folder, whose parent is a file, or that is (or lies inside) an input;
* replace an existing file only when the folder's ``.vos-written`` lists it — the same log as above,
  one per folder, appended before the rename; a file of that name that is not listed stays untouched
  and the run is refused, naming the file. Running a benchmark again therefore replaces its own
  earlier result without a flag (a fresh result under the same name is what a re-run asks for),
  and nothing else;
* write no manifest: several commands share such a folder, and each result file states its own
  settings.

A result file from before the log existed (or one copied in) counts as the user's: move it away, or
hand it to vos by adding its name to the folder's ``.vos-written``. Guessing from a file's name or
contents would let a user's file of the same name be replaced, so vos does not guess; the
repository's ``bench/results`` logs list the committed results of these commands.

I/O failures are turned into one-line :class:`~vos.errors.VosError` messages naming the path by
:func:`io_error`, which the CLI applies to every ``OSError``.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from vos.errors import VosError

MANIFEST = "vos-manifest.json"
LOG = ".vos-written"
_TMP_MARK = ".vos-tmp"
_TMP_RE = re.compile(r"^\..+\.vos-tmp(\d+)$")


class OutputError(VosError):
    """An output folder that cannot be used as asked (foreign files, other settings, not a folder)."""


@dataclass
class Output:
    """A claimed output folder: files written under it through :func:`atomic_write` are recorded."""

    path: Path
    command: str
    settings: Mapping[str, Any] | None
    _log: IO[str] | None = field(default=None, repr=False)

    def record(self, path: Path) -> None:
        """Append ``path`` (inside this folder) to the log; one ``write`` of one line (O_APPEND), so
        parallel shards appending to one log do not interleave."""
        if self._log is None:
            return
        rel = os.path.relpath(os.path.abspath(path), os.path.abspath(self.path))
        self._log.write(rel + "\n")
        self._log.flush()

    def close(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None


# Claimed folders of this process, innermost last; a write is recorded in every one containing it,
# so an enclosing run (the demo) also lists the files of the runs it starts.
_ACTIVE: list[Output] = []
# Files claimed by claim_files (absolute path → number of open claims: the CLI claims a benchmark's
# files up front, the benchmark function claims its own again).
_NAMED: dict[str, int] = {}
_LOCK = threading.Lock()


def version() -> str:
    from vos import __version__

    return __version__


# ------------------------------------------------------------------------------ claiming a folder
@contextlib.contextmanager
def claim_output(
    out: str | os.PathLike,
    command: str,
    settings: Mapping[str, Any] | None = None,
    *,
    inputs: Iterable[str | os.PathLike | None] = (),
    overwrite: bool = False,
    resumable: bool = False,
    may_differ: Iterable[str] = (),
    adopt: Callable[[Path], bool] | None = None,
    resume_flag: str | None = None,
) -> Iterator[Output]:
    """Claim ``out`` for ``command`` for the duration of the ``with`` block (see the module docstring).

    settings: what the results depend on (JSON data; nested mappings are compared key by key, as
        dotted keys). resumable: an earlier run of the same command with the same settings (up to
        ``may_differ``, dotted keys) is continued rather than refused; resume_flag: the option that
        asks for that (named in the refusal when it was not given). adopt: for folders written
        before manifests existed, returns True when the folder is recognisably this command's.
    On an exception inside the block, a folder this call created and left empty is removed again.
    """
    path = Path(out)
    _check_inputs(path, inputs)
    if path.exists() and not path.is_dir():
        raise OutputError(f"{path}: exists and is not a folder; give a folder (new or empty) for the output")
    existed = path.is_dir()
    entries = _entries(path) if existed else []
    manifest = _read_manifest(path) if entries else None
    if entries and manifest is None and adopt is not None and adopt(path):
        manifest = {"command": command, "settings": None, "adopted": True}
    if entries:
        if manifest is None:
            shown = ", ".join(sorted(entries)[:3]) + (" …" if len(entries) > 3 else "")
            raise OutputError(
                f"{path}: folder is not empty and was not written by vos ({shown}); choose a new or empty "
                "folder (--overwrite only removes what vos wrote)"
            )
        if overwrite:
            _remove_ours(path, manifest)
        elif manifest.get("command") != command:
            raise OutputError(
                f"{path}: holds the output of `vos {manifest.get('command')}`; choose another folder or pass "
                "--overwrite to replace it"
            )
        elif not resumable:
            how = f"pass {resume_flag} to continue it, --overwrite to replace it," if resume_flag else "pass --overwrite to replace it"
            raise OutputError(f"{path}: holds the output of an earlier `vos {command}`; {how} or choose another folder")
        else:
            _check_settings(path, manifest.get("settings"), settings, set(may_differ))
            _remove_stale_temps(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise io_error(exc, path) from None
    output = Output(path, command, settings)
    try:
        with _LOCK:
            for parent in _ACTIVE:
                if _inside(path, parent.path):
                    parent.record(path / LOG)
            _ACTIVE.append(output)
        output._log = open(path / LOG, "a", encoding="utf-8")
        write_text(path / MANIFEST, json.dumps(
            {"command": command, "version": version(), "settings": settings}, indent=1, default=str) + "\n")
        yield output
    except BaseException:
        output.close()
        if not existed and path.is_dir() and _entries(path, include_ours=False) == []:
            _remove_tree_of_ours(path)
        raise
    finally:
        output.close()
        with _LOCK:
            if output in _ACTIVE:
                _ACTIVE.remove(output)


def _check_inputs(out: Path, inputs: Iterable[str | os.PathLike | None]) -> None:
    target = out.resolve()
    for item in inputs:
        if item is None:
            continue
        src = Path(item).resolve()
        if not src.is_dir():
            src_dir = src.parent if src.exists() else None
            if src_dir is not None and target == src_dir:
                raise OutputError(f"{out}: is the folder of the input {item}; write the output elsewhere")
            continue
        if target == src or _inside(target, src) or _inside(src, target):
            raise OutputError(f"{out}: overlaps the input folder {item}; write the output elsewhere")


def _inside(child: Path, parent: Path) -> bool:
    child, parent = Path(os.path.abspath(child)), Path(os.path.abspath(parent))
    return child != parent and parent in child.parents


def _entries(path: Path, include_ours: bool = True) -> list[str]:
    """Names in ``path``, ignoring temporaries of ours (a parallel run may be writing its manifest);
    include_ours=False also ignores the manifest and the log."""
    try:
        names = os.listdir(path)
    except OSError as exc:
        raise io_error(exc, path) from None
    names = [n for n in names if not _TMP_RE.match(n)]
    if not include_ours:
        names = [n for n in names if n not in (MANIFEST, LOG)]
    return names


def _read_manifest(path: Path) -> dict | None:
    try:
        data = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("command"), str) else None


def recorded_files(path: Path) -> list[Path]:
    """The files the log of ``path`` lists (existing or not), without duplicates, inside ``path`` only."""
    try:
        lines = (path / LOG).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise io_error(exc, path / LOG) from None
    seen: dict[str, Path] = {}
    for line in lines:
        rel = line.strip()
        if not rel or os.path.isabs(rel) or ".." in Path(rel).parts:
            continue
        seen.setdefault(rel, path / rel)
    return list(seen.values())


def _remove_ours(path: Path, manifest: Mapping) -> None:
    """Remove what earlier runs of ours recorded; refuse (removing nothing) when anything else is there."""
    ours = {os.path.abspath(p) for p in recorded_files(path)} | {os.path.abspath(path / n) for n in (MANIFEST, LOG)}
    if manifest.get("adopted"):
        return _refuse_adopted(path)
    foreign = []
    for dirpath, dirnames, filenames in os.walk(path):
        for name in filenames:
            full = os.path.abspath(os.path.join(dirpath, name))
            if full not in ours and not _TMP_RE.match(name):
                foreign.append(os.path.relpath(full, path))
    if foreign:
        raise OutputError(
            f"{path}: --overwrite removes only what vos wrote, but {foreign[0]}"
            f"{f' (and {len(foreign) - 1} more)' if len(foreign) > 1 else ''} was not; move it away or choose another folder"
        )
    _remove_tree_of_ours(path)


def _refuse_adopted(path: Path) -> None:
    raise OutputError(f"{path}: written by an older vos without a file list, so --overwrite cannot tell its files; "
                      "delete it yourself or choose another folder")


def _remove_tree_of_ours(path: Path) -> None:
    """Remove the recorded files, our temporaries, the manifest and the log, then the empty folders."""
    try:
        for file in recorded_files(path):
            if file.is_file() or file.is_symlink():
                file.unlink()
        for dirpath, dirnames, filenames in os.walk(path, topdown=False):
            for name in filenames:
                if _TMP_RE.match(name):
                    os.unlink(os.path.join(dirpath, name))
            if dirpath != str(path):
                with contextlib.suppress(OSError):
                    os.rmdir(dirpath)  # only empty folders go
        for name in (MANIFEST, LOG):
            (path / name).unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            path.rmdir()
    except OSError as exc:
        raise io_error(exc, Path(exc.filename) if exc.filename else path) from None


def _remove_stale_temps(path: Path) -> None:
    """Remove temporaries whose writing process is gone (killed mid-write)."""
    for dirpath, _, filenames in os.walk(path):
        for name in filenames:
            match = _TMP_RE.match(name)
            if match and not _alive(int(match.group(1))):
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(dirpath, name))


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# ------------------------------------------------------------------------------ claiming named files
@contextlib.contextmanager
def claim_files(
    paths: Iterable[str | os.PathLike],
    *,
    inputs: Iterable[str | os.PathLike | None] = (),
    way_out: str = "choose another --out",
) -> Iterator[list[Path]]:
    """Claim the named files ``paths`` for the ``with`` block (see the module docstring).

    Refuses (one :class:`OutputError` naming the path, before anything is written) a path that is
    a folder, whose parent is a file, that is or lies inside one of ``inputs``, or that exists and
    is not listed in its folder's ``.vos-written``; ``way_out`` ends that message (e.g. "choose
    another DST"). Creates the parent folders, so an unwritable place fails now rather than after
    the work; on an exception inside the block, folders it created and left empty are removed.
    :func:`atomic_write` checks a claimed path again and records it in its folder's log before the
    rename.
    """
    targets = [Path(p) for p in paths]
    for path in targets:
        _check_named(path, inputs, way_out)
    created: list[Path] = []
    try:
        for folder in dict.fromkeys(p.parent for p in targets):
            created += _make_folders(folder)
        for path in targets:
            _remove_stale_temps_of(path)
    except BaseException:
        _remove_empty(created)
        raise
    keys = [os.path.abspath(p) for p in targets]
    with _LOCK:
        for key in keys:
            _NAMED[key] = _NAMED.get(key, 0) + 1
    try:
        yield targets
    except BaseException:
        _remove_empty(created)
        raise
    finally:
        with _LOCK:
            for key in keys:
                _NAMED[key] -= 1
                if not _NAMED[key]:
                    del _NAMED[key]


def _check_named(path: Path, inputs: Iterable[str | os.PathLike | None], way_out: str) -> None:
    for item in inputs:
        if item is None:
            continue
        src = Path(item).resolve()
        target = path.resolve()
        if target == src or _inside(target, src):
            raise OutputError(f"{path}: is {'inside ' if target != src else ''}the input {item}; write the output elsewhere")
    for folder in (path.parent, *path.parent.parents):
        if folder.exists() or folder.is_symlink():
            if not folder.is_dir():
                raise OutputError(f"{folder}: exists and is not a folder; {way_out}")
            break
    if path.is_dir():
        raise OutputError(f"{path}: exists and is a folder; {way_out}")
    if (path.exists() or path.is_symlink()) and not _listed(path):
        raise OutputError(
            f"{path}: exists and was not written by vos (not in {path.parent / LOG}); move it away or {way_out}"
        )


def _listed(path: Path) -> bool:
    """Is ``path`` listed in the log of its folder?"""
    return os.path.abspath(path) in {os.path.abspath(p) for p in recorded_files(path.parent)}


def _record_named(path: Path) -> None:
    """Check a claimed file once more (a file of the user's may have appeared since the claim) and
    list it in its folder's log, once."""
    if path.exists() or path.is_symlink():
        if not _listed(path):
            raise OutputError(f"{path}: appeared while vos was running and was not written by vos; left untouched")
        return
    if _listed(path):
        return
    with open(path.parent / LOG, "a", encoding="utf-8") as fh:
        fh.write(path.name + "\n")


def _make_folders(folder: Path) -> list[Path]:
    """Create ``folder`` and its missing parents; the folders created, outermost first."""
    missing = [f for f in (folder, *folder.parents) if not f.exists()][::-1]
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise io_error(exc, Path(exc.filename) if exc.filename else folder) from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise io_error(PermissionError(errno.EACCES, "permission denied"), folder)
    return missing


def _remove_empty(folders: list[Path]) -> None:
    for folder in reversed(folders):
        with contextlib.suppress(OSError):
            folder.rmdir()  # only an empty folder goes


def _remove_stale_temps_of(path: Path) -> None:
    """Remove temporaries of ``path`` whose writing process is gone (killed mid-write)."""
    prefix = f".{path.name}{_TMP_MARK}"
    for name in os.listdir(path.parent):
        match = _TMP_RE.match(name)
        if name.startswith(prefix) and match and not _alive(int(match.group(1))):
            _unlink_quietly(path.parent / name)


# ------------------------------------------------------------------------------ settings
def flatten(settings: Any, prefix: str = "") -> dict[str, Any]:
    """Nested mappings → {dotted key: leaf} (lists and tuples compare as lists)."""
    if isinstance(settings, Mapping):
        out: dict[str, Any] = {}
        for key, value in settings.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out
    if isinstance(settings, tuple):
        settings = list(settings)
    return {prefix.rstrip("."): settings}


def differing_keys(old: Any, new: Any, may_differ: Iterable[str] = ()) -> list[str]:
    """Dotted keys whose values differ between two settings mappings, except those in ``may_differ``."""
    a, b = flatten(json.loads(json.dumps(old, default=str))), flatten(json.loads(json.dumps(new, default=str)))
    allowed = set(may_differ)
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k) and k not in allowed)


def _check_settings(path: Path, old: Any, new: Any, may_differ: set[str]) -> None:
    if old is None or new is None:
        return
    keys = differing_keys(old, new, may_differ)
    if keys:
        raise OutputError(f"{path}: {settings_difference(old, new, keys)}; use the same settings, another folder, or --overwrite")


def settings_difference(old: Any, new: Any, keys: list[str]) -> str:
    """'was written with other settings: key (old → new), …' for the first few ``keys``."""
    a, b = flatten(json.loads(json.dumps(old, default=str))), flatten(json.loads(json.dumps(new, default=str)))
    shown = ", ".join(f"{k} ({json.dumps(a.get(k))} → {json.dumps(b.get(k))})" for k in keys[:4])
    more = f" and {len(keys) - 4} more" if len(keys) > 4 else ""
    return f"was written with other settings: {shown}{more}"


# ------------------------------------------------------------------------------ writing
@contextlib.contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is recorded and renamed to ``path``, on
    any failure removed. The parent folder is created."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}{_TMP_MARK}{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        yield tmp
        with _LOCK:
            for output in _ACTIVE:
                if _inside(path, output.path):
                    output.record(path)
            if os.path.abspath(path) in _NAMED:
                _record_named(path)
        os.replace(tmp, path)
    except OSError as exc:
        _unlink_quietly(tmp)
        raise io_error(exc, path) from None
    except BaseException:
        _unlink_quietly(tmp)
        raise


def _unlink_quietly(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_write(path) as tmp, open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def write_text(path: str | os.PathLike, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def record_written(path: str | os.PathLike) -> None:
    """Record a file of ours that another library writes (TensorBoard's event files), before it
    appears, in every claimed folder that contains it."""
    path = Path(path)
    with _LOCK:
        for output in _ACTIVE:
            if _inside(path, output.path):
                output.record(path)


def output_command(folder: str | os.PathLike) -> str | None:
    """The command whose output ``folder`` is (from its manifest), or None when it is not ours."""
    manifest = _read_manifest(Path(folder))
    return None if manifest is None else manifest.get("command")


def add_to_folder(folder: str | os.PathLike, command: str, path: str | os.PathLike) -> None:
    """List ``path`` (a new file inside ``folder``) among the files of an earlier run of ``command``
    in ``folder``, which must be ours — so that run's ``--overwrite`` also removes it. For a command
    that adds to another's output (``vos eval --tensorboard RUN`` writes an event file into a training
    folder)."""
    folder = Path(folder)
    if output_command(folder) != command:
        raise OutputError(f"{folder}: not the output folder of a `vos {command}` run")
    try:
        with open(folder / LOG, "a", encoding="utf-8") as fh:
            fh.write(os.path.relpath(os.path.abspath(path), os.path.abspath(folder)) + "\n")
    except OSError as exc:
        raise io_error(exc, folder / LOG) from None


def append_line(path: str | os.PathLike, line: str) -> None:
    """Append one line to a log of ours (e.g. ``metrics.jsonl``), recording it the first time."""
    path = Path(path)
    try:
        if not path.exists():
            record_written(path)
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(line.rstrip("\n") + "\n")
    except OSError as exc:
        raise io_error(exc, path) from None


# ------------------------------------------------------------------------------ I/O errors
_REASONS = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EROFS: "read-only file system",
    errno.ENOTDIR: "a path component is a file, not a folder",
    errno.EEXIST: "exists already",
    errno.EISDIR: "is a folder",
}


def io_error(exc: BaseException, path: str | os.PathLike | None = None) -> VosError:
    """One-line error for an I/O failure: the path (``path``, else the one in ``exc``), then the reason."""
    if isinstance(exc, VosError):
        return exc
    code = getattr(exc, "errno", None)
    where = path or getattr(exc, "filename", None)
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    reason = _REASONS.get(code) or getattr(exc, "strerror", None) or text
    return VosError(f"{where}: {reason}" if where else f"I/O error: {reason}")
