"""Kept for importers outside the runtime (``gateway/cli.py``): the strict YAML
loader and error gathering now live in :mod:`pullguard.services.runtime.config.reader`."""

from pullguard.services.runtime.config.reader import (
    ConfigErrors,
    ConfigUnreadable,
    Gathered,
    load_yaml,
)

__all__ = ["ConfigErrors", "ConfigUnreadable", "Gathered", "load_yaml"]
