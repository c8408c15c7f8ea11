"""Inference memory stores: sensory, working and long-term memory of one video.

Objects that are introduced on the same frame form an *object group*. Each group owns its keys,
shrinkage, selection, values and usage counters (as Cutie's buckets do), so the values of a group
always sit at the index of the key of their own frame — through consolidation and pruning — and
groups introduced mid-video simply have fewer elements. XMem shares one key tensor between groups,
which misaligns keys and values after consolidation and cannot prune with several groups.

Per group, one preallocated element buffer holds the long-term prototypes followed by the working
memory frames ``[LT | WM]``: a read takes zero-copy views of the first L + W elements, values are
stored element-major (B×N×C) so that the sparse readout gathers contiguous rows.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import torch

from vos.errors import VosError
from vos.memory.config import MemoryConfig
from vos.memory.objects import ObjectManager
from vos.model.memory_read import memory_read, resolve_backend

# Initial life count of an element: usage = use/life stays finite before the first read.
_NEW_LIFE = 1e-7


def _torch_read(
    mem_keys: torch.Tensor,
    mem_shrinkage: torch.Tensor,
    query_keys: torch.Tensor,
    query_selection: torch.Tensor | None,
    mem_values: torch.Tensor,
    top_k: int,
    mode: str,
    need_usage: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    return memory_read(
        mem_keys, mem_shrinkage, query_keys, query_selection, mem_values,
        top_k=top_k, mode=mode, backend="torch", need_usage=need_usage,
    )


@functools.cache
def _compiled_torch_read(backend: str | Callable) -> Callable:
    # Made on first use (importing dynamo takes a while); one compiled read per backend serves every video.
    return torch.compile(_torch_read, backend=backend, dynamic=None)


def compiled_read(
    mem_keys: torch.Tensor,
    mem_shrinkage: torch.Tensor,
    query_keys: torch.Tensor,
    query_selection: torch.Tensor | None,
    mem_values: torch.Tensor,
    top_k: int,
    mode: str,
    need_usage: bool,
    backend: str | Callable = "inductor",
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``memory_read`` (PyTorch backend) under torch.compile (``backend``: torch.compile's), shapes as
    there (mem_* B×·×N).

    The memory size N grows, consolidates and is pruned from frame to frame, and the buffers the
    inputs are views of grow geometrically (their strides change): N and those strides are marked
    dynamic up front, so one graph serves every memory size instead of one recompilation per size.
    """
    for t in (mem_keys, mem_shrinkage, mem_values):
        torch._dynamo.maybe_mark_dynamic(t, 2)
    return _compiled_torch_read(backend)(
        mem_keys, mem_shrinkage, query_keys, query_selection, mem_values, top_k, mode, need_usage
    )


def _take(x: torch.Tensor, idx: torch.Tensor, dim: int) -> torch.Tensor:
    """Per-batch gather along ``dim``: x B×…, idx B×P → x with ``dim`` replaced by P."""
    shape = [1] * x.dim()
    shape[0] = idx.shape[0]
    shape[dim] = idx.shape[1]
    expand = list(x.shape)
    expand[dim] = idx.shape[1]
    return torch.gather(x, dim, idx.view(shape).expand(expand))


