"""Pull logins: HTTP basic auth on the front door against an htpasswd file of bcrypt hashes.

As distribution's ``auth.htpasswd``: every request (``/v2/`` too, which is
where docker and podman look for the challenge) needs
``Authorization: Basic``; without it, or with a wrong user or password, the
answer is 401 with ``WWW-Authenticate: Basic realm="pullguard"`` and an OCI
error body ``UNAUTHORIZED``. The user name goes into the pull's decision
record (:mod:`.identity`).

No user enumeration: an unknown user's password is checked against a dummy
hash of the same cost, so a wrong user and a wrong password take the same
time, and the answer is the same. bcrypt runs in a worker thread. A client
sends its credentials with every blob request: a successful check is
remembered (by an HMAC of user and password under a key made at start, never
the password) until the file is reloaded, so only wrong credentials pay bcrypt
every time.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import logging
import os
import secrets
import threading
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path

import bcrypt
from aiohttp import web
from aiohttp.typedefs import Middleware

from pullguard.gateway.auth.identity import pulling_user
from pullguard.gateway.frontdoor import Handler, oci_error
from pullguard.gateway.observe import set_user
from pullguard.services.runtime.config.access import parse_htpasswd

log = logging.getLogger("pullguard.frontdoor")

REALM = "pullguard"
CHALLENGE = {"WWW-Authenticate": f'Basic realm="{REALM}"'}
#: bcrypt reads 72 bytes at most; longer passwords are refused, not cut.
MAX_PASSWORD = 72
MAX_AUTHORIZATION = 1024
#: Successful logins remembered at once.
REMEMBERED = 1024
#: bcrypt checks running at once; more wait their turn (a flood of wrong
#: passwords must not take every worker thread the front door's blob reads use).
CHECKS_AT_ONCE = max(1, (os.cpu_count() or 2) // 2)


class Htpasswd:
    """The users of an htpasswd file: user -> bcrypt hash."""

    def __init__(self, users: Mapping[str, bytes], path: Path | None = None) -> None:
        self.path = path
        self._users = dict(users)
        self._dummy = self._dummy_hash(self._users)
        self._key = secrets.token_bytes(32)
        self._remembered: OrderedDict[bytes, str] = OrderedDict()
        self._lock = threading.Lock()  # verify runs in worker threads
        #: Raised by each reload: a check that began before it is not remembered after.
        self._generation = 0

    @staticmethod
    def _dummy_hash(users: Mapping[str, bytes]) -> bytes:
        """A hash of a random password at the file's highest cost, for unknown users."""
        costs = [int(h[4:6]) for h in users.values()] or [10]
        return bcrypt.hashpw(secrets.token_bytes(16).hex().encode(), bcrypt.gensalt(max(costs)))

    def reload(self) -> None:
        """Read the file again (SIGHUP); on error keep the users as they are (ConfigError)."""
        if self.path is None:
            return
        users = parse_htpasswd(self.path.read_text(encoding="utf-8"), str(self.path))
        dummy = self._dummy_hash(users)
        with self._lock:
            self._users = users
            self._dummy = dummy
            self._remembered.clear()
            self._generation += 1

    def _key_of(self, user: str, secret: bytes) -> bytes:
        return hmac.new(self._key, user.encode() + b"\0" + secret, hashlib.sha256).digest()

    def remembered(self, user: str, password: str) -> bool:
        """Whether this user logged in with this password since the last reload (no bcrypt)."""
        key = self._key_of(user, password.encode())
        with self._lock:
            if user in self._users and self._remembered.get(key) == user:
                self._remembered.move_to_end(key)
                return True
        return False

    def verify(self, user: str, password: str) -> bool:
        """Whether ``password`` is ``user``'s; bcrypt runs for unknown users too."""
        if self.remembered(user, password):
            return True
        secret = password.encode()
        with self._lock:
            hashed = self._users.get(user)
            candidate = hashed if hashed is not None else self._dummy
            generation = self._generation
        key = self._key_of(user, secret)
        if len(secret) > MAX_PASSWORD:
            bcrypt.checkpw(b"", candidate)  # the same time as any other refusal
            return False
        matched = bcrypt.checkpw(secret, candidate) and hashed is not None
        if matched:
            with self._lock:
                if generation != self._generation:
                    return matched  # right for the file as it was; not remembered
                self._remembered[key] = user
                if len(self._remembered) > REMEMBERED:
                    self._remembered.popitem(last=False)
        return matched


def basic_credentials(authorization: str | None) -> tuple[str, str] | None:
    """``(user, password)`` of an ``Authorization: Basic`` value, or None."""
    if not authorization or len(authorization) > MAX_AUTHORIZATION:
        return None
    scheme, _, encoded = authorization.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        text = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, separator, password = text.partition(":")
    if not separator or not user:
        return None
    return user, password


def unauthorized(message: str) -> web.Response:
    return oci_error(401, "UNAUTHORIZED", message, headers=CHALLENGE)


def login_middleware(htpasswd: Htpasswd) -> Middleware:
    """Refuse every request without a valid login; name the user for the pull's record."""
    checks = asyncio.Semaphore(CHECKS_AT_ONCE)

    @web.middleware
    async def require_login(request: web.Request, handler: Handler) -> web.StreamResponse:
        credentials = basic_credentials(request.headers.get("Authorization"))
        if credentials is None:
            return unauthorized("authentication required")
        user, password = credentials
        verified = htpasswd.remembered(user, password)
        if not verified:
            async with checks:
                verified = await asyncio.to_thread(htpasswd.verify, user, password)
        if not verified:
            log.info("front door: login refused for %r from %s", user[:100], request.remote)
            return unauthorized("authentication required")
        request["pullguard.user"] = user
        set_user(request, user)  # the access and decision log lines name the user
        token = pulling_user.set(user)
        try:
            return await handler(request)
        finally:
            pulling_user.reset(token)

    return require_login
