"""Triton memory read (kernels/memory_read.py) against the PyTorch reference (vos/model/memory_read.py).

Runs on the CPU through Triton's interpreter (tests/conftest.py sets TRITON_INTERPRET=1 before
triton is imported); shapes and tiles are tiny because the interpreter executes every program.
"""

import pytest
import torch

pytest.importorskip("triton")

from vos.kernels.memory_read import Blocks, _topk_select, memory_read_triton  # noqa: E402
from vos.model.memory_read import memory_read, similarity  # noqa: E402

# 16 is the smallest tile tl.dot accepts; with these, N, HW and C below span several tiles.
SMALL = Blocks(query=16, mem=16, channels=16)


def _inputs(b=2, ck=8, n=40, hw=12, c=6, dtype=torch.float32):
    mk = torch.randn(b, ck, n, dtype=dtype)
    ms = torch.rand(b, 1, n, dtype=dtype) * 3 + 1
    qk = torch.randn(b, ck, hw, dtype=dtype)
    qe = torch.rand(b, ck, hw, dtype=dtype)
    mv = torch.randn(b, c, n, dtype=dtype)
    return mk, ms, qk, qe, mv


def _reference(*args, top_k, need_usage=True):
    return memory_read(*args, top_k=top_k, backend="torch", need_usage=need_usage)


def _assert_read_close(got, ref, tol=1e-5):
    torch.testing.assert_close(got[0], ref[0], rtol=tol, atol=tol)
    if ref[1] is None:
        assert got[1] is None
    else:
        torch.testing.assert_close(got[1], ref[1], rtol=tol, atol=tol)


# --------------------------------------------------------------------------------- top-k (inference)
@pytest.mark.parametrize(
    "n, hw, k, splits",
    [
        (40, 12, 3, None),  # N not a multiple of the 16-element tile
        (37, 17, 7, 2),  # N split in two, HW over two query blocks
        (40, 12, 30, None),  # k = 30 padded to 32 (the tile grows to 32)
        (100, 1, 5, 4),  # one query pixel, four splits, one of them empty
    ],
)
def test_topk_read_matches_reference(n, hw, k, splits):
    # 3 objects × 6 channels = 18 channels: two channel blocks.
    args = _inputs(n=n, hw=hw, c=18)
    blocks = Blocks(query=16, mem=16, channels=16, splits=splits)
    got = memory_read_triton(*args, top_k=k, need_usage=True, blocks=blocks)
    _assert_read_close(got, _reference(*args, top_k=k))
    # Every query pixel's weights sum to one.
    torch.testing.assert_close(got[1].sum(1), torch.full((2,), float(hw)))


@pytest.mark.parametrize("k, splits", [(1, None), (5, 2), (30, None)])
def test_topk_selects_the_reference_indices_in_order(k, splits):
    mk, ms, qk, qe, _ = _inputs(n=45, hw=20)
    idx, weights, usage, k_used = _topk_select(mk, ms, qk, qe, k, False, Blocks(16, 16, 16, splits=splits))
    assert k_used == k and usage is None
    sim = similarity(mk, ms, qk, qe).transpose(1, 2)  # B×HW×N
    ref_val, ref_idx = torch.topk(sim, k=k, dim=2)  # sorted, most similar first
    assert torch.equal(idx[..., :k].long(), ref_idx)
    torch.testing.assert_close(weights[..., :k], torch.softmax(ref_val, dim=2), rtol=1e-5, atol=1e-6)
    assert (weights[..., k:] == 0).all()


@pytest.mark.parametrize("n", [1, 5, 30])
def test_fewer_elements_than_k_is_the_full_softmax(n):
    args = _inputs(n=n, hw=5)
    got = memory_read_triton(*args, top_k=30, need_usage=True, blocks=SMALL)
    _assert_read_close(got, _reference(*args, top_k=None))


def test_element_major_values_and_missing_shrinkage_selection():
    """Values as the inference memory passes them (a B×N×C buffer, transposed), ms/qe None."""
    mk, _, qk, _, mv = _inputs(c=12)
    mv = mv.transpose(1, 2).contiguous().transpose(1, 2)
    got = memory_read_triton(mk, None, qk, None, mv, top_k=4, need_usage=True, blocks=SMALL)
    _assert_read_close(got, _reference(mk, None, qk, None, mv, top_k=4))


def test_topk_extreme_similarities_stay_finite():
    mk, ms, qk, qe, mv = _inputs(b=1, n=10, hw=6)
    mk = mk * 300.0  # similarities around −1e6
    readout, usage = memory_read_triton(mk, ms, qk, qe, mv, top_k=3, need_usage=True, blocks=SMALL)
    assert torch.isfinite(readout).all() and torch.isfinite(usage).all()
    nearest = similarity(mk, ms, qk, qe).argmax(dim=1)
    torch.testing.assert_close(readout[0], mv[0][:, nearest[0]], rtol=1e-5, atol=1e-5)


