"""The CLI's data commands through Typer's runner, including one-line errors for bad input."""

import shutil

from PIL import Image
from typer.testing import CliRunner

from cli import app

runner = CliRunner()


def _one_error_line(result):
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 1, result.output
    assert len(lines) >= 1 and all(line.startswith("error: ") for line in lines), result.stderr
    assert "Traceback" not in result.output
    return lines


def test_help_lists_commands():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    assert "data" in result.output


def test_synthetic_then_check(tmp_path):
    out = tmp_path / "synth"
    result = runner.invoke(app, ["data", "synthetic", str(out), "--videos", "3", "--frames", "4", "--size", "48x64"])
    assert result.exit_code == 0, result.output
    assert "mask-area/box-area" in result.output
    result = runner.invoke(app, ["data", "check", str(out)])
    assert result.exit_code == 0, result.output
    assert "train" in result.output and "val" in result.output


def test_check_missing_root(tmp_path):
    lines = _one_error_line(runner.invoke(app, ["data", "check", str(tmp_path / "missing")]))
    assert "no such dataset root" in lines[0]


def test_check_wrong_layout_names_expected_layout(tmp_path):
    (tmp_path / "something").mkdir()
    lines = _one_error_line(runner.invoke(app, ["data", "check", str(tmp_path)]))
    assert "not a DAVIS root" in lines[0] and "JPEGImages/480p" in lines[0] and "meta.json" in lines[0]


def test_check_reports_each_bad_file(synthetic_root, tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(synthetic_root, root)
    video = (root / "ImageSets/2017/val.txt").read_text().split()[0]
    frames = root / "JPEGImages/480p" / video
    masks = root / "Annotations/480p" / video
    (frames / "00001.jpg").write_bytes(b"not a jpeg")  # unreadable frame
    Image.new("RGB", (96, 64)).save(masks / "00002.png")  # RGB mask: not palette / grayscale
    Image.new("P", (50, 50)).save(masks / "00003.png")  # size mismatch
    lines = _one_error_line(runner.invoke(app, ["data", "check", str(root), "--split", "val"]))
    text = "\n".join(lines)
    assert len(lines) == 3
    assert "00001.jpg: unreadable or corrupt image" in text
    assert "00002.png: mask must be a palette (P) or grayscale (L) PNG" in text
    assert "00003.png: mask size (50, 50) differs from frame size (64, 96)" in text


def test_bad_size_option(tmp_path):
    lines = _one_error_line(runner.invoke(app, ["data", "synthetic", str(tmp_path / "x"), "--size", "big"]))
    assert "expected HxW" in lines[0]


def test_bench_needs_a_choice():
    result = runner.invoke(app, ["bench"])
    _one_error_line(result)
    result = runner.invoke(app, ["bench", "--video", "short"])
    assert "only video benchmark is 'longtime'" in _one_error_line(result)[0]
