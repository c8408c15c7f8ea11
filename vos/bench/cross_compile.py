"""Compile every Triton kernel of the project for an NVIDIA GPU, on a machine without one.

The interpreter tests (``TRITON_INTERPRET=1``) check what the kernels compute, but the interpreter
runs a kernel body as NumPy code: it says nothing about whether Triton's compiler accepts the
program for a real GPU (layouts, ``tl.dot`` operand shapes and dtypes, ``tl.topk`` / bitonic merges
on int64 keys, atomics, fp64) nor about registers, spills and shared memory. This module runs the
launchers exactly as training and inference call them, with a stand-in driver that reports a CUDA
target and a ``JITFunction.run`` that compiles instead of launching: every launch goes through the
whole pipeline (Triton IR → TTGIR → LLVM IR → PTX → ``ptxas`` cubin) and nothing executes. The
tensors are CPU tensors; the outputs of a "launch" are never written, which is fine because only
the compiled code is examined.

    python -m vos.bench.cross_compile --arch 90 --arch 80 --out bench/results

writes ``kernels_compile.json``: per arch, scenario and kernel specialisation the compile time,
warps, registers per thread, spill bytes and shared memory (``ptxas -v`` on the generated PTX).

What it cannot tell: that the cubin computes the right numbers (the interpreter tests do that
against the PyTorch references) or how fast it runs — both need a GPU.

Run it in a process where ``TRITON_INTERPRET`` is unset: under the interpreter ``triton.jit`` builds
interpreted functions that never reach the compiler (``main`` refuses). Inside ``compile_only`` the
patch is process-wide: no other thread may launch Triton kernels meanwhile. Written against the
internals of Triton 3.8 (the version torch 2.14 pins): ``JITFunction.run`` / ``device_caches`` and
the driver registry.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

import torch
from triton.backends.compiler import GPUTarget
from triton.backends.driver import DriverBase
from triton.runtime import driver as triton_driver
from triton.runtime.jit import JITFunction

# Modules whose ``*_kernel`` JIT functions must all be compiled by some scenario.
KERNEL_MODULES = (
    "vos.kernels.memory_read",
    "vos.kernels.loss_lab",
    "vos.kernels.loss_projection",
    "vos.kernels.loss_pairwise",
    "vos.kernels.loss_temporal",
)


@dataclass
class CompiledRecord:
    """One compiled specialisation of one kernel."""

    kernel: str
    scenario: str
    arch: int
    compile_s: float  # Triton's time to the cubin (a disk-cache read if TRITON_CACHE_DIR has it)
    num_warps: int
    shared_bytes: int
    registers: int | None = None
    spill_store_bytes: int | None = None
    spill_load_bytes: int | None = None
    stack_frame_bytes: int | None = None
    constants: dict[str, str] = field(default_factory=dict)


class _CompileOnlyDriver(DriverBase):
    """Reports a CUDA target of the given compute capability; has no device to launch on."""

    def __init__(self, arch: int) -> None:
        super().__init__()
        self.arch = arch
        self.target = GPUTarget("cuda", arch, 32)

    @classmethod
    def is_active(cls) -> bool:
        return False  # never picked by Triton's own driver discovery

    def map_python_to_cpp_type(self, ty: str) -> str:
        raise RuntimeError("compile-only driver: kernels are compiled, never launched")

    def get_current_target(self) -> GPUTarget:
        return self.target

    def get_active_torch_device(self) -> torch.device:
        return torch.device("cpu")

    def get_benchmarker(self):
        raise RuntimeError("compile-only driver: nothing can be timed without a GPU")

    def get_current_device(self) -> str:
        # A key of its own in every JITFunction's per-device cache, one per driver (i.e. per
        # ``compile_only`` block): a real launch on device 0, another arch or a later block never
        # picks up a kernel compiled here, and every block records its compiles afresh.
        return f"compile-only-sm{self.arch}-{id(self)}"

    def get_current_stream(self, device=None) -> int:
        return 0


def _ptxas_path(arch: int) -> str:
    from triton.backends.nvidia.compiler import get_ptxas

    return get_ptxas(arch).path


_PTXAS_FIELDS = {
    "registers": re.compile(r"Used (\d+) registers"),
    "spill_store_bytes": re.compile(r"(\d+) bytes spill stores"),
    "spill_load_bytes": re.compile(r"(\d+) bytes spill loads"),
    "stack_frame_bytes": re.compile(r"(\d+) bytes stack frame"),
}

def _ptxas_version() -> str:
    out = subprocess.run([_ptxas_path(90), "--version"], capture_output=True, text=True, check=True).stdout
    return out.strip().splitlines()[-1]


# Largest shared memory one block may use (opt-in), bytes: A100 163 KB, H100 227 KB.
SHARED_MEMORY_LIMIT = {80: 166_912, 90: 232_448}


def ptxas_usage(ptx: str, arch: int, name: str) -> dict[str, int]:
    """Registers per thread, spill and stack bytes of entry function ``name`` as ``ptxas -v``
    reports them, with the register-allocation flags Triton's own cubin build passes."""
    gpu = f"sm_{arch}a" if arch >= 90 else f"sm_{arch}"
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "kernel.ptx"
        src.write_text(ptx)
        result = subprocess.run(
            [_ptxas_path(arch), "-lineinfo", "-v", "--regAllocOptLevel=2", f"--gpu-name={gpu}", str(src),
             "-o", str(Path(tmp) / "kernel.cubin")],
            capture_output=True, text=True, check=True,
        )
    log = result.stdout + result.stderr
    # The lines after "Compiling entry function 'name'" up to the next function belong to it.
    start = log.find(f"Compiling entry function '{name}'")
    if start < 0:
        raise RuntimeError(f"ptxas -v printed nothing for entry function {name}:\n{log}")
    end = log.find("Compiling entry function", start + 1)
    section = log[start:] if end < 0 else log[start:end]
    usage = {}
    for field_name, pattern in _PTXAS_FIELDS.items():
        match = pattern.search(section)
        usage[field_name] = int(match.group(1)) if match else 0
    return usage


