"""Exporters that write store models (PyTorch -> ONNX/.pt2, Keras -> SavedModel/ONNX) and the demo networks."""
