"""The README's "Segment your own video" section runs as written: its shell commands and its Python,
on a synthetic `my_video.mp4` and a small randomly initialised checkpoint saved as `XMem.pth`."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from vos.data.io import read_mask
from vos.model.weights import build_model

av = pytest.importorskip("av", reason="the section needs PyAV (the video extra)")

README = Path(__file__).resolve().parents[1] / "README.md"
H, W, FRAMES = 360, 540, 10


def _section_blocks() -> dict[str, list[str]]:
    text = README.read_text()
    start = text.index("## Segment your own video")
    following = re.search(r"\n#{1,3} ", text[start + 1 :])
    end = start + 1 + following.start() if following else len(text)
    blocks: dict[str, list[str]] = {"bash": [], "python": []}
    for lang, body in re.findall(r"```(bash|python)\n(.*?)```", text[start:end], flags=re.S):
        blocks[lang].append(body)
    return blocks


def _write_video(path: Path) -> None:
    g = torch.Generator().manual_seed(0)
    wide = (torch.rand(3, H // 4, (W + 4 * FRAMES) // 4, generator=g) * 255).to(torch.uint8)
    wide = wide.repeat_interleave(4, 1).repeat_interleave(4, 2)  # blocky texture survives compression
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        for t in range(FRAMES):
            array = wide[:, :, 4 * t : 4 * t + W].permute(1, 2, 0).contiguous().numpy()
            for packet in stream.encode(av.VideoFrame.from_ndarray(array, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


@pytest.mark.slow
def test_segment_your_own_video_section_runs_as_written(tmp_path, monkeypatch):
    blocks = _section_blocks()
    assert len(blocks["bash"]) == 1 and len(blocks["python"]) == 1
    _write_video(tmp_path / "my_video.mp4")
    torch.manual_seed(0)
    torch.save(build_model("small").state_dict(), tmp_path / "XMem.pth")

    vos = Path(sys.executable).with_name("vos")
    commands = [line for line in blocks["bash"][0].splitlines() if line.strip() and not line.startswith("pip ")]
    assert [shlex.split(c)[:2] for c in commands] == [["vos", "convert"]] + [["vos", "segment"]] * 3
    for command in commands:
        argv = shlex.split(command)
        result = subprocess.run([str(vos), *argv[1:]], cwd=tmp_path, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, f"{command}\n{result.stdout}\n{result.stderr}"

    first = read_mask(tmp_path / "masks" / "00000.png")
    assert first.shape == (H, W) and set(torch.unique(first).tolist()) == {0, 1, 2}
    assert len(list((tmp_path / "masks").glob("*.png"))) == FRAMES
    assert len(list((tmp_path / "masks_mid").glob("*.png"))) == FRAMES  # both ways from frame 5
    document = json.loads((tmp_path / "coco" / "masks.json").read_text())
    assert [a["object_id"] for a in document["annotations"]] == [1, 2]
    assert (tmp_path / "overlay.mp4").stat().st_size > 0

    monkeypatch.chdir(tmp_path)
    exec(compile(blocks["python"][0], "README.md", "exec"), {"__name__": "readme"})
    coco = json.loads((tmp_path / "masks_py" / "masks.json").read_text())
    assert coco["videos"][0]["frames"] == [f"{k:05d}" for k in range(FRAMES)]
    assert [a["object_id"] for a in coco["annotations"]] == [2]  # object 1 was removed
