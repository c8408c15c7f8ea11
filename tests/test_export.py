"""ONNX export: the exported stages run by onnxruntime in the same memory loop equal the PyTorch network."""

import json

import pytest
import torch

from vos.data.io import list_frames, read_image, read_mask
from vos.errors import CheckpointError
from vos.memory.config import MemoryConfig
from vos.memory.core import InferenceCore
from vos.model.config import ModelConfig
from vos.model.network import XMem
from vos.model.weights import load_model

pytest.importorskip("onnxscript")
pytest.importorskip("onnxruntime")

from vos.deploy import OnnxXMem, export_onnx  # noqa: E402

# fp32 graphs against fp32 PyTorch: per-stage differences are ~1e-5; through the memory loop (top-k
# reads, consolidation, sensory updates) they stay below this on every frame
PROB_TOLERANCE = 1e-3


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    torch.manual_seed(0)
    config = ModelConfig(preset="small", hidden_dim=8, value_dim=32, decoder_dims=(32, 16, 16), hidden_update_dim=16)
    model = XMem(config).eval()
    out = tmp_path_factory.mktemp("export")
    manifest = export_onnx(model, out, source="random small")
    return model, out, manifest


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
    model, out, manifest = exported
    assert manifest["opset"] == 18 and set(manifest["stages"]) == {"key_encoder", "value_encoder", "decoder"}
    assert json.loads((out / "deploy.json").read_text()) == manifest
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
    model, out, _ = exported
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
    _, out, _ = exported
    assert isinstance(load_model(out), OnnxXMem)
    with pytest.raises(CheckpointError, match="not an ONNX export"):
        load_model(tmp_path)
    with pytest.raises(CheckpointError, match="runs on the CPU"):
        load_model(out, device="cuda")
