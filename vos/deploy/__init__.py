"""Deployment: the network's per-frame stages as ONNX graphs, run by onnxruntime in XMem's memory loop.

``export_onnx`` writes the graphs (``vos export WEIGHTS OUT_DIR --format onnx``); ``OnnxXMem`` runs
them wherever ``InferenceCore`` takes a network. Needs the ``export`` extra.
"""

from vos.deploy.export import export_onnx
from vos.deploy.runtime import OnnxXMem, is_export_dir

__all__ = ["OnnxXMem", "export_onnx", "is_export_dir"]