@dataclass
class Elements:
    """A set of memory elements of one group (contiguous copies or views).

    key B×CK×N, shrinkage B×1×N, selection B×CK×N, values B×N×C (element-major; C = n_obj·CV),
    use / life B×N (usage counters, fp32).
    """

    key: torch.Tensor
    shrinkage: torch.Tensor
    selection: torch.Tensor
    values: torch.Tensor
    use: torch.Tensor
    life: torch.Tensor

    @property
    def size(self) -> int:
        return self.key.shape[-1]

    def slice(self, start: int, stop: int | None = None) -> Elements:
        """Zero-copy views of elements [start, stop)."""
        stop = self.size if stop is None else stop
        return Elements(
            self.key[:, :, start:stop],
            self.shrinkage[:, :, start:stop],
            self.selection[:, :, start:stop],
            self.values[:, start:stop],
            self.use[:, start:stop],
            self.life[:, start:stop],
        )

    def take(self, idx: torch.Tensor) -> Elements:
        """Elements at per-batch indices idx B×P."""
        return Elements(
            _take(self.key, idx, 2),
            _take(self.shrinkage, idx, 2),
            _take(self.selection, idx, 2),
            _take(self.values, idx, 1),
            _take(self.use, idx, 1),
            _take(self.life, idx, 1),
        )

    @staticmethod
    def cat(parts: list[Elements]) -> Elements:
        return Elements(
            torch.cat([p.key for p in parts], 2),
            torch.cat([p.shrinkage for p in parts], 2),
            torch.cat([p.selection for p in parts], 2),
            torch.cat([p.values for p in parts], 1),
            torch.cat([p.use for p in parts], 1),
            torch.cat([p.life for p in parts], 1),
        )


