"""`vos demo` end to end on a tiny set: trains, evaluates both inits, writes the report; then resumes."""

import json

import pytest

from typer.testing import CliRunner

from cli import app


@pytest.mark.slow
def test_demo_runs_and_resumes(synthetic_root, tmp_path):
    runner = CliRunner()
    args = ["demo", "--root", str(synthetic_root), "--out", str(tmp_path / "demo"),
            "--set", "train.iterations=2", "--set", "train.batch_size=1", "--set", "data.size=32",
            "--set", "data.num_workers=0", "--set", "train.checkpoint_every=1"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "demo" / "demo.json").read_text())
    assert record["iterations"] == 2 and record["train_seconds"] is not None
    assert record["wall_seconds"] > record["train_seconds"] > 0  # the evaluations come after training
    assert "time: " in (tmp_path / "demo" / "demo.md").read_text()
    for init in ("mask_init", "box_init"):
        assert 0.0 <= record[init]["J&F"] <= 1.0 and record[init]["area_ratio"] >= 0.0
    assert record["mask_init"]["frame0_IoU"] == 1.0
    assert 0.0 < record["box_init"]["frame0_IoU"] < 1.0  # a box is not the mask of a non-convex object
    assert (tmp_path / "demo" / "overlay.png").is_file() and "| box |" in result.output
    # a second run reuses the trained weights and the finished evaluations
    again = runner.invoke(app, args)
    assert again.exit_code == 0 and "using trained weights" in again.output
    reused = json.loads((tmp_path / "demo" / "demo.json").read_text())
    assert reused["train_seconds"] is None and reused["wall_seconds"] > 0
    assert "weights reused" in (tmp_path / "demo" / "demo.md").read_text()
    # other settings are not silently given the earlier weights
    changed = runner.invoke(app, [*args, "--set", "train.iterations=3", "--set", "train.lr=0.01"])
    assert changed.exit_code == 1 and "Traceback" not in changed.output
    assert "train.iterations (2 → 3)" in changed.stderr and "train.lr" in changed.stderr
    assert json.loads((tmp_path / "demo" / "demo.json").read_text())["iterations"] == 2