def test_topk_bf16():
    args = tuple(t.bfloat16() for t in _inputs())
    readout, usage = memory_read_triton(*args, top_k=3, need_usage=True, blocks=SMALL)
    ref_readout, ref_usage = _reference(*args, top_k=3)
    assert readout.dtype == torch.bfloat16 and usage.dtype == torch.float32
    # Same fp32 similarities from the same bf16 inputs; the readouts differ by bf16 rounding only.
    torch.testing.assert_close(readout.float(), ref_readout.float(), rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(usage, ref_usage, rtol=1e-5, atol=1e-5)


def test_topk_read_without_usage():
    args = _inputs()
    readout, usage = memory_read_triton(*args, top_k=3, blocks=SMALL)
    assert usage is None
    torch.testing.assert_close(readout, _reference(*args, top_k=3, need_usage=False)[0], rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------ full softmax (training)
def test_full_softmax_forward_and_gradients_match_reference():
    """N, HW and C each span two tiles; gradients for all five inputs, through readout and usage."""
    args = _inputs(n=37, hw=20, c=18)
    leaves_t = [t.clone().requires_grad_() for t in args]
    leaves_r = [t.clone().requires_grad_() for t in args]
    got = memory_read_triton(*leaves_t, top_k=None, need_usage=True, blocks=SMALL)
    ref = _reference(*leaves_r, top_k=None)
    _assert_read_close(tuple(x.detach() for x in got), tuple(x.detach() for x in ref))
    d_readout, d_usage = torch.randn_like(ref[0]), torch.randn_like(ref[1])
    torch.autograd.backward(got, (d_readout, d_usage))
    torch.autograd.backward(ref, (d_readout, d_usage))
    for name, a, b in zip(("mk", "ms", "qk", "qe", "mv"), leaves_t, leaves_r):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-4, msg=lambda m, n=name: f"d{n}: {m}")


@pytest.mark.parametrize("with_optional", [True, False])
def test_full_softmax_gradcheck(with_optional):
    mk, ms, qk, qe, mv = (t.requires_grad_() for t in _inputs(b=1, ck=3, n=5, hw=4, c=2, dtype=torch.float64))
    if not with_optional:
        ms = qe = None

    def read(mk, ms, qk, qe, mv):
        return memory_read_triton(mk, ms, qk, qe, mv, top_k=None, need_usage=True, blocks=SMALL)

    assert torch.autograd.gradcheck(read, (mk, ms, qk, qe, mv))


def test_full_softmax_readout_only_gradient():
    """Without need_usage (the training read) the backward takes the readout's gradient alone."""
    args = _inputs(b=1, n=20, hw=18, c=5)
    leaves_t = [t.clone().requires_grad_() for t in args]
    leaves_r = [t.clone().requires_grad_() for t in args]
    readout, usage = memory_read_triton(*leaves_t, top_k=None, blocks=SMALL)
    assert usage is None
    readout.square().sum().backward()
    _reference(*leaves_r, top_k=None, need_usage=False)[0].square().sum().backward()
    for a, b in zip(leaves_t, leaves_r):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-4)


def test_full_softmax_bf16():
    leaves = [t.bfloat16().requires_grad_() for t in _inputs(n=20, hw=10)]
    readout, usage = memory_read_triton(*leaves, top_k=None, need_usage=True, blocks=SMALL)
    ref_readout, ref_usage = _reference(*(t.detach().float() for t in leaves), top_k=None)
    assert readout.dtype == torch.bfloat16
    torch.testing.assert_close(readout.float(), ref_readout, rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(usage, ref_usage, rtol=1e-4, atol=1e-4)
    readout.float().sum().backward()
    assert all(t.grad is not None and t.grad.dtype == torch.bfloat16 for t in leaves)


def test_default_tiles_match_reference():
    """The default tile sizes (what runs on a GPU; chosen by vos.bench.cross_compile) at shapes that
    span several of their tiles: top-k read with usage, and the full read forward and backward."""
    from dataclasses import replace

    from vos.kernels.memory_read import DEFAULT_FULL_BLOCKS, DEFAULT_TOPK_BLOCKS

    # N = 80 > 2 element tiles of 32, HW = 40 > one query tile, 70 channels > one channel tile of 64;
    # CK = 64 as in XMem.
    args = _inputs(b=1, ck=64, n=80, hw=40, c=70)
    got = memory_read_triton(*args, top_k=30, need_usage=True)  # blocks=None: the defaults
    _assert_read_close(got, _reference(*args, top_k=30))
    assert DEFAULT_TOPK_BLOCKS.mem < 80 and DEFAULT_TOPK_BLOCKS.query < 40 < 80
    # The default tiles with the selection split over N as on a GPU (the CPU counts one SM).
    args = _inputs(b=1, ck=64, n=200, hw=40, c=70)
    got = memory_read_triton(*args, top_k=30, need_usage=True, blocks=replace(DEFAULT_TOPK_BLOCKS, splits=4))
    _assert_read_close(got, _reference(*args, top_k=30))

    leaves_t = [t.clone().requires_grad_() for t in args]
    leaves_r = [t.clone().requires_grad_() for t in args]
    readout, _ = memory_read_triton(*leaves_t, top_k=None)
    ref, _ = _reference(*leaves_r, top_k=None, need_usage=False)
    torch.testing.assert_close(readout, ref, rtol=1e-5, atol=1e-5)
    d_readout = torch.randn_like(ref)
    readout.backward(d_readout)
    ref.backward(d_readout)
    for a, b in zip(leaves_t, leaves_r):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-4)
    assert DEFAULT_FULL_BLOCKS.query < 40 and DEFAULT_FULL_BLOCKS.mem < 80 and DEFAULT_FULL_BLOCKS.channels < 70


