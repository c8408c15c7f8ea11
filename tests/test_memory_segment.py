"""segment_video: a user's frames folder (or mp4) + first-frame mask or boxes → palette PNGs."""

import importlib.util

import numpy as np
import pytest
import torch
from PIL import Image

from vos.data.io import DAVIS_PALETTE, read_image, read_mask, write_image, write_mask
from vos.errors import VosError
from vos.memory import MemoryConfig, segment_video

H, W = 40, 56
HAVE_AV = importlib.util.find_spec("av") is not None


@pytest.fixture
def frames_dir(tmp_path):
    folder = tmp_path / "frames"
    for i in range(3):
        write_image(folder / f"img_{i:03d}.jpg", torch.randint(0, 256, (3, H, W), dtype=torch.uint8))
    return folder


@pytest.fixture
def first_mask(tmp_path):
    mask = torch.zeros(H, W, dtype=torch.uint8)
    mask[4:20, 5:25] = 2
    mask[24:36, 30:50] = 7
    path = tmp_path / "mask.png"
    write_mask(path, mask)
    return path, mask


def test_mask_init_writes_palette_pngs_at_input_size(model, frames_dir, first_mask, tmp_path):
    out = tmp_path / "out"
    stats = segment_video(frames_dir, out, model, MemoryConfig(), mask_path=first_mask[0], size=32, progress=False)
    assert stats["frames"] == 3 and stats["objects"] == [2, 7]
    assert stats["input_size"] == (H, W) and stats["process_size"] == (32, 44)
    assert stats["fps"] == pytest.approx(stats["frames"] / stats["seconds"]) and stats["memory"]["objects"] == 2
    names = sorted(p.name for p in out.glob("*.png"))
    assert names == ["img_000.png", "img_001.png", "img_002.png"]
    with Image.open(out / "img_000.png") as img:
        assert img.mode == "P" and img.size == (W, H)
    first = read_mask(out / "img_000.png")
    assert set(torch.unique(first).tolist()) <= {0, 2, 7}
    # The first frame reproduces its mask, up to the resize round trip at the borders.
    agree = (first == first_mask[1]).float().mean().item()
    assert agree > 0.95


def test_box_init_and_overlay(model, frames_dir, tmp_path):
    out, overlay = tmp_path / "out", tmp_path / "overlay"
    boxes = [(5, 4, 25, 20), (10, 8, 14, 12)]  # the second lies inside the first
    stats = segment_video(frames_dir, out, model, mask_path=None, boxes=boxes, size=-1, overlay=overlay, progress=True)
    assert stats["objects"] == [1, 2] and stats["process_size"] == (H, W)
    first = read_mask(out / "img_000.png")
    expected = torch.zeros(H, W, dtype=torch.uint8)
    expected[4:20, 5:25] = 1
    expected[8:12, 10:14] = 2  # the smaller box wins where boxes overlap
    assert torch.equal(first, expected)
    assert sorted(p.name for p in overlay.glob("*.png")) == ["img_000.png", "img_001.png", "img_002.png"]
    # Overlay (a frame without the prompt's outlines): background pixels unchanged, object pixels
    # half-way to their palette colour.
    second = read_mask(out / "img_001.png")
    frame = read_image(frames_dir / "img_001.jpg").float()
    tinted = read_image(overlay / "img_001.png").float()
    assert torch.equal(tinted[:, second == 0], frame[:, second == 0])
    colour = torch.tensor(list(DAVIS_PALETTE[3:6]), dtype=torch.float32)[:, None]  # object 1
    assert bool((second == 1).any())
    torch.testing.assert_close(tinted[:, second == 1], ((frame[:, second == 1] + colour) / 2).round(), atol=1, rtol=0)
    # the prompt frame shows the boxes outlined in their object's colour
    prompt = read_image(overlay / "img_000.png")
    assert torch.equal(prompt[:, 4, 5], torch.tensor(list(DAVIS_PALETTE[3:6]), dtype=torch.uint8))


