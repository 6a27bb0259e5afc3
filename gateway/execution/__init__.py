"""Execution: the Executor interface that runs a loaded version's calls (thread pool, dynamic batcher)."""
