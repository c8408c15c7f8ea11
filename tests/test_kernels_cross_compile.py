"""vos.bench.cross_compile: every Triton kernel compiles for an H100 (sm_90) through Triton's real
CUDA pipeline and ptxas, on this GPU-less machine.

The compile runs in a subprocess: this test session has TRITON_INTERPRET=1 (conftest), under which
``triton.jit`` never reaches the compiler.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_every_kernel_compiles_for_sm90(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    result = subprocess.run(
        [sys.executable, "-m", "vos.bench.cross_compile", "--arch", "90", "--quick", "--out", str(tmp_path)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads((tmp_path / "kernels_compile.json").read_text())
    assert report["kernels_not_compiled"] == []
    compiled = {r["kernel"] for r in report["records"]}
    # The launchable kernels of every kernel module (a new kernel without a scenario fails here).
    for name in ("_topk_select_kernel", "_full_bwd_query_kernel", "_temporal_bwd_kernel", "_lab_kernel",
                 "_proj_finalize_kernel", "_pairwise_fwd_kernel"):
        assert name in compiled
    assert report["over_shared_memory_limit"] == []
    for record in report["records"]:
        assert record["arch"] == 90 and record["registers"] > 0, record
        assert record["shared_bytes"] <= report["shared_memory_limit_bytes"]["90"], record
        # The default tiles were chosen so that ptxas spills at most a few bytes (the first ones
        # spilled up to 21 KB per thread); a static property of the compiled code, not a timing.
        assert record["spill_store_bytes"] <= 64, record


def test_compile_only_refuses_the_interpreter():
    from triton.runtime.jit import JITFunction

    from vos.bench import cross_compile

    assert os.environ.get("TRITON_INTERPRET") == "1"
    run_before = JITFunction.run
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET"):
        with cross_compile.compile_only(90, [], lambda: ""):
            pass
    assert JITFunction.run is run_before


def test_compile_only_puts_triton_back_even_after_an_error(monkeypatch):
    from triton.runtime import driver as triton_driver
    from triton.runtime.jit import JITFunction

    from vos.bench import cross_compile

    monkeypatch.delenv("TRITON_INTERPRET")  # read when the block is entered; nothing launches here
    run_before, driver_before = JITFunction.run, triton_driver._active
    with pytest.raises(ValueError, match="inside"):
        with cross_compile.compile_only(80, [], lambda: ""):
            assert JITFunction.run is not run_before
            target = triton_driver.active.get_current_target()
            assert (target.backend, target.arch) == ("cuda", 80)
            raise ValueError("inside")
    assert JITFunction.run is run_before
    assert triton_driver._active is driver_before


def test_main_refuses_the_interpreter_with_one_line(capsys):
    from vos.bench import cross_compile

    with pytest.raises(SystemExit) as exit_info:
        cross_compile.main(["--arch", "90"])
    assert exit_info.value.code == 2
    assert "unset TRITON_INTERPRET" in capsys.readouterr().err


def test_expected_kernels_lists_the_launchable_kernels_only():
    from vos.bench import cross_compile

    names = cross_compile.expected_kernels()
    assert {"_topk_select_kernel", "_topk_weights_kernel", "_sparse_readout_kernel", "_full_fwd_kernel",
            "_full_usage_kernel", "_lab_kernel", "_temporal_match_kernel"} <= names
    assert all(name.endswith("_kernel") for name in names)
    assert "_pack" not in names and "_load_2d" not in names  # jit helpers are not launched


def test_topk_tiles_follow_the_target_gpu_and_k():
    from vos.kernels.memory_read import DEFAULT_TOPK_BLOCKS, topk_tiles

    # DAVIS inference: 51 query blocks of 32; 2 waves of an H100 (132 SMs) want 6 → 8 splits.
    tiles = topk_tiles(26200, 1620, 1, 30, DEFAULT_TOPK_BLOCKS, sm_count=132)
    assert (tiles.k_pad, tiles.block_q, tiles.splits) == (32, 32, 8)
    assert tiles.n_per_split % tiles.block_n == 0 and tiles.n_per_split * tiles.splits >= 26200
    assert topk_tiles(26200, 1620, 1, 30, DEFAULT_TOPK_BLOCKS, sm_count=108).splits == 8  # A100: 5 → 8
    assert topk_tiles(100, 1620, 1, 30, DEFAULT_TOPK_BLOCKS, sm_count=132).splits == 1  # too few elements
    # A large k keeps fewer query rows per program (registers), never below tl.dot's 16.
    large = topk_tiles(26200, 1620, 1, 100, DEFAULT_TOPK_BLOCKS, sm_count=132)
    assert (large.k_pad, large.block_n, large.block_q) == (128, 128, 16)
    # Up to k = 32 the caller's query tile is kept as given.
    assert topk_tiles(26200, 1620, 1, 30, replace(DEFAULT_TOPK_BLOCKS, query=64), sm_count=132).block_q == 64
