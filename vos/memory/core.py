"""Frame-by-frame inference with XMem's memory.

One :class:`InferenceCore` per video (or :meth:`InferenceCore.reset` between videos)::

    core = InferenceCore(model, max_internal_size=480)
    probs = core.step(image, boxes={7: (x0, y0, x1, y1)})   # or mask=…; (1 + N)×H×W, background first
    for image in rest:
        index = core.to_ids(core.step(image))               # H×W map of the caller's object ids
    core.delete_objects([7])

Objects are the caller's integer ids in any order; :class:`~vos.memory.objects.ObjectManager` maps
them to probability channels (channel c + 1 ↔ ``object_ids[c]``). Frames of any size are resized so
that the shorter side is at most ``max_internal_size`` and the probabilities come back at the input
size.

Per frame: key encoder → memory read (each object group over its own long-term + working memory) →
decoder (updates the sensory memory) → on memory frames, value encoder (deep update of the sensory
memory on synchronised frames) and a new working-memory frame, with consolidation into long-term
memory when the working memory is full.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext

import torch

from vos.device import synchronize
from vos.errors import VosError
from vos.memory.config import MemoryConfig
from vos.memory.store import InferenceMemory
from vos.data.boxes import paint_boxes
from vos.memory.objects import check_id
from vos.model.compile import compiled_stages, unwrap
from vos.model.preprocess import internal_size, normalize, pad_divisible, resize_image, resize_masks, resize_probs, unpad

Box = Sequence[float]


class InferenceCore:
    """Segment a video one frame at a time with a trained XMem network.

    Args:
        model: the network (``vos.model.network.XMem`` or anything with its ``encode_key``,
            ``encode_value``, ``decode``, ``aggregate`` and ``hidden_dim``); it should be in eval mode.
            The device and dtype of its parameters are used for every tensor (for a network that is
            not an ``nn.Module``, such as ``vos.deploy.OnnxXMem``, its ``device`` and ``dtype``).
        config: memory settings (XMem's DAVIS defaults when omitted).
        profile: accumulate per-stage wall times in ``stage_times`` (synchronising CUDA after each
            stage, which costs a little speed).
        compile: run the network's stages and the memory read under ``torch.compile``
            (``vos.model.compile``; the memory bookkeeping stays in Python). True = the inductor
            backend; a string or callable = that torch.compile backend. None = where it pays: on
            CUDA; on the CPU it is opt-in: compiling costs ~50 s over the first frames (xmem preset,
            480p) for a ~3 % faster frame, which pays only after ~300 frames at 5 s a frame.
        amp: run the network's stages under bf16 autocast; the memory read always computes the
            similarity and softmax in fp32. None = on CUDA only.
        channels_last: run the network's weights and the frames in the channels-last layout,
            which oneDNN and cuDNN convolutions prefer (on a 2-core CPU at 480p, xmem preset: key
            encoder −25 %, decoder and value encoder −10 %). The caller's network is never changed:
            a network not already channels-last is copied first (convert it yourself with
            ``model.to(memory_format=torch.channels_last)`` to avoid the copy). None = on.
        max_internal_size: frames whose shorter side exceeds this are shrunk to it (aspect kept)
            before the network; prompts follow, and probabilities come back at the input size.
            None = the input size (as Cutie's ``max_internal_size``; XMem's evaluation uses 480).
    """

    STAGES = ("encode_key", "read", "decode", "encode_value", "memory_update")

    def __init__(
        self,
        model: torch.nn.Module,
        config: MemoryConfig | None = None,
        profile: bool = False,
        compile: bool | str | Callable | None = None,
        amp: bool | None = None,
        channels_last: bool | None = None,
        max_internal_size: int | None = None,
    ) -> None:
        self.config = config if config is not None else MemoryConfig()
        if max_internal_size is not None and max_internal_size != -1 and (
            isinstance(max_internal_size, bool) or not isinstance(max_internal_size, int) or max_internal_size < 16
        ):
            raise VosError(f"max_internal_size: must be None, -1 or an integer >= 16, got {max_internal_size!r}")
        self.max_internal_size = max_internal_size
        is_module = isinstance(unwrap(model), torch.nn.Module)
        if is_module:
            param = next(model.parameters())
            self.device, self.dtype = param.device, param.dtype
        else:
            # a network that is not a module (an ONNX export run by onnxruntime) names its own
            # placement, and there is nothing for torch.compile to compile in it
            self.device, self.dtype = torch.device(model.device), model.dtype
            if compile:
                raise VosError(f"compile: {type(model).__name__} is not a PyTorch module")
            compile = False
        self.profile = profile
        cuda = self.device.type == "cuda"
        if compile is None:
            compile = cuda
        # the torch.compile backend, or None for eager
        self.compile: str | Callable | None = ("inductor" if compile is True else compile) or None
        self.amp = cuda if amp is None else bool(amp)
        self.channels_last = is_module if channels_last is None else bool(channels_last)
        if self.channels_last and is_module and not _is_channels_last(unwrap(model)):
            model = copy.deepcopy(unwrap(model)).to(memory_format=torch.channels_last)
        self.model = compiled_stages(model, backend=self.compile) if self.compile else model
        self.reset()

    def reset(self) -> None:
        """Forget everything: the next ``step`` is the first frame of a new video."""
        self.memory = InferenceMemory(self.config, compile_read=self.compile or False)
        self.frame_index = -1
        self.last_mem_frame = -1
        # As if a deep update happened deep_update_every frames before the video: the first memory frame gets one.
        self.last_deep_update_frame = -max(self.config.deep_update_every, 1)
        self.frame_size: tuple[int, int] | None = None
        self.process_size: tuple[int, int] | None = None
        self.stage_times: dict[str, float] = dict.fromkeys(self.STAGES, 0.0)

    @property
    def object_ids(self) -> list[int]:
        """Object id of each foreground probability channel (channel i + 1 ↔ object_ids[i])."""
        return self.memory.object_ids

    def delete_objects(self, ids: Sequence[int]) -> None:
        """Stop tracking these objects: their memory goes, the next frames have no channel for them.
        An id can be given again later (with a mask or box); it then starts afresh."""
        self.memory.delete_objects([check_id(o) for o in ids])

    def to_ids(self, probs: torch.Tensor, threshold: float | None = None) -> torch.Tensor:
        """Probabilities from :meth:`step` → H×W int64 map of object ids (0 = background).
        threshold None: argmax (XMem); a number p: the most likely object where its probability ≥ p."""
        return self.memory.objects.to_ids(probs, threshold)

    def to_masks(self, probs: torch.Tensor, threshold: float | None = None) -> dict[int, torch.Tensor]:
        """Probabilities from :meth:`step` → {object id: H×W bool mask} (non-overlapping, see to_ids)."""
        return self.memory.objects.to_masks(probs, threshold)

    def memory_stats(self) -> dict[str, int]:
        """Sizes of the memory now (see ``InferenceMemory.stats``) and the frames processed."""
        return {"frames": self.frame_index + 1, **self.memory.stats()}

    @torch.inference_mode()
    def step(
        self,
        image: torch.Tensor,
        mask: torch.Tensor | Mapping[int, torch.Tensor] | None = None,
        boxes: Mapping[int, Box] | None = None,
        objects: list[int] | None = None,
    ) -> torch.Tensor:
        """Process the next frame.

        Args:
            image: float 3×H×W RGB in [0, 1] (uint8 is scaled by 1/255). Every frame of a video must
                have the same size.
            mask: on frames that introduce (or re-annotate) objects: an index mask H×W of object ids
                (0 = background / not given), a dict {object id: H×W mask}, or per-object masks
                N×H×W where channel i is object id i + 1 (binary or soft).
            boxes: {object id: (x0, y0, x1, y1)} in input pixels, exclusive max: each object starts
                from its filled box (the box initialisation the weak model is trained with;
                ``vos.data.boxes.paint_boxes``). May be combined with ``mask`` for other ids.
            objects: the ids this mask gives (default: every id with a non-empty mask). Tracked objects
                that the prompts do not give keep their prediction, cleared where the prompts give others.

        Returns:
            float32 probabilities (1 + number of objects so far)×H×W at the input size, background
            first, then ``object_ids`` order. Before the first prompt: all background (1×H×W).
        """
        image = self._check_image(image)
        size = (int(image.shape[-2]), int(image.shape[-1]))
        given_ids, given_masks = self._parse_prompts(mask, boxes, objects, size)
        image = resize_image(image, self.process_size)
        if given_masks is not None:
            given_masks = resize_masks(given_masks.to(self.device), self.process_size)
            lost = [o for o, m in zip(given_ids, given_masks, strict=True) if not bool(m.any())]
            if lost:
                raise VosError(f"step: the prompts of objects {lost} are empty")
        h, w = self.process_size
        self.frame_index += 1
        t = self.frame_index
        cfg = self.config
        model = self.model
        mem = self.memory

        has_memory = mem.engaged
        if not has_memory and not given_ids:
            return torch.ones(1, *size, device=self.device)

        new_ids = [o for o in given_ids if o not in mem.object_ids]
        # When a mask gives every tracked object there is nothing to predict (as XMem).
        need_segment = has_memory and not set(mem.object_ids) <= set(given_ids)
        is_mem_frame = bool(given_ids) or t - self.last_mem_frame >= cfg.mem_every
        deep_sync = cfg.deep_update_every < 0
        is_deep_update = is_mem_frame and (deep_sync or t - self.last_deep_update_frame >= cfg.deep_update_every)
        # With synchronised deep updates the value encoder replaces the sensory memory on memory
        # frames, so the decoder's own update is skipped there.
        decoder_updates = not (deep_sync and is_deep_update)

        x, pads = pad_divisible(normalize(image).unsqueeze(0), 16)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with self._stage("encode_key"), self._amp():
            key, shrinkage, selection, features = model.encode_key(
                x, need_shrinkage=is_mem_frame, need_selection=True
            )

        probs_fg = None
        probs = None
        if need_segment:
            with self._stage("read"):
                readout = mem.read(key, selection)
            with self._stage("decode"), self._amp():
                sensory, _, probs = model.decode(features, mem.sensory, readout, update_sensory=decoder_updates)
            if decoder_updates:
                mem.sensory = sensory
            probs_fg = probs[:, 1:]

        if given_ids:
            masks, _ = pad_divisible(given_masks.to(self.device, x.dtype).unsqueeze(0), 16)  # 1×G×Hp×Wp
            probs_fg = self._merge_masks(probs_fg, masks, given_ids, new_ids, key)
            _, probs = model.aggregate(probs_fg)

        if is_mem_frame:
            with self._stage("encode_value"), self._amp():
                value, sensory = model.encode_value(
                    x, features[0], mem.sensory, probs[:, 1:], deep_update=is_deep_update
                )
            with self._stage("memory_update"):
                mem.add_memory(key, shrinkage, selection if cfg.enable_long_term else None, value)
            self.last_mem_frame = t
            if is_deep_update:
                mem.sensory = sensory
                self.last_deep_update_frame = t

        return resize_probs(unpad(probs, pads)[0].float(), size)

    # ------------------------------------------------------------------ helpers
    def _merge_masks(
        self,
        probs_fg: torch.Tensor | None,
        masks: torch.Tensor,
        given_ids: list[int],
        new_ids: list[int],
        key: torch.Tensor,
    ) -> torch.Tensor:
        """Foreground probabilities 1×N×H×W of all objects after a mask: given objects take their mask,
        the others their prediction with the given region cleared; new objects join the memory."""
        mem = self.memory
        old_ids = list(mem.object_ids)
        given_region = masks.amax(dim=1, keepdim=True)  # soft union of the given masks
        if probs_fg is None:
            probs_fg = masks.new_zeros(1, len(old_ids), *masks.shape[-2:])
        merged = [probs_fg[:, i : i + 1] * (1 - given_region) for i in range(len(old_ids))]
        for i, obj in enumerate(old_ids):
            if obj in given_ids:
                merged[i] = masks[:, given_ids.index(obj)].unsqueeze(1)
        if new_ids:
            mem.add_objects(new_ids, self.model.hidden_dim, tuple(key.shape[-2:]), like=key)
            merged.extend(masks[:, given_ids.index(obj)].unsqueeze(1) for obj in new_ids)
        return torch.cat(merged, dim=1)

    def _check_image(self, image: torch.Tensor) -> torch.Tensor:
        if not isinstance(image, torch.Tensor) or image.dim() != 3 or image.shape[0] != 3:
            shape = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
            raise VosError(f"step(image): expected an RGB tensor 3×H×W, got {shape}")
        if image.dtype == torch.uint8:
            image = image.float() / 255
        size = (int(image.shape[1]), int(image.shape[2]))
        if self.frame_size is None:
            self.frame_size = size
            self.process_size = internal_size(size, self.max_internal_size)
        elif size != self.frame_size:
            raise VosError(
                f"frame {self.frame_index + 1} is {size[0]}×{size[1]}, the video's frames are "
                f"{self.frame_size[0]}×{self.frame_size[1]}: every frame must have the same size"
            )
        return image.to(self.device, self.dtype)

    def _parse_prompts(
        self,
        mask: torch.Tensor | Mapping[int, torch.Tensor] | None,
        boxes: Mapping[int, Box] | None,
        objects: list[int] | None,
        size: tuple[int, int],
    ) -> tuple[list[int], torch.Tensor | None]:
        """→ (ids the prompts give, in order: mask ids, then box ids; their masks G×H×W float) or ([], None)."""
        ids, masks = self._parse_mask(mask, objects, size)
        if boxes is None:
            return ids, masks
        if not isinstance(boxes, Mapping):
            raise VosError(f"step: boxes must be a dict {{object id: (x0, y0, x1, y1)}}, got {type(boxes).__name__}")
        box_ids = [check_id(o) for o in boxes]
        both = sorted(set(ids) & set(box_ids))
        if both:
            raise VosError(f"step: objects {both} are given both a mask and a box")
        box_ids, box_masks = paint_boxes(dict(zip(box_ids, boxes.values(), strict=True)), size)
        if masks is None:
            return box_ids, (box_masks if box_ids else None)
        return ids + box_ids, torch.cat([masks, box_masks.to(masks.device)])

    def _parse_mask(
        self, mask: torch.Tensor | Mapping[int, torch.Tensor] | None, objects: list[int] | None, size: tuple[int, int]
    ) -> tuple[list[int], torch.Tensor | None]:
        """→ (ids given by the mask; their masks G×H×W float) or ([], None). Index masks and N×H×W
        masks give their ids ascending; a dict gives its keys in its order."""
        if mask is None:
            if objects:
                raise VosError(f"step: objects {list(objects)} given without a mask")
            return [], None
        if isinstance(mask, Mapping):
            if not mask:
                raise VosError("step: the mask dict gives no object")
            ids = [check_id(o) for o in mask]
            if objects is not None:
                ids = [o for o in ids if o in {int(x) for x in objects}]
            parts = []
            for obj in ids:
                m = torch.as_tensor(mask[obj])
                if tuple(m.shape) != size:
                    raise VosError(f"step: the mask of object {obj} has shape {tuple(m.shape)}, the frame is {size[0]}×{size[1]}")
                parts.append(m.float().clamp(0, 1))
            return ids, torch.stack(parts)
        if tuple(mask.shape[-2:]) != size or mask.dim() not in (2, 3):
            raise VosError(f"step: mask of shape {tuple(mask.shape)} does not fit the {size[0]}×{size[1]} frame")
        if mask.dim() == 2:
            if mask.is_floating_point():
                if not torch.equal(mask, mask.round()):
                    raise VosError("step: an index mask must hold integer object ids")
                mask = mask.long()
            present = [int(i) for i in torch.unique(mask).tolist() if i != 0]
            channel = {}
        else:
            nonempty = (mask.flatten(1) > 0).any(dim=1).tolist()
            present = [i + 1 for i, ne in enumerate(nonempty) if ne]
            channel = {i + 1: i for i in range(mask.shape[0])}
        if objects is None:
            ids = present
        else:
            ids = sorted({int(o) for o in objects})
            missing = [o for o in ids if o not in present]
            if missing:
                raise VosError(f"step: objects {missing} are not in the mask (ids present: {present})")
        if not ids:
            raise VosError("step: the mask gives no object (it is all background)")
        if mask.dim() == 2:
            masks = torch.stack([mask == obj for obj in ids]).float()
        else:
            masks = torch.stack([mask[channel[obj]] for obj in ids]).float().clamp(0, 1)
        return ids, masks

    def _amp(self):
        """bf16 autocast around a network stage when ``amp`` is on (never around the memory read)."""
        if not self.amp:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16)

    @contextmanager
    def _stage(self, name: str) -> Iterator[None]:
        if not self.profile:
            yield
            return
        synchronize(self.device)
        start = time.perf_counter()
        yield
        synchronize(self.device)
        self.stage_times[name] += time.perf_counter() - start


def _is_channels_last(module: torch.nn.Module) -> bool:
    """Whether every 4-D weight of the module is already in the channels-last layout."""
    weights = [p for p in module.parameters() if p.dim() == 4]
    return bool(weights) and all(p.is_contiguous(memory_format=torch.channels_last) for p in weights)
