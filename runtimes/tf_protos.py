"""TensorFlow's generated protobuf modules (TensorProto, SignatureDef, tf.Example) for the TF Serving front ends.

Importing them imports TensorFlow, so this is one of the few modules that do; the gateway loads it only when a
TF Serving call needs it.
"""

from __future__ import annotations

from tensorflow.core.example import example_pb2
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2
from tensorflow.core.protobuf import meta_graph_pb2

__all__ = ["example_pb2", "meta_graph_pb2", "tensor_pb2", "tensor_shape_pb2"]
