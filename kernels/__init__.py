"""Triton kernels.

Each module here imports ``triton`` at its top and is imported lazily by its PyTorch-side dispatch
(e.g. ``vos.memory.read`` loads ``kernels.memory_read`` only when the Triton backend is asked for),
so importing this package itself stays free of triton.
"""