@contextlib.contextmanager
def compile_only(arch: int, records: list[CompiledRecord], scenario: Callable[[], str]) -> Iterator[None]:
    """Within the block, every Triton launch compiles for sm_<arch> and launches nothing; each new
    compiled specialisation is appended to ``records`` (``scenario()`` names the current step)."""
    if os.environ.get("TRITON_INTERPRET") == "1":
        raise RuntimeError("vos.bench.cross_compile needs TRITON_INTERPRET unset (interpreted kernels never compile)")
    original_run = JITFunction.run

    def run(self: JITFunction, *args, grid, warmup, **kwargs):
        cache = self.device_caches[triton_driver.active.get_current_device()][0]
        before = set(cache)
        start = time.perf_counter()
        kernel = original_run(self, *args, grid=grid, warmup=True, **kwargs)
        seconds = time.perf_counter() - start
        if kernel is None or not hasattr(kernel, "asm"):
            raise RuntimeError(
                "compile_only: Triton returned no compiled kernel (a jit cache hook or async compile is on)"
            )
        if set(cache) - before:  # a new specialisation (compiled, or read from Triton's disk cache)
            meta = kernel.metadata
            # Constexpr values by parameter name (Triton keys them by argument path, e.g. (12,)).
            constants = {
                self.arg_names[key[0]] if len(key) == 1 else str(key): str(value)
                for key, value in kernel.src.constants.items()
            }
            records.append(
                CompiledRecord(
                    kernel=self.fn.__name__, scenario=scenario(), arch=arch, compile_s=round(seconds, 2),
                    num_warps=meta.num_warps, shared_bytes=meta.shared, constants=constants,
                    **ptxas_usage(kernel.asm["ptx"], arch, meta.name),
                )
            )
        return kernel

    # The previous driver, as stored: reading ``triton_driver.active`` would try to create the CUDA
    # driver, which raises on a machine without a GPU.
    previous_driver = triton_driver._active
    triton_driver.set_active(_CompileOnlyDriver(arch))
    JITFunction.run = run
    try:
        yield
    finally:
        JITFunction.run = original_run
        triton_driver._active = previous_driver


# ------------------------------------------------------------------------------------------ scenarios
# Multiprocessors of the GPU each arch stands for (A100, H100): the top-k read picks its N splits
# from it, and the split count is a compile-time constant.
SM_COUNT = {80: 108, 90: 132}

# DAVIS inference (480p at stride 16) and the thesis's training recipe (configs/full.yaml;
# XMem reads 3 reference frames per step).
INFER_HW, INFER_MEMORY = 1620, (1620, 26200)  # query pixels; memory elements (1 frame, full)
TRAIN_BATCH, TRAIN_FRAMES, TRAIN_OBJECTS, TRAIN_SIZE, TRAIN_REF_FRAMES = 8, 8, 3, 384, 3
CK, CV = 64, 512


