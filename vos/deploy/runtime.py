"""Run an exported network with onnxruntime inside XMem's memory loop.

:class:`OnnxXMem` has the stage methods ``InferenceCore`` calls on a network (``encode_key``,
``encode_value``, ``decode``, ``aggregate``, ``hidden_dim``), each one an onnxruntime session of the
graphs written by ``vos.deploy.export``. The memory — working and long-term memory, top-k read,
consolidation, sensory memory — is the same ``InferenceCore`` / ``InferenceMemory`` bookkeeping as
for the PyTorch network, so the two differ only by the graphs' arithmetic::

    from vos import InferenceCore
    from vos.deploy import OnnxXMem
    core = InferenceCore(OnnxXMem("exported/"))
    probs = core.step(image, mask=first_mask)

``vos.model.weights.load_model`` returns an ``OnnxXMem`` for such a folder, so every command that
takes ``--weights`` (``vos segment``, ``vos eval``) runs the exported graphs too.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from vos.errors import CheckpointError, VosError
from vos.model.aggregate import aggregate, object_probs

MANIFEST = "deploy.json"
FORMAT = "vos-onnx"


def is_export_dir(path: str | Path) -> bool:
    """Whether ``path`` is a folder written by ``vos export --format onnx``."""
    return (Path(path) / MANIFEST).is_file()


def _numpy(x: torch.Tensor) -> np.ndarray:
    """fp32, C-contiguous numpy view of a CPU tensor (channels-last frames are copied)."""
    return np.ascontiguousarray(x.detach().to("cpu", torch.float32).numpy())


class OnnxXMem:
    """The network's stages as onnxruntime sessions; a drop-in for ``XMem`` in ``InferenceCore``.

    Args:
        folder: an export folder (``deploy.json`` + ``key_encoder.onnx``, ``value_encoder.onnx``,
            ``decoder.onnx``).
        providers: onnxruntime execution providers (default: the CPU provider).
        threads: intra-op threads per session (default: onnxruntime's choice, one per core).

    Tensors come in and go out as fp32 CPU torch tensors with the shapes of the ``XMem`` methods.
    """

    device = torch.device("cpu")
    dtype = torch.float32

    def __init__(self, folder: str | Path, providers: list[str] | None = None, threads: int | None = None) -> None:
        try:
            import onnxruntime as ort
        except ImportError:
            raise VosError("running an ONNX export needs onnxruntime: pip install -e '.[export]'") from None
        folder = Path(folder)
        try:
            manifest = json.loads((folder / MANIFEST).read_text())
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"{folder}: not a readable ONNX export ({exc})") from None
        if manifest.get("format") != FORMAT:
            raise CheckpointError(f"{folder / MANIFEST}: format {manifest.get('format')!r}, expected {FORMAT!r}")
        self.folder = folder
        self.manifest = manifest
        self.architecture = manifest["model"]
        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        providers = providers or ["CPUExecutionProvider"]
        self.sessions = {}
        for stage, entry in manifest["stages"].items():
            path = folder / entry["file"]
            if not path.is_file():
                raise CheckpointError(f"{path}: missing (the export in {folder} is incomplete)")
            self.sessions[stage] = ort.InferenceSession(str(path), options, providers=providers)

    @property
    def hidden_dim(self) -> int:
        return int(self.architecture["hidden_dim"])

    @property
    def key_dim(self) -> int:
        return int(self.architecture["key_dim"])

    @property
    def value_dim(self) -> int:
        return int(self.architecture["value_dim"])

    def eval(self) -> OnnxXMem:
        """No-op (the graphs are inference graphs); for code that calls ``model.eval()``."""
        return self

    def _run(self, stage: str, **inputs: torch.Tensor) -> list[torch.Tensor]:
        feeds = {name: _numpy(value) for name, value in inputs.items()}
        return [torch.from_numpy(out) for out in self.sessions[stage].run(None, feeds)]

    def encode_key(self, image: torch.Tensor, need_shrinkage: bool = True, need_selection: bool = True):
        """image 1×3×H×W → key, shrinkage | None, selection | None, (f16, f8, f4) as ``XMem.encode_key``."""
        key, shrinkage, selection, f16, f8, f4 = self._run("key_encoder", image=image)
        return key, shrinkage if need_shrinkage else None, selection if need_selection else None, (f16, f8, f4)

    def encode_value(self, image, f16, sensory, masks, deep_update: bool = True):
        """→ (value 1×N×CV×h×w, sensory 1×N×CH×h×w; the input sensory without ``deep_update``)."""
        value, new_sensory = self._run("value_encoder", image=image, f16=f16, sensory=sensory, masks=masks)
        return value, new_sensory if deep_update else sensory

    def decode(self, features, sensory, readout, update_sensory: bool = True, selector=None):
        """→ (sensory, logits 1×N×H×W, probs 1×(N+1)×H×W) as ``XMem.decode``."""
        f16, f8, f4 = features
        new_sensory, logits = self._run("decoder", f16=f16, f8=f8, f4=f4, sensory=sensory, readout=readout)
        return (new_sensory if update_sensory else sensory), logits, object_probs(logits, selector)

    @staticmethod
    def aggregate(probs_fg: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """probs_fg B×N×H×W → (logits, probs) B×(N+1)×H×W; soft aggregation, background first."""
        return aggregate(probs_fg)
