"""The trainer: box-only batches, an exact resume, non-finite steps, the oracle objective, the CLI."""

import json

import pytest
import torch
from typer.testing import CliRunner

from cli import app
from conftest import tiny_train_config
from vos.errors import VosError
from vos.model.weights import build_model, load_model
from vos.train import trainer as trainer_mod
from vos.train.recurrence import ClipRecurrence
from vos.train.trainer import train


def _config(root, out, *extra):
    return tiny_train_config(root, out, *extra)


def _weights(path):
    return {k: v.clone() for k, v in load_model(path).state_dict().items()}


def test_box_training_sees_no_masks_and_resumes_exactly(synthetic_root, tmp_path, monkeypatch):
    seen_keys = []
    original = trainer_mod.first_frame_masks

    def spy(batch, init, size):
        seen_keys.append(set(batch))
        return original(batch, init, size)

    monkeypatch.setattr(trainer_mod, "first_frame_masks", spy)
    straight = train(_config(synthetic_root, tmp_path / "a"), progress=False)
    assert seen_keys and all(not ({"masks", "first_mask"} & keys) for keys in seen_keys)

    # stop after 2 iterations, then resume to 4: identical weights to the straight run
    train(_config(synthetic_root, tmp_path / "b"), progress=False, stop_at=2)
    with pytest.raises(VosError, match="pass --resume to continue"):
        train(_config(synthetic_root, tmp_path / "b"), progress=False)
    resumed = train(_config(synthetic_root, tmp_path / "b"), resume=True, progress=False)
    a, b = _weights(straight), _weights(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)
    log = [json.loads(line) for line in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in log] == [1, 2, 3, 4]
    assert all(r["w_pair"] <= 1.0 and {"proj", "pair", "temp"} <= set(r) for r in log)
    assert (tmp_path / "a" / "samples" / "iter_0000002.png").is_file()
    changed = any(not torch.equal(a[k], v) for k, v in build_model("small", config=load_model(straight).config).state_dict().items())
    assert changed


def test_non_finite_losses_are_skipped_then_abort(synthetic_root, tmp_path, monkeypatch):
    def nan_forward(self, rgb, first, valid):
        out = ClipRecurrence.__wrapped_forward__(self, rgb, first, valid)
        out["agg_logits"] = out["agg_logits"] * float("nan")
        return out

    ClipRecurrence.__wrapped_forward__ = ClipRecurrence.forward
    monkeypatch.setattr(ClipRecurrence, "forward", nan_forward)
    try:
        with pytest.raises(VosError, match="3 consecutive non-finite losses"):
            train(_config(synthetic_root, tmp_path / "nan", "train.max_bad_steps=3"), progress=False)
    finally:
        del ClipRecurrence.__wrapped_forward__


def test_oracle_objective_and_config_checks(synthetic_root, tmp_path):
    cfg = _config(synthetic_root, tmp_path / "o", "train.objective=oracle", "data.supervision=mask", "data.first_frame_init=mask", "train.iterations=2")
    train(cfg, progress=False)
    log = [json.loads(line) for line in (tmp_path / "o" / "metrics.jsonl").read_text().splitlines()]
    assert {"ce", "dice"} <= set(log[-1])
    with pytest.raises(VosError, match="needs masks"):
        train(_config(synthetic_root, tmp_path / "o2", "train.objective=oracle"), progress=False)


