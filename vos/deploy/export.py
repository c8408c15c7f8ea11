"""Export the network's per-frame stages as ONNX graphs.

XMem's inference is three network stages around a memory that is plain bookkeeping (append keys and
values, read by similarity, consolidate). The stages become three graphs, each with dynamic frame
height/width (multiples of 16) and, where objects enter, a dynamic object count N:

    key_encoder.onnx    image 1×3×H×W → key 1×CK×h×w, shrinkage 1×1×h×w, selection 1×CK×h×w,
                        f16 1×C16×h×w, f8 1×C8×2h×2w, f4 1×C4×4h×4w             (h×w = H/16×W/16)
    value_encoder.onnx  image, f16, sensory 1×N×CH×h×w, masks 1×N×H×W
                        → value 1×N×CV×h×w, new sensory 1×N×CH×h×w (deep update)
    decoder.onnx        f16, f8, f4, sensory, readout 1×N×CV×h×w
                        → new sensory 1×N×CH×h×w, logits 1×N×H×W

``deploy.json`` beside them records the architecture, the opset, the exporter and the versions;
``vos.deploy.runtime.OnnxXMem`` reads the folder and runs the graphs with onnxruntime inside the same
``InferenceCore`` memory loop as the PyTorch network.

The exporter is ``torch.onnx.export(..., dynamo=True)``: it traces with ``torch.export`` and keeps
height, width and N symbolic, which the TorchScript-based exporter only approximates (it records
sizes it meets as constants unless every shape computation is traced through tensors), and it is the
exporter PyTorch maintains. Opset 18 is the first with the ``Resize`` and reduction forms it emits by
default and is read by onnxruntime ≥ 1.14.
"""

from __future__ import annotations

import json
import platform
import warnings
from pathlib import Path

import torch
from torch import nn

from vos.deploy.runtime import FORMAT, MANIFEST
from vos.errors import VosError
from vos.output import atomic_write, claim_output, write_text

OPSET = 18
FORMAT_VERSION = 1

# Sample sizes for tracing; the graphs accept any multiple of 16 (the sizes only need to differ
# from 1 so that the tracer does not specialise a dimension to a constant).
_SAMPLE_HW = (64, 96)
_SAMPLE_OBJECTS = 2


class KeyEncoderStage(nn.Module):
    """image 1×3×H×W (normalised, padded to ×16) → key, shrinkage, selection, f16, f8, f4."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor):
        key, shrinkage, selection, (f16, f8, f4) = self.model.encode_key(image, True, True)
        return key, shrinkage, selection, f16, f8, f4


class ValueEncoderStage(nn.Module):
    """image 1×3×H×W, f16 1×C16×h×w, sensory 1×N×CH×h×w, masks 1×N×H×W → value 1×N×CV×h×w, sensory.

    Always with the deep update: the value does not depend on it, and the runtime keeps the old
    sensory memory on frames without one.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor, f16: torch.Tensor, sensory: torch.Tensor, masks: torch.Tensor):
        return self.model.encode_value(image, f16, sensory, masks, deep_update=True)


