"""Device helpers shared by inference, timing and the benchmarks."""

from __future__ import annotations

import torch


def synchronize(device: torch.device | str) -> None:
    """Wait for the device's queued work (CUDA); nothing to wait for elsewhere. Timings call it on
    both sides so that they cover exactly the work they name."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
