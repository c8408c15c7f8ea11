"""XMem network: the stages as plain methods on tensors.

Module and parameter names follow XMem's, so the official checkpoints load with ``strict=True``
(see ``vos.model.weights``). Shapes: B batch, N objects, CK key dim, CV value dim, CH sensory dim,
H×W the padded input (multiple of 16), h×w = H/16×W/16.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vos.model.memory_read import memory_read
from vos.model.aggregate import aggregate, object_probs
from vos.model.config import ModelConfig
from vos.model.decoder import Decoder
from vos.model.encoders import KeyEncoder, KeyProjection, ValueEncoder


class XMem(nn.Module):
    """Key encoder + key projection + value encoder + decoder, configured by :class:`ModelConfig`.

    BatchNorm statistics are frozen: every BN layer is a ``FrozenBatchNorm2d`` that normalises with its
    running statistics and stays in eval mode whatever ``train()`` asks; BN affine weights still learn.
    ``config.pretrained`` loads torchvision's ImageNet weights into both ResNet trunks here (a download
    on first use; CheckpointError when it cannot be had).
    The image half of the fusion blocks and of the value encoder's first convolution is computed
    once per frame, where XMem computes it once per object (same outputs; ``vos.bench.xmem_emulation``
    rebuilds XMem's way for the benchmarks).
    """

    def __init__(self, config: ModelConfig | None = None) -> None:
        super().__init__()
        self.config = config if config is not None else ModelConfig()
        cfg = self.config
        c16, c8, c4 = cfg.key_encoder_channels
        self.key_encoder = KeyEncoder(cfg.key_encoder)
        self.value_encoder = ValueEncoder(c16, cfg.value_dim, cfg.hidden_dim)
        self.key_proj = KeyProjection(c16, cfg.key_dim)
        self.decoder = Decoder((c16, c8, c4), cfg.value_dim, cfg.hidden_dim, cfg.decoder_dims, cfg.hidden_update_dim)
        if cfg.pretrained:
            self.load_imagenet()

    @property
    def key_dim(self) -> int:
        return self.config.key_dim

    @property
    def value_dim(self) -> int:
        return self.config.value_dim

    @property
    def hidden_dim(self) -> int:
        return self.config.hidden_dim

    def load_imagenet(self) -> None:
        """Initialise both ResNet trunks from torchvision's ImageNet weights (downloads if not cached)."""
        self.key_encoder.load_imagenet()
        self.value_encoder.load_imagenet()

    def encode_key(
        self, image: torch.Tensor, need_shrinkage: bool = True, need_selection: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Keys and multi-scale features of normalised, padded frames.

        image B×3×H×W → key B×CK×h×w, shrinkage B×1×h×w | None, selection B×CK×h×w | None,
        features (f16 B×C16×h×w, f8 B×C8×2h×2w, f4 B×C4×4h×4w).

        image B×T×3×H×W (training clips) → key/shrinkage/selection B×C×T×h×w (XMem's layout: the
        memory dims T×h×w flatten into one) and features B×T×C×… .
        """
        if image.dim() not in (4, 5):
            raise ValueError(f"encode_key expects B×3×H×W or B×T×3×H×W, got shape {tuple(image.shape)}")
        clip = image.dim() == 5
        if clip:
            batch, frames = image.shape[:2]
            image = image.flatten(0, 1)
        f16, f8, f4 = self.key_encoder(image)
        key, shrinkage, selection = self.key_proj(f16, need_shrinkage, need_selection)
        if clip:

            def per_channel(x: torch.Tensor | None) -> torch.Tensor | None:
                if x is None:
                    return None
                return x.view(batch, frames, *x.shape[1:]).transpose(1, 2).contiguous()

            key, shrinkage, selection = per_channel(key), per_channel(shrinkage), per_channel(selection)
            f16, f8, f4 = (f.view(batch, frames, *f.shape[1:]) for f in (f16, f8, f4))
        return key, shrinkage, selection, (f16, f8, f4)

    def encode_value(
        self,
        image: torch.Tensor,
        f16: torch.Tensor,
        sensory: torch.Tensor,
        masks: torch.Tensor,
        deep_update: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Memory values of N objects in one frame.

        image B×3×H×W (normalised, padded), f16 B×C16×h×w (from encode_key), sensory B×N×CH×h×w,
        masks B×N×H×W (probabilities or binary) → (value B×N×CV×h×w, new sensory B×N×CH×h×w; the
        input sensory when ``deep_update`` is False). Each object also sees Σ_{j≠i} masks_j.
        """
        others = masks.sum(dim=1, keepdim=True) - masks
        return self.value_encoder(image, f16, sensory, masks, others, deep_update)

    def read_memory(
        self,
        query_key: torch.Tensor,
        query_selection: torch.Tensor,
        mem_key: torch.Tensor,
        mem_shrinkage: torch.Tensor,
        mem_value: torch.Tensor,
        top_k: int | None = None,
        backend: str = "auto",
        need_usage: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Memory readout: query_key/query_selection B×CK×HW, mem_key B×CK×N, mem_shrinkage B×1×N,
        mem_value B×C×N → (readout B×C×HW, usage B×N or None) from ``vos.model.memory_read.memory_read``.

        ``top_k`` None reads with the full softmax (training); ``backend`` picks the implementation;
        ``need_usage`` also returns the per-element usage (column sums of the affinity).

        Under autocast (mixed-precision training) the read still computes the similarity and the
        softmax in fp32: autocast is switched off around it (it would run the similarity GEMM in
        bf16/fp16, whose rounding of the squared distances flips the softmax).
        """
        with torch.autocast(query_key.device.type, enabled=False):
            return memory_read(
                mem_key, mem_shrinkage, query_key, query_selection, mem_value,
                top_k=top_k, backend=backend, need_usage=need_usage,
            )

    def decode(
        self,
        features: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
        sensory: torch.Tensor,
        readout: torch.Tensor,
        update_sensory: bool = True,
        selector: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Segment N objects from the memory readout.

        features (f16, f8, f4) of one frame (batch B), sensory B×N×CH×h×w, readout B×N×CV×h×w →
        (new sensory B×N×CH×h×w, logits B×N×H×W per object at the padded input resolution,
        probs B×(N+1)×H×W soft-aggregated, background first).
        ``selector`` B×N (1 = object present, 0 = padding slot) zeroes absent objects' probabilities
        before aggregation, as XMem does in training.
        """
        f16, f8, f4 = features
        sensory, logits = self.decoder(f16, f8, f4, sensory, readout, update_sensory)
        logits = F.interpolate(logits, scale_factor=4.0, mode="bilinear", align_corners=False)
        return sensory, logits, object_probs(logits, selector)

    @staticmethod
    def aggregate(probs_fg: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """probs_fg B×N×H×W → (logits, probs) B×(N+1)×H×W; soft aggregation, background first."""
        return aggregate(probs_fg)
