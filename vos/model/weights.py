"""Weights I/O: presets, official XMem ``.pth`` files, and our ``.safetensors`` + JSON config.

* ``load_model("small" | "xmem" | path, device, config)`` builds an :class:`XMem` in eval mode.
* Official checkpoints (``XMem.pth``, ``XMem-s012.pth``, stage-0 ``XMem-s0.pth``) are read with
  ``torch.load(weights_only=True)``; the architecture is inferred from the tensor shapes; a 4-channel
  value-encoder conv1 (single-object stage-0) gets a zero 5th channel (the "other objects" mask).
* Our checkpoints: ``name.safetensors`` with the :class:`ModelConfig` in ``name.json`` beside it (and a
  copy in the safetensors metadata, used when the JSON is missing).
* A checkpoint that does not fit raises :class:`CheckpointError` naming the missing, unexpected and
  mis-shaped keys.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from pathlib import Path

import torch
from torch import nn

from vos.errors import CheckpointError, ConfigError
from vos.model.config import PRESETS, ModelConfig
from vos.model.network import XMem

_CONFIG_METADATA_KEY = "vos_model_config"
_WRAPPER_KEYS = ("network", "model", "state_dict")
_STRIP_PREFIXES = ("module.", "_orig_mod.")
_SHOW = 5  # keys named per category in a mismatch message


def build_model(
    preset: str = "xmem", config: ModelConfig | None = None, device: str | torch.device = "cpu"
) -> XMem:
    """A new XMem network of a preset (``"xmem"``, ``"small"``) in eval mode on ``device``: random
    weights (ImageNet trunks when ``config.pretrained``) — for training, tests and benchmarks. To run
    trained weights use :func:`load_model`."""
    if preset not in PRESETS:
        raise ConfigError(f"build_model('{preset}'): unknown preset; choose one of {', '.join(PRESETS)}")
    if config is None:
        config = ModelConfig(preset=preset)
    elif config.preset != preset:
        raise ConfigError(f"build_model('{preset}'): the given config is for preset '{config.preset}'")
    return XMem(config).to(device).eval()


def load_model(source: str | Path, device: str | torch.device = "cpu", config: ModelConfig | None = None) -> XMem:
    """Load trained weights into an XMem network in eval mode on ``device``.

    ``source``: an official ``.pth``/``.pt``, our ``.safetensors``, or a folder written by
    ``vos export --format onnx`` (which gives a ``vos.deploy.OnnxXMem``: the same stage methods, run
    by onnxruntime on the CPU; the ``export`` extra). ``config``: the architecture the file must fit
    (``None``: taken from the file — the sibling JSON, else the shapes). A preset name is refused
    (it has no trained weights): :func:`build_model` makes a randomly initialised network.
    """
    text = str(source)
    if text in PRESETS and not Path(text).exists():
        raise CheckpointError(
            f"load_model('{text}'): '{text}' is a preset, not a checkpoint — it has no trained weights; "
            f"use build_model('{text}') for a randomly initialised network"
        )
    path = Path(source)
    if path.is_dir():
        return _load_export(path, device, config)
    state, stored = read_checkpoint(path)
    if config is None:
        config = stored if stored is not None else infer_config(state, path)
    model = XMem(dataclasses.replace(config, pretrained=False))
    load_state(model, state, path)
    return model.to(device).eval()


def model_from(source: str | Path, device: str | torch.device = "cpu") -> tuple[XMem, bool]:
    """A checkpoint (:func:`load_model`) or, for a preset name, a random network (:func:`build_model`)
    → (network, untrained). For commands that accept both; callers must say when it is untrained."""
    text = str(source)
    if text in PRESETS and not Path(text).exists():
        return build_model(text, device=device), True
    return load_model(source, device), False


def _load_export(path: Path, device, config: ModelConfig | None):
    """An ONNX export folder → ``OnnxXMem`` (CPU), checked against ``config`` when one is given."""
    from vos.deploy.runtime import OnnxXMem, is_export_dir

    if not is_export_dir(path):
        raise CheckpointError(f"{path}: a folder, but not an ONNX export (no deploy.json); expected a checkpoint file")
    if torch.device(device).type != "cpu":
        raise CheckpointError(f"{path}: an ONNX export runs on the CPU (onnxruntime), not on {device}")
    model = OnnxXMem(path)
    # compared in JSON form: the manifest stores tuples as lists
    if config is not None and json.loads(json.dumps(config.architecture())) != model.architecture:
        raise CheckpointError(f"{path}: the export's architecture {model.architecture} differs from the config's")
    return model


def load_weights(model: nn.Module, path: str | Path) -> None:
    """Load the checkpoint at ``path`` into an existing ``model`` (strict, 4→5 channel surgery)."""
    state, _ = read_checkpoint(Path(path))
    load_state(model, state, Path(path))


def save_weights(model: nn.Module, path: str | Path) -> Path:
    """Write ``model``'s weights to ``path`` (``.safetensors``) and its config to the sibling ``.json``.

    Both files are written to temporaries and renamed into place only when both are complete, so a
    failure (a full disk) leaves neither a partial file nor a config without its weights. Returns
    the weights path.
    """
    path = Path(path)
    if path.suffix != ".safetensors":
        raise CheckpointError(f"{path}: weights are saved as .safetensors")
    from safetensors.torch import save_file

    model = _unwrap(model)
    config = getattr(model, "config", None)
    if not isinstance(config, ModelConfig):
        raise TypeError("save_weights needs an XMem model (with a ModelConfig in .config)")
    config_text = json.dumps(_config_dict(config), indent=2)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    from vos.output import atomic_write, io_error

    # nested: the config's temporary is renamed only after the weights are whole and in place, and
    # removed when they fail
    with atomic_write(path.with_suffix(".json")) as tmp_config:
        tmp_config.write_text(config_text + "\n", encoding="utf-8")
        with atomic_write(path) as tmp:
            try:
                save_file(tensors, str(tmp), metadata={"format": "pt", _CONFIG_METADATA_KEY: config_text})
            except Exception as exc:  # safetensors reports I/O failures (ENOSPC, EACCES) as SafetensorError
                if isinstance(exc, OSError):
                    raise
                raise io_error(_safetensors_os_error(exc), path) from None
    return path


def _safetensors_os_error(exc: Exception) -> OSError:
    """An OSError with the errno found in a SafetensorError's text (``Os { code: 28, ... }``)."""
    match = re.search(r"code: (\d+)", str(exc))
    code = int(match.group(1)) if match else 0
    return OSError(code, os.strerror(code) if code else str(exc).splitlines()[0])


