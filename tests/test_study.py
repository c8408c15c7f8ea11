"""vos.bench.study (bench/study.py): the box-of-every-frame baseline, pooling over seeds, targets, resuming and refusal."""

import json
from pathlib import Path

import pytest

from vos.bench import study as study_module
from vos.errors import VosError


def _study():
    return study_module


def _fake(out: Path, name: str, seed: int, jf_mask: float, jf_box: float, j: float) -> None:
    entry = {"J&F": jf_mask, "J": j, "F": jf_mask, "area_ratio": 0.9, "single_object_J&F": jf_mask + 0.1,
             "multi_object_J&F": jf_mask - 0.1}
    curve = [{"iteration": 5, "J&F": jf_mask / 2, "J": j / 2, "single_object_J&F": None, "multi_object_J&F": jf_mask / 3},
             {"iteration": 10, "J&F": jf_mask, "J": j, "single_object_J&F": None, "multi_object_J&F": jf_mask - 0.1}]
    path = out / "study" / f"{name}_s{seed}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({
        "variant": name, "label": name, "seed": seed, "overrides": [], "iterations": 10, "train_seconds": 60.0,
        "mask_init": entry, "box_init": {**entry, "J&F": jf_box}, "curve_mask_init": curve,
    }))


def test_gt_box_baseline_and_summary(synthetic_root, tmp_path):
    study = _study()
    work, out = tmp_path / "work", tmp_path / "out"
    baseline = study.run_gt_box(synthetic_root, work, out)
    # boxes of non-convex objects: clearly below a perfect J, and larger than the true masks
    assert 0.2 < baseline["mask_init"]["J"] < 0.9 and baseline["mask_init"]["area_ratio"] > 1.2
    for seed, shift in enumerate((-0.02, 0.0, 0.02)):
        _fake(out, "oracle", seed, 0.80 + shift, 0.60 + shift, 0.8)
        _fake(out, "proj", seed, 0.40 + shift, 0.30, 0.4)
        _fake(out, "proj_pair", seed, 0.41 + shift, 0.31, 0.4)
    _fake(out, "all_soft", 0, 0.72, 0.57, 0.7)  # one seed so far: a partial study is still summarised
    summary = study.summarise(out)
    assert [v["variant"] for v in summary["variants"]] == ["proj", "proj_pair", "all_soft", "oracle", "gt_box"]
    oracle = summary["variants"][3]
    assert oracle["mask_init"]["J&F"]["mean"] == pytest.approx(0.80)
    assert oracle["mask_init"]["J&F"]["std"] == pytest.approx(0.02)
    assert oracle["mask_init"]["J&F"]["n"] == 3
    weak = summary["variants"][2]
    assert weak["mask_init"]["relative_to_oracle"] == pytest.approx(0.9)
    assert weak["box_init"]["relative_to_oracle"] == pytest.approx(0.95)
    assert [p["iteration"] for p in oracle["curve_mask_init"]] == [5, 10]
    targets = summary["targets"]
    assert targets["weak_vs_oracle_mask_init"]["met"] is True  # 0.9 ≥ 0.90
    assert targets["weak_vs_oracle_box_init"]["met"] is True
    assert targets["weak_beats_boxes"]["value"] == pytest.approx(0.7 - baseline["mask_init"]["J"])
    assert targets["oracle_vs_gt_box"]["value"] == pytest.approx(0.80 - baseline["mask_init"]["J&F"])
    # +0.01 with a spread of 0.02 + 0.02 is no improvement; a comparison with one seed is not judged
    assert targets["proj_pair_over_proj_mask_init"]["met"] is False
    assert targets["all_soft_over_proj_pair_mask_init"]["met"] is None
    assert targets["proj_temp_over_proj_mask_init"]["value"] is None
    assert json.loads((out / "study.json").read_text())["variants"][2]["variant"] == "all_soft"
    table = (out / "study.md").read_text()
    assert "| oracle (mask-supervised) | 80.0 ± 2.0 |" in table and "| all losses, soft detach (demo) | 72.0 |" in table
    assert "not yet measured" in table
    assert (out / "study_curves.png").stat().st_size > 10_000


def test_a_result_with_other_settings_is_refused(synthetic_root, tmp_path):
    study = _study()
    out, work = tmp_path / "out", tmp_path / "work"
    config = study.run_config("proj", 1, synthetic_root, work, 10, [])
    assert config.train.seed == study.run_config("proj", 0, synthetic_root, work, 10, []).train.seed + 1
    path = study.result_path(out, "proj", 1)
    assert study.check_recorded(path, config) is False  # nothing recorded yet: run it
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"settings": study.comparable(config)}))
    assert study.check_recorded(path, config) is True  # recorded with these settings: never re-run
    # the same run elsewhere (other work folder) is the same experiment
    assert study.check_recorded(path, study.run_config("proj", 1, synthetic_root, tmp_path / "w2", 10, [])) is True
    with pytest.raises(VosError, match="other settings"):
        study.check_recorded(path, study.run_config("proj", 1, synthetic_root, work, 20, []))


