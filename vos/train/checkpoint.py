"""Training checkpoints: weights in safetensors (+ model JSON) and the training state beside them.

Layout under ``OUT/checkpoints``::

    iter_0005000.safetensors / .json   model weights and config (loadable by ``load_model``)
    iter_0005000.state.pt              optimizer, scheduler, iteration, RNG states
    latest.json                        {"iteration": 5000, "weights": ..., "state": ...}

Every file is written to a temporary name and renamed, and ``latest.json`` is written last, so an
interrupted save never looks complete and ``--resume`` always finds a whole checkpoint.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from vos.errors import CheckpointError
from vos.model.weights import load_weights, save_weights
from vos.output import atomic_write, write_text


def save_checkpoint(out_dir: Path, iteration: int, model, optimizer, scheduler, keep: int) -> Path:
    ckpt_dir = out_dir / "checkpoints"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    stem = f"iter_{iteration:07d}"
    weights = save_weights(model, ckpt_dir / f"{stem}.safetensors")
    state = {
        "iteration": iteration,
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    state_path = ckpt_dir / f"{stem}.state.pt"
    with atomic_write(state_path) as tmp:
        torch.save(state, tmp)
    latest = {"iteration": iteration, "weights": Path(weights).name, "state": state_path.name}
    write_text(ckpt_dir / "latest.json", json.dumps(latest))
    _prune(ckpt_dir, keep)
    return Path(weights)


def _prune(ckpt_dir: Path, keep: int) -> None:
    stems = sorted({p.name.split(".")[0] for p in ckpt_dir.glob("iter_*.state.pt")})
    for stem in stems[:-keep]:
        for path in ckpt_dir.glob(f"{stem}.*"):
            path.unlink(missing_ok=True)


def latest_checkpoint(out_dir: Path) -> dict | None:
    path = out_dir / "checkpoints" / "latest.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        raise CheckpointError(f"{path}: unreadable; delete it to resume from the previous checkpoint") from None


def load_checkpoint(out_dir: Path, model, optimizer, scheduler) -> int:
    """Restore the latest checkpoint of ``out_dir`` into the given objects; return its iteration."""
    latest = latest_checkpoint(out_dir)
    if latest is None:
        raise CheckpointError(f"{out_dir}: no checkpoint to resume from (expected checkpoints/latest.json)")
    ckpt_dir = out_dir / "checkpoints"
    load_weights(model, ckpt_dir / latest["weights"])
    try:
        state = torch.load(ckpt_dir / latest["state"], map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{ckpt_dir / latest['state']}: training state missing") from None
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["torch_rng"])
    if state["cuda_rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    return int(state["iteration"])


# Settings that may change when a run is resumed: more iterations, the logging and checkpoint cadence,
# the data-loading workers and the folder itself. Anything else would silently mix two trainings.
RESUME_MAY_DIFFER = ("train.iterations", "train.log_every", "train.checkpoint_every", "train.sample_every",
                     "train.keep_checkpoints", "train.out_dir", "data.num_workers", "train.channels_last")


def is_training_run(out_dir: Path) -> bool:
    """A folder that ``vos train`` wrote (its saved config and a checkpoint), manifest or not."""
    return (Path(out_dir) / "config.yaml").is_file() and (Path(out_dir) / "checkpoints" / "latest.json").is_file()


def check_resume_settings(out_dir: Path, settings: dict, may_differ: tuple[str, ...]) -> None:
    """Refuse to continue ``out_dir`` with settings (``to_dict(config)``) other than its saved
    ``config.yaml`` in any key outside ``may_differ``, or with fewer iterations than already run."""
    import yaml

    from vos.output import differing_keys, settings_difference

    path = Path(out_dir) / "config.yaml"
    if not path.is_file():
        return  # nothing saved: load_checkpoint reports the missing run
    try:
        saved = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise CheckpointError(f"{path}: unreadable saved config ({exc.__class__.__name__})") from None
    keys = differing_keys(saved, settings, may_differ)
    if keys:
        raise CheckpointError(
            f"{out_dir}: cannot resume, the run {settings_difference(saved, settings, keys)}; resume with the "
            f"saved settings (only {', '.join(may_differ)} may change) or start a new --out"
        )
    latest = latest_checkpoint(Path(out_dir))
    done = int(latest["iteration"]) if latest else 0
    if settings["train"]["iterations"] < done:
        raise CheckpointError(f"{out_dir}: cannot resume with train.iterations={settings['train']['iterations']}, "
                              f"the run is at iteration {done} already")
