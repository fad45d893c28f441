"""A cell's secrets: created once (fresh, 0600, never replaced), read at start with one-line
refusals, and the certificates of ``--auto-tls`` naming each replica."""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from chubbypy.config import CellConfig, parse_config
from chubbypy.server._certificates import (
    CertificateProblem,
    check_replica_certificate,
    client_names,
    issue_replica_certificate,
    new_authority,
)
from chubbypy.server._peer_auth import PeerCertificates, certificate_name
from chubbypy.server._secrets import (
    SecretsError,
    create_secrets,
    load_secrets,
    public_ca_path,
    with_secrets,
)


def _config(tmp: Path, **top: Any) -> CellConfig:
    replicas = [
        {
            "id": f"r{n}",
            "peer": f"tcp:{7100 + n}:interface=127.0.0.1",
            "client": f"tcp:{7200 + n}:interface=127.0.0.1",
            "admin": f"tcp:{7300 + n}:interface=127.0.0.1",
        }
        for n in (1, 2, 3)
    ]
    auth = {"principals": {"operator": {"token_file": "_secrets/operator.token"}}}
    return parse_config(
        {"cell": "t", "replicas": replicas, "data_dir": str(tmp), "auth": auth, **top}
    )


def test_the_first_start_creates_every_secret_private_and_fresh(tmp_path: Path) -> None:
    """Handle key, peer key and the operator's token: new random files, mode 0600."""
    config = _config(tmp_path)
    created = create_secrets(config)
    names = sorted(path.name for path in created)
    assert names == ["handle.key", "operator.token", "peer.key"]
    for path in created:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
        assert len(path.read_text().strip()) >= 40
    assert stat.S_IMODE((tmp_path / "_secrets").stat().st_mode) == 0o700
    assert len({path.read_text() for path in created}) == 3
    again = _config(tmp_path / "other")
    create_secrets(again)
    assert (tmp_path / "other/_secrets/handle.key").read_text() != created[0].read_text()


def test_an_existing_secret_is_never_replaced(tmp_path: Path) -> None:
    """A second start creates nothing and leaves every file as it was."""
    config = _config(tmp_path)
    first = {path: path.read_bytes() for path in create_secrets(config)}
    assert create_secrets(config) == []
    assert {path: path.read_bytes() for path in first} == first


def test_a_replica_reads_what_was_created(tmp_path: Path) -> None:
    """load_secrets gives the handle key, the peer key and every principal's token."""
    config = _config(tmp_path)
    create_secrets(config)
    found = load_secrets(config, "r2")
    secrets_dir = tmp_path / "_secrets"
    assert found.handle_key == (secrets_dir / "handle.key").read_text().strip()
    assert found.peer_key == (secrets_dir / "peer.key").read_text().strip().encode()
    assert found.tokens == (("operator", (secrets_dir / "operator.token").read_text().strip()),)
    resolved = with_secrets(config, found)
    assert resolved.auth.handle_key == found.handle_key
    assert resolved.node_settings("r2").auth.admits("operator", found.tokens[0][1])


@pytest.mark.parametrize(
    ("file", "contents", "expected"),
    [
        (
            "handle.key",
            None,
            r"^no handle key: .*handle\.key does not exist \(auth\.handle_key_file\)",
        ),
        ("peer.key", None, r"^no peer key: .*peer\.key does not exist \(auth\.peer_key_file\)"),
        ("operator.token", None, r"^no operator's token: .*auth\.principals\.operator\.token_file"),
        ("peer.key", "short\n", r"has 5 characters: expected 16 to 1024"),
        ("handle.key", "local cell: replace with a long random secret", r"placeholder"),
    ],
)
def test_a_missing_or_unusable_secret_is_refused_in_one_line(
    tmp_path: Path, file: str, contents: str | None, expected: str
) -> None:
    """The refusal names the file and the key, on one line."""
    config = _config(tmp_path)
    create_secrets(config)
    path = tmp_path / "_secrets" / file
    if contents is None:
        path.unlink()
    else:
        path.write_text(contents)
    with pytest.raises(SecretsError, match=expected) as refused:
        load_secrets(config, "r1")
    assert "\n" not in str(refused.value)


def test_an_inline_handle_key_needs_no_file(tmp_path: Path) -> None:
    """auth.handle_key given in the file is used as it is; no handle.key is created."""
    replicas = [_replica(replica) for replica in _config(tmp_path).replicas]
    document = {"cell": "t", "replicas": replicas, "data_dir": str(tmp_path)}
    config = parse_config({**document, "auth": {"handle_key": "k" * 32}})
    assert sorted(p.name for p in create_secrets(config)) == ["peer.key"]
    assert load_secrets(config, "r1").handle_key == "k" * 32


def _replica(replica: Any) -> dict[str, str]:
    return {
        "id": replica.id,
        "peer": replica.peer,
        "client": replica.client,
        "admin": replica.admin,
    }


