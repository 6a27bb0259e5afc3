"""The HTTP front end: V2 (Open Inference Protocol + Triton extensions), TF Serving REST, /metrics."""
