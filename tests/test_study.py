"""bench/study.py: the box-of-every-frame baseline and the summary (relative figures, targets, table)."""

import importlib.util
import json
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[1] / "bench" / "study.py"


def _study():
    spec = importlib.util.spec_from_file_location("vos_bench_study", _PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _fake(work: Path, name: str, jf_mask: float, jf_box: float, j: float) -> None:
    (work / name).mkdir(parents=True)
    entry = {"J&F": jf_mask, "J": j, "F": jf_mask, "area_ratio": 0.9}
    (work / name / "result.json").write_text(json.dumps({
        "variant": name, "label": name, "overrides": [], "iterations": 10, "train_seconds": 60.0,
        "mask_init": entry, "box_init": {**entry, "J&F": jf_box},
    }))


def test_gt_box_baseline_and_summary(synthetic_root, tmp_path):
    study = _study()
    work, out = tmp_path / "work", tmp_path / "out"
    baseline = study.run_gt_box(synthetic_root, work)
    # boxes of non-convex objects: clearly below a perfect J, and larger than the true masks
    assert 0.2 < baseline["mask_init"]["J"] < 0.9 and baseline["mask_init"]["area_ratio"] > 1.2
    _fake(work, "oracle", 0.80, 0.60, 0.8)
    _fake(work, "proj", 0.40, 0.30, 0.4)
    _fake(work, "all_soft", 0.72, 0.57, 0.7)
    summary = study.summarise(work, out)
    assert [v["variant"] for v in summary["variants"]] == ["proj", "all_soft", "oracle", "gt_box"]
    weak = summary["variants"][1]
    assert weak["mask_init"]["relative_to_oracle"] == pytest.approx(0.9)
    assert weak["box_init"]["relative_to_oracle"] == pytest.approx(0.95)
    targets = summary["targets"]
    assert targets["J_minus_gt_box_J>=0.15"] == pytest.approx(0.7 - baseline["mask_init"]["J"])
    assert targets["all_minus_proj_J&F_mask_init>0"] == pytest.approx(0.32)
    assert json.loads((out / "study.json").read_text())["variants"][1]["variant"] == "all_soft"
    table = (out / "study.md").read_text()
    assert "| all_soft | 72.0 |" in table and table.count("\n") == 2 + 4
