"""Inference memory stores: consolidation, pruning, object groups, bounded size."""

import pytest
import torch

from vos.errors import ConfigError, VosError
from vos.memory.config import MemoryConfig
from vos.model.memory_read import memory_read
from vos.memory.store import GroupMemory, InferenceMemory

CK, CV, H, W = 4, 3, 2, 2
HW = H * W


def _frame(n_obj, marker=None):
    """key 1×CK×h×w, shrinkage, selection, values 1×n_obj×CV×h×w; with ``marker`` the key's channel 0
    and every value's channel 0 hold it (so a value can be matched to the frame of its key)."""
    key = torch.randn(1, CK, H, W)
    shrinkage = torch.rand(1, 1, H, W) + 1
    selection = torch.rand(1, CK, H, W)
    values = torch.randn(1, n_obj, CV, H, W)
    if marker is not None:
        key[:, 0] = marker
        values[:, :, 0] = marker
    return key, shrinkage, selection, values


def _group(config, frames=0):
    group = GroupMemory([1], config)
    for _ in range(frames):
        key, s, e, v = _frame(1)
        group.add_frame(key.flatten(2), s.flatten(2), e.flatten(2), v.flatten(3))
    return group


@pytest.fixture
def one_thread():
    # Tiny tensors: on a busy machine, waking a second OpenMP thread costs more than the work itself.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_config_defaults_and_validation():
    cfg = MemoryConfig()
    assert (cfg.top_k, cfg.mem_every, cfg.deep_update_every) == (30, 5, -1)
    assert (cfg.max_mid_term_frames, cfg.min_mid_term_frames, cfg.num_prototypes) == (10, 5, 128)
    assert cfg.max_long_term_elements == 10000 and cfg.enable_long_term and cfg.backend == "auto"
    with pytest.raises(ConfigError, match="max_mid_term_frames"):
        MemoryConfig(max_mid_term_frames=5, min_mid_term_frames=5)
    with pytest.raises(ConfigError, match="top_k"):
        MemoryConfig(top_k=0)
    with pytest.raises(ConfigError, match="deep_update_every"):
        MemoryConfig(deep_update_every=0)
    with pytest.raises(ConfigError, match="max_long_term_elements"):
        MemoryConfig(num_prototypes=128, max_long_term_elements=100)
    with pytest.raises(ConfigError, match="backend"):
        MemoryConfig(backend="cuda")


def test_consolidation_bookkeeping():
    cfg = MemoryConfig(max_mid_term_frames=4, min_mid_term_frames=2, num_prototypes=3, max_long_term_elements=10)
    group = GroupMemory([1], cfg)
    frames = []
    for i in range(3):
        frames.append(_frame(1))
        key, s, e, v = frames[-1]
        group.add_frame(key.flatten(2), s.flatten(2), e.flatten(2), v.flatten(3))
        assert group.working_frames == i + 1 and group.num_long_term == 0
    lt_sizes = []
    for i in range(3, 40):
        frames.append(_frame(1))
        key, s, e, v = frames[-1]
        group.add_frame(key.flatten(2), s.flatten(2), e.flatten(2), v.flatten(3))
        assert group.working_frames < cfg.max_mid_term_frames
        assert group.num_long_term <= cfg.max_long_term_elements
        lt_sizes.append(group.num_long_term)
        # The first frame stays at the head of working memory; the newest frame is at its end.
        torch.testing.assert_close(group.working.key[:, :, :HW], frames[0][0].flatten(2))
        torch.testing.assert_close(group.working.key[:, :, -HW:], key.flatten(2))
    # Consolidation every 2 frames: working memory back to min frames, long-term + num_prototypes,
    # then held at the cap by pruning to max − num_prototypes before each addition.
    assert lt_sizes[:6] == [3, 3, 6, 6, 9, 9]
    assert lt_sizes[6:] == [10] * len(lt_sizes[6:])
    assert group.working_frames in (2, 3)


