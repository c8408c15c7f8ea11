"""The state behind ``vos app``: one video, its objects, prompts and results, kept in a workspace folder.

An :class:`Annotator` wraps a :class:`~vos.memory.session.VideoSession` (the same engine as
``vos segment`` and the Python API, so the page's results are the script's) and adds what a person
at a browser needs: named, coloured objects; propagation in a background thread that reports its
progress and can be stopped between frames; and persistence. The workspace folder holds

    vos-manifest.json, .vos-written   the output contract (vos.output): only files of ours are replaced
    annotations.json                  objects (id, name, colour) and prompts (frame, object, box | mask file)
    prompts/<frame>_<id>.png          brush masks given as prompts
    results/<frame name>.png          the latest id map of every propagated frame (DAVIS palette PNG)
    export-<format>/, overlay.mp4     exports, written by the same writers as ``vos segment``

so that a server restarted on the same video and workspace continues where the person stopped.
Every method that changes state takes the lock and is refused while a propagation runs; the
propagation thread takes the lock only to publish each frame's progress, so frames and results stay
readable while it runs. Errors a person can cause raise
:class:`~vos.errors.VosError` with a message meant for the page.
"""

from __future__ import annotations

import io
import json
import threading
from contextlib import ExitStack
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from vos.data.export import FORMATS, MaskExporter
from vos.data.io import read_mask, write_mask
from vos.data.video import object_colour
from vos.errors import VosError
from vos.memory.segment import write_overlays
from vos.memory.session import DIRECTIONS, VideoPredictor
from vos.model.preprocess import internal_size
from vos.output import claim_files, claim_output, write_text

ANNOTATIONS = "annotations.json"
MAX_OBJECTS = 255  # the results are palette PNGs of ids 1–255, like DAVIS annotations
EXPORTS = (*FORMATS, "overlay")