def _memory_read_inference(arch: int, step: Callable[[str], None], quick: bool) -> None:
    """Top-k read as the inference memory runs it: fp32, values element-major; k = 30 at full memory
    with and without usage, k = 30 on a tiny memory (one split) and k = 100 (K_PAD 128). The N
    splits are those the launcher picks on the GPU ``arch`` stands for (a compile-time constant).
    quick: the first case only."""
    from vos.kernels.memory_read import DEFAULT_TOPK_BLOCKS, memory_read_triton, topk_tiles

    full, tiny = INFER_MEMORY[-1], 100  # N = 100: one 160×160 frame at stride 16
    cases = [(full, INFER_HW, 30, True), (full, INFER_HW, 30, False), (tiny, tiny, 30, True),
             (full, INFER_HW, 100, True)]
    for n, hw, top_k, need_usage in cases[:1] if quick else cases:
        splits = topk_tiles(n, hw, 1, top_k, DEFAULT_TOPK_BLOCKS, SM_COUNT[arch]).splits
        step(f"memory read, top-k {top_k}, N={n}, HW={hw}, splits={splits}, usage={need_usage}")
        mk, ms = torch.randn(1, CK, n), torch.rand(1, 1, n) + 1
        qk, qe = torch.randn(1, CK, hw), torch.rand(1, CK, hw)
        mv = torch.randn(1, n, 2 * CV).transpose(1, 2)
        with torch.inference_mode():
            memory_read_triton(
                mk, ms, qk, qe, mv, top_k=top_k, need_usage=need_usage,
                blocks=replace(DEFAULT_TOPK_BLOCKS, splits=splits),
            )