class GroupMemory:
    """Working and long-term memory of one object group.

    Layout: elements ``[0, L)`` are long-term prototypes, ``[L, L + W)`` working-memory frames of
    ``hw`` elements each; the first working frame is the group's first (annotated) frame and is never
    consolidated or dropped.
    """

    def __init__(self, object_ids: list[int], config: MemoryConfig) -> None:
        self.object_ids = list(object_ids)
        self.config = config
        self.hw = 0
        self.num_long_term = 0
        self.num_working = 0
        self._buf: Elements | None = None
        self.consolidations = 0

    # ---------------------------------------------------------------- sizes and views
    @property
    def size(self) -> int:
        return self.num_long_term + self.num_working

    @property
    def working_frames(self) -> int:
        return self.num_working // self.hw if self.hw else 0

    @property
    def max_elements(self) -> int:
        """Capacity this group can ever need: long-term cap + a full working memory."""
        cfg = self.config
        long_term = cfg.max_long_term_elements if cfg.enable_long_term else 0
        return long_term + cfg.max_mid_term_frames * self.hw

    def view(self, start: int = 0, stop: int | None = None) -> Elements:
        """Zero-copy views of elements [start, stop) (default: all L + W)."""
        assert self._buf is not None, "group memory is empty"
        return self._buf.slice(start, self.size if stop is None else stop)

    @property
    def long_term(self) -> Elements:
        return self.view(0, self.num_long_term)

    @property
    def working(self) -> Elements:
        return self.view(self.num_long_term, self.size)

    def nbytes(self) -> int:
        """Bytes allocated by this group's buffer (capacity, not only the used part)."""
        if self._buf is None:
            return 0
        b = self._buf
        return sum(t.numel() * t.element_size() for t in (b.key, b.shrinkage, b.selection, b.values, b.use, b.life))

    # ---------------------------------------------------------------- writing
    def _write(self, start: int, e: Elements) -> None:
        assert self._buf is not None
        stop = start + e.size
        b = self._buf
        b.key[:, :, start:stop] = e.key
        b.shrinkage[:, :, start:stop] = e.shrinkage
        b.selection[:, :, start:stop] = e.selection
        b.values[:, start:stop] = e.values
        b.use[:, start:stop] = e.use
        b.life[:, start:stop] = e.life

    def _reserve(self, n: int, like: Elements) -> None:
        """Make room for ``n`` elements; capacity grows geometrically up to max_elements."""
        cap = 0 if self._buf is None else self._buf.size
        if n <= cap:
            return
        new_cap = max(n, min(self.max_elements, 2 * cap))
        bsz, ck, _ = like.key.shape
        c = like.values.shape[2]
        dev, dt = like.key.device, like.key.dtype
        new = Elements(
            torch.empty(bsz, ck, new_cap, device=dev, dtype=dt),
            torch.empty(bsz, 1, new_cap, device=dev, dtype=like.shrinkage.dtype),
            torch.empty(bsz, ck, new_cap, device=dev, dtype=like.selection.dtype),
            torch.empty(bsz, new_cap, c, device=dev, dtype=like.values.dtype),
            torch.empty(bsz, new_cap, device=dev, dtype=torch.float32),
            torch.empty(bsz, new_cap, device=dev, dtype=torch.float32),
        )
        old, self._buf = self._buf, new
        if old is not None and self.size:
            self._write(0, old.slice(0, self.size))

    def add_frame(
        self, key: torch.Tensor, shrinkage: torch.Tensor, selection: torch.Tensor, values: torch.Tensor
    ) -> None:
        """Append one memory frame. key B×CK×HW, shrinkage B×1×HW, selection B×CK×HW,
        values B×n_obj×CV×HW (this group's objects, in ``object_ids`` order)."""
        bsz, n_obj, cv, hw = values.shape
        if n_obj != len(self.object_ids):
            raise ValueError(f"group of objects {self.object_ids} got values for {n_obj} objects")
        if self.hw == 0:
            self.hw = hw
        elif hw != self.hw:
            raise VosError(
                f"all frames of a video must have the same size: memory has {self.hw} key pixels, frame has {hw}"
            )
        frame = Elements(
            key,
            shrinkage,
            selection,
            values.reshape(bsz, n_obj * cv, hw).transpose(1, 2),
            torch.zeros(bsz, hw, device=key.device, dtype=torch.float32),
            torch.full((bsz, hw), _NEW_LIFE, device=key.device, dtype=torch.float32),
        )
        cfg = self.config
        if not cfg.enable_long_term and self.working_frames >= cfg.max_mid_term_frames:
            self._drop_oldest()
        self._reserve(self.size + hw, frame)
        self._write(self.size, frame)
        self.num_working += hw
        if cfg.enable_long_term and self.working_frames >= cfg.max_mid_term_frames:
            self.consolidate()

    def update_usage(self, usage: torch.Tensor) -> None:
        """Count one read: usage B×(L + W) is added to the use counts, every life count grows by 1."""
        b = self._buf
        assert b is not None and usage.shape[-1] == self.size
        b.use[:, : self.size] += usage.float()
        b.life[:, : self.size] += 1

    def remove_objects(self, keep: list[int]) -> None:
        """Keep only this group's objects at positions ``keep`` (their value channels; keys are shared)."""
        old = len(self.object_ids)
        self.object_ids = [self.object_ids[i] for i in keep]
        if self._buf is None:
            return
        per_object = self._buf.values.shape[2] // old  # values B×cap×(n_obj·CV), object-major
        channels = torch.tensor(
            [i * per_object + c for i in keep for c in range(per_object)], device=self._buf.values.device
        )
        self._buf.values = self._buf.values.index_select(2, channels)

    # ---------------------------------------------------------------- forgetting
    def _drop_oldest(self) -> None:
        """Without long-term memory, before a new frame: keep the first frame and the latest max − 2
        frames, so that with the new one the working memory holds max frames (FIFO)."""
        hw, lt = self.hw, self.num_long_term
        keep_from = self.size - (self.config.max_mid_term_frames - 2) * hw
        tail = Elements.cat([self.view(keep_from)])  # a copy: the destination overlaps the source
        self._write(lt + hw, tail)
        self.num_working = hw + tail.size

    def consolidate(self) -> None:
        """Turn the working frames between the first and the latest min − 1 into prototypes.

        Candidates: all working frames except the first and the last ``min_mid_term_frames − 1``.
        The ``num_prototypes`` candidates of highest normalised usage (use/life) become prototype keys;
        their values and shrinkage are softmax-weighted averages over the candidates (full softmax,
        prototype key and selection as the query). The long-term memory is pruned by lowest usage to
        ``max_long_term_elements − num_prototypes`` before the prototypes join it; the candidates
        leave working memory, which is back to ``min_mid_term_frames`` frames.
        """
        cfg = self.config
        hw, lt = self.hw, self.num_long_term
        cand_start = lt + hw
        cand_stop = self.size - (cfg.min_mid_term_frames - 1) * hw
        cand = self.view(cand_start, cand_stop)
        p = min(cfg.num_prototypes, cand.size)
        _, proto_idx = torch.topk(cand.use / cand.life, k=p, dim=1)
        proto = cand.take(proto_idx)
        c = cand.values.shape[2]
        # One full-softmax read gives both prototype values and shrinkage (shrinkage as one more channel).
        cand_vs = torch.cat([cand.values.transpose(1, 2), cand.shrinkage.to(cand.values.dtype)], dim=1)
        mixed, _ = memory_read(
            cand.key, cand.shrinkage, proto.key, proto.selection, cand_vs,
            top_k=None, backend=cfg.backend,
        )  # B×(C+1)×P
        proto.values = mixed[:, :c].transpose(1, 2).to(cand.values.dtype)
        proto.shrinkage = mixed[:, c:].to(cand.shrinkage.dtype)
        proto.use = torch.zeros_like(proto.use)
        proto.life = torch.full_like(proto.life, _NEW_LIFE)

        # After the long-term part come the prototypes, then the working memory that stays: the first
        # frame and the latest min − 1 frames (a copy: the write below overlaps their sources).
        stay = Elements.cat([proto, self.view(lt, lt + hw), self.view(cand_stop)])
        long_term = self.long_term
        prune_to = cfg.max_long_term_elements - cfg.num_prototypes
        if long_term.size > prune_to:
            # Keep the highest normalised usage; sorted indices keep the long-term order stable.
            _, keep = torch.topk(long_term.use / long_term.life, k=prune_to, dim=1)
            kept = long_term.take(keep.sort(dim=1).values)
            self._write(0, kept)
            self.num_long_term = kept.size
        self._write(self.num_long_term, stay)
        self.num_long_term += proto.size
        self.num_working = stay.size - proto.size
        self.consolidations += 1


