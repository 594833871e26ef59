"""The user a front-door request logged in as, for the decision record of its pull.

Set by the login middleware (:mod:`.logins`) for the request's task; a pull's
task, created inside the request, inherits it. Empty when the front door asks
for no login. Concurrent pulls of one reference share one run (see
``Pipeline.pull``): its record names the user whose request started it.
"""

from __future__ import annotations

from contextvars import ContextVar

pulling_user: ContextVar[str] = ContextVar("pullguard_pulling_user", default="")


def current_user() -> str:
    return pulling_user.get()
