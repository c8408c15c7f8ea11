"""ONNX export: the exported stages run by onnxruntime in the same memory loop equal the PyTorch network."""

import json

import pytest
import torch

from typer.testing import CliRunner

from cli import app
from vos.data.io import list_frames, read_image, read_mask
from vos.errors import CheckpointError
from vos.memory.config import MemoryConfig
from vos.memory.core import InferenceCore
from vos.model.config import ModelConfig
from vos.model.network import XMem
from vos.model.weights import load_model, save_weights

pytest.importorskip("onnxscript")
pytest.importorskip("onnxruntime")

from vos.deploy import OnnxXMem  # noqa: E402

# fp32 graphs against fp32 PyTorch: per-stage differences are ~1e-5; through the memory loop (top-k
# reads, consolidation, sensory updates) they stay below this on every frame
PROB_TOLERANCE = 1e-3


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A small random network saved as a checkpoint and exported with `vos export`."""
    torch.manual_seed(0)
    config = ModelConfig(preset="small", hidden_dim=8, value_dim=32, decoder_dims=(32, 16, 16), hidden_update_dim=16)
    model = XMem(config).eval()
    weights = save_weights(model, tmp_path_factory.mktemp("weights") / "w.safetensors")
    out = tmp_path_factory.mktemp("export") / "onnx"
    result = CliRunner().invoke(app, ["export", str(weights), str(out)])
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "deploy.json").read_text())
    return model, out, manifest, weights


def _video(root):
    """14 frames (a synthetic video forth and back), its first mask, and a box mask of a new object."""
    folder = root / "JPEGImages" / "480p" / "synth0000"
    frames = [read_image(p) for p in list_frames(folder)]
    frames = frames + frames[::-1] + frames[:2]
    first = read_mask(root / "Annotations" / "480p" / "synth0000" / "00000.png").long()
    late = torch.zeros_like(first)
    late[8:30, 10:40] = 7  # an object that joins at frame 4
    return frames, first, late


def _run(model, frames, first, late, config):
    core = InferenceCore(model, config)
    outs = []
    for t, frame in enumerate(frames):
        mask, objects = (first, None) if t == 0 else (late, [7]) if t == 4 else (None, None)
        outs.append(core.step(frame, mask=mask, objects=objects))
    return outs, core.memory_stats()


def test_onnx_loop_equals_pytorch_through_consolidations(exported, synthetic_root):
    model, out, manifest, _ = exported
    assert manifest["opset"] == 18 and set(manifest["stages"]) == {"key_encoder", "value_encoder", "decoder"}
    frames, first, late = _video(synthetic_root)
    # every frame a memory frame, a small working memory: several consolidations into long-term memory;
    # deep updates not synchronised with memory frames, so both sensory-update paths run
    config = MemoryConfig(mem_every=1, max_mid_term_frames=4, min_mid_term_frames=2, num_prototypes=8, deep_update_every=3)
    ours, stats = _run(model, frames, first, late, config)
    onnx, onnx_stats = _run(OnnxXMem(out, threads=1), frames, first, late, config)
    assert stats == onnx_stats and stats["consolidations"] >= 3
    assert stats["objects"] == len(first.unique()) - 1 + 1  # the first mask's objects and the late one
    for t, (a, b) in enumerate(zip(ours, onnx)):
        assert a.shape == b.shape, t
        assert (a - b).abs().max().item() < PROB_TOLERANCE, t


def test_graphs_take_any_size_and_object_count(exported):
    """Dynamic height/width (multiples of 16) and object count: a size and N the export never saw."""
    model, out, _, _ = exported
    runtime = OnnxXMem(out, threads=1)
    image = torch.rand(1, 3, 48, 128)
    key, shrinkage, selection, features = runtime.encode_key(image)
    ref = model.encode_key(image)
    torch.testing.assert_close(key, ref[0], atol=1e-4, rtol=1e-4)
    sensory = torch.rand(1, 5, model.hidden_dim, 3, 8)
    masks = torch.rand(1, 5, 48, 128)
    value, new_sensory = runtime.encode_value(image, features[0], sensory, masks)
    ref_value, ref_sensory = model.encode_value(image, ref[3][0], sensory, masks)
    torch.testing.assert_close(value, ref_value, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(new_sensory, ref_sensory, atol=1e-4, rtol=1e-4)
    # without the deep update the sensory memory is returned unchanged, as the network does
    assert runtime.encode_value(image, features[0], sensory, masks, deep_update=False)[1] is sensory


def test_load_model_reads_an_export_folder(exported, tmp_path):
    _, out, _, _ = exported
    assert isinstance(load_model(out), OnnxXMem)
    with pytest.raises(CheckpointError, match="not an ONNX export"):
        load_model(tmp_path)
    with pytest.raises(CheckpointError, match="runs on the CPU"):
        load_model(out, device="cuda")


def test_segment_with_the_export_writes_the_same_masks(exported, synthetic_root, tmp_path):
    """`vos segment --weights EXPORT` gives the masks of `--weights CHECKPOINT`; export refuses to overwrite."""
    _, out, _, weights = exported
    frames = synthetic_root / "JPEGImages" / "480p" / "synth0000"
    mask = synthetic_root / "Annotations" / "480p" / "synth0000" / "00000.png"
    runner = CliRunner()
    for name, source in (("torch", weights), ("onnx", out)):
        result = runner.invoke(app, ["segment", str(frames), "--mask", str(mask), "--weights", str(source),
                                     "--out", str(tmp_path / name), "--size", "-1", "--device", "cpu"])
        assert result.exit_code == 0, result.output
    pngs = sorted(p.name for p in (tmp_path / "torch").glob("*.png"))
    assert pngs and pngs == sorted(p.name for p in (tmp_path / "onnx").glob("*.png"))
    for name in pngs:
        assert (read_mask(tmp_path / "torch" / name) == read_mask(tmp_path / "onnx" / name)).all(), name
    again = runner.invoke(app, ["export", str(weights), str(out)])
    assert again.exit_code == 1 and again.output.count("error:") == 1 and "--overwrite" in again.output
