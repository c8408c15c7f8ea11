"""Weights I/O: official .pth layout (strict), 4→5 channel surgery, mismatch messages, safetensors round trip,
ImageNet initialisation (with the download replaced)."""

from __future__ import annotations

import json
import re
import urllib.error
from pathlib import Path

import pytest
import torch

import vos.model.resnet as resnet
from vos.errors import CheckpointError, ConfigError
from vos.model import ModelConfig, XMem, build_model, convert_checkpoint, infer_config, load_model, load_weights, model_from, save_weights

# The official key list is committed beside the tests (copied from the shared reference).
KEYS_FILE = Path(__file__).parent / "data" / "xmem_state_dict_keys.txt"


def official_like_state_dict(conv1_channels: int = 5) -> dict[str, torch.Tensor]:
    """Random tensors with exactly the official checkpoint's keys and shapes (from the key list)."""
    gen = torch.Generator().manual_seed(0)
    state = {}
    for line in KEYS_FILE.read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        key, shape_text = line.split(" ", 1)
        shape = tuple(int(d) for d in re.findall(r"\d+", shape_text))
        if key == "value_encoder.conv1.weight":
            shape = (64, conv1_channels, 7, 7)
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(1234, dtype=torch.long)
        elif key.endswith("running_var"):
            state[key] = torch.rand(shape, generator=gen) + 0.5
        else:
            state[key] = torch.randn(shape, generator=gen)
    return state


def small_state(seed: int = 0) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return {k: v.clone() for k, v in XMem(ModelConfig(preset="small")).state_dict().items()}


def assert_same_state(model: XMem, state: dict[str, torch.Tensor]) -> None:
    ours = model.state_dict()
    assert set(ours) == set(state)
    for key, value in state.items():
        assert torch.equal(ours[key], value), key


def test_official_checkpoint_loads_strictly_with_inferred_dims(tmp_path):
    state = official_like_state_dict()
    path = tmp_path / "XMem.pth"
    torch.save(state, path)
    model = load_model(path)
    assert not model.training
    cfg = model.config
    assert (cfg.preset, cfg.key_encoder, cfg.key_dim, cfg.value_dim, cfg.hidden_dim) == ("xmem", "resnet50", 64, 512, 64)
    assert_same_state(model, state)


def test_stage0_four_channel_conv1_gets_zero_fifth_channel(tmp_path):
    state = small_state()
    four = state["value_encoder.conv1.weight"][:, :4].clone()
    state["value_encoder.conv1.weight"] = four
    path = tmp_path / "s0.pth"
    torch.save({"network": {f"module.{k}": v for k, v in state.items()}}, path)  # XMem's training wrapper + DDP
    model = load_model(path)
    conv1 = model.value_encoder.conv1.weight
    assert conv1.shape == (64, 5, 7, 7)
    assert torch.equal(conv1[:, :4], four)
    assert bool((conv1[:, 4] == 0).all())


def test_mismatching_checkpoint_names_keys(tmp_path):
    state = small_state()
    del state["decoder.pred.bias"]
    state["decoder.extra.weight"] = torch.zeros(3)
    state["key_proj.d_proj.weight"] = torch.zeros(2, 256, 3, 3)
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError) as info:
        load_model(path, config=ModelConfig(preset="small"))
    message = str(info.value)
    assert "\n" not in message and "bad.pth" in message
    assert "1 missing (decoder.pred.bias)" in message
    assert "1 unexpected (decoder.extra.weight)" in message
    assert "key_proj.d_proj.weight (2, 256, 3, 3) vs model (1, 256, 3, 3)" in message


def test_wrong_architecture_lists_first_keys_with_counts(tmp_path):
    path = tmp_path / "small.pth"
    torch.save(small_state(), path)
    with pytest.raises(CheckpointError, match=r"\d+ missing \(key_encoder\.res2\.0\.conv3\.weight, .*more\).*mis-shaped"):
        load_model(path, config=ModelConfig(preset="xmem"))
    torch.save({"a": torch.zeros(1)}, path)
    with pytest.raises(CheckpointError, match="not a supported XMem checkpoint"):
        load_model(path)


def test_unreadable_checkpoints_raise_checkpoint_error(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_model(tmp_path / "missing.pth")
    odd = tmp_path / "weights.bin"
    odd.write_bytes(b"x")
    with pytest.raises(CheckpointError, match="unknown checkpoint format"):
        load_model(odd)
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"not a zip file at all")
    with pytest.raises(CheckpointError, match="cannot read"):
        load_model(corrupt)
    bad_st = tmp_path / "corrupt.safetensors"
    bad_st.write_bytes(b"\x00" * 16)
    with pytest.raises(CheckpointError, match="cannot read as safetensors"):
        load_model(bad_st)


