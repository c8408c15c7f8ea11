"""Loss configuration (thesis ch. 3 and §4.3): every constant of the weak and oracle losses."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from vos.errors import ConfigError


@dataclass
class LossConfig:
    """Weights, schedules and constants of the weak (box) losses and of the oracle (mask) loss.

    Weights and schedule:
        w_proj / w_pair / w_temp: weights of the projection, pairwise and temporal losses.
        warmup_iters: the pairwise and temporal weights ramp linearly from 0 to their value over the
            first `warmup_iters` iterations (thesis §4.3: 10k); 0 disables the ramp.
        stride: loss resolution = input resolution / stride (4; 1 = full resolution). Frames
            and the network's probabilities are area-averaged down to it.
        temp_stride: the temporal loss's own resolution (None = `stride`). With the patch target a
            pixel has up to 81 partner offsets (a 9×9 window for 3×3 candidates 3 apart and 3×3
            patches) against the pairwise loss's 8, so a coarser temporal resolution is the way to
            afford full-resolution projection and pairwise terms on a CPU.
        backend: "auto" (Triton kernels from `vos.kernels.losses` on CUDA when present, else PyTorch; `vos.backends`),
            "torch", or "triton".

    Projection (eq. 3.8–3.12):
        eps: smoothing ε of the p = 2 dice, in numerator and denominator.
        layout: "stacked" (thesis: all B·N·T images as one B·N·T·H × W picture) or "per_image"
            (BoxInst / MaskFreeVIS: each H×W image separately, then averaged).

    Pairwise (eq. 3.13–3.17):
        kernel, dilation: K×K neighbourhood with dilation (3, 2 → 8 neighbours at distance 2).
        gamma: temperature γ of S = exp(−‖ΔLab‖₂/γ); tau: an edge is active when S ≥ τ.
        normalize: "pixels" (thesis: divide each image's sum by H·W) or "edges" (BoxInst: divide
            the total by the number of active edges). Shared by the temporal loss.

    Temporal (eq. 3.18–3.22):
        temp_patch: N of the N×N Lab patch descriptor (3 → 27 values).
        temp_candidates, temp_spacing: candidates form a temp_candidates² grid with this spacing
            around the pixel in the next frame (3, 3: MaskFreeVIS).
        temp_top_k: best candidates kept per pixel; temp_gamma / temp_tau: similarity temperature
            and threshold for patches.
        temp_target: "patch" (thesis: consistency with every pixel of the matched patch) or
            "center" (MaskFreeVIS: only with its centre).
        temp_detach: "soft" (eq. 3.22), "hard" (detached partner hardened to m > 0.5) or "none".

    Oracle (thesis §3.1.1, XMem):
        boot_start / boot_end / boot_p: bootstrapped CE keeps the top-p hardest pixels, p = 1 until
            boot_start, then linear to boot_p at boot_end.
        dice_eps: ε of the (p = 1) dice.
        oracle_frames: "sum" (XMem: per-frame losses summed over the supervised frames) or "mean"
            (thesis eq. 3.4 / 3.6: averaged over frames).
    """

    w_proj: float = 1.0
    w_pair: float = 1.0
    w_temp: float = 1.0
    warmup_iters: int = 10_000
    stride: int = 4
    temp_stride: int | None = None
    backend: Literal["auto", "torch", "triton"] = "auto"
    # projection
    eps: float = 1e-5
    layout: Literal["stacked", "per_image"] = "stacked"
    # pairwise
    kernel: int = 3
    dilation: int = 2
    gamma: float = 2.0
    tau: float = 0.3
    normalize: Literal["pixels", "edges"] = "pixels"
    # temporal
    temp_patch: int = 3
    temp_candidates: int = 3
    temp_spacing: int = 3
    temp_top_k: int = 5
    temp_gamma: float = 2.0
    temp_tau: float = 0.05
    temp_target: Literal["patch", "center"] = "patch"
    temp_detach: Literal["soft", "hard", "none"] = "soft"
    # oracle
    boot_start: int = 20_000
    boot_end: int = 70_000
    boot_p: float = 0.15
    dice_eps: float = 1.0
    oracle_frames: Literal["sum", "mean"] = "sum"

    @property
    def temporal_stride(self) -> int:
        """The stride the temporal loss runs at (`temp_stride`, or `stride` when unset)."""
        return self.stride if self.temp_stride is None else self.temp_stride

    def __post_init__(self) -> None:
        for name in ("w_proj", "w_pair", "w_temp", "eps", "dice_eps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
                raise ConfigError(f"losses.{name}: must be a number >= 0, got {value!r}")
        for name in ("gamma", "temp_gamma"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ConfigError(f"losses.{name}: must be a number > 0, got {value!r}")
        for name in ("tau", "temp_tau"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
                raise ConfigError(f"losses.{name}: must be a similarity threshold in [0, 1], got {value!r}")
        for name in ("warmup_iters", "boot_start", "boot_end"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"losses.{name}: must be an integer >= 0, got {value!r}")
        for name in ("stride", "dilation", "temp_spacing", "temp_top_k"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"losses.{name}: must be a positive integer, got {value!r}")
        if self.temp_stride is not None and (
            isinstance(self.temp_stride, bool) or not isinstance(self.temp_stride, int) or self.temp_stride < 1
        ):
            raise ConfigError(f"losses.temp_stride: must be a positive integer or null, got {self.temp_stride!r}")
        for name in ("kernel", "temp_patch", "temp_candidates"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1 or value % 2 == 0:
                raise ConfigError(f"losses.{name}: must be a positive odd integer, got {value!r}")
        if self.kernel < 3:
            raise ConfigError(f"losses.kernel: must be >= 3 so that a pixel has neighbours, got {self.kernel}")
        if self.boot_end < self.boot_start:
            raise ConfigError(f"losses.boot_end: must be >= boot_start ({self.boot_start}), got {self.boot_end}")
        if isinstance(self.boot_p, bool) or not isinstance(self.boot_p, (int, float)) or not 0 < self.boot_p <= 1:
            raise ConfigError(f"losses.boot_p: must be in (0, 1], got {self.boot_p!r}")
        choices = {
            "backend": ("auto", "torch", "triton"),
            "layout": ("stacked", "per_image"),
            "normalize": ("pixels", "edges"),
            "temp_target": ("patch", "center"),
            "temp_detach": ("soft", "hard", "none"),
            "oracle_frames": ("sum", "mean"),
        }
        for name, allowed in choices.items():
            value = getattr(self, name)
            if value not in allowed:
                options = ", ".join(repr(a) for a in allowed)
                raise ConfigError(f"losses.{name}: must be one of {options}, got {value!r}")
