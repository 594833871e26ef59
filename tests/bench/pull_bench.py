"""`make bench`: the pull benchmark of issue 9 (see tests/bench/run.py and the README)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.bench.run import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