# --- certificates ---------------------------------------------------------------------------


def test_auto_tls_makes_a_ca_and_a_certificate_naming_each_replica(tmp_path: Path) -> None:
    """With tls: and auto_tls, each replica gets a certificate whose common name is its id,
    valid for the names clients reach it by; no peer key is made (certificates replace it)."""
    config = _config(tmp_path, tls={})
    created = {path.name for path in create_secrets(config, auto_tls=True)}
    assert {"ca.pem", "ca.key", "r1.pem", "r1.key", "r3.key"} <= created
    assert "peer.key" not in created
    found = load_secrets(config, "r3")
    assert found.peer_key is None
    assert found.tls is not None
    certificate = x509.load_pem_x509_certificate(found.tls.certificate)
    assert certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "r3"
    names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in names.get_values_for_type(x509.DNSName)
    assert stat.S_IMODE((tmp_path / "_secrets/tls/ca.key").stat().st_mode) == 0o600


def test_the_cas_certificate_is_published_readable_beside_the_secrets(tmp_path: Path) -> None:
    """The CA certificate is copied to <data_dir>/ca.pem, mode 0644 (the one in _secrets/
    is behind a 0700 directory), kept equal to it, and named by public_ca_path; without
    tls: there is none."""
    config = _config(tmp_path, tls={})
    create_secrets(config, auto_tls=True)
    public = tmp_path / "ca.pem"
    assert public_ca_path(config) == public
    assert stat.S_IMODE(public.stat().st_mode) == 0o644
    assert public.read_bytes() == (tmp_path / "_secrets/tls/ca.pem").read_bytes()
    public.write_bytes(b"stale")
    create_secrets(config)
    assert public.read_bytes() == (tmp_path / "_secrets/tls/ca.pem").read_bytes()
    assert public_ca_path(_config(tmp_path / "plain")) is None


def test_without_auto_tls_missing_certificates_are_refused(tmp_path: Path) -> None:
    """A tls: section whose files are missing refuses the start, naming the file."""
    config = _config(tmp_path, tls={})
    create_secrets(config)
    with pytest.raises(SecretsError, match=r"^no TLS file for tls\.ca: .*ca\.pem.*--auto-tls"):
        load_secrets(config, "r1")


def test_a_certificate_for_another_replica_is_refused_at_start(tmp_path: Path) -> None:
    """r1 started with r2's certificate refuses: the certificate names 'r2'."""
    config = _config(tmp_path, tls={})
    create_secrets(config, auto_tls=True)
    tls_dir = tmp_path / "_secrets/tls"
    (tls_dir / "r1.pem").write_bytes((tls_dir / "r2.pem").read_bytes())
    (tls_dir / "r1.key").write_bytes((tls_dir / "r2.key").read_bytes())
    with pytest.raises(
        SecretsError, match=r"names 'r2' \(its common name\), not this replica 'r1'"
    ):
        load_secrets(config, "r1")


def test_a_certificate_is_checked_against_the_ca_and_its_key() -> None:
    """Another CA's certificate, or a key that is not the certificate's, is refused."""
    ours, theirs = new_authority("t"), new_authority("t")
    certificate, key = issue_replica_certificate(ours, "r1", ["r1"])
    check_replica_certificate(ours[0], certificate, key, "r1")
    with pytest.raises(CertificateProblem, match=r"not signed by the tls\.ca"):
        check_replica_certificate(theirs[0], certificate, key, "r1")
    _, other_key = issue_replica_certificate(ours, "r1", ["r1"])
    with pytest.raises(CertificateProblem, match="does not belong"):
        check_replica_certificate(ours[0], certificate, other_key, "r1")


def test_client_names_cover_loopback_and_a_named_interface() -> None:
    """A loopback or wildcard listener is reached as localhost/127.0.0.1; others by host."""
    assert "127.0.0.1" in client_names("ssl:7201:interface=127.0.0.1")
    assert "localhost" in client_names("tcp:7201")
    assert client_names("ssl:7201:interface=10.0.0.7") == ["10.0.0.7"]


class _FakeTls:
    def __init__(self, certificate: bytes) -> None:
        self._certificate = x509.load_pem_x509_certificate(certificate)

    def getPeerCertificate(self) -> object:
        from OpenSSL import crypto

        return crypto.X509.from_cryptography(self._certificate)


def test_a_peer_is_named_by_its_certificates_common_name(tmp_path: Path) -> None:
    """certificate_name reads the CN of what the other end presented; none without TLS."""
    authority = new_authority("t")
    certificate, _ = issue_replica_certificate(authority, "r2", ["r2"])
    assert certificate_name(_FakeTls(certificate)) == "r2"
    assert certificate_name(object()) is None
    config = _config(tmp_path, tls={})
    create_secrets(config, auto_tls=True)
    found = load_secrets(config, "r1")
    assert found.tls is not None
    options = PeerCertificates(found.tls).options()
    assert options.verify
    assert options.requireCertificate
