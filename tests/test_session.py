"""The box-first API: box prompts, explicit object ids, deletes, internal resize, the video session
(prompts on any frame, both directions, corrections, streams) and the exports."""

from __future__ import annotations

import json
import tracemalloc

import numpy as np
import pytest
import torch

from vos import VideoPredictor, VosError
from vos.data.boxes import paint_boxes
from vos.data.export import MaskExporter, rle_decode, rle_encode
from vos.data.io import read_mask, write_image
from vos.memory.config import MemoryConfig
from vos.memory.core import InferenceCore

H, W, T = 40, 56, 8
BOX_A = (4, 6, 26, 30)
BOX_B = (30, 10, 50, 34)
MEMORY = MemoryConfig(mem_every=2, max_mid_term_frames=4, min_mid_term_frames=2, num_prototypes=16,
                      max_long_term_elements=64)


def _video(frames: int = T, seed: int = 3) -> list[torch.Tensor]:
    """A textured background drifting sideways: uint8 3×H×W frames."""
    g = torch.Generator().manual_seed(seed)
    wide = (torch.rand(3, H, W + 2 * frames, generator=g) * 255).to(torch.uint8)
    return [wide[:, :, 2 * t : 2 * t + W].contiguous() for t in range(frames)]


@pytest.fixture(scope="module")
def frames_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("frames")
    for t, frame in enumerate(_video()):
        write_image(folder / f"{t:05d}.png", frame)
    return folder


def _core(model, **kwargs) -> InferenceCore:
    return InferenceCore(model, MEMORY, **kwargs)


def _run(core: InferenceCore, frames, prompts: dict[int, dict]) -> list[torch.Tensor]:
    """Id maps of every frame, with prompts {t: step keyword arguments}."""
    return [core.to_ids(core.step(f, **prompts.get(t, {}))) for t, f in enumerate(frames)]


def test_box_prompt_equals_its_filled_box_mask(model):
    frames = _video()
    _, painted = paint_boxes({5: BOX_A, 9: BOX_B}, (H, W))
    by_box = _run(_core(model), frames, {0: {"boxes": {5: BOX_A, 9: BOX_B}}})
    by_mask = _run(_core(model), frames, {0: {"mask": {5: painted[0], 9: painted[1]}}})
    for a, b in zip(by_box, by_mask, strict=True):
        assert torch.equal(a, b)
    assert set(torch.unique(by_box[0]).tolist()) == {0, 5, 9}
    # mixing a mask for one id and a box for another in one call
    mixed = _run(_core(model), frames, {0: {"mask": {5: painted[0]}, "boxes": {9: BOX_B}}})
    assert all(torch.equal(a, b) for a, b in zip(mixed, by_box, strict=True))


def test_any_ids_in_any_order_give_the_same_segmentation(model):
    frames = _video()
    plain = _run(_core(model), frames, {0: {"boxes": {1: BOX_A, 2: BOX_B}}})
    core = _core(model)
    odd = _run(core, frames, {0: {"boxes": {70: BOX_A, 3: BOX_B}}})
    assert core.object_ids == [70, 3]
    relabel = torch.tensor([0, 70, 3])
    for a, b in zip(plain, odd, strict=True):
        assert torch.equal(relabel[a], b)
    masks = core.to_masks(core.step(frames[0]))
    assert sorted(masks) == [3, 70] and not bool((masks[3] & masks[70]).any())


def test_joins_and_deletes_mid_video(model):
    frames = _video()
    alone = _run(_core(model), frames, {0: {"boxes": {1: BOX_A}}})
    core = _core(model)
    joined = _run(core, frames, {0: {"boxes": {1: BOX_A}}, 3: {"boxes": {4: BOX_B}}})
    # frames before the join are untouched; the newcomer is there from its frame on
    assert all(torch.equal(a, b) for a, b in zip(alone[:3], joined[:3], strict=True))
    assert bool((joined[3] == 4).any()) and core.object_ids == [1, 4]
    before = core.memory_stats()
    core.delete_objects([4])
    assert core.object_ids == [1] and len(core.memory.groups) == 1
    after = core.memory_stats()
    assert after["objects"] == 1 and after["memory_bytes"] < before["memory_bytes"]
    probs = core.step(frames[0])
    assert probs.shape == (2, H, W) and 4 not in torch.unique(core.to_ids(probs)).tolist()
    # the id can come back later as a new object
    core.step(frames[1], boxes={4: BOX_B})
    assert core.object_ids == [1, 4]
    with pytest.raises(VosError, match="not tracked"):
        core.delete_objects([99])


