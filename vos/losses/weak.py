"""The weak (box-supervised) losses of thesis chapter 3 in PyTorch: projection, pairwise, temporal.

These functions are the reference that the Triton kernels (`vos.kernels.losses`) must match, and the
path used on CPU. Conventions shared by all of them:

- Per-object tensors are B×N×T×H×W at the loss resolution (N objects, T frames); colours are Lab,
  B×T×3×H×W (`vos.losses.frames_to_lab`); box masks are {0, 1}, B×N×T×H×W (`vos.losses.box_masks`),
  empty where the object is absent.
- `obj_valid` (B×N bool, optional) marks object slots that exist; padded slots of samples with fewer
  objects are excluded from every sum and every average, exactly as if they were not in the batch.
- Loops run over the handful of neighbour/candidate offsets, never over pixels.
- Pixel-pair consistency: for foreground logits a, b of two pixels,
  −log(m_a·m_b + (1−m_a)(1−m_b)) = softplus(a) + softplus(b) − softplus(a + b), with m = σ(logit)
  (eq. 3.15/3.21); it is finite for all finite logits and never forms a probability.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vos.errors import VosError
from vos.backends import loss_kernel
from vos.kernels.checks import check_loss_shapes as _check_shapes

# ---------------------------------------------------------------------------------------------
# shared helpers


def pair_nll(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """−log P(y_a = y_b) = −log(σ(a)σ(b) + σ(−a)σ(−b)) from logits a, b (eq. 3.15), elementwise."""
    return F.softplus(a) + F.softplus(b) - F.softplus(a + b)


def consistency(a: torch.Tensor, b: torch.Tensor, detach: str = "none") -> torch.Tensor:
    """Per-edge consistency loss between logits a and b under a detach mode (eq. 3.21–3.22).

    - "none": the symmetric loss L(m_a, m_b); its gradient drives both ends towards 0 or 1 together.
    - "soft": the thesis's detach regularisation ½(L(m_a, sg(m_b)) + L(sg(m_a), m_b)), sg = detach.
      Its value equals L(m_a, m_b), and — by the chain rule — its gradient with respect to a (and
      to b) is exactly ½ of the symmetric loss's gradient at the same values: ∂/∂a of the first
      term is ∂L/∂a, the second term has no a-dependence. So "soft" is the symmetric loss with its
      gradient halved (with Adam, whose steps are invariant to a constant gradient scale, nearly
      the same training signal). It is kept because it is the thesis's eq. 3.22. Because of this
      identity it is computed as ½(L + sg(L)): the same value and the same gradient, one
      evaluation of L instead of two.
    - "hard": the detached partner is the hardened label y = [m > 0.5] (logit > 0):
      ½(BCE(a, y_b) + BCE(b, y_a)). This one really changes the gradient (direction and size): each
      end is pulled towards the other end's current decision: for m_a = 0.6, m_b = 0.1 the gradient
      (∂/∂a, ∂/∂b) is (0.46, −0.04) for "none" (it mostly lowers a) and (0.30, −0.45) for "hard"
      (b's target is y_a = 1, so b is raised as strongly as a is lowered).
    """
    if detach == "none":
        return pair_nll(a, b)
    if detach == "soft":
        return _half_gradient(pair_nll(a, b))
    if detach == "hard":
        label_a = (a.detach() > 0).to(a.dtype)
        label_b = (b.detach() > 0).to(b.dtype)
        # BCE with logits: −log(σ(a)·y + σ(−a)·(1−y)) = softplus(a) − y·a.
        return 0.5 * (F.softplus(a) - label_b * a + F.softplus(b) - label_a * b)
    raise VosError(f"losses.temp_detach: must be 'soft', 'hard' or 'none', got {detach!r}")


def _half_gradient(x: torch.Tensor) -> torch.Tensor:
    """Value x, gradient ½·∂x: eq. 3.22's soft detach applied to a (sum of) symmetric loss(es)."""
    return 0.5 * (x + x.detach())


def _object_weight(obj_valid: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    """B×N×1 float weight of object slots (1 = real object, 0 = padding)."""
    batch, objects = like.shape[:2]
    if obj_valid is None:
        return like.new_ones(batch, objects, 1)
    if obj_valid.shape != (batch, objects):
        raise ValueError(f"obj_valid must be B×N = {(batch, objects)}, got {tuple(obj_valid.shape)}")
    return obj_valid.to(device=like.device, dtype=like.dtype)[:, :, None]


def _reduce(num: torch.Tensor, count: torch.Tensor, pixels: int, normalize: str, obj_valid) -> torch.Tensor:
    """Per-image sums B×N×T' (loss sums and active-edge counts) → the scalar loss.

    "pixels": each image's sum divided by its H·W (the thesis's eq. 3.16 for the pairwise loss; the
    temporal loss, a plain sum in eq. 3.18, is normalised the same way here), then averaged over
    frames (pairs), objects and the batch (eq. 3.17, 3.19–3.20). "edges" (BoxInst): the total over the whole batch
    divided by the total number of active edges (at least 1).
    """
    weight = _object_weight(obj_valid, num)
    if normalize == "pixels":
        images = (weight * torch.ones_like(num)).sum()
        return (num * weight).sum() / pixels / images.clamp_min(1.0)
    if normalize == "edges":
        return (num * weight).sum() / (count * weight).sum().clamp_min(1.0)
    raise VosError(f"losses.normalize: must be 'pixels' or 'edges', got {normalize!r}")


def _pad(x: torch.Tensor, radius: int) -> torch.Tensor:
    """Zero padding of the last two dims by `radius` on every side."""
    return F.pad(x, (radius, radius, radius, radius)) if radius else x


def _window(padded: torch.Tensor, radius: int, dy: int, dx: int, height: int, width: int) -> torch.Tensor:
    """x[..., y+dy, x+dx] for every (y, x), read from `x` zero-padded by `radius`."""
    return padded[..., radius + dy : radius + dy + height, radius + dx : radius + dx + width]


def _inside(height: int, width: int, radius: int, device, dtype) -> torch.Tensor:
    """Padded H×W indicator of image pixels: its windows say whether (y+dy, x+dx) is in the image."""
    return _pad(torch.ones(height, width, device=device, dtype=dtype), radius)


def _offset_grid(x: torch.Tensor, radius: int, step: int = 1) -> torch.Tensor:
    """Sliding-window view (...×D×D×H×W) of x (...×H×W) zero-padded by `radius`, D = 2·radius/step + 1.

    grid[..., i, j, y, x] = x[..., y + i·step − radius, x + j·step − radius] (0 outside the image):
    every offset of a (dilated) neighbourhood at once, without copying.
    """
    height, width = x.shape[-2:]
    return _pad(x, radius).unfold(-2, height, step).unfold(-2, width, step)


def _edge_rows(
    a: torch.Tensor, b: torch.Tensor, radius: int, step: int, weight_row, detach: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Σ over pixels p and offsets δ of w_δ(p) · consistency(a(p), b(p + δ)), per image → (sums, counts) B×N×T.

    a, b: B×N×T×H×W logits of the centres and of their partners' frames; the offsets are the grid
    of `_offset_grid(·, radius, step)`; weight_row(i): B×N×T×D×H×W weights of offset row i (0 = no
    edge; partners outside the image must have weight 0). One row of offsets at a time bounds the
    memory to D× the input. The gradient is formed in the same pass, in closed form
    (`_EdgeSum`), so no graph of the D² per-offset terms is kept.
    """
    if detach not in ("soft", "none", "hard"):
        raise VosError(f"losses.temp_detach: must be 'soft', 'hard' or 'none', got {detach!r}")
    return _EdgeSum.apply(a, b, radius, step, weight_row, detach)


class _EdgeSum(torch.autograd.Function):
    """`_edge_rows` with its gradient computed alongside the value.

    Per edge (p, r = p + δ) with weight w and x = a(p) + b(r):
    "none": L = sp(a) + sp(b) − sp(x) (eq. 3.15's −log P(same label)), ∂L/∂a = σ(a) − σ(x),
    ∂L/∂b = σ(b) − σ(x); "soft" (eq. 3.22): the same value with half that gradient (see
    `consistency`); "hard": L = ½(sp(a) − y_b·a + sp(b) − y_a·b) with y = [logit > 0] held fixed,
    ∂L/∂a = ½(σ(a) − y_b), ∂L/∂b = ½(σ(b) − y_a). The gradients with respect to a are summed over
    offsets at p; those with respect to b are scattered back to r = p + δ in a padded buffer.
    """

    @staticmethod
    def forward(ctx, a, b, radius, step, weight_row, detach):  # noqa: D102 - see the class docstring
        with torch.no_grad():
            height, width = a.shape[-2:]
            soft_a = F.softplus(a)
            sig_a = torch.sigmoid(a)
            a_row = a[:, :, :, None]
            b_grid = _offset_grid(b, radius, step)
            soft_b_grid = _offset_grid(F.softplus(b), radius, step)
            sig_b_grid = _offset_grid(torch.sigmoid(b), radius, step)
            if detach == "hard":
                label_a = (a > 0).to(a.dtype)
                label_b_grid = _offset_grid((b > 0).to(a.dtype), radius, step)
            sums = a.new_zeros(a.shape[:3])
            counts = a.new_zeros(a.shape[:3])
            grad_a = torch.zeros_like(a)
            grad_b = _pad(torch.zeros_like(b), radius)  # indexed by partner position + radius
            size = b_grid.shape[3]
            for i in range(size):
                weight = weight_row(i).to(a.dtype)
                partner = b_grid[:, :, :, i]
                if detach == "hard":
                    label_b = label_b_grid[:, :, :, i]
                    edge = 0.5 * (soft_a[:, :, :, None] - label_b * a_row + soft_b_grid[:, :, :, i] - label_a[:, :, :, None] * partner)
                    d_a = 0.5 * (sig_a[:, :, :, None] - label_b)
                    d_b = 0.5 * (sig_b_grid[:, :, :, i] - label_a[:, :, :, None])
                else:
                    x = a_row + partner
                    sig_x = torch.sigmoid(x)
                    edge = soft_a[:, :, :, None] + soft_b_grid[:, :, :, i] - F.softplus(x)
                    d_a = sig_a[:, :, :, None] - sig_x
                    d_b = sig_b_grid[:, :, :, i] - sig_x
                weighted = edge * weight
                sums += weighted.sum(dim=(-3, -2, -1))
                counts += weight.expand_as(edge).sum(dim=(-3, -2, -1))
                grad_a += (d_a * weight).sum(dim=-3)
                d_b = d_b * weight  # B×N×T×D×H×W, column j: partner at (y + i·step − r, x + j·step − r)
                for j in range(size):
                    grad_b[..., i * step : i * step + height, j * step : j * step + width] += d_b[:, :, :, j]
            grad_b = grad_b[..., radius : radius + height, radius : radius + width]
            if detach == "soft":
                grad_a *= 0.5
                grad_b *= 0.5
        ctx.save_for_backward(grad_a, grad_b)
        ctx.mark_non_differentiable(counts)
        return sums, counts

    @staticmethod
    def backward(ctx, grad_sums, grad_counts):  # noqa: D102
        grad_a, grad_b = ctx.saved_tensors
        scale = grad_sums[..., None, None]
        return grad_a * scale, grad_b * scale, None, None, None, None


def _similarity(a: torch.Tensor, b: torch.Tensor, gamma: float) -> torch.Tensor:
    """exp(−‖a − b‖₂ / γ) over dim 2 (colour / descriptor channels)."""
    # Sum of squares then sqrt: the same value as linalg.vector_norm, many times faster on CPU for
    # a reduction over a non-innermost dim.
    diff = a - b
    return torch.exp(-torch.sqrt((diff * diff).sum(dim=2)) / gamma)


def _zero(x: torch.Tensor) -> torch.Tensor:
    """A zero loss that stays connected to the graph of `x`."""
    return x.sum() * 0.0 + 0.0  # + 0.0 turns a −0.0 into 0.0


# ---------------------------------------------------------------------------------------------
# projection


def _dice_p2(pred: torch.Tensor, target: torch.Tensor, eps: float) -> torch.Tensor:
    """1 − (ε + 2Σ a²b²) / (ε + Σa² + Σb²) over the last dim (eq. 3.11, p = 2)."""
    pred2, target2 = pred * pred, target * target
    return 1.0 - (eps + 2.0 * (pred2 * target2).sum(-1)) / (eps + pred2.sum(-1) + target2.sum(-1))


def projection_loss(
    prob: torch.Tensor,
    box_mask: torch.Tensor,
    eps: float = 1e-5,
    layout: str = "stacked",
    obj_valid: torch.Tensor | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """Projection loss (eq. 3.8–3.12): dice (p = 2) between max-projections of mask and box.

    prob: B×N×T×H×W foreground probabilities m ∈ [0, 1]; box_mask: B×N×T×H×W {0, 1}. Returns a scalar.
    p̂_x = max_y m, p_x = max_y box (length W) and likewise along y; l = dice(p̂_x, p_x) + dice(p̂_y, p_y).

    layout "stacked" (the thesis's choice, §3.2.1): the B·N·T images are one picture of
    B·N·T·H rows × W columns, so the x-projection is the max over all rows of all images (one vector
    of length W) and the y-projection is the concatenation of every image's row maxima (length
    B·N·T·H); the loss is one dice per axis, not an average. Note what that means: the x term only
    sees the union of all images' columns, so in practice the y term carries the per-image signal.
    layout "per_image" (BoxInst / MaskFreeVIS): l per H×W image, averaged over the B·N·T images
    (the average of eq. 3.12 over objects and frames, then over the batch).

    Absent objects (empty box): in "stacked" their rows join the y vector with target 0, so any
    predicted mass there lowers the dice overlap and is pushed down with a gradient of ordinary
    size. In "per_image", an empty target gives dice = 1 − ε/(ε + Σp̂²): still minimised (to 0) by
    an empty prediction, but its gradient ≈ 2ε·p̂/(Σp̂²)² is tiny unless the prediction is almost
    empty already — the plain dice formula, as in BoxInst, which never sees absent instances.

    The maxima use amax, which splits the gradient evenly between tied maxima.
    """
    _check_shapes(prob, None, box_mask)
    impl = loss_kernel("projection_loss", backend, prob, box_mask)
    if impl is not None:
        return impl(prob, box_mask, eps=eps, layout=layout, obj_valid=obj_valid)
    box = box_mask.to(prob.dtype)
    if prob.numel() == 0:
        return _zero(prob)
    if layout == "stacked":
        weight = _object_weight(obj_valid, prob)[..., None, None]
        # Zeroing padded slots removes them exactly: they add 0 to every max and every sum.
        prob, box = prob * weight, box * weight
        loss_x = _dice_p2(prob.amax(dim=(0, 1, 2, 3)), box.amax(dim=(0, 1, 2, 3)), eps)
        loss_y = _dice_p2(prob.amax(dim=-1).reshape(-1), box.amax(dim=-1).reshape(-1), eps)
        return loss_x + loss_y
    if layout == "per_image":
        per_image = _dice_p2(prob.amax(dim=-2), box.amax(dim=-2), eps) + _dice_p2(
            prob.amax(dim=-1), box.amax(dim=-1), eps
        )
        weight = _object_weight(obj_valid, per_image)
        images = (weight * torch.ones_like(per_image)).sum()
        return (per_image * weight).sum() / images.clamp_min(1.0)
    raise VosError(f"losses.layout: must be 'stacked' or 'per_image', got {layout!r}")


# ---------------------------------------------------------------------------------------------
# pairwise


def pairwise_loss(
    logits: torch.Tensor,
    lab: torch.Tensor,
    box_mask: torch.Tensor,
    kernel: int = 3,
    dilation: int = 2,
    gamma: float = 2.0,
    tau: float = 0.3,
    normalize: str = "pixels",
    obj_valid: torch.Tensor | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """Pairwise colour-consistency loss (eq. 3.13–3.17). Returns a scalar.

    logits: B×N×T×H×W foreground logits; lab: B×T×3×H×W; box_mask: B×N×T×H×W {0, 1}.
    For every centre pixel p inside the object's box and every neighbour p' = p + δ of the dilated
    K×K kernel (δ ≠ 0) inside the image, the edge is active when S = exp(−‖Lab_p − Lab_p'‖₂/γ) ≥ τ,
    and contributes −log(m_p m_p' + (1−m_p)(1−m_p')). Neighbours outside the image contribute 0.
    normalize "pixels": each image's sum / (H·W), averaged over frames, objects, batch (thesis);
    "edges": total / number of active edges (BoxInst).
    """
    _check_shapes(logits, lab, box_mask)
    if kernel < 3 or kernel % 2 == 0 or dilation < 1:
        raise VosError(f"losses.kernel/dilation: need an odd kernel >= 3 and dilation >= 1, got {kernel}, {dilation}")
    impl = loss_kernel("pairwise_loss", backend, logits, lab, box_mask)
    if impl is not None:
        return impl(
            logits, lab, box_mask, kernel=kernel, dilation=dilation, gamma=gamma, tau=tau,
            normalize=normalize, obj_valid=obj_valid,
        )
    batch, objects, frames, height, width = logits.shape
    if logits.numel() == 0:
        return _zero(logits)
    radius = (kernel // 2) * dilation
    half = kernel // 2
    box = box_mask.to(logits.dtype)[:, :, :, None]  # B×N×T×1×H×W: centre inside the box
    with torch.no_grad():
        lab = lab.to(logits.dtype)
        lab_grid = _offset_grid(lab, radius, dilation)  # B×T×3×K×K×H×W
        inside = _offset_grid(torch.ones(height, width, device=logits.device, dtype=logits.dtype), radius, dilation)
        diff = lab[:, :, :, None, None] - lab_grid
        similarity = torch.exp(-torch.sqrt((diff * diff).sum(dim=2)) / gamma)  # B×T×K×K×H×W
        active = (similarity >= tau).to(logits.dtype) * inside
        active[:, :, half, half] = 0  # the centre is not its own neighbour
    num, count = _edge_rows(logits, logits, radius, dilation, lambda i: active[:, None, :, i] * box, "none")
    return _reduce(num, count, height * width, normalize, obj_valid)


# ---------------------------------------------------------------------------------------------
# temporal


def patch_descriptors(lab: torch.Tensor, patch: int) -> torch.Tensor:
    """Lab (...×3×H×W) → N×N patch descriptors (...×3N²×H×W), patch positions in raster order.

    Patch positions outside the image take the nearest border pixel's colour (replicate padding),
    so border patches are compared on image content. (F.unfold's zero padding, used by MaskFreeVIS,
    would give every border patch a fake black rim and make border patches match each other.)
    """
    half = patch // 2
    height, width = lab.shape[-2:]
    rows = torch.arange(height, device=lab.device)
    cols = torch.arange(width, device=lab.device)
    parts = []
    for qy in range(-half, half + 1):
        row_index = (rows + qy).clamp(0, height - 1)
        for qx in range(-half, half + 1):
            col_index = (cols + qx).clamp(0, width - 1)
            parts.append(lab.index_select(-2, row_index).index_select(-1, col_index))
    return torch.cat(parts, dim=-3)


def candidate_offsets(candidates: int, spacing: int) -> list[tuple[int, int]]:
    """Offsets (dy, dx) of the candidates² search grid with the given spacing, raster order."""
    half = candidates // 2
    return [(dy * spacing, dx * spacing) for dy in range(-half, half + 1) for dx in range(-half, half + 1)]


def temporal_matches(
    lab: torch.Tensor,
    patch: int = 3,
    candidates: int = 3,
    spacing: int = 3,
    top_k: int = 5,
    gamma: float = 2.0,
    tau: float = 0.05,
) -> torch.Tensor:
    """Which candidates each pixel of frame t keeps in frame t+1 mod T: bool B×T×C×H×W.

    Candidate c of pixel p is p + offset_c in the next frame (`candidate_offsets`); it is kept when
    it lies in the image, is among the top_k most similar in-image candidates, and its similarity
    S = exp(−‖D_t(p) − D_t'(p + offset_c)‖₂/γ) of patch descriptors D is ≥ τ. Ties in S are broken
    in favour of the lower candidate index (raster order), deterministically.
    """
    batch, frames, _, height, width = lab.shape
    following = (torch.arange(frames, device=lab.device) + 1) % frames
    offsets = candidate_offsets(candidates, spacing)
    radius = (candidates // 2) * spacing
    with torch.no_grad():
        desc = patch_descriptors(lab, patch)  # B×T×3N²×H×W
        desc_next_padded = _pad(desc[:, following], radius)
        inside = _inside(height, width, radius, lab.device, torch.bool)
        sims = []
        for dy, dx in offsets:
            other = _window(desc_next_padded, radius, dy, dx, height, width)
            similarity = _similarity(desc, other, gamma)
            # Out-of-image candidates get −1 (< any similarity) so they rank after every real one.
            sims.append(torch.where(_window(inside, radius, dy, dx, height, width), similarity, -1.0))
        sims = torch.stack(sims, dim=2)  # B×T×C×H×W
        index = torch.arange(len(offsets), device=lab.device).view(1, 1, -1, 1, 1)
        rank = torch.zeros_like(sims, dtype=torch.int64)
        # rank_j = #{i : S_i > S_j} + #{i < j : S_i = S_j}; kept when rank < top_k (a stable top-k).
        for i in range(len(offsets)):
            s_i = sims[:, :, i : i + 1]
            rank += ((s_i > sims) | ((s_i == sims) & (i < index))).to(torch.int64)
        return (rank < top_k) & (sims >= tau) & (sims >= 0)


def temporal_loss(
    logits: torch.Tensor,
    lab: torch.Tensor,
    box_mask: torch.Tensor,
    patch: int = 3,
    candidates: int = 3,
    spacing: int = 3,
    top_k: int = 5,
    tau: float = 0.05,
    target: str = "patch",
    detach: str = "soft",
    gamma: float = 2.0,
    normalize: str = "pixels",
    obj_valid: torch.Tensor | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """Temporal patch-matching consistency loss (eq. 3.18–3.20) with detach regularisation (3.22).

    logits: B×N×T×H×W foreground logits; lab: B×T×3×H×W; box_mask: B×N×T×H×W {0, 1}. Scalar out.

    Frame pairs: (t, t' = t+1 mod T) for every t — the cyclic tube over the T
    frames given (pass the frames that carry predictions). T = 1 has no pair and gives 0.
    For each pixel p of frame t whose position lies in the union over all T frames of the object's
    boxes, the candidates p + offset in frame t' (a candidates×candidates grid with `spacing`) are
    matched on N×N Lab patch descriptors (`temporal_matches`: in-image, top_k, S ≥ τ). For each kept
    match q, target "patch" (the thesis, eq. 3.18) adds the consistency loss between p and every
    pixel p' of the N×N patch around q that lies in the image; target "center" (MaskFreeVIS) only
    between p and q. Each edge's loss is `consistency(x_t(p), x_t'(p'), detach)` — see there for
    "soft" (eq. 3.22; its gradient is exactly ½ of the symmetric "none" gradient at the same
    values), "hard" and "none".

    Normalisation — the thesis's eq. 3.18 is a plain sum over matches and patch pixels and 3.19–3.20
    average it over pairs and objects, normalised like the pairwise loss. We use:
    "pixels": each (pair, object) sum divided by H·W (the pairwise loss's 1/HW of eq. 3.16), averaged
    over pairs, objects and batch; "edges": total over the batch / number of edges. With the default
    target "patch" an in-box pixel can have up to top_k·N² = 45 edges, against 8 for the pairwise
    loss, which the weights must account for.
    """
    _check_shapes(logits, lab, box_mask)
    if target not in ("patch", "center"):
        raise VosError(f"losses.temp_target: must be 'patch' or 'center', got {target!r}")
    if detach not in ("soft", "hard", "none"):
        raise VosError(f"losses.temp_detach: must be 'soft', 'hard' or 'none', got {detach!r}")
    for name, value in (("temp_patch", patch), ("temp_candidates", candidates)):
        if value < 1 or value % 2 == 0:
            raise VosError(f"losses.{name}: must be a positive odd integer, got {value}")
    if spacing < 1 or top_k < 1:
        raise VosError(f"losses.temp_spacing/temp_top_k: must be >= 1, got {spacing}, {top_k}")
    impl = loss_kernel("temporal_loss", backend, logits, lab, box_mask)
    if impl is not None:
        return impl(
            logits, lab, box_mask, patch=patch, candidates=candidates, spacing=spacing, top_k=top_k,
            tau=tau, target=target, detach=detach, gamma=gamma, normalize=normalize,
            obj_valid=obj_valid,
        )
    batch, objects, frames, height, width = logits.shape
    if frames < 2 or logits.numel() == 0:
        return _zero(logits)
    keep = temporal_matches(lab.to(logits.dtype), patch, candidates, spacing, top_k, gamma, tau)
    keep = keep.to(logits.dtype)  # B×T×C×H×W
    ones = torch.ones(height, width, device=logits.device, dtype=logits.dtype)
    with torch.no_grad():
        if target == "patch":
            # match indicators per total offset δ = candidate offset + patch offset, on a D×D grid of
            # offsets at step 1; several (c, q) with the same δ are the same pixel pair counted several
            # times, as in eq. 3.18's double sum
            patch_half = patch // 2
            radius, step = (candidates // 2) * spacing + patch_half, 1
            size = 2 * radius + 1
            weights = keep.new_zeros(batch, frames, size, size, height, width)
            for c, (cy, cx) in enumerate(candidate_offsets(candidates, spacing)):
                for qy in range(-patch_half, patch_half + 1):
                    for qx in range(-patch_half, patch_half + 1):
                        weights[:, :, radius + cy + qy, radius + cx + qx] += keep[:, :, c]
        else:
            # "center": the partners are the candidates themselves, a grid with step = spacing
            radius, step = (candidates // 2) * spacing, spacing
            weights = keep.reshape(batch, frames, candidates, candidates, height, width).clone()
        weights *= _offset_grid(ones, radius, step)  # partners outside the image get weight 0
        centre = box_mask.to(logits.dtype).amax(dim=2, keepdim=True)[:, :, :, None]  # union of boxes, B×N×1×1×H×W
    following = (torch.arange(frames, device=logits.device) + 1) % frames
    partner = logits[:, :, following]  # x_t' for pair t
    num, count = _edge_rows(logits, partner, radius, step, lambda i: weights[:, None, :, i] * centre, detach)
    return _reduce(num, count, height * width, normalize, obj_valid)