def test_pickled_objects_are_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"network": small_state(), "extra": Path("x")}, path)  # a non-tensor global
    with pytest.raises(CheckpointError, match="cannot read"):
        load_model(path)


def test_safetensors_round_trip_and_conversion(tmp_path):
    torch.manual_seed(3)
    model = XMem(ModelConfig(preset="small", value_dim=96))
    out = save_weights(model, tmp_path / "ckpt" / "model.safetensors")
    assert out == tmp_path / "ckpt" / "model.safetensors"
    assert sorted(p.name for p in out.parent.iterdir()) == ["model.json", "model.safetensors"]
    assert json.loads(out.with_suffix(".json").read_text())["value_dim"] == 96
    loaded = load_model(out)
    assert loaded.config == model.config
    assert_same_state(loaded, model.state_dict())
    # without the JSON, the copy in the safetensors metadata is used
    out.with_suffix(".json").unlink()
    assert load_model(out).config.value_dim == 96
    # official .pth → our format
    pth = tmp_path / "official.pth"
    state = small_state(seed=5)
    torch.save(state, pth)
    dst = convert_checkpoint(pth, tmp_path / "converted.safetensors")
    assert_same_state(load_model(dst), state)
    target = XMem(ModelConfig(preset="small"))
    load_weights(target, dst)
    assert_same_state(target, state)
    with pytest.raises(CheckpointError, match="safetensors"):
        save_weights(model, tmp_path / "model.pth")
    # a torch.compile wrapper is saved under the plain names
    wrapped = save_weights(torch.compile(model), tmp_path / "compiled.safetensors")
    assert_same_state(load_model(wrapped), model.state_dict())


def test_bad_sidecar_json(tmp_path):
    out = save_weights(XMem(ModelConfig(preset="small")), tmp_path / "m.safetensors")
    out.with_suffix(".json").write_text(json.dumps({"preset": "small", "colour": "red"}))
    with pytest.raises(CheckpointError, match="unknown model config key 'colour'"):
        load_model(out)


def test_infer_config_both_presets():
    assert infer_config(small_state()) == ModelConfig(preset="small")
    assert infer_config(official_like_state_dict()) == ModelConfig(preset="xmem")


def test_build_model_makes_presets_and_load_model_refuses_them():
    model = build_model("small")
    assert isinstance(model, XMem) and not model.training and model.config == ModelConfig()
    custom = build_model("small", config=ModelConfig(preset="small", hidden_dim=16))
    assert custom.hidden_dim == 16
    with pytest.raises(ConfigError, match="preset 'xmem'"):
        build_model("small", config=ModelConfig(preset="xmem"))
    with pytest.raises(ConfigError, match="unknown preset"):
        build_model("tiny")
    # a preset name has no trained weights: loading one is an error that names build_model
    with pytest.raises(CheckpointError, match=r"build_model\('xmem'\)"):
        load_model("xmem")
    untrained, flag = model_from("small")
    assert flag and isinstance(untrained, XMem)


def _torchvision_trunk_state(arch: str) -> dict[str, torch.Tensor]:
    import torchvision

    torch.manual_seed(11)
    net = getattr(torchvision.models, arch)(weights=None)
    return {k: v for k, v in net.state_dict().items() if "num_batches_tracked" not in k}


def test_imagenet_initialisation_on_request(monkeypatch):
    calls = []
    sources = {arch: _torchvision_trunk_state(arch) for arch in ("resnet18",)}

    def fake_fetch(arch):
        calls.append(arch)
        return sources[arch]

    monkeypatch.setattr(resnet, "fetch_imagenet_state_dict", fake_fetch)
    XMem(ModelConfig(preset="small"))
    assert calls == []  # random init never fetches
    model = XMem(ModelConfig(preset="small", pretrained=True))
    assert calls == ["resnet18", "resnet18"]
    src = sources["resnet18"]
    assert torch.equal(model.key_encoder.conv1.weight, src["conv1.weight"])
    assert torch.equal(model.key_encoder.res2[1].conv2.weight, src["layer1.1.conv2.weight"])
    assert torch.equal(model.key_encoder.layer3[0].bn1.running_var, src["layer3.0.bn1.running_var"])
    assert torch.equal(model.value_encoder.conv1.weight[:, :3], src["conv1.weight"])
    assert model.value_encoder.conv1.weight[:, 3:].abs().sum() > 0  # mask channels: orthogonal init
    assert torch.equal(model.value_encoder.layer2[0].downsample[0].weight, src["layer2.0.downsample.0.weight"])


def test_imagenet_download_failure_is_a_clear_error(monkeypatch):
    import torchvision.models._api as api

    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(api, "load_state_dict_from_url", offline)
    with pytest.raises(CheckpointError, match=r"cannot get ImageNet weights for resnet18 .*model.pretrained=false"):
        XMem(ModelConfig(preset="small", pretrained=True))
