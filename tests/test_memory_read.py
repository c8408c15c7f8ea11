"""Memory read: similarity, top-k softmax, sparse vs dense readout, usage, dispatch."""

import math
import types

import pytest
import torch

from vos import backends
from vos.errors import VosError
import vos.model.memory_read as read_mod
from vos.model.memory_read import memory_read, resolve_backend, similarity


def _inputs(b=2, ck=8, n=40, hw=12, c=6, dtype=torch.float32):
    mk = torch.randn(b, ck, n, dtype=dtype)
    ms = torch.rand(b, 1, n, dtype=dtype) * 3 + 1
    qk = torch.randn(b, ck, hw, dtype=dtype)
    qe = torch.rand(b, ck, hw, dtype=dtype)
    mv = torch.randn(b, c, n, dtype=dtype)
    return mk, ms, qk, qe, mv


def _brute_similarity(mk, ms, qk, qe):
    """−s_i · Σ_c e_cj (k_ci − q_cj)² / √C by explicit broadcasting."""
    diff2 = (mk[:, :, :, None] - qk[:, :, None, :]) ** 2  # B×C×N×HW
    e = torch.ones_like(qk) if qe is None else qe
    s = torch.ones_like(mk[:, :1]) if ms is None else ms
    return -s[:, 0, :, None] * (e[:, :, None, :] * diff2).sum(1) / math.sqrt(mk.shape[1])


def _brute_topk_read(mk, ms, qk, qe, mv, k):
    """Per query pixel: softmax over its k largest similarities, weighted sum of those value columns."""
    sim = _brute_similarity(mk.double(), ms.double(), qk.double(), qe.double())
    b, n, hw = sim.shape
    out = torch.zeros(b, mv.shape[1], hw, dtype=torch.float64)
    usage = torch.zeros(b, n, dtype=torch.float64)
    for bi in range(b):
        for j in range(hw):
            vals, idx = sim[bi, :, j].sort(descending=True)
            w = torch.softmax(vals[:k], 0)
            out[bi, :, j] = (mv[bi][:, idx[:k]].double() * w).sum(1)
            usage[bi, idx[:k]] += w
    return out, usage


@pytest.mark.parametrize("with_shrinkage", [True, False])
@pytest.mark.parametrize("with_selection", [True, False])
def test_similarity_equals_brute_force(with_shrinkage, with_selection):
    mk, ms, qk, qe, _ = _inputs()
    ms = ms if with_shrinkage else None
    qe = qe if with_selection else None
    got = similarity(mk, ms, qk, qe)
    assert got.shape == (2, 40, 12)
    torch.testing.assert_close(got, _brute_similarity(mk, ms, qk, qe), rtol=1e-4, atol=1e-4)


