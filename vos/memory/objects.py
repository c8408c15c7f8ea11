"""Which object each probability channel is: any integer ids, joining and leaving mid-video.

The network and the memory work on channels (object 0, 1, … in the order the objects were
introduced); callers think in their own ids (7, 3, 12, …). :class:`ObjectManager` is the one place
that maps between the two, so no caller re-does argmax-and-lookup or assumes "channel i is id i + 1".
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from vos.errors import VosError


class ObjectManager:
    """Object ids in channel order: channel c of a foreground tensor (B×N×…) is ``ids[c]``."""

    def __init__(self) -> None:
        self._ids: list[int] = []

    @property
    def ids(self) -> list[int]:
        """The tracked ids, in channel order (a copy)."""
        return list(self._ids)

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, obj: object) -> bool:
        return obj in self._ids

    def channel(self, obj: int) -> int:
        """Channel index of object ``obj``."""
        try:
            return self._ids.index(obj)
        except ValueError:
            raise VosError(f"object {obj} is not tracked (tracked: {self._ids})") from None

    def add(self, ids: Iterable[int]) -> list[int]:
        """Append new objects (each id at most once; ids must be positive integers) → their channels."""
        ids = [check_id(o) for o in ids]
        dup = sorted({o for o in ids if o in self._ids or ids.count(o) > 1})
        if dup:
            raise VosError(f"objects {dup} are already tracked or given twice")
        start = len(self._ids)
        self._ids.extend(ids)
        return list(range(start, len(self._ids)))

    def remove(self, ids: Iterable[int]) -> list[int]:
        """Forget objects → the channels that stay (old channel indices, in order)."""
        ids = {check_id(o) for o in ids}
        unknown = sorted(ids - set(self._ids))
        if unknown:
            raise VosError(f"cannot delete objects {unknown}: not tracked (tracked: {self._ids})")
        keep = [c for c, o in enumerate(self._ids) if o not in ids]
        self._ids = [self._ids[c] for c in keep]
        return keep

    def to_ids(self, probs: torch.Tensor, threshold: float | None = None) -> torch.Tensor:
        """Probabilities (1 + N)×H×W (background first, channel order) → H×W int64 map of object ids.

        threshold None: argmax over background and objects (XMem's rule). A number: a pixel takes the
        most likely object when that object's probability is ≥ threshold, else 0 (background).
        """
        if probs.dim() != 3 or probs.shape[0] != len(self._ids) + 1:
            raise VosError(
                f"to_ids: expected (1 + {len(self._ids)})×H×W probabilities, got {tuple(probs.shape)}"
            )
        lut = torch.tensor([0, *self._ids], dtype=torch.int64, device=probs.device)
        if threshold is None:
            return lut[probs.argmax(dim=0)]
        if not self._ids:
            return torch.zeros(probs.shape[1:], dtype=torch.int64, device=probs.device)
        best, channel = probs[1:].max(dim=0)
        return torch.where(best >= threshold, lut[channel + 1], 0)

    def to_masks(self, probs: torch.Tensor, threshold: float | None = None) -> dict[int, torch.Tensor]:
        """Per-object boolean H×W masks {id: mask} of :meth:`to_ids` (so they never overlap)."""
        index = self.to_ids(probs, threshold)
        return {obj: index == obj for obj in self._ids}


def check_id(obj: object) -> int:
    """An object id: a positive integer (0 is the background)."""
    if isinstance(obj, bool) or not isinstance(obj, int) and not (hasattr(obj, "__index__")):
        raise VosError(f"object id {obj!r}: must be a positive integer")
    value = int(obj)
    if value < 1:
        raise VosError(f"object id {value}: must be a positive integer (0 is the background)")
    return value
