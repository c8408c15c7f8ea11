"""InferenceCore with the small random-init network on tiny frames."""

import pytest
import torch
from torch import nn

from vos.errors import VosError
from vos.memory import InferenceCore, MemoryConfig

H, W = 32, 40


class Spy(nn.Module):
    """Delegates to the network and records what the core asks of it, frame by frame."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner
        self.hidden_dim = inner.hidden_dim
        self.log: list[tuple] = []

    def encode_key(self, image, need_shrinkage=True, need_selection=True):
        return self.inner.encode_key(image, need_shrinkage, need_selection)

    def encode_value(self, image, f16, sensory, masks, deep_update=True):
        self.log.append(("value", masks.shape[1], deep_update))
        return self.inner.encode_value(image, f16, sensory, masks, deep_update)

    def decode(self, features, sensory, readout, update_sensory=True):
        self.log.append(("decode", readout.shape[1], update_sensory))
        return self.inner.decode(features, sensory, readout, update_sensory)

    def aggregate(self, probs_fg):
        return self.inner.aggregate(probs_fg)


def _mask(*boxes):
    """Index mask H×W with object ids painted into (id, y0, y1, x0, x1) rectangles."""
    mask = torch.zeros(H, W, dtype=torch.uint8)
    for obj, y0, y1, x0, x1 in boxes:
        mask[y0:y1, x0:x1] = obj
    return mask


def _image():
    return torch.rand(3, H, W)


def test_first_frame_mask_and_probabilities(model):
    core = InferenceCore(model, MemoryConfig())
    mask = _mask((1, 2, 12, 3, 15), (4, 18, 30, 20, 38))
    probs = core.step(_image(), mask)
    assert probs.shape == (3, H, W) and probs.dtype == torch.float32
    assert core.object_ids == [1, 4]
    torch.testing.assert_close(probs.sum(0), torch.ones(H, W))
    # On the annotated frame the output is the given mask.
    labels = torch.tensor([0, 1, 4])[probs.argmax(0)]
    assert torch.equal(labels, mask.long())
    for _ in range(3):
        probs = core.step(_image())
        assert probs.shape == (3, H, W) and torch.isfinite(probs).all()
        torch.testing.assert_close(probs.sum(0), torch.ones(H, W))
    assert core.memory_stats()["frames"] == 4


def test_frames_before_the_first_mask_are_background(model):
    core = InferenceCore(model)
    probs = core.step(_image())
    assert probs.shape == (1, H, W) and bool((probs == 1).all())
    probs = core.step(_image(), _mask((2, 0, 8, 0, 8)))
    assert probs.shape == (2, H, W) and core.object_ids == [2]


def test_object_added_mid_video(model):
    core = InferenceCore(model, MemoryConfig(mem_every=2))
    core.step(_image(), _mask((1, 2, 12, 3, 15)))
    core.step(_image())
    stats = core.memory_stats()
    assert stats["groups"] == 1 and stats["objects"] == 1
    new = _mask((3, 20, 30, 25, 35))
    probs = core.step(_image(), new)
    assert probs.shape == (3, H, W) and core.object_ids == [1, 3]
    # The new object's mask is taken as given; the tracked object is cleared there.
    assert bool((probs.argmax(0)[new > 0] == 2).all())
    stats = core.memory_stats()
    assert stats["groups"] == 2 and stats["objects"] == 2
    assert stats["sensory_elements"] == 2 * model.hidden_dim * (H // 16) * (48 // 16)
    # The new group starts with one memory frame, the first group has its frames 0 and 2.
    assert [g.working_frames for g in core.memory.groups] == [2, 1]
    for _ in range(4):
        probs = core.step(_image())
        assert probs.shape == (3, H, W)
        torch.testing.assert_close(probs.sum(0), torch.ones(H, W))


def test_one_hot_mask_with_objects(model):
    core = InferenceCore(model)
    onehot = torch.zeros(3, H, W)
    onehot[0, 0:10, 0:10] = 1
    onehot[2, 20:30, 20:30] = 1
    probs = core.step(_image(), onehot)  # default: the non-empty channels, ids 1 and 3
    assert core.object_ids == [1, 3] and probs.shape == (3, H, W)
    core2 = InferenceCore(model)
    core2.step(_image(), onehot, objects=[3])
    assert core2.object_ids == [3]


def test_reannotation_overrides_prediction(model):
    core = InferenceCore(model)
    core.step(_image(), _mask((1, 2, 12, 3, 15), (2, 18, 30, 20, 38)))
    core.step(_image())
    fix = _mask((2, 0, 6, 0, 6))
    probs = core.step(_image(), fix, objects=[2])
    assert core.object_ids == [1, 2] and probs.shape == (3, H, W)
    assert bool((probs.argmax(0)[fix > 0] == 2).all())


def test_memory_schedule_follows_xmem(model):
    """Memory frames every mem_every frames and on masks; synchronised deep updates replace the
    decoder's sensory update there; objects' values are encoded for all tracked objects."""
    spy = Spy(model)
    core = InferenceCore(spy, MemoryConfig(mem_every=3), channels_last=False)  # a copy would log elsewhere
    core.step(_image(), _mask((1, 2, 12, 3, 15)))
    for t in range(1, 8):
        core.step(_image(), _mask((2, 20, 30, 25, 35)) if t == 4 else None)
    assert spy.log == [
        ("value", 1, True),  # frame 0: mask → memory frame (no decode: nothing to predict)
        ("decode", 1, True),
        ("decode", 1, True),
        ("decode", 1, False), ("value", 1, True),  # frame 3: memory frame, deep update
        ("decode", 1, False), ("value", 2, True),  # frame 4: new object 2 → memory frame
        ("decode", 2, True),
        ("decode", 2, True),
        ("decode", 2, False), ("value", 2, True),  # frame 7
    ]


def test_deep_update_not_synchronised(model):
    spy = Spy(model)
    core = InferenceCore(spy, MemoryConfig(mem_every=2, deep_update_every=3), channels_last=False)
    core.step(_image(), _mask((1, 2, 12, 3, 15)))
    for _ in range(6):
        core.step(_image())
    values = [entry for entry in spy.log if entry[0] == "value"]
    decodes = [entry for entry in spy.log if entry[0] == "decode"]
    # Memory frames 0, 2, 4, 6; deep updates where ≥ 3 frames passed since the last: 0, 4.
    assert values == [("value", 1, True), ("value", 1, False), ("value", 1, True), ("value", 1, False)]
    assert all(update for _, _, update in decodes)


def test_long_video_memory_stays_bounded(model):
    cfg = MemoryConfig(mem_every=1, max_mid_term_frames=3, min_mid_term_frames=2, num_prototypes=4,
                       max_long_term_elements=10)
    core = InferenceCore(model, cfg)
    core.step(_image(), _mask((1, 2, 12, 3, 15)))
    for _ in range(12):
        core.step(_image())
        stats = core.memory_stats()
        assert stats["working_frames"] <= 2 and stats["long_term_elements"] <= 10
    assert stats["consolidations"] == 11 and stats["long_term_elements"] == 10


def test_bad_inputs(model):
    core = InferenceCore(model)
    with pytest.raises(VosError, match="no object"):
        core.step(_image(), torch.zeros(H, W, dtype=torch.uint8))
    with pytest.raises(VosError, match=r"objects \[5\]"):
        core.step(_image(), _mask((1, 0, 5, 0, 5)), objects=[5])
    with pytest.raises(VosError, match="does not fit"):
        core.step(_image(), torch.zeros(H + 1, W, dtype=torch.uint8))
    with pytest.raises(VosError, match="3×H×W"):
        core.step(torch.rand(H, W))
    core.step(_image(), _mask((1, 0, 5, 0, 5)))
    with pytest.raises(VosError, match="same size"):
        core.step(torch.rand(3, H + 16, W))
    core.reset()
    assert core.step(torch.rand(3, H + 16, W)).shape == (1, H + 16, W)