def convert_checkpoint(src: str | Path, dst: str | Path) -> Path:
    """Convert an official XMem ``.pth`` (or any loadable checkpoint) to our ``.safetensors`` + JSON."""
    model = load_model(src)
    return save_weights(model, dst)


def read_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], ModelConfig | None]:
    """The state dict in ``path`` (wrappers and DDP/compile prefixes removed) and its stored config, if any."""
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    suffix = path.suffix.lower()
    if suffix in (".pth", ".pt"):
        return _read_pth(path), None
    if suffix == ".safetensors":
        return _read_safetensors(path)
    raise CheckpointError(f"{path}: unknown checkpoint format '{suffix}' (expected .pth, .pt or .safetensors)")


def infer_config(state: dict[str, torch.Tensor], source: str | Path = "<state dict>") -> ModelConfig:
    """The architecture of an XMem state dict, read from its tensor shapes."""

    def dim(key: str, axis: int = 0) -> int:
        if key not in state:
            raise CheckpointError(f"{source}: not a supported XMem checkpoint (no '{key}')")
        return int(state[key].shape[axis])

    if "key_encoder.res2.0.conv3.weight" in state:
        key_encoder = "resnet50"
    else:
        dim("key_encoder.res2.0.conv1.weight")  # present in both layouts; raises when absent
        key_encoder = "resnet18"
    arch = {
        "key_encoder": key_encoder,
        "key_dim": dim("key_proj.key_proj.weight"),
        "value_dim": dim("value_encoder.fuser.block2.conv2.weight"),
        "hidden_dim": dim("decoder.hidden_update.transform.weight") // 3,
        "decoder_dims": (
            dim("decoder.fuser.block2.conv2.weight"),
            dim("decoder.up_16_8.out_conv.conv2.weight"),
            dim("decoder.up_8_4.out_conv.conv2.weight"),
        ),
        "hidden_update_dim": dim("decoder.hidden_update.g16_conv.weight"),
    }
    preset = next((name for name, dims in PRESETS.items() if dims == arch), None)
    if preset is None:
        preset = "xmem" if key_encoder == "resnet50" else "small"
    try:
        return ModelConfig(preset=preset, **arch)
    except ConfigError as exc:
        raise CheckpointError(f"{source}: implausible dimensions ({exc})") from None