class DecoderStage(nn.Module):
    """f16, f8, f4, sensory 1×N×CH×h×w, readout 1×N×CV×h×w → new sensory, logits 1×N×H×W.

    Always with the sensory update (the logits do not depend on it; the runtime discards it where
    the loop skips the update). The soft aggregation of the logits stays outside the graph: its
    clamp to [1e-7, 1 − 1e-7] sits at the edge of fp32, and onnxruntime's fused form of it rounds
    saturated pixels differently (probabilities off by up to 0.2 where the logits agree to 1e-5).
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, f16, f8, f4, sensory, readout):
        new_sensory, logits, _ = self.model.decode((f16, f8, f4), sensory, readout, update_sensory=True)
        return new_sensory, logits


STAGE_IO = {
    "key_encoder": (["image"], ["key", "shrinkage", "selection", "f16", "f8", "f4"]),
    "value_encoder": (["image", "f16", "sensory", "masks"], ["value", "new_sensory"]),
    "decoder": (["f16", "f8", "f4", "sensory", "readout"], ["new_sensory", "logits"]),
}


def _stage_inputs(model: nn.Module, height: int, width: int, objects: int):
    """Sample inputs of each stage at one size: {stage: tuple of tensors}."""
    cfg = model.config
    c16, c8, c4 = cfg.key_encoder_channels
    h, w = height // 16, width // 16
    image = torch.rand(1, 3, height, width)
    f16 = torch.rand(1, c16, h, w)
    f8 = torch.rand(1, c8, 2 * h, 2 * w)
    f4 = torch.rand(1, c4, 4 * h, 4 * w)
    sensory = torch.rand(1, objects, cfg.hidden_dim, h, w)
    masks = torch.rand(1, objects, height, width)
    readout = torch.rand(1, objects, cfg.value_dim, h, w)
    return {
        "key_encoder": (image,),
        "value_encoder": (image, f16, sensory, masks),
        "decoder": (f16, f8, f4, sensory, readout),
    }


def _dynamic_shapes(stage: str) -> dict:
    """torch.export dims: H = 16·h16, W = 16·w16 (strides 4/8/16 follow), N objects."""
    h16 = torch.export.Dim("h16", min=1, max=1024)
    w16 = torch.export.Dim("w16", min=1, max=1024)
    n = torch.export.Dim("objects", min=1, max=256)
    image = {2: 16 * h16, 3: 16 * w16}
    f16 = {2: h16, 3: w16}
    f8 = {2: 2 * h16, 3: 2 * w16}
    f4 = {2: 4 * h16, 3: 4 * w16}
    per_object = {1: n, 3: h16, 4: w16}
    if stage == "key_encoder":
        return {"image": image}
    if stage == "value_encoder":
        return {"image": image, "f16": f16, "sensory": per_object, "masks": {1: n, 2: 16 * h16, 3: 16 * w16}}
    return {"f16": f16, "f8": f8, "f4": f4, "sensory": per_object, "readout": per_object}


def export_onnx(model: nn.Module, out_dir: str | Path, source: str = "", opset: int = OPSET, overwrite: bool = False) -> dict:
    """Write the three stage graphs and ``deploy.json`` into ``out_dir``; returns the manifest.

    ``model``: an XMem network (``vos.model.network.XMem``; moved to the CPU in fp32 for tracing).
    ``source``: what the weights were (recorded in the manifest; a file path is also an input that
    the output folder must not overlap). The folder is claimed through ``vos.output`` (a non-empty
    folder not written by ``vos export`` is refused; ``overwrite`` replaces an earlier export) and
    every file is written atomically, so an interrupted export leaves no graph under a final name.
    """
    try:
        import onnx
        import onnxscript  # noqa: F401  (the dynamo exporter translates through onnxscript)
    except ImportError as exc:
        raise VosError(f"ONNX export needs the export extra: pip install -e '.[export]' ({exc.name} is missing)") from None

    model = model.to("cpu", torch.float32).eval()
    settings = {"source": source, "format": "onnx", "opset": opset, "model": model.config.architecture()}
    inputs = [source] if source and Path(source).exists() else []
    samples = _stage_inputs(model, *_SAMPLE_HW, _SAMPLE_OBJECTS)
    modules = {"key_encoder": KeyEncoderStage(model), "value_encoder": ValueEncoderStage(model), "decoder": DecoderStage(model)}
    out_dir = Path(out_dir)
    with claim_output(out_dir, "export", settings, inputs=inputs, overwrite=overwrite):
        for stage, module in modules.items():
            module.eval()
            inputs_names, outputs = STAGE_IO[stage]
            with warnings.catch_warnings():
                # the exporter reports each derived axis (16·h16, …) that it names after its root dim
                warnings.filterwarnings("ignore", message=".*will not be used, since it shares the same shape constraints")
                program = torch.onnx.export(
                    module, samples[stage], dynamo=True, opset_version=opset, input_names=inputs_names,
                    output_names=outputs, dynamic_shapes=_dynamic_shapes(stage), verbose=False,
                )
            with atomic_write(out_dir / f"{stage}.onnx") as tmp:
                # one self-contained file per stage (the small and xmem presets are far below 2 GB)
                program.save(str(tmp), external_data=False)
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "source": source,
            "exporter": "torch.onnx.export(dynamo=True)",
            "opset": opset,
            "torch": torch.__version__,
            "onnx": onnx.__version__,
            "python": platform.python_version(),
            "model": model.config.architecture(),
            "stages": {
                stage: {"file": f"{stage}.onnx", "inputs": STAGE_IO[stage][0], "outputs": STAGE_IO[stage][1]}
                for stage in modules
            },
        }
        manifest = json.loads(json.dumps(manifest))  # as a reader sees it: tuples become lists
        write_text(out_dir / MANIFEST, json.dumps(manifest, indent=2) + "\n")
    return manifest
