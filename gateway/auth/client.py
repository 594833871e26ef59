"""The CLI's side of admin tokens: sending one, and making one.

The commands that call the gateway's gRPC service send the token in
``$PULLGUARD_TOKEN`` (or the first line of the file ``$PULLGUARD_TOKEN_FILE``)
as ``authorization: Bearer <token>`` metadata. ``pullguard token create NAME
--role ROLE`` prints a new token once, and the line for admins.yaml.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import Any

import grpc

from pullguard.gateway.auth.tokens import entry_line, new_token
from pullguard.services.runtime.config.access import NAME_RE, ROLES
from pullguard.services.runtime.errors import PullguardError

TOKEN_ENV = "PULLGUARD_TOKEN"  # noqa: S105 - a variable name
TOKEN_FILE_ENV = "PULLGUARD_TOKEN_FILE"  # noqa: S105 - a variable name


def token_from_environment() -> str | None:
    token = os.environ.get(TOKEN_ENV, "").strip()
    path = os.environ.get(TOKEN_FILE_ENV, "")
    if not token and path:
        try:
            with open(path, encoding="utf-8") as handle:
                token = handle.readline(4096).strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise PullguardError(f"${TOKEN_FILE_ENV}: cannot read {path}: {exc}") from None
        if not token:
            raise PullguardError(f"${TOKEN_FILE_ENV}: {path} holds no token")
    return token or None


class _Bearer(grpc.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    def __init__(self, token: str) -> None:
        self._metadata = ("authorization", f"Bearer {token}")

    def intercept_unary_unary(
        self, continuation: Callable[[Any, Any], Any], details: Any, request: Any
    ) -> Any:
        metadata = [*(details.metadata or ()), self._metadata]
        return continuation(details._replace(metadata=metadata), request)


def with_token(channel: grpc.Channel) -> grpc.Channel:
    """``channel``, sending the environment's admin token (if any) with every call."""
    token = token_from_environment()
    return channel if token is None else grpc.intercept_channel(channel, _Bearer(token))


def add_token_command(sub: Any) -> None:
    token = sub.add_parser(
        "token",
        help="admin tokens: create NAME --role ROLE prints a new token and its admins.yaml line",
    )
    token.add_argument("action", choices=("create",))
    token.add_argument("name", metavar="NAME", help="who the token is for (recorded on releases)")
    token.add_argument("--role", choices=ROLES, required=True)


def create_token(args: argparse.Namespace) -> int:
    if not NAME_RE.fullmatch(args.name):
        raise PullguardError(f"NAME must match {NAME_RE.pattern}, got {args.name[:60]!r}")
    token = new_token()
    print(token)
    print(entry_line(args.name, args.role, token))
    print(
        "pullguard: the first line is the token (shown once: keep it secret); add the second"
        " line to the file auth.admin_tokens names",
        file=sys.stderr,
    )
    return 0
