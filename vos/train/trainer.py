"""The trainer: weak (box) or oracle (mask) supervision of XMem's training recurrence.

One call, :func:`train`, runs a config to completion or resumes it. It works single-process (CPU or
one GPU) and under ``torchrun`` (DDP; NCCL on GPU, gloo on CPU): rank 0 writes logs and checkpoints,
every rank draws its own clips (see ``vos.data.clips``).
"""

from __future__ import annotations

import os
import time
import warnings
from contextlib import nullcontext
from pathlib import Path
from typing import Callable

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader

from vos.config import Config, save_config, to_dict
from vos.data.clips import ClipDataset, DrawSampler, collate
from vos.errors import VosError
from vos.losses import OracleLoss, WeakLoss
from vos.data.boxes import box_masks, box_prompt_masks
from vos.model.network import XMem
from vos.model.resnet import update_batchnorm_statistics_
from vos.model.weights import load_model, save_weights
from vos.progress import progress as show_progress
from vos.output import claim_output
from vos.train.checkpoint import RESUME_MAY_DIFFER, check_resume_settings, is_training_run, load_checkpoint, save_checkpoint
from vos.train.recurrence import ClipRecurrence
from vos.train.log import TrainingLog
from vos.train.samples import write_sample_strip


def first_frame_masks(batch: dict, init: str, size: tuple[int, int]) -> torch.Tensor:
    """B×N×H×W initial masks of frame 0: the filled box (thesis; overlapping boxes painted as at
    inference) or the exact mask when there is one."""
    if init == "mask":
        if "first_mask" in batch:
            return batch["first_mask"]
        return batch["masks"][:, 0]
    return box_prompt_masks(batch["boxes"][:, 0], batch["box_valid"][:, 0], size)


def labels_from_masks(masks: torch.Tensor) -> torch.Tensor:
    """B×T×N×H×W binary masks → B×T×H×W ids (0 background, i+1 object i; later objects win overlaps)."""
    ids = torch.arange(1, masks.shape[2] + 1, device=masks.device).view(1, 1, -1, 1, 1)
    return (masks.bool() * ids).amax(dim=2)


class _Distributed:
    def __init__(self) -> None:
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.enabled = self.world > 1
        if self.enabled and not dist.is_initialized():
            dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")

    @property
    def device(self) -> torch.device:
        if torch.cuda.is_available():
            return torch.device("cuda", self.local_rank)
        return torch.device("cpu")

    @property
    def main(self) -> bool:
        return self.rank == 0


def lr_factor(tcfg) -> Callable[[int], float]:
    """The learning-rate multiplier after ``step`` optimiser steps: a linear warm-up over
    ``lr_warmup`` steps (from 1/lr_warmup), times ``lr_gamma`` for every ``lr_steps`` milestone passed."""
    steps = sorted(tcfg.lr_steps)

    def factor(step: int) -> float:
        warm = min(1.0, (step + 1) / tcfg.lr_warmup) if tcfg.lr_warmup > 0 else 1.0
        return warm * tcfg.lr_gamma ** sum(step >= m for m in steps)

    return factor


def build_model(config: Config) -> XMem:
    if config.train.init_weights:
        return load_model(config.train.init_weights)
    return XMem(config.model)