def test_settings_of_a_loss_a_run_does_not_use_do_not_split_the_study(synthetic_root, tmp_path):
    """The oracle never computes a weak loss and a weak run never the oracle's: their constants are
    not part of what two runs must share; everything the run uses is."""
    study = _study()
    oracle = study.run_config("oracle", 0, synthetic_root, tmp_path, 10, [])
    assert study.comparable(oracle) == study.comparable(study.run_config("oracle", 0, synthetic_root, tmp_path, 10, ["losses.stride=2"]))
    assert study.comparable(oracle) != study.comparable(study.run_config("oracle", 0, synthetic_root, tmp_path, 10, ["losses.dice_eps=2.0"]))
    weak = study.run_config("all_soft", 0, synthetic_root, tmp_path, 10, [])
    assert study.comparable(weak) == study.comparable(study.run_config("all_soft", 0, synthetic_root, tmp_path, 10, ["losses.dice_eps=2.0"]))
    assert study.comparable(weak) != study.comparable(study.run_config("all_soft", 0, synthetic_root, tmp_path, 10, ["losses.stride=2"]))


def test_a_setting_added_later_matches_records_made_before_it_at_its_old_behaviour(synthetic_root, tmp_path):
    """A record made before `train.grad_clip` existed ran without clipping: it pools with runs at
    grad_clip 0 and not with clipped ones."""
    study = _study()
    path = study.result_path(tmp_path / "out", "oracle", 0)
    path.parent.mkdir(parents=True)
    unclipped = study.run_config("oracle", 0, synthetic_root, tmp_path, 10, ["train.grad_clip=0.0"])
    old = study.comparable(unclipped)
    old["train"].pop("grad_clip", None)
    path.write_text(json.dumps({"settings": old}))
    assert study.check_recorded(path, unclipped) is True
    with pytest.raises(VosError, match="other settings"):
        study.check_recorded(path, study.run_config("oracle", 0, synthetic_root, tmp_path, 10, ["train.grad_clip=2.0"]))


@pytest.mark.slow
def test_the_launcher_trains_in_a_subprocess_and_never_reruns_a_recorded_run(synthetic_root, tmp_path, capsys):
    """The whole path a user runs: `main` launches `python -m vos.bench.study --only …` per run,
    which trains (3 iterations of a narrow network), evaluates mask and box init and the curve,
    and records it; the same command again finds nothing to do. The run's folder already holds a
    training stopped before its first checkpoint (an interrupted start): it is started again."""
    from vos.train.trainer import train

    study = _study()
    work, out = tmp_path / "work", tmp_path / "out"
    extra = ["data.size=32", "model.value_dim=16"]
    train(study.run_config("proj", 0, synthetic_root, work, 3, extra), progress=False, stop_at=0)
    assert (work / "proj" / "s0" / "train" / "config.yaml").is_file()
    argv = ["--root", str(synthetic_root), "--work", str(work), "--out", str(out), "--variants", "proj",
            "--seeds", "1", "--iterations", "3", "--jobs", "1", *[arg for item in extra for arg in ("--set", item)]]
    assert study.main(argv) == 0
    assert "1 runs to do" in capsys.readouterr().out
    record = json.loads((out / "study" / "proj_s0.json").read_text())
    assert record["iterations"] == 3 and record["overrides"] == ["losses.w_pair=0.0", "losses.w_temp=0.0"]
    assert record["settings"]["data"]["size"] == 32 and record["settings"]["losses"]["w_temp"] == 0.0
    for init in ("mask_init", "box_init"):
        assert 0.0 <= record[init]["J&F"] <= 1.0
    assert record["mask_init"]["frame0_IoU"] == 1.0 and record["box_init"]["frame0_IoU"] < 1.0
    assert [point["iteration"] for point in record["curve_mask_init"]] == [1, 2, 3]
    summary = {row["variant"]: row for row in json.loads((out / "study.json").read_text())["variants"]}
    assert summary["proj"]["seeds"] == [0]
    assert summary["proj"]["mask_init"]["J&F"]["values"] == [record["mask_init"]["J&F"]]
    assert study.main(argv) == 0
    assert "0 runs to do" in capsys.readouterr().out


def test_every_variant_has_a_row_label_and_a_place_in_the_run_order():
    from vos.bench import study_report

    study = _study()
    assert study_report.ORDER == [*study.VARIANTS, study_report.BASELINE]
    assert set(study_report.LABELS) == set(study_report.ORDER)
    assert sorted(study.PRIORITY) == sorted(study.VARIANTS)
    assert {name for pair in study_report.ADDED_LOSS for name in pair} <= set(study.VARIANTS)
