"""Run the analysis layer.

python -m pullguard.services.analysis --listen HOST:PORT [--config FILE]
"""

from pullguard.services.runtime.main import service_main

from .servicer import register

raise SystemExit(service_main("analysis", register))
