"""Test session setup.

Triton kernels are tested on the CPU through Triton's interpreter, which must be switched on before
triton is first imported anywhere in the process.
"""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="module")
def model():
    """A randomly initialised small network (seed 0), shared by the tests of one module."""
    from vos.model.weights import build_model

    torch.manual_seed(0)
    return build_model("small")


@pytest.fixture(scope="session")
def small_weights(tmp_path_factory):
    """That network saved as a checkpoint, for the commands that take --weights."""
    from vos.model.weights import build_model, save_weights

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "small.safetensors"
    save_weights(build_model("small"), path)
    return path


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory):
    """A tiny synthetic DAVIS-layout set shared by tests that only read it."""
    from vos.data.synthetic import SyntheticSpec, generate

    root = tmp_path_factory.mktemp("synthetic")
    generate(root, SyntheticSpec(videos=4, frames=6, height=64, width=96, seed=3))
    return root


def tiny_train_config(root, out, *extra):
    """A training config that runs in seconds: the synthetic set at ``root``, a narrow small network,
    4 iterations of batch 2 × 3 frames at 32²; ``extra`` overrides (a.b=value) are applied last."""
    from vos.config import load_config

    return load_config(
        None,
        [
            f"data.datasets=[{{kind: synthetic, root: '{root}', split: train}}]",
            "data.size=32", "data.num_frames=3", "data.num_workers=0", "data.max_objects=2",
            "train.iterations=4", "train.batch_size=2", f"train.out_dir={out}", "train.checkpoint_every=2",
            "train.log_every=1", "train.sample_every=2", "train.lr=1e-3", "losses.warmup_iters=2",
            "model.hidden_dim=8", "model.value_dim=32", "model.decoder_dims=[32, 16, 16]", "model.hidden_update_dim=16",
            *extra,
        ],
    )
