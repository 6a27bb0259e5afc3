"""Telemetry: Prometheus metrics, Triton-style statistics and log setup."""