def test_similarity_is_fp32_for_half_inputs():
    mk, ms, qk, qe, _ = _inputs()
    half = [t.bfloat16() for t in (mk, ms, qk, qe)]
    got = similarity(*half)
    assert got.dtype == torch.float32
    # Computed from the bf16 values in fp32 — not rounded to bf16 on the way.
    ref = _brute_similarity(*(t.float() for t in half))
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("k", [1, 3, 7])
def test_sparse_readout_equals_dense_xmem_readout(k):
    mk, ms, qk, qe, mv = _inputs()
    sparse, usage_s = memory_read(mk, ms, qk, qe, mv, top_k=k, mode="sparse", backend="torch", need_usage=True)
    dense, usage_d = memory_read(mk, ms, qk, qe, mv, top_k=k, mode="dense", backend="torch", need_usage=True)
    torch.testing.assert_close(sparse, dense, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(usage_s, usage_d, rtol=1e-5, atol=1e-5)
    ref, ref_usage = _brute_topk_read(mk, ms, qk, qe, mv, k)
    torch.testing.assert_close(sparse.double(), ref, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(usage_s.double(), ref_usage, rtol=1e-4, atol=1e-4)
    # Each query pixel's weights sum to one, so the usage of a batch item sums to HW.
    torch.testing.assert_close(usage_s.sum(1), torch.full((2,), 12.0))


def test_sparse_read_in_query_blocks(monkeypatch):
    """The blocked path (tiny similarity budget) gives the same numbers as one block."""
    mk, ms, qk, qe, mv = _inputs(hw=17)
    whole, usage = memory_read(mk, ms, qk, qe, mv, top_k=5, backend="torch", need_usage=True)
    monkeypatch.setattr(read_mod, "_MAX_BLOCK_ELEMENTS", 2 * 40 * 4)  # 4 query pixels per block
    blocked, usage_b = memory_read(mk, ms, qk, qe, mv, top_k=5, backend="torch", need_usage=True)
    torch.testing.assert_close(blocked, whole)
    torch.testing.assert_close(usage_b, usage)


@pytest.mark.parametrize("mode", ["sparse", "dense"])
def test_top_k_larger_than_memory_is_full_softmax(mode):
    mk, ms, qk, qe, mv = _inputs(n=5)
    full, full_usage = memory_read(mk, ms, qk, qe, mv, top_k=None, backend="torch", need_usage=True)
    for k in (5, 30):
        got, usage = memory_read(mk, ms, qk, qe, mv, top_k=k, mode=mode, backend="torch", need_usage=True)
        torch.testing.assert_close(got, full, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(usage, full_usage, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mode", ["sparse", "dense"])
def test_max_subtraction_keeps_extreme_similarities_finite(mode):
    """Similarities around −1e6: a softmax without max subtraction gives 0/0."""
    mk, ms, qk, qe, mv = _inputs(b=1, n=10, hw=6)
    mk = mk * 300.0
    got, usage = memory_read(mk, ms, qk, qe, mv, top_k=3, mode=mode, backend="torch", need_usage=True)
    assert torch.isfinite(got).all() and torch.isfinite(usage).all()
    nearest = similarity(mk, ms, qk, qe).argmax(dim=1)  # 1×HW: one element takes all the weight
    torch.testing.assert_close(got[0], mv[0][:, nearest[0]], rtol=1e-5, atol=1e-5)


def test_values_keep_their_dtype():
    mk, ms, qk, qe, mv = _inputs()
    got, _ = memory_read(*(t.bfloat16() for t in (mk, ms, qk, qe, mv)), top_k=3, backend="torch")
    assert got.dtype == torch.bfloat16
    ref, _ = memory_read(*(t.bfloat16().float() for t in (mk, ms, qk, qe, mv)), top_k=3, backend="torch")
    torch.testing.assert_close(got.float(), ref, rtol=1e-2, atol=1e-2)


def test_full_softmax_gradcheck():
    mk, ms, qk, qe, mv = (t.requires_grad_() for t in _inputs(b=1, ck=3, n=5, hw=4, c=2, dtype=torch.float64))

    def read(*args):
        readout, usage = memory_read(*args, top_k=None, backend="torch", need_usage=True)
        return readout, usage

    assert torch.autograd.gradcheck(read, (mk, ms, qk, qe, mv))


def test_shape_errors():
    mk, ms, qk, qe, mv = _inputs()
    with pytest.raises(ValueError, match="mem_values"):
        memory_read(mk, ms, qk, qe, mv[:, :, :-1])
    with pytest.raises(ValueError, match="query_keys"):
        memory_read(mk, ms, qk[:, :-1], qe, mv)
    with pytest.raises(ValueError, match="top_k"):
        memory_read(mk, ms, qk, qe, mv, top_k=0)


# ------------------------------------------------------------------ backend dispatch
@pytest.fixture
def fake_kernel(monkeypatch):
    """Stand in for ``vos.kernels.memory_read`` with a module that records its calls."""
    calls = []

    def memory_read_triton(mk, ms, qk, qe, mv, top_k=30, need_usage=False):
        calls.append((top_k, need_usage))
        return torch.zeros(mk.shape[0], mv.shape[1], qk.shape[2]), None

    module = types.ModuleType("fake_memory_read")
    module.memory_read_triton = memory_read_triton
    monkeypatch.setattr(backends, "kernel_modules", lambda: ({"memory_read": module}, ""))
    yield calls


@pytest.fixture
def no_kernel(monkeypatch):
    monkeypatch.setattr(backends, "kernel_modules", lambda: ({}, "cannot import vos.kernels (test)"))
    yield


def test_torch_backend_is_the_reference(fake_kernel):
    mk, ms, qk, qe, mv = _inputs()
    assert resolve_backend("torch", mk) == "torch"
    got, _ = memory_read(mk, ms, qk, qe, mv, top_k=3, backend="torch")
    assert fake_kernel == [] and got.abs().sum() > 0


def test_auto_uses_torch_for_cpu_tensors(fake_kernel):
    mk, ms, qk, qe, mv = _inputs()
    assert resolve_backend("auto", mk) == "torch"
    memory_read(mk, ms, qk, qe, mv, top_k=3, backend="auto")
    assert fake_kernel == []


def test_triton_backend_calls_the_kernel(fake_kernel, monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    mk, ms, qk, qe, mv = _inputs()
    got, usage = memory_read(mk, ms, qk, qe, mv, top_k=7, backend="triton", need_usage=True)
    assert fake_kernel == [(7, True)]
    assert got.shape == (2, 6, 12) and usage is None


def test_triton_on_cpu_needs_the_interpreter(fake_kernel, monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    mk, ms, qk, qe, mv = _inputs()
    with pytest.raises(VosError, match="TRITON_INTERPRET"):
        memory_read(mk, ms, qk, qe, mv, backend="triton")


def test_triton_without_kernel_module_raises(no_kernel, monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    mk, ms, qk, qe, mv = _inputs()
    with pytest.raises(VosError, match="cannot import vos.kernels"):
        memory_read(mk, ms, qk, qe, mv, backend="triton")
    assert resolve_backend("auto", mk) == "torch"


def test_dense_mode_is_torch_only(fake_kernel, monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    mk, ms, qk, qe, mv = _inputs()
    with pytest.raises(VosError, match="dense"):
        memory_read(mk, ms, qk, qe, mv, mode="dense", backend="triton")
    with pytest.raises(VosError, match="backend"):
        memory_read(mk, ms, qk, qe, mv, backend="cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_auto_picks_triton_on_cuda(fake_kernel):
    mk = torch.randn(1, 4, 8, device="cuda")
    assert resolve_backend("auto", mk) == "triton"
    assert resolve_backend("auto", mk, mode="dense") == "torch"