def load_state(model: nn.Module, state: dict[str, torch.Tensor], source: str | Path = "<state dict>") -> None:
    """Strictly load ``state`` into ``model``; CheckpointError names the keys that do not fit.

    A single-object value-encoder conv1 (4 input channels) gets a zero-weight 5th channel, so the
    "other objects" mask starts without effect.
    """
    model = _unwrap(model)
    expected = model.state_dict()
    state = dict(state)
    key = "value_encoder.conv1.weight"
    if key in state and key in expected and state[key].shape[1] == 4 and expected[key].shape[1] == 5:
        w = state[key]
        state[key] = torch.cat([w, w.new_zeros(w.shape[0], 1, *w.shape[2:])], 1)
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    misshaped = [
        f"{k} {tuple(state[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    if missing or unexpected or misshaped:
        parts = []
        for name, items in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", misshaped)):
            if items:
                more = f", … {len(items) - _SHOW} more" if len(items) > _SHOW else ""
                parts.append(f"{len(items)} {name} ({', '.join(items[:_SHOW])}{more})")
        raise CheckpointError(f"{source}: checkpoint does not fit the model: {'; '.join(parts)}")
    model.load_state_dict(state, strict=True)


def _pth_reason(exc: Exception) -> str:
    """Why torch.load refused a file, in one sentence. torch's own message for pickled objects
    suggests ``weights_only=False``, i.e. running the file's code; a weights file never needs that."""
    text = str(exc)
    if "weights_only" in text or "Unsupported global" in text or "WeightsUnpickler" in text:
        match = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
        what = f" ({match.group(1)})" if match else ""
        return f"it holds pickled Python objects{what}, not only tensors; it is not loaded, since that would run code from the file"
    if "zip" in text.lower() or "central directory" in text:
        return "not a valid torch zip file; truncated or corrupt"
    first = text.splitlines()[0] if text else type(exc).__name__
    return first if len(first) <= 200 else type(exc).__name__


def _read_pth(path: Path) -> dict[str, torch.Tensor]:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt zip, truncated file, disallowed pickle globals
        raise CheckpointError(f"{path}: cannot read as a PyTorch weights file ({_pth_reason(exc)})") from None
    if isinstance(obj, dict):
        for wrapper in _WRAPPER_KEYS:
            if isinstance(obj.get(wrapper), dict):
                obj = obj[wrapper]
                break
    if not isinstance(obj, dict) or not obj:
        raise CheckpointError(f"{path}: not a state dict (found {type(obj).__name__})")
    bad = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{path}: not a state dict (entry '{bad[0]}' is not a tensor)")
    return _strip_prefixes(obj)


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], ModelConfig | None]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            metadata = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(f"{path}: cannot read as safetensors ({reason[:200]})") from None
    json_path = path.with_suffix(".json")
    if json_path.is_file():
        config = _config_from_json(json_path.read_text(), json_path)
    elif _CONFIG_METADATA_KEY in metadata:
        config = _config_from_json(metadata[_CONFIG_METADATA_KEY], f"{path} (metadata)")
    else:
        config = None
    return _strip_prefixes(state), config


def _config_from_json(text: str, source: str | Path) -> ModelConfig:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{source}: not valid JSON (line {exc.lineno})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{source}: the model config must be a JSON object")
    known = {f.name for f in dataclasses.fields(ModelConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise CheckpointError(f"{source}: unknown model config key '{unknown[0]}'")
    if isinstance(data.get("decoder_dims"), list):
        data["decoder_dims"] = tuple(data["decoder_dims"])
    data["pretrained"] = False  # the weights come from the file
    try:
        return ModelConfig(**data)
    except ConfigError as exc:
        raise CheckpointError(f"{source}: {exc}") from None


def _config_dict(config: ModelConfig) -> dict:
    data = dataclasses.asdict(config)
    data["decoder_dims"] = list(data["decoder_dims"])
    return data


def _strip_prefixes(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    changed = True
    while changed:
        changed = False
        for prefix in _STRIP_PREFIXES:
            if state and all(k.startswith(prefix) for k in state):
                state = {k[len(prefix) :]: v for k, v in state.items()}
                changed = True
    return state


def _unwrap(model: nn.Module) -> nn.Module:
    """The XMem inside a torch.compile / DDP wrapper."""
    while True:
        inner = getattr(model, "_orig_mod", None)
        if not isinstance(inner, nn.Module):
            inner = getattr(model, "module", None)
        if not isinstance(inner, nn.Module):
            return model
        model = inner
