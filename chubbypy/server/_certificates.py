"""A cell's own certificate authority and its replicas' certificates (``--auto-tls``).

Shell side. `chubbypy cell --auto-tls` makes, once, what a cell with a ``tls:`` section needs
when its operator brings no PKI of their own (as etcd's ``--peer-auto-tls`` does): a CA
whose private key stays in the data directory, and for each replica a key and a
certificate signed by it. A replica's certificate names its id as its subject's common
name, which is what its peers check (`chubbypy.server._peer_auth`), and lists as subject
alternative names the addresses clients reach it at, which is what clients check.
`check_replica_certificate` is the start-up check of any certificate, made here or not.
"""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Iterable
from typing import Final

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from chubbypy.client._addresses import client_endpoint_string

__all__ = [
    "CertificateProblem",
    "IssuedCertificate",
    "check_replica_certificate",
    "client_names",
    "issue_replica_certificate",
    "new_authority",
]

CA_DAYS: Final = 3650
REPLICA_DAYS: Final = 1825
_BOTH_WAYS: Final = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
"""A replica's certificate serves clients and peers, and is shown to peers it connects to."""
LOOPBACK_NAMES: Final = ("localhost", "127.0.0.1", "::1")
"""What a replica on loopback is reached as, from its own machine."""


class CertificateProblem(Exception):
    """A certificate that a replica cannot use; the message is one line."""


IssuedCertificate = tuple[bytes, bytes]
"""A certificate and its private key, both PEM."""


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def new_authority(cell: str) -> IssuedCertificate:
    """A fresh self-signed CA for cell `cell`, allowed to sign end certificates only."""
    key = _new_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"chubbypy cell {cell} CA")])
    now = _now()
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_usage(signs=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .sign(key, hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.PEM), _key_pem(key)


def issue_replica_certificate(
    authority: IssuedCertificate, replica_id: str, names: Iterable[str]
) -> IssuedCertificate:
    """A certificate for replica `replica_id` (its subject's common name), valid for the
    host names and addresses `names`, signed by `authority`."""
    ca = x509.load_pem_x509_certificate(authority[0])
    ca_key = serialization.load_pem_private_key(authority[1], password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = _new_key()
    now = _now()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, replica_id)])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=REPLICA_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_usage(signs=False), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectAlternativeName(_general_names(names)), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.PEM), _key_pem(key)


def _usage(*, signs: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not signs,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=signs,
        crl_sign=signs,
        encipher_only=False,
        decipher_only=False,
    )


def _general_names(names: Iterable[str]) -> list[x509.GeneralName]:
    general: list[x509.GeneralName] = []
    for name in dict.fromkeys(names):
        try:
            general.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            general.append(x509.DNSName(name))
    return general


def client_names(client_endpoint: str) -> list[str]:
    """The names a client reaches a replica listening on `client_endpoint` by: its
    interface, and the loopback names when it listens on loopback or on every interface."""
    description = client_endpoint_string(client_endpoint)
    host = ""
    for field in description.split(":")[1:]:
        key, _, value = field.partition("=")
        if key == "host":
            host = value.replace("\\", "")
    if host in ("", *LOOPBACK_NAMES) or host.startswith("127."):
        return [*LOOPBACK_NAMES, *([host] if host else [])]
    return [host]


def check_replica_certificate(
    ca_pem: bytes, certificate_pem: bytes, key_pem: bytes, replica_id: str
) -> None:
    """`CertificateProblem` unless the certificate is replica `replica_id`'s (its common
    name), issued by the CA, valid now, and matched by the private key."""
    try:
        authorities = x509.load_pem_x509_certificates(ca_pem)
        certificate = x509.load_pem_x509_certificate(certificate_pem)
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as error:
        raise CertificateProblem(f"not a PEM certificate and unencrypted key: {error}") from None
    names = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    named = str(names[0].value) if names else None
    if named != replica_id:
        raise CertificateProblem(
            f"the certificate names {named!r} (its common name), not this replica {replica_id!r}"
        )
    if not any(_issued_by(certificate, authority) for authority in authorities):
        raise CertificateProblem("the certificate is not signed by the tls.ca authority")
    now = _now()
    if not certificate.not_valid_before_utc <= now <= certificate.not_valid_after_utc:
        raise CertificateProblem(
            f"the certificate is valid only from {certificate.not_valid_before_utc:%Y-%m-%d} "
            f"to {certificate.not_valid_after_utc:%Y-%m-%d}"
        )
    ours = serialization.PublicFormat.SubjectPublicKeyInfo
    encoding = serialization.Encoding.DER
    if key.public_key().public_bytes(encoding, ours) != certificate.public_key().public_bytes(
        encoding, ours
    ):
        raise CertificateProblem("the private key does not belong to the certificate")


def _issued_by(certificate: x509.Certificate, authority: x509.Certificate) -> bool:
    try:
        certificate.verify_directly_issued_by(authority)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True