def test_large_k_with_smaller_query_tiles_matches_reference():
    """k = 50 (K_PAD 64): the selection halves its query rows per program (32 → 16)."""
    from vos.kernels.memory_read import DEFAULT_TOPK_BLOCKS, topk_tiles

    args = _inputs(b=1, ck=16, n=150, hw=40, c=20)
    assert topk_tiles(150, 40, 1, 50, DEFAULT_TOPK_BLOCKS, sm_count=1).block_q == 16
    _assert_read_close(memory_read_triton(*args, top_k=50, need_usage=True), _reference(*args, top_k=50))


# ------------------------------------------------------------------------------------------ dispatch
@pytest.fixture
def real_kernel(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    yield


def test_dispatch_runs_the_triton_kernel(real_kernel, monkeypatch):
    calls = []
    import vos.kernels.memory_read as kmod

    original = kmod._topk_read

    def spy(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(kmod, "_topk_read", spy)
    args = _inputs()
    got = memory_read(*args, top_k=3, backend="triton", need_usage=True)
    assert calls == [1]
    _assert_read_close(got, _reference(*args, top_k=3))


def test_differentiable_topk_read_uses_the_reference(real_kernel):
    """The top-k kernels have no backward: a read that needs gradients takes the PyTorch path."""
    args = _inputs()
    leaves_t = [t.clone().requires_grad_() for t in args]
    leaves_r = [t.clone().requires_grad_() for t in args]
    memory_read(*leaves_t, top_k=3, backend="triton")[0].sum().backward()
    _reference(*leaves_r, top_k=3, need_usage=False)[0].sum().backward()
    for a, b in zip(leaves_t, leaves_r):
        torch.testing.assert_close(a.grad, b.grad)


def test_topk_beyond_the_register_budget_uses_the_reference(real_kernel, monkeypatch):
    import vos.kernels.memory_read as kmod

    monkeypatch.setattr(kmod, "MAX_TOP_K", 2)
    monkeypatch.setattr(kmod, "_topk_read", lambda *a, **k: pytest.fail("top-k kernels ran for k > MAX_TOP_K"))
    args = _inputs()
    got = memory_read(*args, top_k=3, backend="triton", need_usage=True)  # the dispatch takes the reference
    _assert_read_close(got, _reference(*args, top_k=3))
    with pytest.raises(ValueError, match="MAX_TOP_K"):  # called directly, the kernel refuses
        memory_read_triton(*args, top_k=3)
    leaves = [t.clone().requires_grad_() for t in args]
    with pytest.raises(ValueError, match="no backward"):
        memory_read_triton(*leaves, top_k=2)


def test_inference_memory_reads_through_the_kernel(real_kernel):
    """The inference memory (two object groups, consolidation into long-term memory, usage
    counting) gives the same readouts with backend "triton" as with "torch"."""
    from vos.memory.config import MemoryConfig
    from vos.memory.store import InferenceMemory

    ck, cv, h, w = 4, 3, 3, 3
    frames = [
        (torch.randn(1, ck, h, w), torch.rand(1, 1, h, w) + 1, torch.rand(1, ck, h, w), torch.randn(1, 3, cv, h, w))
        for _ in range(6)
    ]
    queries = [(torch.randn(1, ck, h, w), torch.rand(1, ck, h, w)) for _ in range(6)]
    reads = {}
    for backend in ("torch", "triton"):
        cfg = MemoryConfig(
            top_k=4, max_mid_term_frames=3, min_mid_term_frames=2, num_prototypes=3,
            max_long_term_elements=8, backend=backend,
        )
        memory = InferenceMemory(cfg)
        memory.add_objects([1, 2], 2, (h, w), torch.zeros(1))
        memory.add_objects([3], 2, (h, w), torch.zeros(1))
        out = []
        with torch.inference_mode():
            for (key, s, e, v), (qk, qe) in zip(frames, queries):
                memory.add_memory(key, s, e, v)
                out.append(memory.read(qk, qe))
        assert memory.groups[0].consolidations > 0
        reads[backend] = torch.stack(out)
    torch.testing.assert_close(reads["triton"], reads["torch"], rtol=1e-5, atol=1e-5)


def test_block_validation():
    with pytest.raises(ValueError, match="Blocks.mem"):
        Blocks(mem=24)
    with pytest.raises(ValueError, match="Blocks.splits"):
        Blocks(splits=3)
    with pytest.raises(ValueError, match="top_k"):
        memory_read_triton(*_inputs(), top_k=0)
