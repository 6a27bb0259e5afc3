"""The ``tensorgate`` command and its tools (export, verify, demo, bench); they use the core, never the reverse."""