def test_train_cli(synthetic_root, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"data:\n  datasets: [{{kind: synthetic, root: '{synthetic_root}'}}]\n  size: 32\n  num_frames: 3\n  num_workers: 0\n")
    runner = CliRunner()
    result = runner.invoke(app, ["train", str(cfg), "--out", str(tmp_path / "run"), "--set", "train.iterations=1", "--set", "train.batch_size=1"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "run" / "final.safetensors").is_file()
    result = runner.invoke(app, ["train", str(cfg), "--set", "train.bogus=1"])
    assert result.exit_code == 1 and "unknown key 'train.bogus'" in result.stderr


def test_mixture_weights_are_respected(synthetic_root):
    from collections import Counter

    from vos.data.clips import ClipDataset
    from vos.data.config import DataConfig, DatasetSpec

    cfg = DataConfig(
        datasets=[DatasetSpec(kind="synthetic", root=str(synthetic_root), weight=0.2),
                  DatasetSpec(kind="synthetic", root=str(synthetic_root), split="val", weight=0.8)],
        size=32, num_frames=2,
    )
    ds = ClipDataset(cfg, seed=0, total_draws=10)
    val = set((synthetic_root / "ImageSets/2017/val.txt").read_text().split())
    # the mixture draw is the first use of each clip's generator: replay it without decoding clips
    import numpy as np

    picks = Counter(int(np.random.default_rng([0, d]).choice(2, p=ds.weights)) for d in range(2000))
    assert abs(picks[1] / 2000 - 0.8) < 0.04
    names = [ds[d]["name"] for d in range(40)]
    share = sum(n in val for n in names) / len(names)
    assert 0.55 < share <= 1.0


def test_interrupted_checkpoint_write_keeps_the_previous_one(synthetic_root, tmp_path, monkeypatch):
    from vos.train import checkpoint as ckpt

    out = tmp_path / "run"
    train(_config(synthetic_root, out), progress=False, stop_at=2)

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(ckpt.torch, "save", crash)
    with pytest.raises(VosError, match="disk full"):
        train(_config(synthetic_root, out), resume=True, progress=False, stop_at=4)
    monkeypatch.undo()
    latest = json.loads((out / "checkpoints" / "latest.json").read_text())
    assert latest["iteration"] == 2  # still points at a complete checkpoint
    final = train(_config(synthetic_root, out), resume=True, progress=False)
    assert final.is_file()


def _ddp_worker(rank, world, root, out, port):
    """One DDP rank: train 2 iterations, then gather this rank's in-memory weights on rank 0."""
    import os

    import torch.distributed as dist

    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    models = []

    class Recording(ClipRecurrence):
        def __init__(self, model, *args, **kwargs):
            super().__init__(model, *args, **kwargs)
            models.append(model)

    trainer_mod.ClipRecurrence = Recording
    train(_config(root, out, "train.iterations=2", "train.sample_every=0"), progress=False)
    weights = torch.cat([p.detach().flatten() for p in models[0].parameters()])
    gathered = [torch.zeros_like(weights) for _ in range(world)]
    dist.all_gather(gathered, weights)
    if rank == 0:
        torch.save(torch.stack(gathered), out / "gathered.pt")
    dist.destroy_process_group()


@pytest.mark.slow
def test_two_process_gloo_ddp_ranks_agree(synthetic_root, tmp_path):
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_ddp_worker, args=(2, synthetic_root, tmp_path, port), nprocs=2, join=True)
    gathered = torch.load(tmp_path / "gathered.pt")
    assert torch.equal(gathered[0], gathered[1])