def test_prototypes_are_top_usage_candidates_with_softmax_values():
    cfg = MemoryConfig(max_mid_term_frames=4, min_mid_term_frames=2, num_prototypes=3, max_long_term_elements=10)
    group = _group(cfg, frames=3)
    # Candidates of the coming consolidation: frames 1 and 2 (elements HW..3HW of working memory).
    use = torch.zeros(1, 3 * HW)
    chosen = [HW + 1, 2 * HW + 3, HW + 2]  # highest usage first
    use[0, chosen] = torch.tensor([9.0, 8.0, 7.0])
    group.update_usage(use)
    cand = group.view(HW, 3 * HW)
    cand = {name: getattr(cand, name).clone() for name in ("key", "shrinkage", "selection", "values")}
    key, s, e, v = _frame(1)
    group.add_frame(key.flatten(2), s.flatten(2), e.flatten(2), v.flatten(3))

    assert group.num_long_term == 3 and group.working_frames == 2
    proto = group.long_term
    idx = [c - HW for c in chosen]
    torch.testing.assert_close(proto.key, cand["key"][:, :, idx])
    # Prototype value and shrinkage: full-softmax average over the candidates, the prototype as query.
    want = torch.cat([cand["values"].transpose(1, 2), cand["shrinkage"]], 1)
    ref, _ = memory_read(
        cand["key"], cand["shrinkage"], cand["key"][:, :, idx], cand["selection"][:, :, idx], want,
        top_k=None, mode="dense", backend="torch",
    )
    torch.testing.assert_close(proto.values, ref[:, :CV].transpose(1, 2))
    torch.testing.assert_close(proto.shrinkage, ref[:, CV:])
    assert (proto.use == 0).all()


def test_pruning_keeps_highest_usage():
    cfg = MemoryConfig(max_mid_term_frames=3, min_mid_term_frames=2, num_prototypes=2, max_long_term_elements=5)
    group = _group(cfg, frames=4)  # consolidations after frames 3 and 4: long-term 2, then 4
    assert group.num_long_term == 4
    # Long-term usage: element 2 best, then 0, then 3, element 1 worst.
    usage = torch.zeros(1, group.size)
    usage[0, :4] = torch.tensor([5.0, 1.0, 9.0, 3.0])
    group.update_usage(usage)
    survivors = group.long_term.key[:, :, [0, 2, 3]].clone()
    key, s, e, v = _frame(1)
    group.add_frame(key.flatten(2), s.flatten(2), e.flatten(2), v.flatten(3))  # prune to 5 − 2 = 3, then + 2
    assert group.num_long_term == 5
    torch.testing.assert_close(group.long_term.key[:, :, :3], survivors)


def test_objects_added_mid_video_stay_aligned_through_consolidation_and_pruning(one_thread):
    """Each value must stay paired with the key of its own frame (XMem misaligns later groups)."""
    cfg = MemoryConfig(
        top_k=5, max_mid_term_frames=4, min_mid_term_frames=2, num_prototypes=2, max_long_term_elements=6
    )
    memory = InferenceMemory(cfg)
    like = torch.zeros(1)
    for t in range(60):
        if memory.engaged:
            q = torch.randn(1, CK, H, W)
            assert memory.read(q, torch.rand(1, CK, H, W)).shape == (1, memory.num_objects, CV, H, W)
        if t == 0:
            memory.add_objects([1, 2], 2, (H, W), like)
        if t == 7:
            memory.add_objects([5], 2, (H, W), like)
        _, s, e, v = _frame(memory.num_objects, marker=float(t))
        # Every key channel holds the frame index: frames lie far apart in key space, so a prototype's
        # softmax average stays on its own frame, whose values all carry the same marker.
        key = torch.full((1, CK, H, W), float(t))
        memory.add_memory(key, s * 50, e, v)

    assert [g.object_ids for g in memory.groups] == [[1, 2], [5]]
    for group in memory.groups:
        assert group.consolidations > 5 and group.num_long_term == 6
        for part in (group.long_term, group.working):
            frame_of_key = part.key[0, 0]  # N
            for obj in range(len(group.object_ids)):
                value_marker = part.values[0, :, obj * CV]  # channel 0 of this object's value
                torch.testing.assert_close(value_marker, frame_of_key, atol=1e-3, rtol=0)
    # The later group starts at its own first frame, which it keeps.
    assert memory.groups[1].working.key[0, 0, 0].item() == 7.0
    assert memory.groups[0].working.key[0, 0, 0].item() == 0.0


