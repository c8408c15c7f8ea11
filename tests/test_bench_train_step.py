"""The training-step benchmark's command line (the timing itself is a benchmark, not a test)."""

import pytest

from vos.bench import train_step
from vos.errors import VosError


def test_a_variant_is_a_name_and_its_overrides():
    assert train_step.parse_variant("cl=train.channels_last=true,data.num_workers=0") == (
        "cl", ["train.channels_last=true", "data.num_workers=0"])
    assert train_step.parse_variant("base=") == ("base", [])
    with pytest.raises(VosError, match="NAME="):
        train_step.parse_variant("train.channels_last")


def test_a_bad_window_is_one_error_line_before_any_training(tmp_path, capsys):
    assert train_step.main(["--root", str(tmp_path / "none"), "--out", str(tmp_path), "--iterations", "7"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: --iterations") and err.count("\n") == 1
    assert not (tmp_path / "none").exists() and not (tmp_path / "train_step_cpu.json").exists()
