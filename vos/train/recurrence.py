"""XMem's training recurrence over a clip, as one module (so DDP and torch.compile can wrap it).

Frame 0 is given (its box or mask); frames 1..T−1 are predicted in order. Every frame's keys come
from one batched key-encoder pass. Frame t reads a memory made of the values of earlier frames with
a full softmax (no top-k: it must be differentiable); after 3 memory frames XMem keeps frame 0 plus a
random subset of the others, per sample. Predicted frames are encoded into memory with their own soft
masks, and the sensory memory is deep-updated with probability ``deep_update_prob``.
"""

from __future__ import annotations

import torch
from torch import nn

from vos.model.network import XMem
from vos.model.preprocess import normalize


class ClipRecurrence(nn.Module):
    """Runs the network over B clips of T frames; returns aggregated logits for frames 1..T−1."""

    def __init__(self, model: XMem, num_ref_frames: int = 3, deep_update_prob: float = 0.2, backend: str = "auto"):
        super().__init__()
        self.model = model
        self.num_ref_frames = num_ref_frames
        self.deep_update_prob = deep_update_prob
        self.backend = backend

    def forward(self, rgb: torch.Tensor, first_masks: torch.Tensor, object_valid: torch.Tensor) -> dict[str, torch.Tensor]:
        """rgb B×T×3×H×W in [0,1] (H, W multiples of 16), first_masks B×N×H×W ({0,1} or soft),
        object_valid B×N bool → {"agg_logits": B×(T−1)×(N+1)×H×W, "probs": same shape,
        "logits": B×(T−1)×N×H×W per-object logits}."""
        model = self.model
        batch, frames = rgb.shape[:2]
        selector = object_valid.to(rgb.dtype)
        images = normalize(rgb.flatten(0, 1)).view_as(rgb)
        key, shrinkage, selection, (f16, f8, f4) = model.encode_key(images)  # key: B×CK×T×h×w
        h, w = key.shape[-2:]
        objects = first_masks.shape[1]
        sensory = torch.zeros(batch, objects, model.hidden_dim, h, w, device=rgb.device, dtype=f16.dtype)
        first = first_masks.to(rgb.dtype) * selector[:, :, None, None]
        value, sensory = model.encode_value(images[:, 0], f16[:, 0], sensory, first)
        values = [value]  # each B×N×CV×h×w
        agg_logits, probs_out, logits_out = [], [], []
        for t in range(1, frames):
            ref = self._reference_frames(t, batch, rgb.device)  # B×R indices into 0..t−1
            mem_key = _gather_frames(key[:, :, :t], ref).flatten(2)  # B×CK×(R·h·w)
            mem_shrinkage = _gather_frames(shrinkage[:, :, :t], ref).flatten(2)
            stacked = torch.stack(values, 3)  # B×N×CV×t×h×w
            mem_value = _gather_frames(stacked.flatten(1, 2), ref).flatten(2)  # B×(N·CV)×(R·h·w)
            readout, _ = model.read_memory(
                key[:, :, t].flatten(2), selection[:, :, t].flatten(2), mem_key, mem_shrinkage, mem_value,
                top_k=None, backend=self.backend,
            )
            readout = readout.view(batch, objects, model.value_dim, h, w)
            last = t == frames - 1
            sensory, logits, _ = model.decode((f16[:, t], f8[:, t], f4[:, t]), sensory, readout, update_sensory=not last)
            prob_fg = torch.sigmoid(logits) * selector[:, :, None, None]
            frame_logits, frame_probs = model.aggregate(prob_fg)
            agg_logits.append(frame_logits)
            probs_out.append(frame_probs)
            logits_out.append(logits)
            if not last:
                deep = bool(torch.rand(()) < self.deep_update_prob)
                value, sensory = model.encode_value(images[:, t], f16[:, t], sensory, frame_probs[:, 1:], deep_update=deep)
                values.append(value)
        return {
            "agg_logits": torch.stack(agg_logits, 1),
            "probs": torch.stack(probs_out, 1),
            "logits": torch.stack(logits_out, 1),
        }

    def _reference_frames(self, t: int, batch: int, device) -> torch.Tensor:
        """Memory frames read at step t: all earlier ones while there are ≤ num_ref_frames, then frame 0
        plus num_ref_frames − 1 distinct random frames of 1..t−1, drawn per sample (XMem)."""
        if t <= self.num_ref_frames:
            return torch.arange(t, device=device).expand(batch, t)
        rows = []
        for _ in range(batch):
            others = torch.randperm(t - 1)[: self.num_ref_frames - 1] + 1
            rows.append(torch.cat((torch.zeros(1, dtype=torch.long), others.sort().values)))
        return torch.stack(rows).to(device)


def _gather_frames(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """x B×C×T×h×w, index B×R → B×C×R×h×w (frame gather per sample)."""
    b, c, _, h, w = x.shape
    idx = index.view(b, 1, -1, 1, 1).expand(b, c, index.shape[1], h, w)
    return torch.gather(x, 2, idx)
