"""TensorBoard logging of a training run: scalar tags for every loss term, lr and speed; image strips."""

import json

import pytest
from typer.testing import CliRunner

from cli import app
from conftest import tiny_train_config
from vos.output import recorded_files
from vos.train.log import scalar_tags
from vos.train.trainer import train

event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")


def _config(root, out, *extra):
    return tiny_train_config(root, out, "train.iterations=3", "train.checkpoint_every=3", "train.sample_every=3", *extra)


def _events(run_dir):
    acc = event_accumulator.EventAccumulator(str(run_dir), size_guidance={"images": 0, "scalars": 0})
    acc.Reload()
    return acc


@pytest.mark.parametrize(
    ("objective", "losses", "images"),
    [
        ("weak", {"loss/loss", "loss/proj", "loss/pair", "loss/temp", "weight/pair", "weight/temp"},
         {"clip/frames", "clip/boxes", "clip/prediction"}),
        ("oracle", {"loss/loss", "loss/ce", "loss/dice", "weight/boot_p"},
         {"clip/frames", "clip/boxes", "clip/prediction", "clip/mask"}),
    ],
)
def test_three_iterations_write_every_tag(synthetic_root, tmp_path, objective, losses, images):
    extra = ["train.objective=oracle", "data.supervision=mask"] if objective == "oracle" else []
    train(_config(synthetic_root, tmp_path, *extra), progress=False)
    acc = _events(tmp_path)
    tags = acc.Tags()
    assert losses | {"train/lr", "train/it_per_s", "train/skipped"} <= set(tags["scalars"])
    assert images <= set(tags["images"])
    # one point per logged iteration, equal to metrics.jsonl
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    loss = acc.Scalars("loss/loss")
    assert [e.step for e in loss] == [r["iteration"] for r in records] == [1, 2, 3]
    assert [e.value for e in loss] == pytest.approx([r["loss"] for r in records], rel=1e-6)
    # the event file is ours: listed in the run folder's record, so --overwrite removes it
    events = list(tmp_path.glob("events.out.tfevents.*"))
    assert len(events) == 1 and events[0] in recorded_files(tmp_path)
    strip = acc.Images("clip/prediction")[-1]
    assert strip.step == 3 and strip.width == 3 * 32 and strip.height == 32


def test_scalar_tags_name_every_record_key():
    record = {"iteration": 5, "lr": 1e-3, "skipped": 0, "sec_per_it": 0.5, "loss": 1.0, "proj": 0.5, "w_pair": 0.2}
    assert scalar_tags(record) == {
        "train/lr": 1e-3, "train/skipped": 0.0, "train/it_per_s": 2.0, "loss/loss": 1.0, "loss/proj": 0.5,
        "weight/pair": 0.2,
    }


def test_eval_adds_its_scores_to_the_training_run(synthetic_root, tmp_path):
    run = tmp_path / "run"
    final = train(_config(synthetic_root, run), progress=False)
    runner = CliRunner()
    args = ["eval", "--weights", str(final), "--dataset", "synthetic", "--root", str(synthetic_root), "--size", "-1",
            "--device", "cpu"]
    result = runner.invoke(app, [*args, "--out", str(tmp_path / "eval"), "--tensorboard", str(run)])
    assert result.exit_code == 0, result.output
    scores = json.loads((tmp_path / "eval" / "scores.json").read_text())["global"]
    acc = _events(run)
    for name in ("J&F", "J", "F"):
        (event,) = acc.Scalars(f"eval/{name}")
        assert event.step == 3 and event.value == pytest.approx(scores[f"{name}-Mean"], rel=1e-6)
    assert all(p in recorded_files(run) for p in run.glob("events.out.tfevents.*"))
    # a folder that is not a training run is refused before anything is evaluated
    bad = runner.invoke(app, [*args, "--out", str(tmp_path / "eval2"), "--tensorboard", str(tmp_path / "eval")])
    assert bad.exit_code == 1 and bad.output.count("error:") == 1 and "not the output folder" in bad.output
    assert not (tmp_path / "eval2").exists()
