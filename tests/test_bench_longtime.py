"""``vos bench --video longtime`` on tiny shapes: its report, plots, memory pre-fill and inputs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from vos.bench.longtime import run_longtime, summarize_memory
from vos.bench.plot import Panel, save_histogram, save_plot
from vos.bench.probes import fill_memory, stage_flops
from vos.bench.videos import long_time_videos, synthetic_long_video
from vos.bench.xmem_emulation import xmem_computation
from vos.data.io import write_image, write_mask
from vos.errors import DataError, VosError
from vos.memory import InferenceCore, MemoryConfig
from vos.model import ModelConfig, XMem

TINY_MEMORY = dict(
    mem_every=2, max_mid_term_frames=3, min_mid_term_frames=2, num_prototypes=4, max_long_term_elements=12
)
TINY_MODEL = dict(preset="small", hidden_dim=8, value_dim=16, decoder_dims=(16, 8, 8), hidden_update_dim=8)


def test_synthetic_long_video_is_deterministic_and_shaped():
    (h, w), frames = synthetic_long_video(5, size=48, objects=3, seed=7)
    assert (h, w) == (48, 85)
    first = list(frames)
    _, again = synthetic_long_video(5, size=48, objects=3, seed=7)
    for (a, ma), (b, mb) in zip(first, again):
        assert torch.equal(a, b) and a.shape == (3, h, w) and 0 <= a.min() and a.max() <= 1
        assert (ma is None) == (mb is None)
    mask = first[0][1]
    assert mask.dtype == torch.uint8 and set(mask.unique().tolist()) == {0, 1, 2, 3}
    assert all(m is None for _, m in first[1:])
    assert not torch.equal(first[0][0], first[4][0])  # it moves
    with pytest.raises(VosError, match="size"):
        synthetic_long_video(5, size=8)


@pytest.mark.slow
def test_run_longtime_report_and_plots(tmp_path):
    report = run_longtime(
        tmp_path, frames=14, size=32, objects=2, preset="small", compile="eager", compare_dense=True,
        device="cpu", progress=False, memory=MemoryConfig(**TINY_MEMORY), warmup=2, threads=1,
    )
    path = tmp_path / "longtime_cpu.json"
    assert report["json"] == str(path)
    saved = json.loads(path.read_text())
    assert saved["device"] == "cpu" and saved["threads"] == 1 and saved["settings"]["compile"] == "eager"
    (video,) = saved["videos"]
    headline = saved["summary"]["synthetic"]  # what `vos bench` prints
    assert headline["frames"] == 14 and headline["fps"] == video["summary"]["fps"]
    assert headline["max_speedup_vs_xmem"] > 1
    assert headline["memory_flat_after_saturation"] is video["memory"]["flat_after_saturation"]
    assert video["frames"] == 14 and video["objects"] == 2 and video["padded_size"] == [32, 64]
    assert set(video["variants"]) == {"ours", "ours_eager", "xmem"}
    for name, variant in video["variants"].items():
        assert variant["fps_steady"] > 0, name
        assert set(variant["stage_seconds_per_frame"]) == set(InferenceCore.STAGES)
        assert len(video["series"]["seconds"][name]) == 14
    summary = video["summary"]
    assert set(summary) >= {"speedup_vs_xmem", "speedup_compiled_vs_eager", "speedup_eager_vs_xmem"}
    # XMem's algorithm gives the same segmentation as ours
    assert summary["label_agreement_min"] > 0.99
    # the long-term memory saturates at its cap and the steady window starts after that
    memory = video["memory"]
    assert memory["long_term_elements_max"] == 12 and memory["saturated_at_frame"] is not None
    assert video["steady_from_frame"] == memory["saturated_at_frame"] + 1
    # the verdict follows its rule: peak RSS grows by at most max(16 MiB, 2 %) after the reference frame
    limit = max(16.0, 0.02 * memory["peak_rss_mib_at_reference"])
    assert memory["flat_after_saturation"] is (memory["peak_rss_growth_mib"] <= limit)
    flops = video["flops"]
    assert flops["gflop_per_frame"]["xmem"]["total"] > flops["gflop_per_frame"]["ours"]["total"]
    assert flops["max_speedup_vs_xmem"] > 1 and flops["machine_gflops_fp32"] > 0
    for kind in ("fps", "memory"):
        with Image.open(tmp_path / f"longtime_cpu_synthetic_{kind}.png") as img:
            assert img.format == "PNG" and img.width > 500 and img.height > 200


def test_fill_memory_reaches_capacity_and_stays_there():
    torch.manual_seed(0)
    model = XMem(ModelConfig(**TINY_MODEL)).eval()
    cfg = MemoryConfig(**TINY_MEMORY)
    core = InferenceCore(model, cfg, compile=False)
    (_, _), frames = synthetic_long_video(6, size=32, objects=2)
    image, mask = next(frames)
    core.step(image, mask)
    stored = fill_memory(core)
    stats = core.memory_stats()
    assert stored > 0 and stats["long_term_elements"] == cfg.max_long_term_elements
    assert stats["working_frames"] == cfg.max_mid_term_frames - 1
    for image, _ in frames:  # the next memory frames consolidate and prune; the memory stays full
        core.step(image)
        assert core.memory_stats()["long_term_elements"] == cfg.max_long_term_elements


def test_stage_flops_counts_the_per_object_image_work():
    torch.manual_seed(0)
    cfg = ModelConfig(**TINY_MODEL)
    ours = XMem(cfg).eval()
    xmem = xmem_computation(ours)
    a = stage_flops(ours, (64, 96), 2, 500, MemoryConfig())
    b = stage_flops(xmem, (64, 96), 2, 500, MemoryConfig(read_mode="dense"))
    assert a["encode_key"] == b["encode_key"] > 0
    assert b["decode"] > a["decode"] and b["encode_value"] > a["encode_value"] and b["read"] > a["read"]
    assert a["total"] == pytest.approx(sum(v for k, v in a.items() if k != "total"))


def test_long_time_root(tmp_path):
    root = tmp_path / "lt"
    video = root / "long_video"
    for name in ("blueboy", "rat"):
        for t in range(3):
            img = torch.zeros(3, 40, 56, dtype=torch.uint8)
            img[:, 5 + t : 20 + t, 8:30] = 200
            write_image(video / "JPEGImages" / name / f"{t:05d}.jpg", img)
        mask = torch.zeros(40, 56, dtype=torch.uint8)
        mask[5:20, 8:30] = 1
        write_mask(video / "Annotations" / name / "00000.png", mask)
    found = long_time_videos(root)
    assert [(n, len(f)) for n, f, _ in found] == [("blueboy", 3), ("rat", 3)]
    with pytest.raises(VosError, match="inside the input"):  # never into the dataset, refused before the run
        run_longtime(root / "out", root=root, frames=2, size=32, preset="small", device="cpu", progress=False)
    assert not (root / "out").exists()
    report = run_longtime(
        tmp_path / "out", root=root, frames=2, size=32, preset="small", compare_dense=False, compile=False,
        device="cpu", progress=False, count_flops=False, warmup=0,
    )
    runs = [(v["video"], v["frames"], v["size"]) for v in report["videos"]]
    assert runs == [("blueboy", 2, [32, 44]), ("rat", 2, [32, 44])]
    assert (tmp_path / "out" / "longtime_cpu_rat_memory.png").is_file()
    (video / "Annotations" / "rat" / "00000.png").unlink()
    with pytest.raises(DataError, match="first-frame annotation"):
        long_time_videos(root)
    with pytest.raises(DataError, match="Long-Time Video"):
        long_time_videos(tmp_path / "nowhere")


def test_plots_are_drawn_with_their_series(tmp_path):
    pytest.importorskip("matplotlib")
    panel = Panel("t", "frames/s", {"a": ([0, 1, 2], [1.0, None, 3.0]), "b": ([5], [2.0])})
    path = save_plot(tmp_path / "p.png", [panel, Panel("empty", "MiB")], "frame")
    with Image.open(path) as img:
        rgb = np.asarray(img.convert("RGB"))
    # two stacked panels, taller than wide; the series' default colours (C0 blue, C1 orange) are drawn
    assert rgb.shape[0] > rgb.shape[1] / 2
    colours = {tuple(int(v) for v in c) for c in rgb.reshape(-1, 3)[::7]}  # ints: uint8 differences wrap
    assert any(abs(r - 31) < 20 and abs(g - 119) < 20 and abs(b - 180) < 20 for r, g, b in colours)
    assert any(abs(r - 255) < 20 and abs(g - 127) < 20 and abs(b - 14) < 30 for r, g, b in colours)
    hist = save_histogram(tmp_path / "h.png", [0.0, 0.5], [3, 1], title="t", xlabel="ratio")
    with Image.open(hist) as img:
        assert img.size[0] > 100 and img.size[1] > 100
    assert not list(tmp_path.glob(".*"))  # no temporary left behind


def test_memory_flatness_is_judged_after_saturation_and_warmup():
    long_term = [0, 4, 8, 12, 12, 12, 12, 12]
    host = {"rss_mib": [100.0] * 8, "peak_rss_mib": [100, 150, 300, 400, 400, 401, 401, 401]}
    # saturated at frame 3; growth during warm-up (frames < 5) does not count
    flat = summarize_memory(host, long_term, saturated=3, steady_from=5)
    assert flat["reference_frame"] == 5 and flat["peak_rss_growth_mib"] == 0 and flat["flat_after_saturation"]
    host["peak_rss_mib"][-1] = 600  # grows after saturation: not flat
    assert not summarize_memory(host, long_term, saturated=3, steady_from=2)["flat_after_saturation"]
    assert "flat_after_saturation" not in summarize_memory(host, [0] * 8, saturated=None, steady_from=2)
