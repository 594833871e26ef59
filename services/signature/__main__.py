"""The signature layer as its own process (`pullguard serve signature` runs it too)."""

from pullguard.services.runtime.main import service_main

from .servicer import register

raise SystemExit(service_main("signature", register))
