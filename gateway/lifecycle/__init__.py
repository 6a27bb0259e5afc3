"""Lifecycle: the controller decides which versions are wanted; the host loads, publishes, drains and unloads them."""
