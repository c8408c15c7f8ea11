"""Training criteria: the weighted weak (box) loss and the oracle (mask) loss, with their schedules."""

from __future__ import annotations

import torch
from torch import nn

from vos.losses.color import frames_to_lab
from vos.losses.config import LossConfig
from vos.losses.oracle import bootstrap_p, bootstrapped_ce, dice_loss
from vos.data.boxes import box_masks
from vos.losses.resample import downsample_agg_logits, foreground_logits
from vos.losses.weak import pairwise_loss, projection_loss, temporal_loss


def warmup_scale(iteration: int, warmup_iters: int) -> float:
    """Linear ramp 0 → 1 over the first `warmup_iters` iterations (1 when warmup_iters = 0)."""
    if warmup_iters <= 0:
        return 1.0
    return min(1.0, max(0.0, iteration / warmup_iters))


class WeakLoss(nn.Module):
    """w_proj·L_proj + r(it)·(w_pair·L_pair + w_temp·L_temp), r = linear warm-up (thesis §4.3).

    Pass only the frames that carry predictions (XMem predicts frames 1..T−1 of a sample; frame 0
    is the given annotation). A term whose configured weight is 0 is not computed (ablations).
    """

    def __init__(self, config: LossConfig | None = None) -> None:
        super().__init__()
        self.config = config if config is not None else LossConfig()

    def weights(self, iteration: int) -> tuple[float, float, float]:
        """(projection, pairwise, temporal) weights at this iteration, warm-up applied."""
        cfg = self.config
        ramp = warmup_scale(iteration, cfg.warmup_iters)
        return cfg.w_proj, cfg.w_pair * ramp, cfg.w_temp * ramp

    def forward(
        self,
        agg_logits: torch.Tensor,
        frames: torch.Tensor,
        boxes: torch.Tensor,
        box_valid: torch.Tensor | None = None,
        iteration: int = 0,
        obj_valid: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Weak loss from network output at the input resolution.

        agg_logits: B×T×(N+1)×H×W aggregated logits (background first, soft aggregation);
        frames: B×T×3×H×W raw RGB (uint8, or float in [0, 1]; not ImageNet-normalised);
        boxes: B×N×T×4 XYXY input pixels, exclusive max; box_valid: B×N×T bool (False = absent);
        obj_valid: B×N bool (False = padded object slot). H and W must be divisible by the stride.
        Returns (total loss, components): see `from_loss_inputs`.
        """
        cfg = self.config

        def at(stride: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            logits = foreground_logits(downsample_agg_logits(agg_logits.float(), stride))
            lab = frames_to_lab(frames, stride).to(logits.device)
            size = (logits.shape[-2], logits.shape[-1])
            return logits, lab, box_masks(boxes, box_valid, size, stride).to(logits.device)

        inputs = at(cfg.stride)
        temporal = inputs
        if cfg.temporal_stride != cfg.stride and cfg.w_temp > 0:
            temporal = at(cfg.temporal_stride)
        return self.from_loss_inputs(*inputs, iteration, obj_valid, temporal=temporal)

    def from_loss_inputs(
        self,
        logits: torch.Tensor,
        lab: torch.Tensor,
        box_mask: torch.Tensor,
        iteration: int = 0,
        obj_valid: torch.Tensor | None = None,
        temporal: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Weak loss from loss-resolution inputs: logits B×N×T×h×w, lab B×T×3×h×w, box_mask B×N×T×h×w.

        temporal: (logits, lab, box_mask) at the temporal loss's own resolution (`temp_stride`);
        None = the inputs above.

        Returns (total, components) where components holds detached 0-dim tensors: "loss", "proj",
        "pair", "temp" (unweighted values; 0 when a term is switched off) and "w_pair", "w_temp"
        (the warmed-up weights in use).
        """
        cfg = self.config
        w_proj, w_pair, w_temp = self.weights(iteration)
        zero = logits.sum() * 0.0 + 0.0  # stays on the graph; + 0.0 avoids printing −0.0
        proj = pair = temp = zero
        if cfg.w_proj > 0:
            proj = projection_loss(
                torch.sigmoid(logits), box_mask, eps=cfg.eps, layout=cfg.layout, obj_valid=obj_valid,
                backend=cfg.backend,
            )
        if cfg.w_pair > 0:
            pair = pairwise_loss(
                logits, lab, box_mask, kernel=cfg.kernel, dilation=cfg.dilation, gamma=cfg.gamma, tau=cfg.tau,
                normalize=cfg.normalize, obj_valid=obj_valid, backend=cfg.backend,
            )
        if cfg.w_temp > 0:
            temp_logits, temp_lab, temp_box = temporal if temporal is not None else (logits, lab, box_mask)
            temp = temporal_loss(
                temp_logits, temp_lab, temp_box, patch=cfg.temp_patch, candidates=cfg.temp_candidates,
                spacing=cfg.temp_spacing, top_k=cfg.temp_top_k, tau=cfg.temp_tau, target=cfg.temp_target,
                detach=cfg.temp_detach, gamma=cfg.temp_gamma, normalize=cfg.normalize,
                obj_valid=obj_valid, backend=cfg.backend,
            )
        total = w_proj * proj + w_pair * pair + w_temp * temp
        parts = {
            "loss": total.detach(),
            "proj": proj.detach(),
            "pair": pair.detach(),
            "temp": temp.detach(),
            "w_pair": torch.tensor(w_pair),
            "w_temp": torch.tensor(w_temp),
        }
        return total, parts


class OracleLoss(nn.Module):
    """Fully supervised XMem loss: bootstrapped CE on the aggregated logits + dice (ε = 1) per object.

    Pass the supervised frames only — XMem's frames 1..T−1 (frame 0 is the given annotation):
    `labels[:, 1:]` with the logits predicted for them. Per-frame losses are averaged over the batch
    and summed over frames (config `oracle_frames: sum`, XMem) or averaged (`mean`, thesis eq. 3.4/3.6).
    """

    def __init__(self, config: LossConfig | None = None) -> None:
        super().__init__()
        self.config = config if config is not None else LossConfig()

    def forward(
        self,
        agg_logits: torch.Tensor,
        labels: torch.Tensor,
        iteration: int = 0,
        obj_valid: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """agg_logits: B×T×(N+1)×H×W; labels: B×T×H×W ids (0 = background, i = object i).

        Returns (total, components) with detached 0-dim tensors "loss", "ce", "dice" and "p" (the
        bootstrap fraction in use).
        """
        cfg = self.config
        agg_logits = agg_logits.float()
        p = bootstrap_p(iteration, cfg.boot_start, cfg.boot_end, cfg.boot_p)
        ce = bootstrapped_ce(agg_logits, labels, p=p, frames=cfg.oracle_frames, obj_valid=obj_valid)
        objects = agg_logits.shape[2] - 1
        prob = torch.softmax(agg_logits, dim=2)[:, :, 1:].transpose(1, 2)  # B×N×T×H×W
        ids = torch.arange(1, objects + 1, device=labels.device).view(1, objects, 1, 1, 1)
        target = (labels[:, None] == ids).to(prob.dtype)
        dice = dice_loss(prob, target, eps=cfg.dice_eps, frames=cfg.oracle_frames, obj_valid=obj_valid)
        total = ce + dice
        parts = {"loss": total.detach(), "ce": ce.detach(), "dice": dice.detach(), "p": torch.tensor(p)}
        return total, parts