class Annotator:
    """One video being annotated (see the module docstring).

    Args:
        predictor: the network and its inference settings.
        video: a folder of frames or a video file.
        workspace: the folder for annotations, results and exports (created; an earlier workspace
            of the same video is resumed, any other non-empty folder is refused).
        cache_dir: where a video file's decoded frames are kept (a temporary folder by default).
    """

    def __init__(self, predictor: VideoPredictor, video: str | Path, workspace: str | Path, cache_dir=None) -> None:
        self.video = Path(video)
        self.workspace = Path(workspace)
        self.predictor = predictor
        self._stack = ExitStack()
        self.lock = threading.RLock()
        self.objects: dict[int, dict] = {}  # id → {"id", "name", "colour"}
        self._worker: threading.Thread | None = None
        self._stop = threading.Event()
        self._status = {"running": False, "direction": None, "start": None, "done": 0, "total": 0,
                        "frame": None, "error": None, "stopped": False}
        self.version = 0  # bumped whenever a result changes, so the page knows to fetch again
        try:
            if not self.video.exists():
                raise VosError(f"{self.video}: no such video file or folder")
            self._stack.enter_context(claim_output(
                self.workspace, "app", {"video": str(self.video.resolve())}, inputs=[self.video], resumable=True
            ))
            self.session = predictor.open(self.video, cache_dir)
            self._stack.callback(self.session.close)
            if self.session.frames.count is None:  # a video file: decode it once (into the frame cache) to count
                k = 0
                while self.session.frames.exists(k):
                    k += 1
            if not self.session.frames.count:
                raise VosError(f"{self.video}: no frames")
            self.frame_count = int(self.session.frames.count)
            self.size = self.session.frame_size(0)
            self._load()
        except BaseException:
            self._stack.close()
            raise

    # ------------------------------------------------------------------ reading
    def info(self) -> dict:
        height, width = self.size
        ph, pw = internal_size(self.size, self.predictor.max_internal_size)
        return {
            "video": self.video.name, "workspace": str(self.workspace), "frames": self.frame_count,
            "width": width, "height": height, "process_width": pw, "process_height": ph,
            "names": [self.session.frames.name(k) for k in range(self.frame_count)],
        }

    def frame_jpeg(self, k: int) -> bytes:
        self._check_frame(k)
        with self.lock:
            image = self.session.frames[k]
        buffer = io.BytesIO()
        Image.fromarray(image.permute(1, 2, 0).cpu().numpy()).save(buffer, format="JPEG", quality=92)
        return buffer.getvalue()

    def result_png(self, k: int) -> bytes | None:
        """The frame's id map as an 8-bit grayscale PNG (pixel value = object id), or None."""
        self._check_frame(k)
        with self.lock:
            ids = self.session.result(k)
        if ids is None:
            return None
        buffer = io.BytesIO()
        Image.fromarray(ids.numpy().astype(np.uint8), mode="L").save(buffer, format="PNG", compress_level=1)
        return buffer.getvalue()

    def prompts(self, k: int) -> list[dict]:
        self._check_frame(k)
        with self.lock:
            entry = self.session.prompts.get(k)
            if entry is None:
                return []
            out = [{"object": obj, "box": list(box)} for obj, box in entry.boxes.items()]
            out += [{"object": obj, "mask": True} for obj in entry.masks]
        return sorted(out, key=lambda p: p["object"])

    def state(self) -> dict:
        with self.lock:
            return {
                "objects": sorted(self.objects.values(), key=lambda o: o["id"]),
                "prompted": sorted(self.session.prompts),
                "results": self.session.results,
                "version": self.version,
                "status": dict(self._status),
            }

    # ------------------------------------------------------------------ objects
    def add_object(self, name: str | None = None, colour: str | None = None) -> dict:
        with self.lock:
            self._idle("add an object")
            free = next((i for i in range(1, MAX_OBJECTS + 1) if i not in self.objects), None)
            if free is None:
                raise VosError(f"at most {MAX_OBJECTS} objects")
            obj = {"id": free, "name": _name(name, free), "colour": _hex(colour, free)}
            self.objects[free] = obj
            self._save()
            return dict(obj)

    def update_object(self, obj: int, name: str | None = None, colour: str | None = None) -> dict:
        with self.lock:
            entry = self._object(obj)
            if name is not None:
                entry["name"] = _name(name, obj)
            if colour is not None:
                entry["colour"] = _hex(colour, obj)
            self._save()
            return dict(entry)

    def delete_object(self, obj: int) -> None:
        with self.lock:
            self._idle("delete an object")
            self._object(obj)
            changed = [k for k in self.session.results if bool((self.session.result(k) == obj).any())]
            self.session.remove([obj])
            del self.objects[obj]
            for k in changed:
                self._write_result(k, self.session.result(k))
            self.version += 1
            self._save()

    # ------------------------------------------------------------------ prompts
    def set_box(self, k: int, obj: int, box) -> None:
        self._check_frame(k)
        try:
            box = tuple(float(v) for v in box)
        except (TypeError, ValueError):
            raise VosError("a box is four numbers x0, y0, x1, y1") from None
        with self.lock:
            self._idle("change a prompt")
            self._object(obj)
            self.session.add(k, boxes={obj: box})
            self._save()

    def set_mask(self, k: int, obj: int, png: bytes) -> None:
        """A brush mask for one object on frame k: a PNG whose non-zero (or opaque) pixels are the object."""
        self._check_frame(k)
        mask = _decode_mask_png(png, self.size)
        if not bool(mask.any()):
            raise VosError("the mask is empty: paint the object, or delete its prompt")
        with self.lock:
            self._idle("change a prompt")
            self._object(obj)
            self.session.add(k, mask={obj: mask})
            write_mask(self._prompt_path(k, obj), mask.to(torch.uint8))
            self._save()

    def clear_prompt(self, k: int, obj: int) -> None:
        self._check_frame(k)
        with self.lock:
            self._idle("change a prompt")
            self.session.clear(k, [obj])
            self._save()

    # ------------------------------------------------------------------ propagation
    def propagate(self, k: int, direction: str = "forward") -> None:
        """Start propagating from frame k in a background thread; :meth:`state` reports progress."""
        self._check_frame(k)
        if direction not in DIRECTIONS:
            raise VosError(f"direction {direction!r}: choose one of {', '.join(DIRECTIONS)}")
        with self.lock:
            self._idle("start another propagation")
            if not self.session.prompts and not self.session.results:
                raise VosError("no object yet: add an object and draw its box (or paint it) first")
            if k not in self.session.prompts and self.session.result(k) is None:
                raise VosError(f"frame {k} has neither a prompt nor a result to start from: draw a box there first")
            total = {"forward": self.frame_count - k, "backward": k + 1, "both": self.frame_count}[direction]
            self._stop.clear()
            self._status = {"running": True, "direction": direction, "start": k, "done": 0, "total": total,
                            "frame": None, "error": None, "stopped": False}
            self._worker = threading.Thread(target=self._propagate, args=(k, direction), daemon=True, name="vos-propagate")
            self._worker.start()

    def _propagate(self, k: int, direction: str) -> None:
        steps = self.session.propagate(k, direction)
        try:
            while not self._stop.is_set():
                # the network step runs without the lock (every edit is refused while a propagation
                # runs), so the page's frame and result requests are served between and during steps
                item = next(steps, None)
                if item is None:
                    break
                frame, ids = item
                self._write_result(frame, ids)
                with self.lock:
                    self.version += 1
                    self._status.update(done=self._status["done"] + 1, frame=frame)
            self._status["stopped"] = self._stop.is_set()
        except Exception as exc:  # noqa: BLE001 - shown in the page; the server keeps running
            self._status["error"] = str(exc) if isinstance(exc, VosError) else f"{type(exc).__name__}: {exc}"
        finally:
            steps.close()
            self._status["running"] = False

    def stop(self) -> None:
        """Stop a running propagation after the frame in progress (its results so far are kept)."""
        self._stop.set()

    def wait(self, timeout: float | None = None) -> None:
        worker = self._worker
        if worker is not None:
            worker.join(timeout)

    # ------------------------------------------------------------------ export
    def export(self, fmt: str) -> Path:
        """Write every propagated frame: ``davis``/``binary``/``coco`` into ``export-<fmt>/`` (by
        ``MaskExporter``, as ``vos segment --format``), ``overlay`` as ``overlay.mp4``. An earlier
        export of the same kind (ours) is replaced."""
        if fmt not in EXPORTS:
            raise VosError(f"export {fmt!r}: choose one of {', '.join(EXPORTS)}")
        with self.lock:
            self._idle("export")
            frames = self.session.results
            if not frames:
                raise VosError("nothing to export yet: propagate first")
            if fmt == "overlay":
                target = self.workspace / "overlay.mp4"
                with claim_files([target], way_out="move it away"):
                    write_overlays(self.session, target)
                return target
            target = self.workspace / f"export-{fmt}"
            with claim_output(target, "app-export", {"format": fmt}, overwrite=True):
                exporter = MaskExporter(target, fmt, video=self.video.stem)
                for k in frames:
                    exporter.write(self.session.frames.name(k), self.session.result(k))
                exporter.close()
            return target

    # ------------------------------------------------------------------ life cycle
    def close(self) -> None:
        self.stop()
        self.wait()
        self._stack.close()

    def __enter__(self) -> Annotator:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ internals
    def _check_frame(self, k: int) -> None:
        if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k < self.frame_count:
            raise VosError(f"frame {k!r}: the video has frames 0–{self.frame_count - 1}")

    def _object(self, obj: int) -> dict:
        if obj not in self.objects:
            raise VosError(f"object {obj!r} does not exist: add it first")
        return self.objects[obj]

    def _idle(self, action: str) -> None:
        if self._status["running"]:
            raise VosError(f"a propagation is running: stop it (or wait) to {action}")

    def _prompt_path(self, k: int, obj: int) -> Path:
        return self.workspace / "prompts" / f"{self.session.frames.name(k)}_{obj}.png"

    def _write_result(self, k: int, ids: torch.Tensor) -> None:
        write_mask(self.workspace / "results" / f"{self.session.frames.name(k)}.png", ids.to(torch.uint8))

    def _save(self) -> None:
        prompts = []
        for k in sorted(self.session.prompts):
            entry = self.session.prompts[k]
            prompts += [{"frame": k, "object": obj, "box": list(box)} for obj, box in sorted(entry.boxes.items())]
            prompts += [{"frame": k, "object": obj, "mask": str(self._prompt_path(k, obj).relative_to(self.workspace))}
                        for obj in sorted(entry.masks)]
        document = {"video": str(self.video.resolve()), "objects": sorted(self.objects.values(), key=lambda o: o["id"]),
                    "prompts": prompts}
        write_text(self.workspace / ANNOTATIONS, json.dumps(document, indent=1) + "\n")

    def _load(self) -> None:
        path = self.workspace / ANNOTATIONS
        if not path.exists():
            return
        try:
            document = json.loads(path.read_text())
            self.objects = {int(o["id"]): {"id": int(o["id"]), "name": str(o["name"]), "colour": str(o["colour"])}
                            for o in document["objects"]}
            for prompt in document["prompts"]:
                k, obj = int(prompt["frame"]), int(prompt["object"])
                if "box" in prompt:
                    self.session.add(k, boxes={obj: prompt["box"]})
                else:
                    self.session.add(k, mask={obj: read_mask(self.workspace / prompt["mask"]) > 0})
        except (KeyError, TypeError, ValueError) as exc:
            raise VosError(f"{path}: unreadable annotations ({type(exc).__name__}: {exc}); move the workspace away") from None
        names = {self.session.frames.name(k): k for k in range(self.frame_count)}
        for file in sorted((self.workspace / "results").glob("*.png")):
            if file.stem in names:
                self.session.restore(names[file.stem], read_mask(file).to(torch.int64))


def _name(name: str | None, obj: int) -> str:
    name = (name or "").strip()
    return name[:60] if name else f"object {obj}"


def _hex(colour: str | None, obj: int) -> str:
    if colour is None:
        return "#{:02x}{:02x}{:02x}".format(*object_colour(obj))
    colour = colour.strip().lower()
    if len(colour) != 7 or colour[0] != "#" or any(c not in "0123456789abcdef" for c in colour[1:]):
        raise VosError(f"colour {colour!r}: give #rrggbb")
    return colour


def _decode_mask_png(png: bytes, size: tuple[int, int]) -> torch.Tensor:
    """H×W bool from a PNG: its alpha channel when it has one (a canvas's painted pixels), else non-zero."""
    try:
        with Image.open(io.BytesIO(png)) as image:
            image.load()
            array = np.asarray(image.getchannel("A") if "A" in image.getbands() else image.convert("L"))
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise VosError(f"the mask is not a readable PNG ({type(exc).__name__})") from None
    if array.shape != tuple(size):
        raise VosError(f"the mask is {array.shape[1]}×{array.shape[0]}, the frame is {size[1]}×{size[0]}")
    return torch.from_numpy(array > 127)

