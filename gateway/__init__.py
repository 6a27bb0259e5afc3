"""tensorgate: one serving gateway for ONNX Runtime, TensorFlow SavedModel and PyTorch .pt2 models."""

__version__ = "0.1.0"
