"""torch.compile of inference and training: compiled = eager, and recompilations stay bounded.

The whole-video tests compile with ``aot_eager`` (dynamo capture + AOTAutograd functionalisation,
the graphs the inductor backend would be given, without its C++ code generation, which takes minutes
on two cores); the memory read — the one region with a dynamic size — compiles with inductor.
"""

from __future__ import annotations

import pytest
import torch
import torch._dynamo
from torch._dynamo.backends.registry import lookup_backend

from vos.bench.xmem_emulation import xmem_computation
from vos.memory import InferenceCore, MemoryConfig
from vos.model.memory_read import memory_read
from vos.memory.store import compiled_read
from vos.model import ModelConfig, XMem
from vos.model.compile import CompiledStages, compiled_stages, unwrap
from vos.train.recurrence import ClipRecurrence

H, W = 48, 64  # 3×4 = 12 memory elements per frame

# Small enough that the working memory consolidates every other memory frame and the long-term
# memory reaches its cap (and is pruned) within a few frames.
TINY_MEMORY = dict(
    mem_every=2, max_mid_term_frames=3, min_mid_term_frames=2, num_prototypes=4, max_long_term_elements=12, top_k=5
)


def _tiny_model() -> XMem:
    torch.manual_seed(0)
    cfg = ModelConfig(preset="small", hidden_dim=8, value_dim=32, decoder_dims=(32, 16, 16), hidden_update_dim=16)
    return XMem(cfg).eval()


class CountingBackend:
    """A torch.compile backend that records every graph dynamo hands it, then runs aot_eager."""

    def __init__(self) -> None:
        self.graphs: list[str] = []
        self._inner = lookup_backend("aot_eager")

    def __call__(self, gm: torch.fx.GraphModule, example_inputs):
        self.graphs.append(gm.code)
        return self._inner(gm, example_inputs)


def _video(frames: int):
    """A textured frame drifting sideways, with two objects given on frame 0."""
    g = torch.Generator().manual_seed(1)
    image = torch.rand(3, H, W + frames * 3, generator=g)
    mask = torch.zeros(H, W, dtype=torch.uint8)
    mask[6:22, 6:30] = 1
    mask[26:44, 30:58] = 2
    for t in range(frames):
        yield image[:, :, 3 * t : 3 * t + W], (mask if t == 0 else None)


@pytest.mark.slow
def test_compiled_inference_equals_eager_and_recompiles_stay_bounded():
    torch._dynamo.reset()
    model = _tiny_model().to(memory_format=torch.channels_last)  # already channels-last: the core uses it as is
    backend = CountingBackend()
    cfg = MemoryConfig(**TINY_MEMORY)
    compiled = InferenceCore(model, cfg, compile=backend, profile=True)
    eager = InferenceCore(model, cfg, compile=False)
    assert isinstance(compiled.model, CompiledStages) and unwrap(compiled.model) is model
    assert eager.model is model

    graphs_after = []
    long_term = []
    for image, mask in _video(16):
        out_c = compiled.step(image, mask)
        out_e = eager.step(image, mask)
        torch.testing.assert_close(out_c, out_e, rtol=1e-4, atol=1e-5)
        graphs_after.append(len(backend.graphs))
        long_term.append(compiled.memory_stats()["long_term_elements"])

    stats = compiled.memory_stats()
    # the memory grew, consolidated and was pruned at its cap …
    assert stats["consolidations"] >= 5 and max(long_term) == TINY_MEMORY["max_long_term_elements"]
    assert long_term.index(max(long_term)) < 10
    # … yet every graph was made in the first frames, and there are few of them: encode_key ×2
    # (memory / other frames), encode_value, decode ×2 (with / without its sensory update), the read
    # (static, then once more with its memory size and strides symbolic)
    assert graphs_after[-1] <= 8, graphs_after
    assert graphs_after[8] == graphs_after[-1]
    assert set(compiled.stage_times) == set(InferenceCore.STAGES) and all(t > 0 for t in compiled.stage_times.values())


@pytest.mark.slow
def test_compiled_memory_read_inductor_dynamic_size():
    torch._dynamo.reset()
    g = torch.Generator().manual_seed(2)
    qk, qe = torch.randn(1, 16, 20, generator=g), torch.rand(1, 16, 20, generator=g)
    for n in (40, 57, 90):  # three memory sizes: one static graph, then one symbolic graph for the rest
        buf_k, buf_v = torch.randn(1, 16, 128, generator=g), torch.randn(1, 128, 24, generator=g)
        mk, mv = buf_k[:, :, :n], buf_v[:, :n].transpose(1, 2)  # views of a larger buffer, as the memory's
        ms = torch.rand(1, 1, n, generator=g) + 1
        for mode in ("sparse", "dense"):
            want = memory_read(mk, ms, qk, qe, mv, top_k=5, mode=mode, backend="torch", need_usage=True)
            got = compiled_read(mk, ms, qk, qe, mv, 5, mode, True, backend="inductor")
            torch.testing.assert_close(got[0], want[0], rtol=1e-4, atol=1e-5)
            torch.testing.assert_close(got[1], want[1], rtol=1e-4, atol=1e-5)


