"""Routing: the Router protocol that maps a requested name to a loaded version, and its policies."""