def test_read_with_fewer_elements_than_top_k():
    memory = InferenceMemory(MemoryConfig(top_k=30))
    memory.add_objects([1], 2, (H, W), torch.zeros(1))
    key, s, e, v = _frame(1)
    memory.add_memory(key, s, e, v)
    out = memory.read(torch.randn(1, CK, H, W), torch.rand(1, CK, H, W))
    assert out.shape == (1, 1, CV, H, W) and torch.isfinite(out).all()


def test_usage_is_counted_per_read():
    memory = InferenceMemory(MemoryConfig(top_k=2))
    memory.add_objects([1], 2, (H, W), torch.zeros(1))
    memory.add_memory(*_frame(1))
    group = memory.groups[0]
    for reads in (1, 2):
        memory.read(torch.randn(1, CK, H, W), torch.rand(1, CK, H, W))
        torch.testing.assert_close(group.working.use.sum(), torch.tensor(float(reads * HW)))
        torch.testing.assert_close(group.working.life, torch.full((1, HW), reads + 1e-7))


def test_fifo_without_long_term_memory():
    cfg = MemoryConfig(enable_long_term=False, max_mid_term_frames=4, min_mid_term_frames=2)
    memory = InferenceMemory(cfg)
    memory.add_objects([1], 2, (H, W), torch.zeros(1))
    for t in range(12):
        memory.add_memory(*_frame(1, marker=float(t)))
        assert memory.stats()["working_frames"] == min(t + 1, 4) and memory.stats()["long_term_elements"] == 0
    assert memory.groups[0].working.key[0, 0, ::HW].tolist() == [0.0, 9.0, 10.0, 11.0]
    values = memory.groups[0].working.values[0, ::HW, 0].tolist()
    assert values == [0.0, 9.0, 10.0, 11.0]


def test_frame_size_must_not_change():
    memory = InferenceMemory(MemoryConfig())
    memory.add_objects([1], 2, (H, W), torch.zeros(1))
    memory.add_memory(*_frame(1))
    with pytest.raises(VosError, match="same size"):
        memory.add_memory(
            torch.randn(1, CK, 3, 3), torch.rand(1, 1, 3, 3), torch.rand(1, CK, 3, 3), torch.randn(1, 1, CV, 3, 3)
        )


def test_two_thousand_frames_stay_bounded(one_thread):
    """A long tiny video: working and long-term memory never exceed their caps."""
    cfg = MemoryConfig(
        top_k=8, max_mid_term_frames=6, min_mid_term_frames=3, num_prototypes=6, max_long_term_elements=60
    )
    memory = InferenceMemory(cfg)
    like = torch.zeros(1)
    with torch.inference_mode():
        for t in range(2000):
            if t == 0:
                memory.add_objects([1], 2, (H, W), like)
            if memory.engaged:
                memory.read(torch.randn(1, CK, H, W), torch.rand(1, CK, H, W))
            if t == 900:
                memory.add_objects([2], 2, (H, W), like)
            if t % cfg.mem_every == 0 or t == 900:
                memory.add_memory(*_frame(memory.num_objects))
            stats = memory.stats()
            for group in memory.groups:
                assert group.num_working <= (cfg.max_mid_term_frames - 1) * HW
                assert group.num_long_term <= cfg.max_long_term_elements
    assert stats["long_term_elements"] == 2 * cfg.max_long_term_elements
    assert stats["consolidations"] > 100
    # Allocated bytes: each group's buffer is capped at long-term max + a full working memory.
    per_element = 4 * (CK + 1 + CK + 2)  # key, shrinkage, selection, use, life (fp32)
    cap = cfg.max_long_term_elements + cfg.max_mid_term_frames * HW
    bound = cap * (per_element + 4 * CV) + cap * (per_element + 4 * CV) + 4 * 2 * 2 * HW
    assert stats["memory_bytes"] <= bound