def test_per_object_image_is_xmems_computation_with_equal_outputs():
    ours = _tiny_model()
    xmem = xmem_computation(ours)
    assert type(xmem.value_encoder) is not type(ours.value_encoder)  # the copy computes per object
    torch.manual_seed(3)
    image, masks = torch.randn(1, 3, H, W), torch.rand(1, 3, H, W)
    sensory = torch.randn(1, 3, 8, H // 16, W // 16)
    readout = torch.randn(1, 3, 32, H // 16, W // 16)
    with torch.inference_mode():
        _, _, _, feats = ours.encode_key(image)
        for a, b in zip(ours.encode_value(image, feats[0], sensory, masks),
                        xmem.encode_value(image, feats[0], sensory, masks)):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
        for a, b in zip(ours.decode(feats, sensory, readout), xmem.decode(feats, sensory, readout)):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    # the same video through the whole memory: ours (sparse read) vs XMem's algorithm (dense read)
    cfg = MemoryConfig(**TINY_MEMORY)
    a = InferenceCore(ours, cfg, compile=False)
    b = InferenceCore(xmem, MemoryConfig(**TINY_MEMORY, read_mode="dense"), compile=False)
    for image, mask in _video(10):
        torch.testing.assert_close(a.step(image, mask), b.step(image, mask), rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_compiled_training_step_equals_eager():
    torch._dynamo.reset()
    model = _tiny_model().train()
    torch.manual_seed(4)
    rgb = torch.rand(2, 3, 3, H, W)
    first = (torch.rand(2, 2, H, W) > 0.5).float()
    valid = torch.tensor([[True, True], [True, False]])
    # deep_update_prob 1: the random deep-update draw is always true, so both runs take the same path
    recurrence = ClipRecurrence(model, num_ref_frames=3, deep_update_prob=1.0, backend="torch")
    backend = CountingBackend()
    compiled = torch.compile(recurrence, backend=backend)

    def step(runner):
        model.zero_grad(set_to_none=True)
        out = runner(rgb, first, valid)
        loss = out["agg_logits"].float().logsumexp(2).mean() + out["logits"].sigmoid().mean()
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    loss_e, grads_e = step(recurrence)
    loss_c, grads_c = step(compiled)
    assert backend.graphs, "the training step did not go through the compiler"
    torch.testing.assert_close(loss_c, loss_e, rtol=1e-5, atol=1e-6)
    assert grads_c.keys() == grads_e.keys() and len(grads_e) > 100
    for name in grads_e:
        torch.testing.assert_close(grads_c[name], grads_e[name], rtol=1e-4, atol=1e-6, msg=name)


def test_compiled_stages_proxy_forwards_the_network():
    model = _tiny_model()
    proxy = compiled_stages(model, backend="eager")
    assert compiled_stages(proxy) is proxy and unwrap(proxy) is model
    assert proxy.hidden_dim == model.hidden_dim and next(proxy.parameters()) is next(model.parameters())
    assert proxy.aggregate is model.aggregate  # a staticmethod: the same function
    with pytest.raises(AttributeError):
        proxy.no_such_attribute  # noqa: B018


def test_read_memory_stays_fp32_under_autocast():
    model = _tiny_model()
    g = torch.Generator().manual_seed(5)
    mk, qk = torch.randn(1, 64, 300, generator=g), torch.randn(1, 64, 200, generator=g)
    ms, qe = torch.rand(1, 1, 300, generator=g) + 1, torch.rand(1, 64, 200, generator=g)
    mv = torch.randn(1, 32, 300, generator=g)
    want, _ = model.read_memory(qk, qe, mk, ms, mv, top_k=None, backend="torch")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got, _ = model.read_memory(qk, qe, mk, ms, mv, top_k=None, backend="torch")
    torch.testing.assert_close(got, want)


def test_channels_last_and_amp_inference():
    cfg = MemoryConfig(**TINY_MEMORY)
    plain, fast, half = _tiny_model(), _tiny_model(), _tiny_model()
    a = InferenceCore(plain, cfg, compile=False, channels_last=False, amp=False)
    b = InferenceCore(fast, cfg, compile=False, channels_last=True, amp=False)
    c = InferenceCore(half, cfg, compile=False, channels_last=True, amp=True)  # bf16 autocast on the CPU
    assert plain.key_encoder.conv1.weight.is_contiguous()
    # the caller's network is left as it was; the core runs a channels-last copy
    assert fast.key_encoder.conv1.weight.is_contiguous() and b.model is not fast
    assert b.model.key_encoder.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    for image, mask in _video(6):
        pa, pb, pc = a.step(image, mask), b.step(image, mask), c.step(image, mask)
        torch.testing.assert_close(pb, pa, rtol=1e-4, atol=1e-4)
        assert pc.dtype == torch.float32 and torch.allclose(pc.sum(0), torch.ones(()), atol=1e-2)
        # bf16 network stages, fp32 read: close to fp32 (the random network's argmax is near ties)
        torch.testing.assert_close(pc, pa, rtol=0, atol=0.03)
    assert c.memory.groups[0].view().key.dtype == torch.bfloat16  # the memory holds what autocast made