@pytest.mark.parametrize(
    ("boxes", "message"),
    [
        ([(0, 0, 60, 10)], "outside"),
        ([(-1, 0, 10, 10)], "outside"),
        ([(5, 5, 5, 10)], "empty"),
        ([(0, 0, 10)], "four numbers"),
    ],
)
def test_bad_boxes(model, frames_dir, tmp_path, boxes, message):
    with pytest.raises(VosError, match=message):
        segment_video(frames_dir, tmp_path / "out", model, boxes=boxes, progress=False)


def test_bad_inputs(model, frames_dir, first_mask, tmp_path):
    empty = tmp_path / "empty.png"
    write_mask(empty, torch.zeros(H, W, dtype=torch.uint8))
    with pytest.raises(VosError, match="no objects"):
        segment_video(frames_dir, tmp_path / "o", model, mask_path=empty, progress=False)
    small = tmp_path / "small.png"
    write_mask(small, torch.ones(H - 1, W, dtype=torch.uint8))
    with pytest.raises(VosError, match="frame 0 is 40×56"):
        segment_video(frames_dir, tmp_path / "o", model, mask_path=small, progress=False)
    with pytest.raises(VosError, match="not found"):
        segment_video(tmp_path / "missing", tmp_path / "o", model, mask_path=first_mask[0], progress=False)
    with pytest.raises(VosError, match="mask not found"):
        segment_video(frames_dir, tmp_path / "o", model, mask_path=tmp_path / "nope.png", progress=False)
    with pytest.raises(VosError, match="exactly one"):
        segment_video(frames_dir, tmp_path / "o", model, progress=False)
    (tmp_path / "no_frames").mkdir()
    with pytest.raises(VosError, match="no frames"):
        segment_video(tmp_path / "no_frames", tmp_path / "o", model, mask_path=first_mask[0], progress=False)
    # an object that nearest-neighbour shrinking would erase keeps a soft mask and is tracked
    tiny = torch.zeros(H, W, dtype=torch.uint8)
    tiny[11, 11] = 3  # nearest resizing to 16×22 samples rows and columns 0, 2, 5, 7, 10, 12, …
    write_mask(tmp_path / "tiny.png", tiny)
    stats = segment_video(frames_dir, tmp_path / "t", model, mask_path=tmp_path / "tiny.png", size=16, progress=False)
    assert stats["objects"] == [3] and stats["process_size"] == (16, 22)


@pytest.mark.skipif(HAVE_AV, reason="PyAV is installed")
def test_mp4_without_pyav_names_the_extra(model, first_mask, tmp_path):
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"\x00" * 64)
    with pytest.raises(VosError, match=r"pip install 'vos\[video\]'"):
        segment_video(video, tmp_path / "o", model, mask_path=first_mask[0], progress=False)


@pytest.mark.skipif(not HAVE_AV, reason="needs PyAV (the video extra)")
def test_mp4_in_and_overlay_out(model, first_mask, tmp_path):
    import av

    video = tmp_path / "clip.mp4"
    with av.open(str(video), mode="w") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        for _ in range(3):
            frame = np.random.randint(0, 256, (H, W, 3), dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    out, overlay = tmp_path / "out", tmp_path / "overlay.mp4"
    stats = segment_video(video, out, model, mask_path=first_mask[0], size=-1, overlay=overlay, progress=False)
    assert stats["frames"] == 3
    assert sorted(p.name for p in out.glob("*.png")) == ["00000.png", "00001.png", "00002.png"]
    with av.open(str(overlay)) as container:
        assert sum(1 for _ in container.decode(video=0)) == 3
    with pytest.raises(VosError, match="cannot read"):
        (tmp_path / "bad.mp4").write_bytes(b"not a video")
        segment_video(tmp_path / "bad.mp4", tmp_path / "o", model, mask_path=first_mask[0], progress=False)
