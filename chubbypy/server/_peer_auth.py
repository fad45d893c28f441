"""How replicas prove who they are to each other: the cell's peer key, or mutual TLS.

Shell side (issue 13, item 1). Before this, the peer port took a hello's claimed id at its
word, and one forged message from any local process was applied. Now a peer connection
carries no Paxos message until both ends are proven:

* **Peer key** (no ``tls:`` section). The connecting replica C sends its `Hello` and a
  `PeerChallenge` with a fresh random nonce Nc. The listening replica L answers with its
  own fresh nonce Nl and its proof, HMAC-SHA256(key, "listener", cell, C, L, Nc, Nl). C
  checks that proof *before* proving anything itself, so a process squatting on L's port
  learns nothing and is fed no message; then C sends its proof, the same HMAC labelled
  "connector", and L answers a good one with its `Welcome`. Both nonces make every proof
  good for one connection only (a recorded exchange replays to nothing), the labels keep
  one side's proof from being reflected as the other's, and both ids and the cell name
  bind the proof to who claims to be talking to whom. The key is the cell's: any holder of
  it is a member. It authenticates the two ends of a TCP connection; it does not encrypt
  or sign the stream after it, so on a network where others can inject into TCP streams,
  give the cell certificates.
* **Certificates** (a ``tls:`` section). Both ends run TLS with certificates signed by the
  cell's CA, each verifying the other's chain; the listening side then requires the
  certificate's common name to be the id the hello claims, and the connecting side that it
  is the id of the replica it meant to reach.

Refusals are logged through a `WarningLimiter`, so a storm of bad handshakes costs a line
every few seconds, not one per attempt.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Callable
from typing import Final, Literal

import msgpack
from attrs import define, field, frozen
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID
from OpenSSL import crypto
from twisted.internet.endpoints import wrapClientTLS
from twisted.internet.interfaces import IProtocolFactory, IReactorTime, IStreamClientEndpoint
from twisted.internet.ssl import CertificateOptions
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory

from chubbypy.protocol.client import PEER_NONCE_BYTES
from chubbypy.server._secrets import TlsFiles

__all__ = [
    "PeerAuthentication",
    "PeerCertificates",
    "PeerKey",
    "WarningLimiter",
    "new_nonce",
]

PROOF_LABEL: Final = "chubbypy peer proof v1"
Speaker = Literal["connector", "listener"]


def new_nonce() -> bytes:
    """A fresh handshake nonce from the operating system's randomness."""
    return os.urandom(PEER_NONCE_BYTES)


@frozen(repr=False)
class PeerKey:
    """Challenge-response on the cell's peer key (see the module docstring)."""

    cell: str
    key: bytes

    def proof(
        self,
        speaker: Speaker,
        connector: str,
        listener: str,
        connector_nonce: bytes,
        listener_nonce: bytes,
    ) -> bytes:
        """`speaker`'s proof on the connection from `connector` to `listener`."""
        # msgpack frames each field with its length: no two field lists encode alike.
        fields = [PROOF_LABEL, speaker, self.cell, connector, listener]
        message = msgpack.packb([*fields, connector_nonce, listener_nonce])
        return hmac.new(self.key, message, hashlib.sha256).digest()

    def checks(
        self,
        proof: bytes,
        speaker: Speaker,
        connector: str,
        listener: str,
        connector_nonce: bytes,
        listener_nonce: bytes,
    ) -> bool:
        """Whether `proof` is `speaker`'s on this connection (compared in constant time)."""
        expected = self.proof(speaker, connector, listener, connector_nonce, listener_nonce)
        return hmac.compare_digest(proof, expected)

    def __repr__(self) -> str:
        return f"PeerKey(cell={self.cell!r}, key=<secret>)"


class PeerCertificates:
    """Mutual TLS between replicas: the cell's CA and this replica's certificate."""

    def __init__(self, files: TlsFiles) -> None:
        self._authorities = [
            crypto.X509.from_cryptography(authority)
            for authority in x509.load_pem_x509_certificates(files.ca)
        ]
        certificate = x509.load_pem_x509_certificate(files.certificate)
        key = serialization.load_pem_private_key(files.key, password=None)
        self._certificate = crypto.X509.from_cryptography(certificate)
        self._key = crypto.PKey.from_cryptography_key(key)  # type: ignore[arg-type]

    def options(self) -> CertificateOptions:
        """Both sides: present our certificate; require the other's, signed by the CA."""
        return CertificateOptions(
            privateKey=self._key,
            certificate=self._certificate,
            verify=True,
            caCerts=self._authorities,
            requireCertificate=True,
        )

    def server_options(self) -> CertificateOptions:
        """The client port: present our certificate; clients show none (tokens say who)."""
        return CertificateOptions(privateKey=self._key, certificate=self._certificate)

    def serving_clients(self, factory: IProtocolFactory) -> TLSMemoryBIOFactory:
        """`factory`'s protocols behind TLS with our certificate, for the client port."""
        return TLSMemoryBIOFactory(self.server_options(), False, factory)

    def listening(self, factory: IProtocolFactory) -> TLSMemoryBIOFactory:
        """`factory`'s protocols, behind mutual TLS as the listening side."""
        return TLSMemoryBIOFactory(self.options(), False, factory)

    def connecting(self, endpoint: IStreamClientEndpoint) -> IStreamClientEndpoint:
        """`endpoint`, behind mutual TLS as the connecting side."""
        wrapped: IStreamClientEndpoint = wrapClientTLS(self.options(), endpoint)
        return wrapped


def certificate_name(transport: object) -> str | None:
    """The common name of the certificate the other end of `transport` presented, if any."""
    getter: Callable[[], object] | None = getattr(transport, "getPeerCertificate", None)
    if getter is None:
        return None
    certificate = getter()
    if isinstance(certificate, crypto.X509):
        certificate = certificate.to_cryptography()
    if not isinstance(certificate, x509.Certificate):
        return None
    names = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if len(names) == 1 else None


PeerAuthentication = PeerKey | PeerCertificates


@define
class WarningLimiter:
    """At most one warning per `interval_seconds` for each kind of trouble; the lines held
    back are counted and the next line says how many."""

    clock: IReactorTime
    log: Logger
    interval_seconds: float = 10.0
    _last: dict[str, float] = field(factory=dict)
    _held: dict[str, int] = field(factory=dict)

    def warn(self, kind: str, format: str, **details: object) -> None:
        """Log `format` (a Twisted log format with `details`) unless `kind` was logged less
        than `interval_seconds` ago."""
        now = self.clock.seconds()
        last = self._last.get(kind)
        if last is not None and now - last < self.interval_seconds:
            self._held[kind] = self._held.get(kind, 0) + 1
            return
        held = self._held.pop(kind, 0)
        self._last[kind] = now
        more = (
            f" ({held} more like it in the last {now - last:.0f} s)"
            if held and last is not None
            else ""
        )
        self.log.warn(format + more, **details)
