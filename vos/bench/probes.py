"""What the long-video benchmark measures besides time: process and GPU memory, the device's name and
fp32 GEMM rate, the FLOPs of every inference stage, and a memory filled to its cap (prefill)."""

from __future__ import annotations

import math
import platform
import time

import torch

from vos.device import synchronize
from vos.memory.config import MemoryConfig
from vos.memory.core import InferenceCore
from vos.model.memory_read import memory_read
from vos.model.network import XMem


def process_memory() -> dict[str, float | None]:
    """Resident and peak resident memory of this process in MiB (None where the OS does not say)."""
    rss = peak = None
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1]) / 1024
                elif line.startswith("VmHWM:"):
                    peak = int(line.split()[1]) / 1024
    except OSError:
        try:
            import resource

            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        except (ImportError, OSError):
            pass
    return {"rss_mib": rss, "peak_rss_mib": peak}


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def gemm_gflops(device: torch.device, n: int = 2048, repeats: int = 5) -> float:
    """Best-of-``repeats`` fp32 GEMM rate (GFLOP/s) of ``device`` with the current thread count."""
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    best = math.inf
    with torch.inference_mode():
        a @ b
        for _ in range(repeats):
            synchronize(device)
            start = time.perf_counter()
            a @ b
            synchronize(device)
            best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


def stage_flops(
    model: XMem,
    padded_size: tuple[int, int],
    objects: int,
    memory_elements: int,
    memory: MemoryConfig,
) -> dict[str, float]:
    """GFLOP per frame of every stage at these shapes (2 FLOPs per multiply-add), averaged over
    memory frames (every ``mem_every``-th: value encoder, decoder without its own sensory update) and
    the others (decoder with it). The memory read at ``memory_elements`` elements per group, in
    ``memory.read_mode``; the sparse read's gather (k·HW·C multiply-adds) is counted by hand since
    the FLOP counter does not see ``embedding_bag``."""
    from torch.utils.flop_counter import FlopCounterMode

    param = next(model.parameters())
    dev, dt = param.device, param.dtype
    hp, wp = padded_size
    h, w = hp // 16, wp // 16
    cfg = model.config
    every = memory.mem_every

    def count(fn) -> float:
        with FlopCounterMode(display=False) as counter, torch.inference_mode():
            fn()
        return counter.get_total_flops() / 1e9

    image = torch.zeros(1, 3, hp, wp, device=dev, dtype=dt)
    masks = torch.zeros(1, objects, hp, wp, device=dev, dtype=dt)
    sensory = torch.zeros(1, objects, cfg.hidden_dim, h, w, device=dev, dtype=dt)
    readout = torch.zeros(1, objects, cfg.value_dim, h, w, device=dev, dtype=dt)
    with torch.inference_mode():
        _, _, _, features = model.encode_key(image)
    key_mem = count(lambda: model.encode_key(image, need_shrinkage=True))
    key_other = count(lambda: model.encode_key(image, need_shrinkage=False))
    dec_update = count(lambda: model.decode(features, sensory, readout, update_sensory=True))
    dec_plain = count(lambda: model.decode(features, sensory, readout, update_sensory=False))
    value = count(lambda: model.encode_value(image, features[0], sensory, masks, deep_update=True))
    n, hw, ck = memory_elements, h * w, cfg.key_dim
    c = objects * cfg.value_dim
    mk = torch.zeros(1, ck, n, device=dev, dtype=dt)
    ms = torch.ones(1, 1, n, device=dev, dtype=dt)
    qk = torch.zeros(1, ck, hw, device=dev, dtype=dt)
    mv = torch.zeros(1, c, n, device=dev, dtype=dt)
    read = count(lambda: memory_read(mk, ms, qk, qk, mv, top_k=memory.top_k, mode=memory.read_mode, backend="torch"))
    if memory.read_mode == "sparse":
        read += 2 * min(memory.top_k, n) * hw * c / 1e9
    sync_deep = memory.deep_update_every < 0
    decode = ((every - 1) * dec_update + (dec_plain if sync_deep else dec_update)) / every
    out = {
        "encode_key": ((every - 1) * key_other + key_mem) / every,
        "read": read,
        "decode": decode,
        "encode_value": value / every,
    }
    out["total"] = sum(out.values())
    return out


def fill_memory(core: InferenceCore, seed: int = 0, jitter: float = 0.05) -> int:
    """Fill every object group's memory to capacity: the long-term memory until a consolidation no
    longer grows it (its cap, pruned and refilled), then the working memory to
    ``max_mid_term_frames − 1`` frames — by storing copies of the group's first frame whose keys and
    values carry a little noise (``jitter`` × their std). The prototypes are made by the ordinary
    consolidation, the pruning is the ordinary pruning. Returns the memory frames stored."""
    mem, cfg = core.memory, core.config
    g = torch.Generator(device="cpu").manual_seed(seed)
    stored = 0
    for group in mem.groups:
        hw = group.hw
        first = group.view(group.num_long_term, group.num_long_term + hw)
        key, shrinkage, selection = first.key.clone(), first.shrinkage.clone(), first.selection.clone()
        bsz, n_obj = key.shape[0], len(group.object_ids)
        values = first.values.transpose(1, 2).reshape(bsz, n_obj, -1, hw).clone()
        k_std, v_std = float(key.float().std()), float(values.float().std())

        def add() -> None:
            nonlocal stored
            k = key + (torch.randn(key.shape, generator=g) * (jitter * k_std)).to(key.device, key.dtype)
            v = values + (torch.randn(values.shape, generator=g) * (jitter * v_std)).to(values.device, values.dtype)
            group.add_frame(k, shrinkage, selection, v)
            stored += 1

        while cfg.enable_long_term:
            before, consolidations = group.num_long_term, group.consolidations
            add()
            if group.consolidations > consolidations and group.num_long_term == before:
                break
        while group.working_frames < cfg.max_mid_term_frames - 1:
            add()
    return stored