def test_learning_rate_warmup_and_steps(synthetic_root, tmp_path):
    """lr_warmup ramps linearly, lr_steps multiply by lr_gamma; the logged lr is the one used."""
    config = _config(synthetic_root, tmp_path / "run", "train.iterations=6", "train.lr_warmup=4", "train.lr_steps=[5]",
                     "train.lr_gamma=0.5")
    factor = trainer_mod.lr_factor(config.train)
    assert [factor(s) for s in range(7)] == pytest.approx([0.25, 0.5, 0.75, 1.0, 1.0, 0.5, 0.5])
    train(config, progress=False)
    logged = [json.loads(line)["lr"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert logged == pytest.approx([1e-3 * f for f in (0.5, 0.75, 1.0, 1.0, 0.5, 0.5)])


def test_gradient_clipping_and_the_collapse_signals(synthetic_root, tmp_path):
    """grad_clip bounds the step (a bound above the gradient's norm changes nothing, bit for bit);
    the log carries the unclipped norm and the foreground outside the boxes."""
    runs = {}
    for name, clip in (("free", "0.0"), ("loose", "1e9"), ("tight", "1e-9")):
        final = train(_config(synthetic_root, tmp_path / name, "train.iterations=2", "train.lr_warmup=0",
                              "train.weight_decay=0.0", f"train.grad_clip={clip}"), progress=False)
        log = [json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
        runs[name] = (_weights(final), log)
    free, loose, tight = (runs[n][0] for n in ("free", "loose", "tight"))
    assert all(torch.equal(free[k], loose[k]) for k in free)
    assert any(not torch.equal(free[k], tight[k]) for k in free)
    first = [runs[n][1][0] for n in ("free", "loose", "tight")]
    assert first[0]["grad_norm"] == first[1]["grad_norm"] == first[2]["grad_norm"] > 1e-6
    assert all(0.0 <= r["fg_outside_boxes"] <= 1.0 for r in runs["free"][1])
    with pytest.raises(VosError, match="grad_clip must be >= 0"):
        _config(synthetic_root, tmp_path / "bad", "train.grad_clip=-1")


def test_foreground_outside_boxes():
    probs = torch.zeros(1, 1, 3, 4, 4)  # B×T×(1+N)×H×W, background first
    probs[0, 0, 0] = 0.25  # background probability 0.25 everywhere: foreground 0.75
    boxes = torch.zeros(1, 1, 2, 4, 4)
    boxes[0, 0, 0, :2, :2] = 1  # one box covering 4 of the 16 pixels
    probs[0, 0, 0, :2, :2] = 1.0  # inside it: no foreground (not counted anyway)
    assert trainer_mod.foreground_outside_boxes(probs, boxes) == pytest.approx(0.75)
    assert trainer_mod.foreground_outside_boxes(probs, torch.ones(1, 1, 2, 4, 4)) == 0.0


def test_channels_last_training_is_the_same_model_and_resumes(synthetic_root, tmp_path):
    """train.channels_last changes the convolutions' memory layout only: the same first-step loss
    and gradient norm up to float order, weights saved in the ordinary layout and loadable, and a
    run may be resumed with the layout switched."""
    logs, finals = {}, {}
    for name, layout in (("plain", "false"), ("cl", "true")):
        finals[name] = train(_config(synthetic_root, tmp_path / name, "train.iterations=2", "train.lr_warmup=0",
                                     f"train.channels_last={layout}"), progress=False)
        logs[name] = [json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
    first_plain, first_cl = logs["plain"][0], logs["cl"][0]
    assert first_plain["loss"] == pytest.approx(first_cl["loss"], rel=1e-5)
    assert first_plain["grad_norm"] == pytest.approx(first_cl["grad_norm"], rel=1e-3)
    # the optimizer's moments take the parameters' layout: the run did train channels-last
    for name, expect_cl in (("plain", False), ("cl", True)):
        state = torch.load(tmp_path / name / "checkpoints" / "iter_0000002.state.pt", weights_only=False)
        # k×k kernels over several channels (for 1×1 kernels both layouts are the same strides)
        moments = [v["exp_avg"] for v in state["optimizer"]["state"].values()
                   if v["exp_avg"].dim() == 4 and v["exp_avg"].shape[1] > 1 and v["exp_avg"].shape[-1] > 1]
        assert moments and all(m.is_contiguous(memory_format=torch.channels_last) == expect_cl for m in moments)
        assert all(m.is_contiguous() != expect_cl for m in moments)
    plain, cl = _weights(finals["plain"]), _weights(finals["cl"])
    assert all(v.is_contiguous() for v in cl.values())
    assert max(float((plain[k].float() - cl[k].float()).abs().max()) for k in plain) < 1e-3
    # stopped at 1 iteration in the plain layout, resumed in channels-last
    train(_config(synthetic_root, tmp_path / "switch", "train.iterations=2", "train.lr_warmup=0"), progress=False, stop_at=1)
    resumed = train(_config(synthetic_root, tmp_path / "switch", "train.iterations=2", "train.lr_warmup=0",
                            "train.channels_last=true"), resume=True, progress=False)
    switched = _weights(resumed)
    assert max(float((plain[k].float() - switched[k].float()).abs().max()) for k in plain) < 1e-3
