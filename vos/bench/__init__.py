"""Benchmarks: ``vos bench --video longtime`` (:func:`run_longtime`) and its plots."""

from vos.bench.longtime import run_longtime

__all__ = ["run_longtime"]