def train(
    config: Config,
    resume: bool = False,
    progress: bool = True,
    on_log: Callable[[dict], None] | None = None,
    stop_at: int | None = None,
    overwrite: bool = False,
) -> Path:
    """Train ``config``; returns the final weights path (``OUT/final.safetensors``).

    ``resume``: continue exactly from ``OUT/checkpoints/latest.json``; the saved settings must match
    (``RESUME_MAY_DIFFER`` lists the keys that may change). Without it, an output folder holding an
    earlier run is refused, so finished work is never overwritten; ``overwrite`` replaces it
    (:mod:`vos.output`). ``stop_at``: stop after this iteration with a checkpoint (a time-boxed slice
    of the same run; ``--resume`` continues it as if it had never stopped). Returns that checkpoint's weights.
    """
    if resume and overwrite:
        raise VosError("--resume continues a run and --overwrite replaces it: give one of them")
    out_dir = Path(config.train.out_dir)
    if int(os.environ.get("RANK", "0")) != 0:  # rank 0 owns the folder
        return _train(config, resume, progress, on_log, stop_at)
    settings = to_dict(config)
    if resume:
        check_resume_settings(out_dir, settings, RESUME_MAY_DIFFER)
    with claim_output(out_dir, "train", settings, overwrite=overwrite, resumable=resume, may_differ=RESUME_MAY_DIFFER,
                      adopt=is_training_run, resume_flag="--resume"):
        return _train(config, resume, progress, on_log, stop_at)


