"""Pieces shared by the kernels: the torch → triton dtype map (every kernel), and for the weak-loss
kernels (``kernels.losses``) their tile sizes, scalar parameters, the stable pixel-pair loss and the
final normalisation.

Precision: every loss kernel computes in fp32, or in fp64 when the logits / probabilities are fp64
(the interpreter tests compare fp64 kernels with the fp64 reference to ~1e-12).

Scalar constants (γ, τ, ε) reach the kernels as a small tensor in the compute dtype rather than as
Python floats: Triton types a float argument (and a float ``constexpr`` in arithmetic) as fp32, so
an fp64 kernel would compare with fp32(0.05) ≠ 0.05 — while PyTorch, like this tensor, rounds the
constant to the tensor's own dtype.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl


TL_DTYPES = {torch.float32: tl.float32, torch.float64: tl.float64}


@dataclass(frozen=True)
class LossBlocks:
    """Tile sizes of the weak-loss kernels (powers of two) and the launch width.

    pixels: pixels per program of the pairwise / temporal kernels (a flat block of one image).
    lab: pixels per program of the Lab conversion. rows: image rows per step of the projection
    kernels (each step reads rows × next_pow2(W) values). images: images per step of the
    projection's final reduction. The defaults are not timed on a GPU but chosen so that no
    kernel spills more than a few bytes per thread when ptxas compiles it for sm_90 / sm_80
    (``python -m vos.bench.cross_compile``); the first ones, 256 pixels with 4 warps, spilled up to
    21 KB per thread in the temporal kernels.
    """

    pixels: int = 128
    lab: int = 512
    rows: int = 8
    images: int = 16
    num_warps: int = 8

    def __post_init__(self) -> None:
        for name in ("pixels", "lab", "rows", "images"):
            value = getattr(self, name)
            if value < 1 or value & (value - 1):
                raise ValueError(f"LossBlocks.{name} must be a power of two, got {value}")


DEFAULT_BLOCKS = LossBlocks()


def next_pow2(x: int) -> int:
    return 1 << max(0, (x - 1).bit_length())


def compute_dtype(x: torch.Tensor) -> torch.dtype:
    """fp64 for fp64 input, else fp32 (half precision is promoted)."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def scalars(values: tuple[float, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Scalar constants as a tensor in the compute dtype (see the module docstring)."""
    return torch.tensor(values, dtype=dtype, device=device)


def object_weight(obj_valid: torch.Tensor | None, batch: int, objects: int, dtype, device) -> torch.Tensor:
    """B×N weight of object slots (1 = real, 0 = padding), contiguous in ``dtype``."""
    if obj_valid is None:
        return torch.ones(batch, objects, dtype=dtype, device=device)
    if obj_valid.shape != (batch, objects):
        raise ValueError(f"obj_valid must be B×N = {(batch, objects)}, got {tuple(obj_valid.shape)}")
    return obj_valid.to(device=device, dtype=dtype).contiguous()


def zero_loss(x: torch.Tensor) -> torch.Tensor:
    """A zero loss connected to the graph of ``x`` (as the reference's ``_zero``)."""
    return x.sum() * 0.0 + 0.0


def check_normalize(normalize: str) -> None:
    if normalize not in ("pixels", "edges"):
        raise ValueError(f"losses.normalize: must be 'pixels' or 'edges', got {normalize!r}")


def normalise(
    sums: torch.Tensor, counts: torch.Tensor, weight: torch.Tensor, pixels: int, normalize: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image sums and edge counts B×N×T (from the kernels' per-block partials) → (loss, factor).

    The same normalisation as the reference's ``_reduce``: "pixels" divides each image's sum by
    H·W and averages over the valid images; "edges" divides the valid total by the valid edge count
    (at least 1). ``factor`` is ∂loss/∂sum for a valid image (a 0-dim tensor, no host sync), so the
    backward kernels scale each edge's gradient by weight[b, n] · factor.
    """
    w = weight[:, :, None]
    total = (sums * w).sum()
    if normalize == "pixels":
        images = (w * torch.ones_like(sums)).sum()
        factor = 1.0 / (pixels * images.clamp_min(1.0))
    else:
        factor = 1.0 / (counts * w).sum().clamp_min(1.0)
    return total * factor, factor


# ------------------------------------------------------------------------------------ jit helpers
@triton.jit
def softplus(x):
    """log(1 + eˣ) without overflow: max(x, 0) + log(1 + e^−|x|).

    torch's F.softplus returns x itself above x = 20 (threshold); this form differs from it there by
    log(1 + e^−x) < 2.1e-9 — below fp32 resolution at that magnitude, and the gradients agree to
    the same amount (σ(x) vs 1).
    """
    return tl.maximum(x, 0.0) + tl.log(1.0 + tl.exp(-tl.abs(x)))


@triton.jit
def sigmoid(x):
    """σ(x) without overflow for either sign."""
    z = tl.exp(-tl.abs(x))
    return tl.where(x >= 0, 1.0 / (1.0 + z), z / (1.0 + z))


@triton.jit
def pair_edge(a, sp_a, b, DETACH: tl.constexpr):
    """Per-edge consistency loss for logits a (centre, with sp_a = softplus(a)) and b (partner).

    DETACH 0 ("none") and 1 ("soft": same value, half gradient): softplus(a) + softplus(b) −
    softplus(a + b) = −log(σ(a)σ(b) + σ(−a)σ(−b)). DETACH 2 ("hard"): ½(BCE(a, [b > 0]) +
    BCE(b, [a > 0])) with BCE(x, y) = softplus(x) − y·x.
    """
    sp_b = softplus(b)
    if DETACH == 2:
        return 0.5 * (sp_a - (b > 0).to(a.dtype) * a + sp_b - (a > 0).to(a.dtype) * b)
    else:
        return sp_a + sp_b - softplus(a + b)


@triton.jit
def pair_edge_grad(x, s_x, other, DETACH: tl.constexpr):
    """∂(edge loss)/∂x for the end with logit x (s_x = σ(x)) and partner logit ``other``.

    The edge loss is symmetric in its two ends for every mode, so one formula serves both ends:
    σ(x) − σ(x + other) ("none"), half of it ("soft", eq. 3.22 — see ``vos.losses.consistency``),
    ½(σ(x) − [other > 0]) ("hard": the partner's hardened label is a constant).
    """
    if DETACH == 2:
        return 0.5 * (s_x - (other > 0).to(x.dtype))
    elif DETACH == 1:
        return 0.5 * (s_x - sigmoid(x + other))
    else:
        return s_x - sigmoid(x + other)


def detach_code(detach: str) -> int:
    codes = {"none": 0, "soft": 1, "hard": 2}
    if detach not in codes:
        raise ValueError(f"losses.temp_detach: must be 'soft', 'hard' or 'none', got {detach!r}")
    return codes[detach]


def grid_1d(n: int, block: int) -> int:
    return triton.cdiv(max(n, 1), block)
