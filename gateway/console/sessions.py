"""Browser sessions of the console: a login that sets a cookie, and CSRF tokens.

The JSON API takes ``Authorization: Bearer`` only and never a cookie, so a
page on another site cannot make a browser use it. The HTML console is
for browsers, so it has sessions:

- ``POST /login`` checks the admin token once and opens a session; the
  cookie holds a random session id (never the token), ``HttpOnly`` (no
  script reads it) and ``SameSite=Strict`` (no other site's request
  carries it). The id is replaced at login, so an id planted before the
  login is worth nothing after it.
- Every session has a CSRF token that each form posts back; a POST whose
  token does not match its session's is refused (403) before anything is
  done. This holds for the login form too (its session is anonymous).
- Without ``auth.admin_tokens`` (loopback only) a session is opened on the
  first page for the local operator, and the same CSRF check applies: a
  page on another site must not release images through a browser on the
  operator's machine.

Sessions live in memory: a restart logs everyone out. They are bounded in
number and lifetime.
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass, field

from pullguard.gateway.auth.tokens import Principal

COOKIE = "pullguard_session"
#: How long a logged-in session lasts, and one that has not logged in yet.
SESSION_SECONDS = 8 * 3600
ANONYMOUS_SECONDS = 3600
#: Sessions kept at most, of each kind (logged in, not yet); the oldest go first.
MAX_SESSIONS = 10_000


@dataclass
class Session:
    session_id: str
    #: None until the login form succeeds (with admin tokens).
    principal: Principal | None
    expires: float
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(32))

    def csrf_ok(self, posted: str | None) -> bool:
        return bool(posted) and hmac.compare_digest(self.csrf.encode(), str(posted).encode())


class Sessions:
    """The open sessions, by id; bounded, expiring.

    Sessions that have not logged in are kept apart, with a bound of their
    own: anyone who reaches the login form opens one, and a flood of them
    must not push out the operators' sessions.
    """

    def __init__(self) -> None:
        self._anonymous: OrderedDict[str, Session] = OrderedDict()
        self._logged_in: OrderedDict[str, Session] = OrderedDict()

    def get(self, session_id: str | None) -> Session | None:
        if not session_id or len(session_id) > 100:
            return None
        for sessions in (self._logged_in, self._anonymous):
            session = sessions.get(session_id)
            if session is None:
                continue
            if session.expires < time.monotonic():
                del sessions[session_id]
                return None
            return session
        return None

    def open(self, principal: Principal | None) -> Session:
        """A new session (a fresh id and CSRF token)."""
        sessions = self._anonymous if principal is None else self._logged_in
        while len(sessions) >= MAX_SESSIONS:
            sessions.popitem(last=False)
        lifetime = ANONYMOUS_SECONDS if principal is None else SESSION_SECONDS
        session = Session(secrets.token_urlsafe(32), principal, time.monotonic() + lifetime)
        sessions[session.session_id] = session
        return session

    def close(self, session_id: str) -> None:
        self._anonymous.pop(session_id, None)
        self._logged_in.pop(session_id, None)
