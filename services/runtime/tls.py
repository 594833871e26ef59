"""gRPC credentials for mutual TLS between the gateway and the layers.

Across machines nothing but a certificate tells the gateway that the process
answering on a layer's address is that layer, or tells a layer that its
caller is the gateway. With ``services_tls`` configured, every layer's server
demands a client certificate signed by ``ca`` and the gateway's channels
present theirs and check the layer's against the same ``ca`` (the host of the
address, or ``server_name``, must be in it). gRPC's handshake does the
checking; this module only checks the PEM material up front, so a wrong file
is a clear start-up error instead of a failed handshake on the first pull.
It checks each configuration's material once, not again for every channel
and health poll.
"""

from __future__ import annotations

import functools
from typing import Any

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from pullguard.services.runtime.config import ServicesTls
from pullguard.services.runtime.errors import ConfigError


@functools.lru_cache(maxsize=8)
def _checked(tls: ServicesTls) -> ServicesTls:
    """Refuse material gRPC would reject only at the first handshake.

    Cached by value (the configuration is frozen): a refusal is not cached and
    is raised again on every use."""
    for name, pem in (("ca", tls.ca), ("certificate", tls.certificate)):
        try:
            x509.load_pem_x509_certificates(pem)
        except ValueError:
            raise ConfigError(
                tls.source, f"services_tls.{name}", "is not a PEM certificate"
            ) from None
    try:
        key = serialization.load_pem_private_key(tls.key, password=None)
    except (ValueError, TypeError):
        raise ConfigError(
            tls.source, "services_tls.key", "is not an unencrypted PEM private key"
        ) from None
    leaf = x509.load_pem_x509_certificates(tls.certificate)[0]
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(
        serialization.Encoding.DER, public
    ) != leaf.public_key().public_bytes(serialization.Encoding.DER, public):
        raise ConfigError(
            tls.source, "services_tls.key", "does not belong to services_tls.certificate"
        )
    return tls


def server_credentials(tls: ServicesTls) -> grpc.ServerCredentials:
    """A layer's server: its own certificate, and callers must present one ``ca`` signed."""
    tls = _checked(tls)
    return grpc.ssl_server_credentials(
        [(tls.key, tls.certificate)], root_certificates=tls.ca, require_client_auth=True
    )


def channel_credentials(tls: ServicesTls) -> grpc.ChannelCredentials:
    """The gateway's side: present its certificate, trust only ``ca`` for the layer's."""
    tls = _checked(tls)
    return grpc.ssl_channel_credentials(
        root_certificates=tls.ca, private_key=tls.key, certificate_chain=tls.certificate
    )


def channel_options(tls: ServicesTls | None) -> list[tuple[str, Any]]:
    """The server name to check, when it is not the host of the address."""
    if tls is None or not tls.server_name:
        return []
    return [("grpc.ssl_target_name_override", tls.server_name)]
