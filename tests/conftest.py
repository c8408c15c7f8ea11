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


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory):
    """A tiny synthetic DAVIS-layout set shared by tests that only read it."""
    from vos.data.synthetic import SyntheticSpec, generate

    root = tmp_path_factory.mktemp("synthetic")
    generate(root, SyntheticSpec(videos=4, frames=6, height=64, width=96, seed=3))
    return root
