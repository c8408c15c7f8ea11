"""Typed configs: YAML with `extends`, `--set` overrides, one-line errors naming file and key."""

from pathlib import Path

import pytest

from vos.config import Config, load_config, save_config, to_dict
from vos.errors import ConfigError

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_defaults_and_every_shipped_config_load():
    config = load_config(None)
    assert isinstance(config, Config)
    assert config.memory.top_k == 30 and config.memory.mem_every == 5
    shipped = sorted(CONFIGS.glob("*.yaml"))
    assert shipped, "configs/ has no YAML files"
    for path in shipped:
        assert isinstance(load_config(path), Config)


def test_extends_and_overrides(tmp_path):
    (tmp_path / "base.yaml").write_text("train:\n  lr: 0.001\n  batch_size: 4\nmemory:\n  top_k: 10\n")
    (tmp_path / "child.yaml").write_text("extends: base.yaml\ntrain:\n  batch_size: 2\n")
    config = load_config(tmp_path / "child.yaml", ["memory.top_k=20", "train.lr=1e-4", "data.supervision=mask"])
    assert config.train.batch_size == 2  # child wins
    assert config.train.lr == pytest.approx(1e-4)  # override wins
    assert config.memory.top_k == 20
    assert config.data.supervision == "mask"


def test_schedule_reference_scales_every_schedule(tmp_path):
    config = load_config(None, ["train.iterations=1100", "train.schedule_reference=110000", "train.lr_steps=[80000]",
                                "losses.warmup_iters=10000", "losses.boot_start=20000", "losses.boot_end=70000"])
    assert config.train.lr_steps == (800,) and config.losses.warmup_iters == 100
    assert (config.losses.boot_start, config.losses.boot_end) == (200, 700)
    # the loaded config holds the values in use: saving and loading it again scales nothing twice
    assert config.train.schedule_reference is None
    save_config(config, tmp_path / "run.yaml")
    again = load_config(tmp_path / "run.yaml")
    assert again.train.lr_steps == (800,) and again.losses.boot_end == 700
    with pytest.raises(ConfigError, match="schedule_reference"):
        load_config(None, ["train.schedule_reference=0"])


def test_round_trip(tmp_path):
    config = load_config(None, ["train.iterations=7"])
    save_config(config, tmp_path / "resolved.yaml")
    again = load_config(tmp_path / "resolved.yaml")
    assert to_dict(again) == to_dict(config)


@pytest.mark.parametrize(
    "text, message",
    [
        ("train:\n  lrr: 1\n", "unknown key 'train.lrr'"),
        ("train:\n  batch_size: eight\n", "'train.batch_size' must be int"),
        ("bogus: {}\n", "unknown key 'bogus'"),
        ("data:\n  supervision: boxes\n", "'data.supervision' must be one of"),
        ("train:\n  lr: -1\n", "train.lr must be > 0"),
        ("extends: missing.yaml\n", "missing.yaml: config file not found"),
        ("train: [1, 2\n", "not valid YAML"),
    ],
)
def test_errors_name_file_and_key(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    text = str(info.value)
    assert message in text
    assert "\n" not in text
    assert "bad.yaml" in text or "missing.yaml" in text


def test_missing_file_and_bad_override(tmp_path):
    with pytest.raises(ConfigError, match="nope.yaml: config file not found"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="'memory.top_k' must be int"):
        load_config(None, ["memory.top_k=many"])
    with pytest.raises(ConfigError, match="expected key.path=value"):
        load_config(None, ["memory.top_k"])
