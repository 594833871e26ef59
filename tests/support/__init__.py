"""Shared test helpers: real servers on port 0, config builders, registries."""
