"""Configuration of how the gateway reaches the layers: ``services`` addresses
(HOST:PORT or unix:/path) and ``services_tls``."""

from __future__ import annotations

from pathlib import Path

import pytest

from pullguard.services.runtime import tls as tls_module
from pullguard.services.runtime.errors import ConfigError
from pullguard.services.runtime.tls import channel_credentials, channel_options, server_credentials
from tests.support.configs import make_config
from tests.support.mtls import make_ca


def test_unix_socket_addresses_are_accepted(tmp_path: Path) -> None:
    config = make_config(tmp_path, services={"hashverify": "unix:/run/pullguard/hv.sock"})
    assert config.services["hashverify"] == "unix:/run/pullguard/hv.sock"


@pytest.mark.parametrize(
    ("address", "problem"),
    [
        ("unix:relative.sock", "unix:/ABSOLUTE/PATH"),
        ("unix://host/x.sock", "unix:/ABSOLUTE/PATH"),
        ("unix:/" + "x" * 120, "longer than 107 bytes"),
        ("hashverify", "HOST:PORT"),
    ],
)
def test_bad_service_addresses_are_refused(tmp_path: Path, address: str, problem: str) -> None:
    with pytest.raises(ConfigError, match="services.hashverify") as error:
        make_config(tmp_path, services={"hashverify": address})
    assert problem in str(error.value)


def test_services_tls_reads_the_three_files_and_a_server_name(tmp_path: Path) -> None:
    issued = make_ca(tmp_path / "ca", "test CA").issue("pullguard")
    config = make_config(
        tmp_path, services_tls={**issued.config(), "server_name": "layers.pullguard.internal"}
    )
    tls = config.services_tls
    assert tls is not None and tls.ca == issued.ca.read_bytes()
    assert "BEGIN" not in repr(tls)
    assert channel_options(tls) == [("grpc.ssl_target_name_override", "layers.pullguard.internal")]
    assert channel_credentials(tls) is not None


def test_services_tls_without_a_key_names_the_key(tmp_path: Path) -> None:
    issued = make_ca(tmp_path / "ca", "test CA").issue("pullguard")
    settings = issued.config()
    del settings["key"]
    with pytest.raises(ConfigError, match="services_tls.key: must be a non-empty string"):
        make_config(tmp_path, services_tls=settings)


def test_a_key_of_another_certificate_is_a_start_up_error(tmp_path: Path) -> None:
    authority = make_ca(tmp_path / "ca", "test CA")
    issued, other = authority.issue("pullguard"), authority.issue("other")
    config = make_config(tmp_path, services_tls={**issued.config(), "key": str(other.key)})
    assert config.services_tls is not None
    with pytest.raises(ConfigError, match="does not belong to services_tls.certificate"):
        channel_credentials(config.services_tls)


def test_a_certificate_that_is_not_pem_is_a_start_up_error(tmp_path: Path) -> None:
    issued = make_ca(tmp_path / "ca", "test CA").issue("pullguard")
    (tmp_path / "junk.pem").write_text("not a certificate\n")
    config = make_config(tmp_path, services_tls={**issued.config(), "ca": "junk.pem"})
    assert config.services_tls is not None
    with pytest.raises(ConfigError, match="services_tls.ca: is not a PEM certificate"):
        channel_credentials(config.services_tls)


def test_services_tls_material_is_parsed_once_for_every_channel(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    issued = make_ca(tmp_path / "ca", "test CA").issue("pullguard")
    config = make_config(tmp_path, services_tls={**issued.config(), "server_name": "once"})
    assert config.services_tls is not None
    parsed: list[bytes] = []
    real = tls_module.x509.load_pem_x509_certificates

    def counting(pem: bytes) -> list[tls_module.x509.Certificate]:
        parsed.append(pem)
        return real(pem)

    monkeypatch.setattr(tls_module.x509, "load_pem_x509_certificates", counting)
    for _ in range(3):
        channel_credentials(config.services_tls)
        server_credentials(config.services_tls)
    assert 0 < len(parsed) <= 3  # one check: ca, certificate, the leaf