class InferenceMemory:
    """All memory of one video: sensory memory per object, and one GroupMemory per object group.

    Objects are kept in the order they were introduced (``object_ids``); reads, values and sensory
    memory follow that order, and each group's objects are a contiguous run of it.
    """

    def __init__(self, config: MemoryConfig, compile_read: bool | str | Callable = False) -> None:
        self.config = config
        # Run the PyTorch read under torch.compile (memory size symbolic: one graph for every size);
        # True = inductor, a string or callable = that torch.compile backend.
        self.compile_read = compile_read
        self.objects = ObjectManager()
        self.groups: list[GroupMemory] = []
        self.sensory: torch.Tensor | None = None  # B×N_obj×CH×h×w

    @property
    def object_ids(self) -> list[int]:
        """Tracked object ids in channel order (see ``ObjectManager``)."""
        return self.objects.ids

    @property
    def num_objects(self) -> int:
        return len(self.objects)

    @property
    def engaged(self) -> bool:
        """Whether any memory frame has been stored (a read is possible)."""
        return any(g.size > 0 for g in self.groups)

    def add_objects(
        self, object_ids: list[int], hidden_dim: int, size: tuple[int, int], like: torch.Tensor, batch: int = 1
    ) -> None:
        """Register new objects (one new group) with zero sensory memory B×n×CH×h×w.
        Their keys and values arrive with the next ``add_memory``."""
        if not object_ids:
            raise ValueError("add_objects: no objects given")
        self.objects.add(object_ids)
        self.groups.append(GroupMemory(object_ids, self.config))
        zeros = like.new_zeros(batch, len(object_ids), hidden_dim, *size)
        self.sensory = zeros if self.sensory is None else torch.cat([self.sensory, zeros], dim=1)

    def delete_objects(self, object_ids: list[int]) -> None:
        """Forget objects: their sensory memory and value channels go; a group left empty goes whole.
        The other objects' keys and values are untouched."""
        keep = self.objects.remove(object_ids)
        if self.sensory is not None:
            self.sensory = self.sensory[:, keep]
        gone = set(object_ids)
        groups = []
        for group in self.groups:
            stay = [i for i, o in enumerate(group.object_ids) if o not in gone]
            if stay:
                if len(stay) < len(group.object_ids):
                    group.remove_objects(stay)
                groups.append(group)
        self.groups = groups

    def read(self, query_key: torch.Tensor, query_selection: torch.Tensor | None) -> torch.Tensor:
        """Memory readout for every tracked object: query_key B×CK×h×w → B×N_obj×CV×h×w.

        Each group reads its own long-term + working memory jointly (one top-k over both); the read's
        usage is counted when long-term memory is enabled (it decides consolidation and pruning).
        """
        bsz, ck, h, w = query_key.shape
        qk = query_key.reshape(bsz, ck, h * w)
        qe = query_selection.reshape(bsz, ck, h * w) if query_selection is not None else None
        cfg = self.config
        outs = []
        for group in self.groups:
            if group.size == 0:
                raise RuntimeError(f"objects {group.object_ids} were added but have no memory frame yet; read first")
            mem = group.view()
            args = (mem.key, mem.shrinkage, qk, qe, mem.values.transpose(1, 2))
            if self.compile_read and resolve_backend(cfg.backend, qk, cfg.read_mode) == "torch":
                backend = "inductor" if self.compile_read is True else self.compile_read
                readout, usage = compiled_read(*args, cfg.top_k, cfg.read_mode, cfg.enable_long_term, backend)
            else:
                readout, usage = memory_read(
                    *args, top_k=cfg.top_k, mode=cfg.read_mode, backend=cfg.backend, need_usage=cfg.enable_long_term,
                )  # B×(n_obj·CV)×HW
            if usage is not None:
                group.update_usage(usage)
            outs.append(readout.reshape(bsz, len(group.object_ids), -1, h, w))
        return torch.cat(outs, dim=1)

    def add_memory(
        self,
        key: torch.Tensor,
        shrinkage: torch.Tensor,
        selection: torch.Tensor | None,
        values: torch.Tensor,
    ) -> None:
        """Store a memory frame for every group. key B×CK×h×w, shrinkage B×1×h×w,
        selection B×CK×h×w (None: ones — only used as a prototype query), values B×N_obj×CV×h×w."""
        bsz, ck, h, w = key.shape
        if values.shape[1] != self.num_objects:
            raise ValueError(f"values for {values.shape[1]} objects, memory tracks {self.num_objects}")
        k = key.reshape(bsz, ck, h * w)
        s = shrinkage.reshape(bsz, 1, h * w)
        e = torch.ones_like(k) if selection is None else selection.reshape(bsz, ck, h * w)
        v = values.reshape(bsz, values.shape[1], values.shape[2], h * w)
        start = 0
        for group in self.groups:
            n = len(group.object_ids)
            group.add_frame(k, s, e, v[:, start : start + n])
            start += n

    def stats(self) -> dict[str, int]:
        """Memory sizes: elements in working / long-term memory (summed over groups), working frames of the
        largest group, number of groups and objects, sensory elements, and bytes held."""
        sensory = 0 if self.sensory is None else self.sensory.numel()
        sensory_bytes = 0 if self.sensory is None else sensory * self.sensory.element_size()
        return {
            "objects": self.num_objects,
            "groups": len(self.groups),
            "working_elements": sum(g.num_working for g in self.groups),
            "working_frames": max((g.working_frames for g in self.groups), default=0),
            "long_term_elements": sum(g.num_long_term for g in self.groups),
            "sensory_elements": sensory,
            "consolidations": sum(g.consolidations for g in self.groups),
            "memory_bytes": sum(g.nbytes() for g in self.groups) + sensory_bytes,
        }
