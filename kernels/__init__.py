"""Triton kernels, installed as ``vos.kernels`` (a top-level ``kernels`` would clash with the PyPI
package of that name).

A leaf: these modules import torch, triton and each other only. One file per operation — the
kernels, their launcher and the ``autograd.Function`` — beside a PyTorch reference in ``vos`` with
the same arguments; ``vos.backends`` is the one place that picks between the two. ``checks`` (no
triton) holds the argument checks both sides use, so importing this package stays free of triton.
"""
