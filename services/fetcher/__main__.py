from pullguard.services.runtime.main import service_main

from .servicer import register

raise SystemExit(service_main("fetcher", register))