def test_delete_one_object_of_a_group_keeps_the_others_values(model):
    frames = _video()
    core = _core(model)
    core.step(frames[0], boxes={1: BOX_A, 2: BOX_B})  # one group of two objects
    group = core.memory.groups[0]
    values = group.view().values.clone()  # B×N×(2·CV)
    core.delete_objects([1])
    kept = group.view().values
    assert group.object_ids == [2] and kept.shape[-1] * 2 == values.shape[-1]
    assert torch.equal(kept, values[..., values.shape[-1] // 2 :])


def test_internal_resize_gives_outputs_at_the_input_size(model):
    frames = _video()
    core = _core(model, max_internal_size=20)
    probs = core.step(frames[0], boxes={1: BOX_A})
    assert core.process_size == (20, 28) and probs.shape == (2, H, W)
    probs = core.step(frames[1])
    assert probs.shape == (2, H, W) and torch.allclose(probs.sum(0), torch.ones(H, W), atol=1e-4)
    with pytest.raises(VosError, match="max_internal_size"):
        _core(model, max_internal_size=4)


def test_caller_errors_are_vos_errors(model):
    core = _core(model)
    with pytest.raises(VosError, match="outside"):
        core.step(_video()[0], boxes={1: (0, 0, W + 1, 10)})
    with pytest.raises(VosError, match="both a mask and a box"):
        core.step(_video()[0], mask={1: torch.ones(H, W)}, boxes={1: BOX_A})
    with pytest.raises(VosError, match="positive integer"):
        core.step(_video()[0], boxes={0: BOX_A})


def test_backward_equals_forward_over_reversed_frames(model, frames_dir, tmp_path):
    k = 5
    reversed_dir = tmp_path / "reversed"
    reversed_dir.mkdir()
    frames = _video()
    for t in range(k + 1):
        write_image(reversed_dir / f"{t:05d}.png", frames[k - t])
    predictor = VideoPredictor(model, MEMORY, max_internal_size=None)
    back = predictor.open(frames_dir)
    back.add(k, boxes={1: BOX_A, 2: BOX_B})
    backward = list(back.propagate(k, direction="backward"))
    fwd = predictor.open(reversed_dir)
    fwd.add(0, boxes={1: BOX_A, 2: BOX_B})
    forward = list(fwd.propagate(0))
    assert [t for t, _ in backward] == list(range(k, -1, -1))
    for (_, a), (_, b) in zip(backward, forward, strict=True):
        assert torch.equal(a, b)
    # "both" = forward then backward from the prompt, every frame once
    both = [t for t, _ in back.propagate(k, direction="both")]
    assert both == [*range(k, T), *range(k - 1, -1, -1)] and back.results == list(range(T))


def test_correction_replaces_later_frames_and_keeps_earlier_ones(model, frames_dir):
    video = VideoPredictor(model, MEMORY, max_internal_size=None).open(frames_dir)
    video.add(0, boxes={1: BOX_A, 2: BOX_B})
    first = dict(video.propagate())
    assert sorted(first) == list(range(T))
    k = 4
    fix = torch.zeros(H, W, dtype=torch.bool)
    fix[20:38, 2:20] = True
    video.add(k, mask={2: fix})
    second = dict(video.propagate(k))
    assert sorted(second) == list(range(k, T))
    for t in range(k):
        assert torch.equal(video.result(t), first[t])
    for t in range(k, T):
        assert torch.equal(video.result(t), second[t])
    # frame k: object 2 takes the corrected mask, object 1 keeps its earlier pixels outside it
    assert torch.equal(second[k] == 2, fix)
    assert torch.equal(second[k] == 1, (first[k] == 1) & ~fix)
    video.remove([2])
    assert video.object_ids == [1] and not bool((video.result(k) == 2).any())


def test_stream_equals_folder_and_is_forward_only(model, frames_dir):
    predictor = VideoPredictor(model, MEMORY, max_internal_size=None)
    folder = predictor.open(frames_dir)
    folder.add(0, boxes={1: BOX_A})
    folder.add(2, boxes={3: BOX_B})  # an object joining on frame 2
    expected = list(folder.propagate(0))
    stream = predictor.open(iter(_video()))
    stream.add(0, boxes={1: BOX_A})
    stream.add(2, boxes={3: BOX_B})
    got = list(stream.propagate())
    assert [t for t, _ in got] == list(range(T))
    for (_, a), (_, b) in zip(got, expected, strict=True):
        assert torch.equal(a, b)
    with pytest.raises(VosError, match="once, forward"):
        list(stream.propagate(0))
    # frames given as H×W×3 arrays (OpenCV/PIL after RGB conversion) read the same
    arrays = predictor.open(f.permute(1, 2, 0).numpy() for f in _video())
    arrays.add(0, boxes={1: BOX_A})
    arrays.add(2, boxes={3: BOX_B})
    assert all(torch.equal(a, b) for (_, a), (_, b) in zip(arrays.propagate(), expected, strict=True))


def test_memory_stays_bounded_while_a_stream_is_consumed(model):
    def frames(count: int):
        g = torch.Generator().manual_seed(1)
        base = (torch.rand(3, 32, 32 + count, generator=g) * 255).to(torch.uint8)
        for t in range(count):
            yield base[:, :, t : t + 32].contiguous()

    video = VideoPredictor(model, MEMORY, max_internal_size=None).open(frames(240))
    video.add(0, boxes={1: (4, 4, 20, 20)})
    tracemalloc.start()
    sizes, traced = {}, {}
    for t, _ in video.propagate():
        if t in (80, 239):
            sizes[t] = video.memory_stats["memory_bytes"]
            traced[t] = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    assert video.results == []  # a stream keeps no results
    assert sizes[239] == sizes[80]  # the memory network's buffers reached their cap and stay there
    assert traced[239] - traced[80] < 256 * 1024  # Python-side memory does not grow with the video


def test_rle_round_trip_and_known_strings():
    assert rle_encode(np.array([[0, 1], [1, 1]]))["counts"] == "13"
    assert rle_encode(np.ones((2, 2)))["counts"] == "04"
    g = np.random.default_rng(0)
    for shape in [(1, 1), (5, 7), (31, 17), (64, 48)]:
        for density in (0.0, 0.1, 0.5, 0.97, 1.0):
            mask = g.random(shape) < density
            rle = rle_encode(mask)
            assert rle["size"] == list(shape)
            assert np.array_equal(rle_decode(rle), mask)
    # long runs need several 5-bit groups and negative deltas
    mask = np.zeros((300, 200), dtype=bool)
    mask[:, 150:] = True
    mask[10:20, 3:5] = True
    assert np.array_equal(rle_decode(rle_encode(mask)), mask)


def test_exports_agree_with_each_other(model, frames_dir, tmp_path):
    video = VideoPredictor(model, MEMORY, max_internal_size=None).open(frames_dir)
    video.add(0, boxes={1: BOX_A, 300: BOX_B})
    results = dict(video.propagate())
    binary = MaskExporter(tmp_path / "binary", "binary")
    coco = MaskExporter(tmp_path / "coco", "coco", video="clip")
    for t, ids in results.items():
        binary.write(f"{t:05d}", ids)
        coco.write(f"{t:05d}", ids)
    binary.close()
    coco.close()
    document = json.loads((tmp_path / "coco" / "masks.json").read_text())
    assert document["videos"][0]["frames"] == [f"{t:05d}" for t in range(T)]
    by_id = {a["object_id"]: a for a in document["annotations"]}
    assert sorted(by_id) == [1, 300]
    for t, ids in results.items():
        for obj in (1, 300):
            rle = by_id[obj]["segmentations"][t]
            want = (ids == obj).numpy()
            got = np.zeros_like(want) if rle is None else rle_decode(rle)
            assert np.array_equal(got, want)
            assert np.array_equal(read_mask(tmp_path / "binary" / str(obj) / f"{t:05d}.png").numpy() == 255, want)
    with pytest.raises(VosError, match="1–255"):
        MaskExporter(tmp_path / "davis", "davis").write("00000", results[0])
