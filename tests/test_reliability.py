"""Fault injection through the CLI as a user runs it: every failure is one `error:` line with exit
code 1 and no traceback, the user's files are untouched, no stray or temporary file is left, and
finished results are kept (an eval killed mid-video redoes only that video)."""

import errno
import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from cli import app
from vos.data.io import read_mask, write_mask
from vos.model.weights import load_model

runner = CliRunner()
REPO = Path(__file__).resolve().parents[1]


def _error(result, *texts):
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for text in texts:
        assert text in lines[0], lines[0]
    return lines[0]


def _hashes(folder: Path) -> dict[str, str]:
    """Relative path → sha256 of every file under ``folder``."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def _temps(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if ".vos-tmp" in p.name or p.name.endswith(".tmp")]


def _segment(synthetic_root, small_weights, out, *extra):
    video = synthetic_root / "JPEGImages/480p/synth0000"
    mask = synthetic_root / "Annotations/480p/synth0000/00000.png"
    return runner.invoke(app, ["segment", str(video), "--out", str(out), "--weights", str(small_weights), "--mask", str(mask),
                               "--size", "-1", "--device", "cpu", *extra])


# ------------------------------------------------------------------------------ user files
def test_segment_refuses_foreign_folders_and_its_input(synthetic_root, small_weights, tmp_path):
    out = tmp_path / "masks"
    out.mkdir()
    (out / "00099.png").write_bytes(b"an old mask of the user's")
    (out / "notes.txt").write_text("keep me")
    before = _hashes(out)
    _error(_segment(synthetic_root, small_weights, out), str(out), "not written by vos")
    _error(_segment(synthetic_root, small_weights, out, "--overwrite"), "not written by vos")
    assert _hashes(out) == before

    frames = tmp_path / "frames"  # segmenting a folder of frames into itself
    frames.mkdir()
    for src in sorted((synthetic_root / "JPEGImages/480p/synth0000").glob("*.jpg")):
        (frames / src.name).write_bytes(src.read_bytes())
    before = _hashes(frames)
    video = ["segment", str(frames), "--weights", str(small_weights), "--box", "1,1,20,20", "--device", "cpu"]
    _error(runner.invoke(app, [*video, "--out", str(frames)]), "input folder")
    _error(runner.invoke(app, [*video, "--out", str(frames / "masks")]), "input folder")
    assert _hashes(frames) == before

    afile = tmp_path / "afile"
    afile.write_text("mine")
    _error(_segment(synthetic_root, small_weights, afile), str(afile), "not a folder")
    assert afile.read_text() == "mine"


def test_overwrite_removes_only_what_vos_wrote(synthetic_root, small_weights, tmp_path):
    out = tmp_path / "masks"
    result = _segment(synthetic_root, small_weights, out)
    assert result.exit_code == 0, result.output
    assert "segment synth0000: 6/6 frames" in result.output  # plain progress lines off a terminal
    first = _hashes(out)
    _error(_segment(synthetic_root, small_weights, out), "earlier `vos segment`", "--overwrite")
    assert _hashes(out) == first

    (out / "00099.png").write_bytes(b"the user's")  # something of the user's among ours
    _error(_segment(synthetic_root, small_weights, out, "--overwrite"), "00099.png", "was not")
    assert _hashes(out) == {**first, "00099.png": hashlib.sha256(b"the user's").hexdigest()}
    (out / "00099.png").unlink()

    # a shorter video replaces the earlier masks: no stale frame stays behind
    short = tmp_path / "short"
    short.mkdir()
    for src in sorted((synthetic_root / "JPEGImages/480p/synth0000").glob("*.jpg"))[:3]:
        (short / src.name).write_bytes(src.read_bytes())
    result = runner.invoke(app, ["segment", str(short), "--out", str(out), "--weights", str(small_weights), "--box", "10,10,40,30",
                                 "--device", "cpu", "--size", "-1", "--overwrite"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.glob("*.png")) == ["00000.png", "00001.png", "00002.png"]
    manifest = json.loads((out / "vos-manifest.json").read_text())
    assert manifest["command"] == "segment" and manifest["settings"]["boxes"] == {"1": [10.0, 10.0, 40.0, 30.0]}


def test_data_synthetic_refuses_non_empty_folders(tmp_path):
    out = tmp_path / "set"
    (out / "JPEGImages/480p/mine").mkdir(parents=True)
    (out / "JPEGImages/480p/mine/00000.jpg").write_bytes(b"x")
    before = _hashes(out)
    args = ["data", "synthetic", str(out), "--videos", "2", "--frames", "2", "--size", "32x32"]
    _error(runner.invoke(app, args), "not written by vos")
    assert _hashes(out) == before
    fresh = tmp_path / "fresh"
    assert runner.invoke(app, ["data", "synthetic", str(fresh), "--videos", "2", "--frames", "2", "--size", "32x32"]).exit_code == 0
    _error(runner.invoke(app, ["data", "synthetic", str(fresh), "--videos", "3", "--frames", "2", "--size", "32x32"]), "--overwrite")
    result = runner.invoke(app, ["data", "synthetic", str(fresh), "--videos", "3", "--frames", "2", "--size", "32x32", "--overwrite"])
    assert result.exit_code == 0, result.output
    assert len(list((fresh / "JPEGImages/480p").iterdir())) == 3 and not _temps(fresh)


# ------------------------------------------------------------------------------ I/O faults
def _enospc_after(monkeypatch, writes: int):
    """Make the image writer fail with ENOSPC after ``writes`` files, leaving a partial temporary."""
    from PIL import Image

    original = Image.Image.save
    count = {"n": 0}

    def save(self, fp, *args, **kwargs):
        count["n"] += 1
        if count["n"] > writes:
            Path(fp).write_bytes(b"\x89PNG partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        return original(self, fp, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "save", save)


def test_full_disk_is_one_line_and_leaves_no_temporaries(synthetic_root, small_weights, tmp_path, monkeypatch):
    out = tmp_path / "masks"
    _enospc_after(monkeypatch, 3)
    line = _error(_segment(synthetic_root, small_weights, out), "no space left")
    assert "00003.png" in line
    assert not _temps(out)
    assert sorted(p.name for p in out.glob("*.png")) == ["00000.png", "00001.png", "00002.png"]
    assert all(read_mask(p).shape == (64, 96) for p in out.glob("*.png"))  # finished frames are whole
    monkeypatch.undo()

    # safetensors reports a full disk as its own error type
    import safetensors.torch

    def full(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"partial")
        raise safetensors.SafetensorError("Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: \"No space left on device\" })")

    monkeypatch.setattr(safetensors.torch, "save_file", full)
    dst = tmp_path / "conv" / "model.safetensors"
    _error(runner.invoke(app, ["convert", str(small_weights), str(dst)]), str(dst), "no space left")
    assert not dst.parent.exists()  # no small_weights, no config without them, no temporaries, no empty folder


def _sys_read_only() -> bool:
    try:
        os.mkdir("/sys/vos-test-probe")
    except OSError:
        return Path("/sys").is_dir()
    os.rmdir("/sys/vos-test-probe")
    return False


@pytest.mark.skipif(not _sys_read_only(), reason="needs /sys where folders cannot be created")
def test_unwritable_out_is_one_line(synthetic_root, small_weights, tmp_path):
    _error(_segment(synthetic_root, small_weights, "/sys/vos-test-out"), "/sys/vos-test-out")
    _error(runner.invoke(app, ["data", "synthetic", "/sys/vos-test-set", "--videos", "2", "--frames", "2", "--size", "32x32"]),
           "/sys/vos-test-set")


# ------------------------------------------------------------------------------ inputs
def test_bad_inputs_get_clear_lines(synthetic_root, small_weights, tmp_path):
    video = synthetic_root / "JPEGImages/480p/synth0000"
    base = ["segment", str(video), "--out", str(tmp_path / "o"), "--weights", str(small_weights), "--device", "cpu"]
    _error(runner.invoke(app, [*base, "--box", "nan,50,200,150"]), "finite")
    _error(runner.invoke(app, [*base, "--box", "1,2,inf,4"]), "finite")
    _error(runner.invoke(app, [*base, "--box", "a,b,c,d"]), "x0,y0,x1,y1")
    assert not (tmp_path / "o").exists()

    import collections

    torch.save({"model": collections.Counter(a=1)}, tmp_path / "pickled.pth")
    line = _error(runner.invoke(app, [*base, "--weights", str(tmp_path / "pickled.pth"), "--box", "1,1,5,5"]), "pickled")
    assert "weights_only" not in line and line.rstrip().endswith(")")

    bad = tmp_path / "bad.yaml"
    bad.write_text("train: {lrr: 1}\n")
    line = _error(runner.invoke(app, ["train", str(bad), "--out", str(tmp_path / "run")]), "train.lrr")
    assert "--set" not in line.split("(")[0]
    assert not (tmp_path / "run").exists()

    _error(runner.invoke(app, ["eval", "--weights", str(small_weights), "--dataset", "y18", "--root", str(synthetic_root),
                               "--out", str(tmp_path / "y")]), "not a YouTube-VOS root")


def test_failed_training_leaves_no_folder(tmp_path):
    cfg = tmp_path / "nodata.yaml"
    cfg.write_text(f"data: {{datasets: [{{kind: synthetic, root: '{tmp_path / 'none'}', split: train}}]}}\n")
    _error(runner.invoke(app, ["train", str(cfg), "--out", str(tmp_path / "run")]), "none")
    assert not (tmp_path / "run").exists()


def test_dataset_faults_are_named(synthetic_root, small_weights, tmp_path):
    import shutil

    root = tmp_path / "set"
    shutil.copytree(synthetic_root, root)
    first = root / "Annotations/480p/synth0000/00000.png"
    write_mask(first, torch.zeros(64, 96, dtype=torch.uint8))
    result = runner.invoke(app, ["data", "check", str(root), "--split", "val"])
    assert result.exit_code == 1 and "first annotation of synth0000 has no object" in result.stderr

    write_mask(first, torch.ones(32, 40, dtype=torch.uint8))
    _error(runner.invoke(app, ["eval", "--weights", str(small_weights), "--root", str(root), "--out", str(tmp_path / "e"),
                               "--size", "-1", "--device", "cpu", "--workers", "1"]), str(first))


# ------------------------------------------------------------------------------ scoring never guesses
def test_score_names_stray_and_missing_predictions(synthetic_root, tmp_path):
    import shutil

    gt = synthetic_root / "Annotations/480p"
    pred = tmp_path / "pred"
    shutil.copytree(gt, pred)
    result = runner.invoke(app, ["score", str(pred), str(gt), "--workers", "1"])
    assert result.exit_code == 0 and "protocol: davis (inferred" in result.output
    shutil.copy(pred / "synth0000/00005.png", pred / "synth0000/00099.png")
    _error(runner.invoke(app, ["score", str(pred), str(gt), "--workers", "1"]), "00099", "no ground truth")
    _error(runner.invoke(app, ["score", str(pred), str(gt), "--workers", "1", "--protocol", "davis"]), "00099")
    (pred / "synth0000/00099.png").unlink()
    shutil.copytree(pred / "synth0001", pred / "extra")
    _error(runner.invoke(app, ["score", str(pred), str(gt), "--workers", "1"]), "extra", "no ground truth")
    shutil.rmtree(pred / "extra")
    (pred / "synth0001/00003.png").unlink()
    _error(runner.invoke(app, ["score", str(pred), str(gt), "--workers", "1"]), "synth0001", "00003")


# ------------------------------------------------------------------------------ reuse only what matches
def _train_config(root, out, *extra):
    from vos.config import load_config

    return load_config(None, [
        f"data.datasets=[{{kind: synthetic, root: '{root}', split: train}}]",
        "data.size=32", "data.num_frames=3", "data.num_workers=0", "data.max_objects=2",
        "train.iterations=2", "train.batch_size=1", f"train.out_dir={out}", "train.checkpoint_every=1",
        "train.sample_every=0", "model.hidden_dim=8", "model.value_dim=32", "model.decoder_dims=[32, 16, 16]",
        "model.hidden_update_dim=16", *extra,
    ])


def test_resume_refuses_other_settings_and_shows_progress(synthetic_root, tmp_path, capsys):
    from vos.errors import VosError
    from vos.train.trainer import train

    out = tmp_path / "run"
    train(_train_config(synthetic_root, out), progress=True)
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("training:")]
    assert lines and "loss " in lines[-1] and "2/2 it" in lines[-1] and "ETA" in lines[0]
    saved = (out / "config.yaml").read_text()
    with pytest.raises(VosError, match=r"other settings: train\.lr \(1e-05 → 0\.05\); resume"):
        train(_train_config(synthetic_root, out, "train.lr=0.05"), resume=True, progress=False)
    assert (out / "config.yaml").read_text() == saved
    # more iterations and other logging are allowed, and the saved config says what ran
    train(_train_config(synthetic_root, out, "train.iterations=3", "train.log_every=1"), resume=True, progress=False)
    assert "iterations: 3" in (out / "config.yaml").read_text()


# ------------------------------------------------------------------------------ eval: kill -9, shards
def _eval_cmd(root, small_weights, out, *extra):
    return [sys.executable, "-c", "from cli import app; app()", "eval", "--weights", str(small_weights), "--root", str(root),
            "--out", str(out), "--size", "-1", "--device", "cpu", "--workers", "1", *extra]


def _predictions(out: Path) -> dict[str, str]:
    return _hashes(out / "predictions")


def _scores(out: Path) -> dict:
    report = json.loads((out / "scores.json").read_text())
    return {"global": report["global"], "sequences": {k: {m: v for m, v in s.items() if m not in ("seconds", "fps", "peak_memory_bytes")}
                                                     for k, s in report["sequences"].items()}}


@pytest.fixture(scope="module")
def eval_root(tmp_path_factory):
    from vos.data.synthetic import SyntheticSpec, generate

    root = tmp_path_factory.mktemp("evalset") / "set"
    generate(root, SyntheticSpec(videos=8, frames=4, height=48, width=64, seed=5, max_objects=2))
    return root


def test_eval_killed_mid_video_then_rerun_equals_uninterrupted(eval_root, small_weights, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    straight = tmp_path / "straight"
    result = runner.invoke(app, ["eval", "--weights", str(small_weights), "--root", str(eval_root), "--out", str(straight),
                                 "--size", "-1", "--device", "cpu", "--workers", "1"])
    assert result.exit_code == 0, result.output
    # SIGKILL from inside the 6th mask write: the first val video is done, the second is half written
    killer = ("import os, signal\nimport vos.eval.runner as r\nn = {'k': 0}\nw = r.write_mask\n"
              "def write(*a, **k):\n    n['k'] += 1\n    if n['k'] == 6: os.kill(os.getpid(), signal.SIGKILL)\n    w(*a, **k)\n"
              "r.write_mask = write\nfrom cli import app\napp()")
    out = tmp_path / "killed"
    cmd = _eval_cmd(eval_root, small_weights, out)
    cmd[2] = killer
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    done = sorted(p.stem for p in (out / "done").glob("*.json"))
    assert len(done) == 1
    proc = subprocess.run(_eval_cmd(eval_root, small_weights, out), cwd=tmp_path, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert f"{done[0]}: done before" in proc.stdout  # the finished video was kept, not redone
    assert _predictions(out) == _predictions(straight)
    assert _scores(out) == _scores(straight)
    assert not _temps(out)


def test_two_eval_shards_share_one_folder(eval_root, small_weights, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    straight = tmp_path / "straight"
    assert runner.invoke(app, ["eval", "--weights", str(small_weights), "--root", str(eval_root), "--out", str(straight),
                               "--size", "-1", "--device", "cpu", "--workers", "1"]).exit_code == 0
    out = tmp_path / "shared"
    procs = [subprocess.Popen(_eval_cmd(eval_root, small_weights, out, "--shard", f"{i}/2"), cwd=tmp_path, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    assert _predictions(out) == _predictions(straight)
    assert _scores(out) == _scores(straight)
    assert json.loads((out / "vos-manifest.json").read_text())["command"] == "eval" and not _temps(out)


# ------------------------------------------------------------------------------ named files in shared folders
TINY_LONGTIME = ["bench", "--video", "longtime", "--frames", "3", "--size", "32", "--preset", "small", "--no-dense",
                 "--device", "cpu", "--threads", "1"]


def test_bench_longtime_replaces_only_its_own_results(tmp_path):
    results = tmp_path / "results"  # a shared results folder: the user's notes, a result from before the log
    results.mkdir()
    (results / "notes.md").write_text("the user's")
    (results / "longtime_cpu.json").write_text('{"written": "before the log"}')
    before = _hashes(results)
    _error(runner.invoke(app, [*TINY_LONGTIME, "--out", str(results)]),
           str(results / "longtime_cpu.json"), "not written by vos", "move it away")
    assert _hashes(results) == before and not _temps(results)

    (results / "longtime_cpu.json").rename(tmp_path / "old.json")
    result = runner.invoke(app, [*TINY_LONGTIME, "--out", str(results)])
    assert result.exit_code == 0, result.output
    assert "bench synthetic: 3/3 frames" in result.output  # plain progress lines off a terminal
    written = (results / ".vos-written").read_text().splitlines()
    assert written == ["longtime_cpu.json", "longtime_cpu_synthetic_fps.png", "longtime_cpu_synthetic_memory.png"]
    first = json.loads((results / "longtime_cpu.json").read_text())["created"]
    assert (results / "notes.md").read_text() == "the user's"

    result = runner.invoke(app, [*TINY_LONGTIME, "--out", str(results)])  # a re-run replaces its own results
    assert result.exit_code == 0, result.output
    assert (results / ".vos-written").read_text().splitlines() == written  # listed once
    assert json.loads((results / "longtime_cpu.json").read_text())["created"] >= first
    assert (results / "notes.md").read_text() == "the user's" and not _temps(results)

    afile = tmp_path / "afile"
    afile.write_text("mine")
    _error(runner.invoke(app, [*TINY_LONGTIME, "--out", str(afile)]), str(afile), "not a folder")
    assert afile.read_text() == "mine"


def test_bench_kernels_refuse_before_running_and_show_progress(tmp_path, monkeypatch):
    from vos.bench import memory_read, weak_losses

    scripts = {"memory_read": memory_read, "weak_losses": weak_losses}
    monkeypatch.setattr(memory_read, "MEMORY_SIZES", (64, 128))  # tiny shapes: CPU seconds
    monkeypatch.setattr(memory_read, "HW", 48)
    results = tmp_path / "results"
    results.mkdir()
    foreign = results / scripts["weak_losses"].result_file(results).name
    foreign.write_text("the user's")
    before = _hashes(results)
    _error(runner.invoke(app, ["bench", "--kernels", "--quick", "--out", str(results)]), str(foreign), "not written by vos")
    assert _hashes(results) == before  # refused before the first benchmark ran: nothing was written
    foreign.unlink()
    result = runner.invoke(app, ["bench", "--kernels", "--quick", "--out", str(results)])
    assert result.exit_code == 0, result.output
    assert "memory_read: 2/2 shapes" in result.output and "weak_losses: 2/2 shapes" in result.output
    names = sorted(scripts[n].result_file(results).name for n in scripts)
    assert sorted((results / ".vos-written").read_text().splitlines()) == names
    assert sorted(p.name for p in results.iterdir()) == sorted([".vos-written", *names])


def test_analyze_outputs_never_replace_the_users_files(synthetic_root, tmp_path):
    table = tmp_path / "T.json"
    table.write_text("the user's table")
    consistency = ["analyze", "consistency", str(synthetic_root), "--split", "val", "--clips", "2",
                   "--set", "data.size=32", "--set", "data.num_frames=3"]
    _error(runner.invoke(app, [*consistency, "--out", str(table)]), str(table), "not written by vos")
    assert table.read_text() == "the user's table"
    _error(runner.invoke(app, [*consistency, "--out", str(synthetic_root / "T.json")]), "input")
    assert not (synthetic_root / "T.json").exists()
    ours = tmp_path / "tables" / "T.json"
    for _ in range(2):  # a second run replaces the table the first wrote
        result = runner.invoke(app, [*consistency, "--out", str(ours)])
        assert result.exit_code == 0, result.output
        assert json.loads(ours.read_text())["clips"] == 2

    out = tmp_path / "fill.png"
    (tmp_path / "fill.json").write_text("the user's counts")  # the .json written beside the PNG
    before = _hashes(tmp_path)
    fill = ["analyze", "fill", str(synthetic_root), "--split", "val"]
    _error(runner.invoke(app, [*fill, "--out", str(out)]), str(tmp_path / "fill.json"), "not written by vos")
    _error(runner.invoke(app, [*fill, "--out", str(tmp_path / "fill.json")]), ".png")
    assert _hashes(tmp_path) == before and not _temps(tmp_path)
    out = tmp_path / "figs" / "fill.png"
    for _ in range(2):
        result = runner.invoke(app, [*fill, "--out", str(out)])
        assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.parent.iterdir()) == [".vos-written", "fill.json", "fill.png"]


def test_convert_never_replaces_the_users_file(small_weights, tmp_path):
    dst = tmp_path / "model.safetensors"
    dst.write_bytes(b"the user's weights")
    before = _hashes(tmp_path)
    _error(runner.invoke(app, ["convert", str(small_weights), str(dst)]), str(dst), "not written by vos", "another DST")
    dst.unlink()
    (tmp_path / "model.json").write_text("the user's config")
    _error(runner.invoke(app, ["convert", str(small_weights), str(dst)]), str(tmp_path / "model.json"), "not written by vos")
    assert _hashes(tmp_path) == {k: v for k, v in before.items() if k != "model.safetensors"} | {
        "model.json": hashlib.sha256(b"the user's config").hexdigest()}
    _error(runner.invoke(app, ["convert", str(small_weights), str(small_weights)]), "input")
    fresh = tmp_path / "conv" / "model.safetensors"
    for _ in range(2):  # converting again replaces what the first conversion wrote
        result = runner.invoke(app, ["convert", str(small_weights), str(fresh)])
        assert result.exit_code == 0, result.output
    assert sorted(p.name for p in fresh.parent.iterdir()) == [".vos-written", "model.json", "model.safetensors"]
    assert torch.equal(load_model(fresh).state_dict()["key_proj.key_proj.weight"],
                       load_model(small_weights).state_dict()["key_proj.key_proj.weight"])


def test_claimed_file_is_checked_again_when_written(tmp_path):
    from vos.errors import VosError
    from vos.output import claim_files, write_text

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".r.json.vos-tmp{int(dead.stdout)}"  # left by a process killed mid-write
    stale.write_text("partial")
    target = tmp_path / "r.json"
    with claim_files([target]):
        assert not stale.exists()
        target.write_text("the user's, created during the run")
        with pytest.raises(VosError, match="not written by vos"):
            write_text(target, "ours")
    assert target.read_text() == "the user's, created during the run" and not _temps(tmp_path)
