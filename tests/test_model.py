"""The XMem network: key layout, stage shapes, split (once-per-image) computations, aggregation, frozen BN."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from vos.errors import ConfigError
from vos.model import ModelConfig, XMem, aggregate, normalize, pad_divisible, unpad
from vos.model.fusion import FeatureFusionBlock
from vos.model.group import GroupResBlock

# the official key list: a copy in tests/data if the repository carries one, else the shared reference
# The official key list is committed beside the tests (copied from the shared reference).
KEYS_FILE = Path(__file__).parent / "data" / "xmem_state_dict_keys.txt"


def reference_shapes() -> dict[str, tuple[int, ...]]:
    shapes = {}
    for line in KEYS_FILE.read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        key, shape = line.split(" ", 1)
        shapes[key] = tuple(int(d) for d in re.findall(r"\d+", shape))
    return shapes


@pytest.fixture(scope="module")
def small() -> XMem:
    torch.manual_seed(0)
    return XMem(ModelConfig(preset="small")).eval()


@pytest.fixture(scope="module")
def xmem() -> XMem:
    torch.manual_seed(0)
    return XMem(ModelConfig(preset="xmem")).eval()


def test_xmem_preset_has_exactly_the_official_keys_and_shapes(xmem):
    expected = reference_shapes()
    ours = {k: tuple(v.shape) for k, v in xmem.state_dict().items()}
    assert len(expected) == 412
    assert sorted(set(expected) - set(ours)) == []
    assert sorted(set(ours) - set(expected)) == []
    assert {k: v for k, v in ours.items() if expected[k] != v} == {}


def test_config_presets_and_validation():
    cfg = ModelConfig(preset="xmem")
    assert (cfg.key_encoder, cfg.key_dim, cfg.value_dim, cfg.hidden_dim) == ("resnet50", 64, 512, 64)
    assert cfg.decoder_dims == (512, 256, 256) and cfg.hidden_update_dim == 256
    assert ModelConfig.from_preset("small", value_dim=96).value_dim == 96
    assert ModelConfig().preset == "small" and ModelConfig().key_encoder == "resnet18"
    with pytest.raises(ConfigError, match="value_dim"):
        ModelConfig(value_dim=0)
    with pytest.raises(ConfigError, match="decoder_dims"):
        ModelConfig(decoder_dims=(8, 8))
    with pytest.raises(ConfigError, match="key_encoder"):
        ModelConfig(key_encoder="resnet101")


def _run_stages(model: XMem, batch: int, objects: int, h: int, w: int):
    torch.manual_seed(1)
    image = torch.randn(batch, 3, h, w)
    masks = torch.rand(batch, objects, h, w)
    with torch.no_grad():
        key, shrinkage, selection, feats = model.encode_key(image)
        sensory = torch.randn(batch, objects, model.hidden_dim, h // 16, w // 16)
        value, sensory2 = model.encode_value(image, feats[0], sensory, masks)
        readout = torch.randn(batch, objects, model.value_dim, h // 16, w // 16)
        sensory3, logits, probs = model.decode(feats, sensory2, readout)
    return key, shrinkage, selection, feats, value, sensory2, sensory3, logits, probs


@pytest.mark.parametrize("preset", ["small", "xmem"])
def test_stage_shapes(preset, small, xmem):
    model = small if preset == "small" else xmem
    c16, c8, c4 = model.config.key_encoder_channels
    b, n, h, w = 2, 3, 32, 48
    key, shrinkage, selection, (f16, f8, f4), value, s2, s3, logits, probs = _run_stages(model, b, n, h, w)
    assert key.shape == (b, model.key_dim, 2, 3)
    assert shrinkage.shape == (b, 1, 2, 3) and bool((shrinkage >= 1).all())
    assert selection.shape == (b, model.key_dim, 2, 3) and bool(((selection > 0) & (selection < 1)).all())
    assert f16.shape == (b, c16, 2, 3) and f8.shape == (b, c8, 4, 6) and f4.shape == (b, c4, 8, 12)
    assert value.shape == (b, n, model.value_dim, 2, 3)
    assert s2.shape == s3.shape == (b, n, model.hidden_dim, 2, 3)
    assert logits.shape == (b, n, h, w)
    assert probs.shape == (b, n + 1, h, w)
    torch.testing.assert_close(probs.sum(1), torch.ones(b, h, w))


def test_encode_key_clip_layout_matches_per_frame(small):
    torch.manual_seed(2)
    clip = torch.randn(2, 3, 3, 32, 32)  # B×T×3×H×W
    with torch.no_grad():
        key, shrinkage, selection, (f16, f8, f4) = small.encode_key(clip)
        k1, s1, e1, (g16, _, _) = small.encode_key(clip[:, 1])
        none_s, none_e = small.encode_key(clip[:, 0], need_shrinkage=False, need_selection=False)[1:3]
    assert key.shape == (2, small.key_dim, 3, 2, 2) and shrinkage.shape == (2, 1, 3, 2, 2)
    assert f16.shape == (2, 3, 256, 2, 2) and f4.shape == (2, 3, 64, 8, 8)
    torch.testing.assert_close(key[:, :, 1], k1, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(selection[:, :, 1], e1, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(f16[:, 1], g16, rtol=1e-4, atol=1e-5)
    assert none_s is None and none_e is None


def test_key_projection_is_orthogonal_at_init(small):
    w = small.key_proj.key_proj.weight.detach().flatten(1)  # CK × (C·9), rows orthonormal
    torch.testing.assert_close(w @ w.T, torch.eye(w.shape[0]), atol=1e-4, rtol=0)
    assert bool((small.key_proj.key_proj.bias == 0).all())


@pytest.mark.parametrize("in_dims", [(24, 16, 20), (12, 8, 20)])
def test_split_group_res_block_equals_concatenated_input(in_dims):
    cx, cg, out = in_dims  # second case: Cin == Cout, identity residual
    torch.manual_seed(3)
    block = GroupResBlock(cx + cg, out)
    x = torch.randn(2, cx, 5, 7)
    g = torch.randn(2, 3, cg, 5, 7)
    full = torch.cat([x.unsqueeze(1).expand(-1, 3, -1, -1, -1), g], 2)
    torch.testing.assert_close(block.forward_split(x, g), block(full), rtol=1e-5, atol=1e-5)


def test_fusion_block_equals_xmem_per_object_computation():
    torch.manual_seed(4)
    fuser = FeatureFusionBlock(32, 16, 24, 24)
    x = torch.randn(2, 32, 4, 6)
    g = torch.randn(2, 3, 16, 4, 6)
    # XMem: concatenate the image features to every object, then run the blocks per object
    full = torch.cat([x.unsqueeze(1).expand(-1, 3, -1, -1, -1), g], 2)
    ref = fuser.block1(full)
    ref = ref + fuser.attention(ref.flatten(0, 1)).view_as(ref)
    ref = fuser.block2(ref)
    torch.testing.assert_close(fuser(x, g), ref, rtol=1e-5, atol=1e-5)


def test_value_encoder_equals_five_channel_per_object_computation(small):
    torch.manual_seed(5)
    enc = small.value_encoder
    b, n, h, w = 1, 3, 32, 32
    image = torch.randn(b, 3, h, w)
    masks = (torch.rand(b, n, h, w) > 0.5).float()
    sensory = torch.randn(b, n, small.hidden_dim, 2, 2)
    with torch.no_grad():
        f16 = small.encode_key(image)[3][0]
        value, new_sensory = small.encode_value(image, f16, sensory, masks)
        # reference: XMem's literal computation on [RGB, mask_i, Σ_{j≠i} mask_j] per object
        others = torch.stack([masks[:, [j for j in range(n) if j != i]].sum(1) for i in range(n)], 1)
        inp = torch.cat([image.unsqueeze(1).expand(-1, n, -1, -1, -1), masks.unsqueeze(2), others.unsqueeze(2)], 2)
        x = enc.bn1(enc.conv1(inp.flatten(0, 1)))
        x = F.max_pool2d(F.relu(x), 3, 2, 1)
        x = enc.layer3(enc.layer2(enc.layer1(x))).view(b, n, 256, 2, 2)
        full = torch.cat([f16.unsqueeze(1).expand(-1, n, -1, -1, -1), x], 2)
        g = enc.fuser.block1(full)
        g = g + enc.fuser.attention(g.flatten(0, 1)).view_as(g)
        ref_value = enc.fuser.block2(g)
        ref_sensory = enc.hidden_reinforce(ref_value, sensory)
    torch.testing.assert_close(value, ref_value, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(new_sensory, ref_sensory, rtol=1e-4, atol=1e-4)
    with torch.no_grad():
        same, kept = small.encode_value(image, f16, sensory, masks, deep_update=False)
    assert kept is sensory
    torch.testing.assert_close(same, value)


def test_single_object_sees_no_other_mask(small):
    torch.manual_seed(6)
    image = torch.randn(1, 3, 32, 32)
    mask = torch.rand(1, 1, 32, 32)
    sensory = torch.zeros(1, 1, small.hidden_dim, 2, 2)
    with torch.no_grad():
        f16 = small.encode_key(image)[3][0]
        value, _ = small.encode_value(image, f16, sensory, mask)
        ref, _ = small.value_encoder(image, f16, sensory, mask, torch.zeros_like(mask))
    torch.testing.assert_close(value, ref)


def test_decoder_xmem_gru_and_selector(small):
    torch.manual_seed(7)
    b, n, h, w = 1, 2, 32, 32
    image = torch.randn(b, 3, h, w)
    sensory = torch.randn(b, n, small.hidden_dim, 2, 2)
    readout = torch.randn(b, n, small.value_dim, 2, 2)
    dec = small.decoder
    with torch.no_grad():
        feats = small.encode_key(image)[3]
        new_sensory, logits, probs = small.decode(feats, sensory, readout)
        kept, logits2, _ = small.decode(feats, sensory, readout, update_sensory=False)
        # XMem's gate, written out: values = transform(cat[g, h]) split as [forget, update, new]
        g16 = dec.fuser(feats[0], torch.cat([readout, sensory], 2))
        g8 = dec.up_16_8(feats[1], g16)
        g4 = dec.up_8_4(feats[2], g8)
        small_logits = dec.pred(F.relu(g4.flatten(0, 1))).view(b, n, 1, 8, 8)
        hu = dec.hidden_update
        g = hu.g16_conv(g16) + hu.g8_conv(F.avg_pool2d(g8.flatten(0, 1), 2).view(b, n, -1, 2, 2))
        g = g + hu.g4_conv(F.avg_pool2d(torch.cat([g4, small_logits], 2).flatten(0, 1), 4).view(b, n, -1, 2, 2))
        values = hu.transform(torch.cat([g, sensory], 2))
        c = small.hidden_dim
        f, z, nv = values[:, :, :c], values[:, :, c : 2 * c], values[:, :, 2 * c :]
        ref = torch.sigmoid(f) * sensory * (1 - torch.sigmoid(z)) + torch.sigmoid(z) * torch.tanh(nv)
        up = F.interpolate(small_logits.flatten(0, 1), scale_factor=4, mode="bilinear", align_corners=False)
        _, _, sel_probs = small.decode(feats, sensory, readout, selector=torch.tensor([[1.0, 0.0]]))
    torch.testing.assert_close(new_sensory, ref, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(logits, up.view(b, n, h, w), rtol=1e-4, atol=1e-5)
    assert kept is sensory
    torch.testing.assert_close(logits2, logits)
    torch.testing.assert_close(probs, aggregate(torch.sigmoid(logits))[1])
    # an absent object gets (almost) no probability; the rest is shared by background and object 1
    assert float(sel_probs[:, 2].max()) < 1e-5
    torch.testing.assert_close(sel_probs.sum(1), torch.ones(b, h, w))


def test_aggregate_is_soft_aggregation_background_first():
    p = torch.tensor([[0.9, 0.0], [0.5, 0.5], [0.2, 0.7]]).T.reshape(1, 2, 3, 1)  # B×N×H×W
    logits, probs = aggregate(p)
    assert logits.shape == probs.shape == (1, 3, 3, 1)
    torch.testing.assert_close(probs.sum(1), torch.ones(1, 3, 1))
    q = torch.cat([(1 - p).prod(1, keepdim=True), p], 1).clamp(1e-7, 1 - 1e-7)
    expected_logits = torch.log(q / (1 - q))
    torch.testing.assert_close(logits, expected_logits)
    torch.testing.assert_close(probs, torch.softmax(expected_logits, 1))
    # pixel 0: object 1 certain, object 2 absent → object 1 wins; background is channel 0
    assert int(probs[0, :, 0, 0].argmax()) == 1
    none = aggregate(torch.zeros(1, 2, 1, 1))[1]
    assert float(none[0, 0, 0, 0]) > 0.999  # no object anywhere → background
    single = aggregate(torch.full((1, 1, 1, 1), 0.3))[1]
    # one object: q = [0.7, 0.3], logits ±log(7/3), so the softmax sharpens to 49/58 vs 9/58
    torch.testing.assert_close(single[0, :, 0, 0], torch.tensor([49 / 58, 9 / 58]))
    assert XMem.aggregate is not None and torch.equal(XMem.aggregate(p)[1], probs)


def test_batchnorm_statistics_stay_frozen_in_train_mode():
    torch.manual_seed(8)
    model = XMem(ModelConfig(preset="small"))
    model.train()
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and all(not m.training for m in bns)
    assert model.training and model.decoder.training
    before = {k: v.clone() for k, v in model.state_dict().items() if "running" in k or "num_batches" in k}
    image = torch.randn(1, 3, 32, 32)
    _, _, _, feats = model.encode_key(image)
    value, sensory = model.encode_value(image, feats[0], torch.zeros(1, 1, model.hidden_dim, 2, 2), torch.rand(1, 1, 32, 32))
    _, logits, _ = model.decode(feats, sensory, value)
    logits.mean().backward()
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert model.key_encoder.bn1.weight.grad is not None and model.key_encoder.bn1.bias.grad is not None
    assert model.value_encoder.layer1[0].bn1.weight.grad is not None
    # an ordinary BatchNorm would have normalised with batch statistics: ours matches eval mode exactly
    model.eval()
    with torch.no_grad():
        eval_f4 = model.encode_key(image)[3][2]
    torch.testing.assert_close(feats[2].detach(), eval_f4)


def test_read_memory_delegates_to_memory_read(small):
    torch.manual_seed(9)
    b, ck, cv, n_mem, hw = 1, small.key_dim, 8, 12, 6
    qk, qe = torch.randn(b, ck, hw), torch.rand(b, ck, hw)
    mk, ms, mv = torch.randn(b, ck, n_mem), torch.rand(b, 1, n_mem) + 1, torch.randn(b, cv, n_mem)
    readout, usage = small.read_memory(qk, qe, mk, ms, mv, top_k=None, backend="torch", need_usage=True)
    sim = -(ms.transpose(1, 2) * ((mk.unsqueeze(3) - qk.unsqueeze(2)) ** 2 * qe.unsqueeze(2)).sum(1)) / ck**0.5
    expected = mv @ torch.softmax(sim, dim=1)
    torch.testing.assert_close(readout, expected, rtol=1e-4, atol=1e-4)
    # usage = column sums of the affinity; with the full softmax they add up to one per query pixel
    assert usage.shape == (b, n_mem)
    torch.testing.assert_close(usage.sum(1).float(), torch.full((b,), float(hw)), rtol=1e-4, atol=1e-4)


def test_normalize_and_padding():
    image = torch.rand(2, 3, 5, 7)
    out = normalize(image)
    torch.testing.assert_close(out[:, 0], (image[:, 0] - 0.485) / 0.229)
    torch.testing.assert_close(out[:, 2], (image[:, 2] - 0.406) / 0.225)
    x = torch.rand(1, 3, 33, 50)
    padded, pads = pad_divisible(x, 16)
    assert padded.shape == (1, 3, 48, 64)
    assert pads == (7, 7, 7, 8)  # width 14 → 7/7; height 15 → 7 top (floor half), 8 bottom
    assert float(padded[..., :7, :].abs().sum()) == 0 and float(padded[..., -8:, :].abs().sum()) == 0
    torch.testing.assert_close(padded[..., 7:40, 7:57], x)
    torch.testing.assert_close(unpad(padded, pads), x)
    same, zero = pad_divisible(torch.rand(1, 32, 16), 16)
    assert zero == (0, 0, 0, 0) and same.shape == (1, 32, 16)
    assert unpad(same, zero).shape == (1, 32, 16)
