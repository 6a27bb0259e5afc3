"""The generated ``inference`` protobuf modules this server uses.

Decision: reuse the modules published in ``tritonclient.grpc`` (service_pb2, model_config_pb2) instead of
generating our own copies. Two generated copies of the same ``inference`` .proto files cannot live in one Python
process (the default descriptor pool refuses the duplicate symbols), and tests, benchmarks and users' in-process
tools import tritonclient beside the server. Reusing them keeps the wire format identical to Triton's by
construction; the cost is a dependency on tritonclient[grpc], which is small.
"""

from __future__ import annotations

from tritonclient.grpc import model_config_pb2, service_pb2, service_pb2_grpc

__all__ = ["model_config_pb2", "service_pb2", "service_pb2_grpc"]
