"""The network learns to segment from boxes: a short, seeded box-only training on a tiny synthetic set
must lift held-out J well above the untrained network's.

Everything else in the suite checks that each piece computes what it should; this test fails when the
pieces stop adding up to learning (a sign flip in a loss, a detached graph, a broken memory read or
box painter, an optimiser that never steps) — failures the unit tests cannot see.
"""

import pytest
import torch

from vos.config import load_config
from vos.data.synthetic import SyntheticSpec, generate
from vos.eval.runner import evaluate
from vos.model.network import XMem
from vos.model.weights import save_weights
from vos.train.trainer import train

ITERATIONS = 120


@pytest.fixture(scope="module")
def one_object_root(tmp_path_factory):
    """64² frames, one object per video: 12 train + 4 val videos."""
    root = tmp_path_factory.mktemp("learn")
    generate(root, SyntheticSpec(videos=16, frames=8, height=64, width=64, seed=21, max_objects=1, object_size=(0.6, 0.9)))
    return root


def _config(root, out):
    return load_config(None, [
        "model.preset=small",
        f"data.datasets=[{{kind: synthetic, root: '{root}', split: train, weight: 1.0}}]",
        "data.size=64", "data.num_frames=3", "data.max_objects=1", "data.num_workers=0",
        "data.supervision=box", "data.first_frame_init=box",
        f"train.iterations={ITERATIONS}", "train.batch_size=4", "train.lr=3e-4", "train.lr_steps=[]", "train.lr_warmup=60",
        "train.bn_statistics=update", "train.amp=false", "train.sample_every=0", f"train.checkpoint_every={ITERATIONS}",
        f"train.out_dir={out}", "losses.warmup_iters=10", "losses.layout=per_image",
        "losses.backend=torch", "memory.backend=torch",
    ])


def _val_j(root, weights, out) -> float:
    report = evaluate("synthetic", root, weights, out, init="mask", size=-1, progress=False, workers=1)
    return report["global"]["J-Mean"]


@pytest.mark.slow
def test_box_supervision_learns_to_segment(one_object_root, tmp_path):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # fixed floating-point order: the same numbers on every machine
    try:
        config = _config(one_object_root, tmp_path / "train")
        torch.manual_seed(config.train.seed)  # the trainer's own initialisation
        untrained = tmp_path / "untrained.safetensors"
        save_weights(XMem(config.model), untrained)
        final = train(config, progress=False)
        before = _val_j(one_object_root, untrained, tmp_path / "eval-untrained")
        after = _val_j(one_object_root, final, tmp_path / "eval-trained")
    finally:
        torch.set_num_threads(threads)
    # measured here: 0.08 → 0.60 (train.seed 0, 1, 2 instead: 0.53, 0.59, 0.49); a network that
    # predicts the whole frame scores about 0.1 on these videos
    assert after >= before + 0.25 and after >= 0.35, f"held-out J {before:.3f} untrained → {after:.3f} after {ITERATIONS} its"
