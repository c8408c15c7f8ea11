"""torch.compile of the network's stages (the whole model runs under ``torch.compile``).

:func:`compiled_stages` wraps a network's three stage methods — ``encode_key``, ``encode_value``
and ``decode`` — each in its own ``torch.compile``; everything else (memory bookkeeping, the
decision which frames are memory frames, consolidation) stays in Python around them, so the
compiled graphs never see data-dependent control flow. The memory read is compiled separately by
the inference memory (``vos.memory.store``), with a dynamic memory size.

Shapes: the stages compile with static shapes first (frames are padded to a multiple of 16, so one
video gives one set of shapes). When a later call brings a different size — another frame size or
another number of objects — dynamo's automatic dynamic shapes recompile once with that dimension
symbolic, so the number of compiled graphs stays small and bounded: per stage, one per combination
of the Python flags it is called with (``need_shrinkage``; ``deep_update``; ``update_sensory``) times
at most two shape regimes (static, then dynamic), plus the 0/1 size specialisation of a single object.

The wrapper does not modify the network: it is a proxy whose stage methods are compiled and whose
other attributes (``aggregate``, ``hidden_dim``, ``parameters()`` …) are the network's. The same
network can be run eagerly and compiled side by side (the benchmark does).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

# Stage methods of XMem that run under torch.compile.
COMPILED_STAGES = ("encode_key", "encode_value", "decode")

class CompiledStages:
    """A network whose ``encode_key``, ``encode_value`` and ``decode`` run under ``torch.compile``.

    Args:
        model: the network (``vos.model.network.XMem``), on its device, usually in eval mode.
        backend: torch.compile backend ("inductor"; tests use cheaper ones).
        mode: torch.compile mode (None = default; "max-autotune" on CUDA for long runs).

    Every other attribute is forwarded to ``model``, so this object can stand in for the network
    wherever only its stage methods are called (``vos.memory.core.InferenceCore`` does).
    """

    def __init__(self, model: nn.Module, backend: str | Any = "inductor", mode: str | None = None) -> None:
        self.model = model
        self.backend = backend
        self.mode = mode
        for name in COMPILED_STAGES:
            setattr(self, name, torch.compile(getattr(model, name), backend=backend, mode=mode, dynamic=None))

    def __getattr__(self, name: str) -> Any:
        # Only called for attributes not found on the proxy itself: aggregate, hidden_dim, parameters, …
        return getattr(self.__dict__["model"], name)

    def __repr__(self) -> str:
        return f"CompiledStages({type(self.model).__name__}, backend={self.backend!r}, mode={self.mode!r})"


def compiled_stages(model: nn.Module, backend: str | Any = "inductor", mode: str | None = None) -> CompiledStages:
    """``model`` with its stages under torch.compile (``model`` itself when it already is).

    Cheap to call again for the same network: dynamo keeps its compiled graphs per code object and
    checks them with guards, so a new proxy of the same network reuses them without recompiling.
    """
    if isinstance(model, CompiledStages):
        return model
    return CompiledStages(model, backend=backend, mode=mode)


def unwrap(model: Any) -> nn.Module:
    """The network behind a :class:`CompiledStages` (the argument itself otherwise)."""
    return model.model if isinstance(model, CompiledStages) else model