def _train(config: Config, resume: bool, progress: bool, on_log: Callable[[dict], None] | None, stop_at: int | None) -> Path:
    tcfg = config.train
    out_dir = Path(tcfg.out_dir)
    env = _Distributed()
    device = env.device
    torch.manual_seed(tcfg.seed + env.rank)
    # data first: a missing dataset root is reported before weights are built or downloaded
    dataset = ClipDataset(config.data, seed=tcfg.seed, total_draws=tcfg.iterations * tcfg.batch_size * env.world)
    if env.main:
        save_config(config, out_dir / "config.yaml")
    end = tcfg.iterations if stop_at is None else min(stop_at, tcfg.iterations)

    model = build_model(config).to(device)
    if tcfg.bn_statistics == "update":
        update_batchnorm_statistics_(model)
    if tcfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    model.train()
    recurrence = ClipRecurrence(model, tcfg.num_ref_frames, tcfg.deep_update_prob, backend=config.memory.backend)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=tcfg.lr, weight_decay=tcfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(tcfg))
    start = 0
    if resume:
        start = load_checkpoint(out_dir, model, optimizer, scheduler)
    runner: torch.nn.Module = recurrence
    if env.enabled:
        # not every parameter is used every step (deep update is random), hence find_unused_parameters
        runner = torch.nn.parallel.DistributedDataParallel(
            recurrence, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=True
        )
    if tcfg.compile:
        runner = torch.compile(runner)
    weak = tcfg.objective == "weak"
    criterion = WeakLoss(config.losses) if weak else OracleLoss(config.losses)
    if not weak and config.data.supervision != "mask":
        raise VosError("train.objective 'oracle' needs masks: set data.supervision to 'mask'")

    sampler = DrawSampler(start, end, tcfg.batch_size, env.rank, env.world)
    loader = DataLoader(
        dataset, batch_size=tcfg.batch_size, sampler=sampler, collate_fn=collate,
        num_workers=config.data.num_workers, persistent_workers=config.data.num_workers > 0,
        pin_memory=device.type == "cuda",
        # its own generator: creating the iterator must not draw from the global RNG, or a resumed
        # run's recurrence randomness (reference frames, deep updates) would shift by one draw
        generator=torch.Generator().manual_seed(tcfg.seed),
    )
    use_amp = tcfg.amp and device.type == "cuda"
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if use_amp else nullcontext
    size = (config.data.size, config.data.size)
    bad_steps, skipped = 0, 0
    last_weights = out_dir
    iteration = start
    t_last = time.perf_counter()
    bar = _progress_bar(progress and env.main, start, tcfg.iterations)
    log = TrainingLog(out_dir) if env.main else None
    with bar as advance, log or nullcontext():
        for batch in loader:
            iteration += 1
            batch = {k: (v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}
            rgb, object_valid = batch["rgb"], batch["object_valid"]
            first = first_frame_masks(batch, config.data.first_frame_init, size)
            with autocast():
                out = runner(rgb, first, object_valid)
            agg_logits = out["agg_logits"].float()
            if weak:
                loss, parts = criterion(
                    agg_logits, rgb[:, 1:], batch["boxes"][:, 1:].transpose(1, 2),
                    batch["box_valid"][:, 1:].transpose(1, 2), iteration=iteration, obj_valid=object_valid,
                )
            else:
                labels = labels_from_masks(batch["masks"][:, 1:])
                loss, parts = criterion(agg_logits, labels, iteration=iteration, obj_valid=object_valid)
            optimizer.zero_grad(set_to_none=True)
            if not torch.isfinite(loss):
                bad_steps += 1
                skipped += 1
                if bad_steps >= tcfg.max_bad_steps:
                    raise VosError(
                        f"training diverged: {bad_steps} consecutive non-finite losses at iteration {iteration} "
                        f"(lower train.lr or check the data)"
                    )
                with warnings.catch_warnings():  # the schedule follows iterations, stepped or skipped
                    warnings.simplefilter("ignore", UserWarning)
                    scheduler.step()
                advance()
                continue
            bad_steps = 0
            loss.backward()
            # the global gradient norm is logged either way (inf: measure without clipping)
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), tcfg.grad_clip or float("inf"))
            optimizer.step()
            scheduler.step()
            advance(float(loss.detach()))
            if env.main and (iteration % tcfg.log_every == 0 or iteration == tcfg.iterations):
                now = time.perf_counter()
                record = {"iteration": iteration, "lr": scheduler.get_last_lr()[0], "skipped": skipped,
                          "sec_per_it": (now - t_last) / max(1, min(tcfg.log_every, iteration - start))}
                record.update({k: float(v) for k, v in parts.items()})
                record["grad_norm"] = float(grad_norm)
                record["fg_outside_boxes"] = foreground_outside_boxes(
                    out["probs"].detach(), box_masks(batch["boxes"][:, 1:], batch["box_valid"][:, 1:], size)
                )
                t_last = now
                log.record(record)
                if on_log is not None:
                    on_log(record)
            if env.main and tcfg.sample_every and iteration % tcfg.sample_every == 0:
                write_sample_strip(out_dir / "samples" / f"iter_{iteration:07d}.png", batch, out["probs"].detach())
                log.images(iteration, batch, out["probs"])
            if env.main and (iteration % tcfg.checkpoint_every == 0 or iteration == end):
                last_weights = save_checkpoint(out_dir, iteration, model, optimizer, scheduler, tcfg.keep_checkpoints)
    if end < tcfg.iterations:
        if env.enabled:
            dist.barrier()
        return last_weights if env.main else out_dir
    final = out_dir / "final.safetensors"
    if env.main:
        save_weights(model, final)
    if env.enabled:
        dist.barrier()
    return final


def foreground_outside_boxes(probs: torch.Tensor, boxes: torch.Tensor) -> float:
    """Mean foreground probability of the pixels outside every box, a collapse signal of box
    supervision (it nears 1 when the whole frame has become foreground, where the weak losses'
    gradients vanish). probs: B×T×(N+1)×H×W with background first; boxes: B×T×N×H×W {0, 1}."""
    outside = boxes.amax(dim=2) == 0
    if not outside.any():
        return 0.0
    return float((1 - probs[:, :, 0])[outside].mean())


class _progress_bar:
    """Progress over iterations with the loss: a rich bar on a terminal, plain lines otherwise (logs,
    CI), or a no-op; used as ``with bar as advance: advance(loss)`` (``advance()``: a skipped step)."""

    def __init__(self, enabled: bool, start: int, total: int):
        self.enabled, self.start, self.total = enabled, start, total

    def __enter__(self) -> Callable[..., None]:
        self._display = show_progress("training", self.total, unit="it", start=self.start, enabled=self.enabled)
        step = self._display.__enter__()
        return lambda loss=None: step(1, "" if loss is None else f"loss {loss:.4f}")

    def __exit__(self, *exc) -> None:
        self._display.__exit__(*exc)