def _memory_read_training(arch: int, step: Callable[[str], None], quick: bool) -> None:
    """Full-softmax read, forward and backward, as training calls it (keys/values fp32 or bf16 from
    autocast; the kernels compute in fp32), and with the usage and its gradient (the inference
    memory's prototype read has the same forward); quick: the usage case only."""
    from vos.kernels.memory_read import memory_read_triton

    hw = (TRAIN_SIZE // 16) ** 2
    n = TRAIN_REF_FRAMES * hw
    for dtype in () if quick else (torch.float32, torch.bfloat16):
        step(f"memory read, full softmax fwd+bwd, {str(dtype)[6:]}, B={TRAIN_BATCH}, N={n}, HW={hw}")
        inputs = [
            torch.randn(TRAIN_BATCH, CK, n, dtype=dtype),
            torch.rand(TRAIN_BATCH, 1, n, dtype=dtype) + 1,
            torch.randn(TRAIN_BATCH, CK, hw, dtype=dtype),
            torch.rand(TRAIN_BATCH, CK, hw, dtype=dtype),
            torch.randn(TRAIN_BATCH, TRAIN_OBJECTS * CV, n, dtype=dtype),
        ]
        for t in inputs:
            t.requires_grad_(True)
        readout, _ = memory_read_triton(*inputs, top_k=None)
        readout.float().sum().backward()
    step("memory read, full softmax with usage (prototype / usage gradient)")
    inputs = [torch.randn(1, CK, 4 * INFER_HW), torch.rand(1, 1, 4 * INFER_HW) + 1,
              torch.randn(1, CK, 128), torch.rand(1, CK, 128), torch.randn(1, CV + 1, 4 * INFER_HW)]
    for t in inputs:
        t.requires_grad_(True)
    readout, usage = memory_read_triton(*inputs, top_k=None, need_usage=True)
    (readout.sum() + usage.sum()).backward()


def _weak_losses(arch: int, step: Callable[[str], None], quick: bool) -> None:
    """The weak losses as training computes them (``vos.losses.WeakLoss``, backend "triton"), forward
    and backward, with the thesis's defaults and with every ablation option that changes the code;
    quick: the defaults and the fp64 Lab only."""
    from vos.kernels import losses as kernel_losses
    from vos.losses import LossConfig, WeakLoss

    b, t, n, size = TRAIN_BATCH, TRAIN_FRAMES - 1, TRAIN_OBJECTS, TRAIN_SIZE
    variants = {
        "thesis defaults (stacked, pixels, patch target, soft detach)": {},
        "per-image projection, edge normalisation, centre target, hard detach": dict(
            layout="per_image", normalize="edges", temp_target="center", temp_detach="hard"),
        "no detach": dict(temp_detach="none"),
    }
    for name, options in list(variants.items())[:1 if quick else None]:
        step(f"weak losses fwd+bwd, {name}, B={b}, T={t}, N={n}, {size}², stride 4")
        loss = WeakLoss(LossConfig(backend="triton", warmup_iters=0, **options))
        logits = torch.randn(b, t, n + 1, size, size, requires_grad=True)
        frames = torch.randint(0, 256, (b, t, 3, size, size), dtype=torch.uint8)
        lo = torch.randint(0, size // 2, (b, n, t, 2))
        boxes = torch.cat([lo, lo + size // 4], dim=-1).float()
        total, _ = loss(logits, frames, boxes)
        total.backward()
    step(f"Lab conversion (fp64 and fp32), full resolution and stride 4, {size}²")
    frames = torch.randint(0, 256, (b, t, 3, size, size), dtype=torch.uint8)
    for compute in (torch.float64,) if quick else (torch.float64, torch.float32):
        kernel_losses.frames_to_lab(frames, stride=4, compute=compute)
        kernel_losses.rgb_to_lab(frames[:, 0], compute=compute)


SCENARIOS: dict[str, Callable[[int, Callable[[str], None], bool], None]] = {
    "memory_read_inference": _memory_read_inference,
    "memory_read_training": _memory_read_training,
    "weak_losses": _weak_losses,
}


def expected_kernels() -> set[str]:
    """Names of every launchable kernel (``*_kernel`` JIT functions) in ``KERNEL_MODULES``."""
    import importlib

    from triton.runtime.interpreter import InterpretedFunction

    names = set()
    for module_name in KERNEL_MODULES:
        module = importlib.import_module(module_name)
        for attr, value in vars(module).items():
            # Interpreted functions stand in for JIT functions under TRITON_INTERPRET=1.
            if isinstance(value, (JITFunction, InterpretedFunction)) and attr.endswith("_kernel"):
                names.add(value.fn.__name__)
    return names


def cross_compile(
    arch: int, scenarios: list[str] | None = None, quick: bool = False, log: Callable[[str], None] = print
) -> list[CompiledRecord]:
    """Compile every kernel launch of the chosen scenarios for sm_<arch>; returns one record per
    compiled specialisation. quick: one specialisation of each kernel where possible. Raises whatever
    Triton or ptxas raise for a kernel that does not compile."""
    records: list[CompiledRecord] = []
    current = {"step": ""}

    def step(name: str) -> None:
        current["step"] = name
        log(f"sm_{arch}: {name}")

    with compile_only(arch, records, lambda: current["step"]):
        for name in scenarios or list(SCENARIOS):
            SCENARIOS[name](arch, step, quick)
    return records


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--arch", type=int, action="append", choices=sorted(SM_COUNT),
                        help="compute capability ×10 (80 = A100, 90 = H100); repeatable; default 90")
    parser.add_argument("--scenario", action="append", choices=sorted(SCENARIOS), help="default: all")
    parser.add_argument("--quick", action="store_true", help="one specialisation per kernel (the CI test)")
    parser.add_argument("--out", default=None, help="folder for kernels_compile.json (default: print only)")
    args = parser.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET") == "1":
        parser.error("unset TRITON_INTERPRET: interpreted kernels are never compiled")
    torch.set_num_threads(1)  # the CPU "tensors" are only placeholders; keep the cores for compiling
    started = time.perf_counter()
    records: list[CompiledRecord] = []
    previous_cache = os.environ.get("TRITON_CACHE_DIR")
    with tempfile.TemporaryDirectory(prefix="triton-cache-") as cache:
        # A fresh cache: every kernel really goes through the compiler (and compile_s means it).
        os.environ["TRITON_CACHE_DIR"] = cache
        try:
            for arch in args.arch or [90]:
                records += cross_compile(arch, args.scenario, args.quick)
        finally:
            if previous_cache is None:
                os.environ.pop("TRITON_CACHE_DIR", None)
            else:
                os.environ["TRITON_CACHE_DIR"] = previous_cache
    # Coverage is checked when every scenario ran: a kernel no scenario launches is never compiled.
    missing = set() if args.scenario else expected_kernels() - {r.kernel for r in records}
    # Triton only refuses too much shared memory at launch (OutOfResources): check it here.
    too_big = [r for r in records if r.shared_bytes > SHARED_MEMORY_LIMIT[r.arch]]
    for r in records:
        spill = r.spill_store_bytes or 0
        print(f"sm_{r.arch} {r.kernel:28s} warps={r.num_warps} regs={r.registers:3d} spill={spill:5d} B "
              f"smem={r.shared_bytes:6d} B  {r.compile_s:5.1f} s  [{r.scenario}]")
    if args.out:
        from vos.bench.environment import environment

        report = {
            "benchmark": "kernels_compile",
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "device": "none (compile only: Triton's CUDA backend and ptxas, no GPU)",
            "environment": environment(torch.device("cpu")),
            "ptxas": _ptxas_version(),
            "wall_s": round(time.perf_counter() - started, 1),
            "kernels_not_compiled": sorted(missing),
            "shared_memory_limit_bytes": SHARED_MEMORY_LIMIT,
            "over_shared_memory_limit": [f"sm_{r.arch} {r.kernel} [{r.scenario}]" for r in too_big],
            "records": [asdict(r) for r in records],
        }
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "kernels_compile.json").write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {out / 'kernels_compile.json'}")
    if missing:
        print(f"kernels no scenario compiled: {', '.join(sorted(missing))}")
    for r in too_big:
        limit = SHARED_MEMORY_LIMIT[r.arch]
        print(f"sm_{r.arch} {r.kernel}: {r.shared_bytes} B of shared memory, over the {limit} B limit")
    if missing or too_big:
        return 1
    print(f"{len(records)} specialisations of {len({r.kernel for r in records})} kernels compiled "
          f"for {', '.join(f'sm_{a}' for a in args.arch or [90])} in {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
