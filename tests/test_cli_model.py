"""`vos segment` and `vos convert` through Typer's runner (small random model, tiny frames)."""

import torch
from typer.testing import CliRunner

from cli import app
from vos.data.io import read_mask
from vos.model.weights import build_model, load_model

runner = CliRunner()


def _error(result, text):
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and text in lines[0], result.stderr


def test_segment_with_mask_and_with_boxes(synthetic_root, small_weights, tmp_path):
    video = synthetic_root / "JPEGImages/480p/synth0000"
    first = synthetic_root / "Annotations/480p/synth0000/00000.png"
    out = tmp_path / "by_mask"
    result = runner.invoke(app, ["segment", str(video), "--out", str(out), "--weights", str(small_weights), "--mask", str(first), "--size", "-1", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    pngs = sorted(out.glob("*.png"))
    assert [p.name for p in pngs] == [f"{t:05d}.png" for t in range(6)]
    assert read_mask(pngs[0]).shape == (64, 96)
    # the annotated frame is given, so it comes back as given
    assert torch.equal(read_mask(pngs[0]), read_mask(first))

    out = tmp_path / "by_box"
    result = runner.invoke(app, ["segment", str(video), "--out", str(out), "--weights", str(small_weights), "--box", "10,10,40,30", "--box", "50,20,90,60", "--size", "-1"])
    assert result.exit_code == 0, result.output
    first_pred = read_mask(out / "00000.png")
    assert set(torch.unique(first_pred).tolist()) <= {0, 1, 2}
    assert (first_pred[10:30, 10:40] == 1).all()


def test_segment_from_a_middle_frame_both_ways_in_binary_and_untrained_warning(synthetic_root, small_weights, tmp_path):
    video = synthetic_root / "JPEGImages/480p/synth0000"
    out = tmp_path / "binary"
    args = ["segment", str(video), "--out", str(out), "--weights", str(small_weights), "--box", "10,10,40,30", "--frame", "3"]
    result = runner.invoke(app, [*args, "--direction", "backward", "--format", "binary", "--size", "32"])
    assert result.exit_code == 0, result.output
    # frames 3, 2, 1, 0 for object 1, one 0/255 PNG each; the prompt frame holds the box
    assert sorted(p.name for p in (out / "1").glob("*.png")) == [f"{t:05d}.png" for t in range(4)]
    third = read_mask(out / "1" / "00003.png")
    assert third.shape == (64, 96) and set(torch.unique(third).tolist()) == {0, 255}
    assert "network saw them at 48x32" in result.output  # the 64×96 frames were shrunk to --size 32
    # a preset name runs random weights, and says so loudly
    result = runner.invoke(app, ["segment", str(video), "--weights", "small", "--box", "10,10,40,30", "--out", str(tmp_path / "r"), "--size", "-1"])
    assert result.exit_code == 0 and "RANDOM, UNTRAINED" in result.stderr
    _error(runner.invoke(app, [*args, "--direction", "sideways", "--out", str(tmp_path / "x")]), "direction")
    _error(runner.invoke(app, [*args, "--format", "jpeg", "--out", str(tmp_path / "y")]), "format")


def test_segment_bad_inputs(synthetic_root, small_weights, tmp_path):
    video = synthetic_root / "JPEGImages/480p/synth0000"
    out = str(tmp_path / "o")
    _error(runner.invoke(app, ["segment", str(tmp_path / "nope"), "--out", out, "--weights", str(small_weights), "--box", "1,1,5,5"]), "not found")
    _error(runner.invoke(app, ["segment", str(video), "--out", out, "--weights", str(small_weights), "--box", "10,10,500,30"]), "outside")
    _error(runner.invoke(app, ["segment", str(video), "--out", out, "--weights", str(small_weights), "--box", "1,2,3"]), "expected x0,y0,x1,y1")
    _error(runner.invoke(app, ["segment", str(video), "--out", out, "--weights", str(small_weights)]), "exactly one initialisation")
    _error(runner.invoke(app, ["segment", str(video), "--out", out, "--weights", str(tmp_path / "w.pth"), "--box", "1,1,5,5"]), "not found")
    empty = tmp_path / "empty.png"
    from vos.data.io import write_mask

    write_mask(empty, torch.zeros(64, 96, dtype=torch.uint8))
    _error(runner.invoke(app, ["segment", str(video), "--out", out, "--weights", str(small_weights), "--mask", str(empty)]), "empty")
    _error(runner.invoke(app, ["segment", str(video), "--out", out, "--weights", str(small_weights), "--box", "1,1,5,5", "--set", "top_k=0"]), "memory.top_k")


def test_convert_pth_to_safetensors(tmp_path):
    model = build_model("small")
    torch.save(model.state_dict(), tmp_path / "model.pth")
    result = runner.invoke(app, ["convert", str(tmp_path / "model.pth"), str(tmp_path / "model.safetensors")])
    assert result.exit_code == 0, result.output
    again = load_model(tmp_path / "model.safetensors")
    for key, value in model.state_dict().items():
        assert torch.equal(value, again.state_dict()[key]), key
    _error(runner.invoke(app, ["convert", str(tmp_path / "model.pth"), str(tmp_path / "x.bin")]), ".safetensors")
    _error(runner.invoke(app, ["convert", str(tmp_path / "missing.pth"), str(tmp_path / "x.safetensors")]), "not found")


def test_score_cli_writes_reports(synthetic_root, tmp_path):
    gt = synthetic_root / "Annotations/480p"
    # the ground truth scored against itself is perfect
    result = runner.invoke(app, ["score", str(gt), str(gt), "--out", str(tmp_path / "s"), "--workers", "1"])
    assert result.exit_code == 0, result.output
    assert "100.0" in result.output
    assert {p.name for p in (tmp_path / "s").iterdir()} == {"scores.json", "scores_objects.csv", "scores.md", "vos-manifest.json", ".vos-written"}
    _error(runner.invoke(app, ["score", str(tmp_path / "none"), str(gt)]), "")
    _error(runner.invoke(app, ["score", str(gt), str(gt), "--protocol", "x"]), "--protocol")


def test_eval_cli_mask_and_box(synthetic_root, small_weights, tmp_path):
    for init in ("mask", "box"):
        out = tmp_path / f"ev-{init}"
        result = runner.invoke(app, ["eval", "--weights", str(small_weights), "--root", str(synthetic_root), "--init", init,
                                     "--out", str(out), "--size", "-1", "--device", "cpu", "--workers", "1"])
        assert result.exit_code == 0, result.output
        assert (out / "scores.json").is_file() and "J&F" in result.output
    _error(runner.invoke(app, ["eval", "--weights", str(small_weights), "--root", str(synthetic_root), "--init", "boxes"]), "--init")
    _error(runner.invoke(app, ["eval", "--weights", str(small_weights), "--root", str(tmp_path / "nowhere")]), "")
    _error(runner.invoke(app, ["eval", "--weights", str(small_weights), "--root", str(synthetic_root), "--shard", "3/2"]), "shard")
