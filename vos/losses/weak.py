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


def _edge_sums(
    a: torch.Tensor, b: torch.Tensor, centre: torch.Tensor, offset_weights: torch.Tensor,
    radius: int, step: int, detach: str,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Σ over pixels p and offsets δ of w_δ(p) · consistency(a(p), b(p + δ)), per image → (sums, counts) B×N×T.

    a, b: B×N×T×H×W logits of the centres and of their partners' frames. The offsets are the D×D
    grid δ = (i·step − radius, j·step − radius), D = 2·radius/step + 1, in raster order. An edge's
    weight is centre(p) · offset_weights(p, δ): centre B×N×T×H×W (or broadcastable, e.g.
    B×N×1×H×W) says which pixels are centres (the object's box), offset_weights B×T×H×W×D² which of
    their partners count (colour similarity, temporal matches); partners outside the image are
    dropped here. Only centre pixels are visited (boxes cover a fraction of the frame), in chunks
    that bound the memory, and of their edges only those with a non-zero weight. The gradient is
    formed in the same pass, in closed form (`_EdgeSum`), so no graph of the per-edge terms is kept.
    """
    if detach not in ("soft", "none", "hard"):
        raise VosError(f"losses.temp_detach: must be 'soft', 'hard' or 'none', got {detach!r}")
    return _EdgeSum.apply(a, b, centre, offset_weights, radius, step, detach)


# centre pixels per chunk of `_EdgeSum`: with D² = 81 offsets about 5 M edges, a few tens of MB
_CENTRE_CHUNK = 1 << 16


class _EdgeSum(torch.autograd.Function):
    """`_edge_sums` with its gradient computed alongside the value.

    Per edge (p, r = p + δ) with weight w and x = a(p) + b(r):
    "none": L = sp(a) + sp(b) − sp(x) (eq. 3.15's −log P(same label)), ∂L/∂a = σ(a) − σ(x),
    ∂L/∂b = σ(b) − σ(x); "soft" (eq. 3.22): the same value with half that gradient (see
    `consistency`); "hard": L = ½(sp(a) − y_b·a + sp(b) − y_a·b) with y = [logit > 0] held fixed,
    ∂L/∂a = ½(σ(a) − y_b), ∂L/∂b = ½(σ(b) − y_a). The gradients with respect to a are summed over
    the offsets at p; those with respect to b are added at r.
    """

    @staticmethod
    def forward(ctx, a, b, centre, offset_weights, radius, step, detach):  # noqa: D102 - see the class docstring
        with torch.no_grad():
            batch, objects, frames, height, width = a.shape
            pixels = height * width
            grid = torch.arange(-radius, radius + 1, step, device=a.device)
            offset_y, offset_x = grid.repeat_interleave(len(grid)), grid.repeat(len(grid))  # D², raster order
            # per pixel of the frame: which partners lie in the image (H·W×D²)
            partner_y = torch.arange(height, device=a.device)[:, None, None] + offset_y
            partner_x = torch.arange(width, device=a.device)[None, :, None] + offset_x
            inside = (partner_y >= 0) & (partner_y < height) & (partner_x >= 0) & (partner_x < width)
            inside = inside.to(a.dtype).reshape(pixels, -1)
            # partners are read from zero-padded frames: flat index = the pixel's own + partner_step
            padded_height, padded_width = height + 2 * radius, width + 2 * radius
            partner_step = offset_y * padded_width + offset_x
            # the partner's terms once per pixel, gathered per edge
            b_terms = {"value": b, "sigmoid": torch.sigmoid(b)}
            if detach == "hard":
                b_terms["label"] = (b > 0).to(a.dtype)
            else:
                b_terms["softplus"] = F.softplus(b)
            b_terms = {k: _pad(v, radius).reshape(-1) for k, v in b_terms.items()}
            a_flat = a.reshape(-1)
            weight_rows = offset_weights.to(a.dtype).reshape(batch * frames * pixels, -1)
            centre = centre.to(a.dtype).expand(a.shape).reshape(-1)
            sums = a.new_zeros(batch * objects * frames)
            counts = a.new_zeros(batch * objects * frames)
            grad_a = a.new_zeros(a.numel())
            grad_b = a.new_zeros(batch * objects * frames * padded_height * padded_width)
            # centre pixels as flat indices into B×N×T×H×W, ascending (deterministic sums); gathers
            # use index_select, several times faster on CPU than advanced indexing
            for chunk in centre.nonzero().squeeze(1).split(_CENTRE_CHUNK):
                image, pixel = chunk // pixels, chunk % pixels  # image = (b·N + n)·T + t
                sample, frame = image // (objects * frames), image % frames
                weight = weight_rows.index_select(0, (sample * frames + frame) * pixels + pixel)
                weight = weight * inside.index_select(0, pixel) * centre.index_select(0, chunk)[:, None]
                y, x = pixel // width, pixel % width
                own = image * (padded_height * padded_width) + (y + radius) * padded_width + x + radius
                # only the edges with a non-zero weight from here on: colour thresholds, top-k matches
                # and the image border leave about half of the D² offsets empty (81 → at most 45 for
                # the temporal loss's defaults), and every later gather and scatter is per edge
                flat = weight.reshape(-1).nonzero().squeeze(1)
                row, column = flat // weight.shape[1], flat % weight.shape[1]
                edge_weight = weight.reshape(-1).index_select(0, flat)
                centre_index = chunk.index_select(0, row)
                edge_image = image.index_select(0, row)
                partner = own.index_select(0, row) + partner_step.index_select(0, column)
                value_a = a_flat.index_select(0, centre_index)
                value_b = b_terms["value"].index_select(0, partner)
                sig_b = b_terms["sigmoid"].index_select(0, partner)
                if detach == "hard":
                    label_a, label_b = (value_a > 0).to(a.dtype), b_terms["label"].index_select(0, partner)
                    edge = 0.5 * (F.softplus(value_a) - label_b * value_a + F.softplus(value_b) - label_a * value_b)
                    d_a = 0.5 * (torch.sigmoid(value_a) - label_b)
                    d_b = 0.5 * (sig_b - label_a)
                else:
                    both = value_a + value_b
                    sig_both = torch.sigmoid(both)
                    edge = F.softplus(value_a) + b_terms["softplus"].index_select(0, partner) - F.softplus(both)
                    d_a = torch.sigmoid(value_a) - sig_both
                    d_b = sig_b - sig_both
                sums.index_add_(0, edge_image, edge * edge_weight)
                counts.index_add_(0, edge_image, edge_weight)
                grad_a.index_add_(0, centre_index, d_a * edge_weight)
                grad_b.index_add_(0, partner, d_b * edge_weight)
            grad_b = grad_b.view(batch, objects, frames, padded_height, padded_width)
            grad_b = grad_b[..., radius : radius + height, radius : radius + width]
            scale = 0.5 if detach == "soft" else 1.0
        ctx.save_for_backward(grad_a.view(a.shape) * scale, grad_b * scale)
        counts = counts.view(batch, objects, frames)
        ctx.mark_non_differentiable(counts)
        return sums.view(batch, objects, frames), counts

    @staticmethod
    def backward(ctx, grad_sums, grad_counts):  # noqa: D102
        grad_a, grad_b = ctx.saved_tensors
        scale = grad_sums[..., None, None]
        return grad_a * scale, grad_b * scale, None, None, None, None, None


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
    with torch.no_grad():
        lab = lab.to(logits.dtype)
        lab_grid = _offset_grid(lab, radius, dilation)  # B×T×3×K×K×H×W
        diff = lab[:, :, :, None, None] - lab_grid
        similarity = torch.exp(-torch.sqrt((diff * diff).sum(dim=2)) / gamma)  # B×T×K×K×H×W
        # zero padding gives out-of-image neighbours a similarity too: `_edge_sums` drops them
        active = (similarity >= tau).to(logits.dtype)
        active[:, :, half, half] = 0  # the centre is not its own neighbour
        rows = active.permute(0, 1, 4, 5, 2, 3).reshape(batch, frames, height, width, -1)  # B×T×H×W×K²
    num, count = _edge_sums(logits, logits, box_mask, rows, radius, dilation, "none")
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
    with torch.no_grad():
        rows = keep.permute(0, 1, 3, 4, 2)  # B×T×H×W×C
        if target == "patch":
            # match indicators per total offset δ = candidate offset + patch offset, on a D×D grid of
            # offsets at step 1; several (c, q) with the same δ are the same pixel pair counted several
            # times, as in eq. 3.18's double sum: rows @ hits, hits[c, δ] = #{q : offset_c + q = δ}
            patch_half = patch // 2
            radius, step = (candidates // 2) * spacing + patch_half, 1
            size = 2 * radius + 1
            offsets = candidate_offsets(candidates, spacing)
            hits = keep.new_zeros(len(offsets), size, size)
            for c, (cy, cx) in enumerate(offsets):
                hits[c, radius + cy - patch_half : radius + cy + patch_half + 1, radius + cx - patch_half : radius + cx + patch_half + 1] += 1
            rows = rows @ hits.reshape(len(offsets), -1)  # B×T×H×W×D²
        else:
            # "center": the partners are the candidates themselves, a grid with step = spacing
            radius, step = (candidates // 2) * spacing, spacing
        centre = box_mask.to(logits.dtype).amax(dim=2, keepdim=True)  # union of the boxes over frames, B×N×1×H×W
    following = (torch.arange(frames, device=logits.device) + 1) % frames
    partner = logits[:, :, following]  # x_t' for pair t
    num, count = _edge_sums(logits, partner, centre, rows, radius, step, detach)
    return _reduce(num, count, height * width, normalize, obj_valid)
