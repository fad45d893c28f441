"""Dialing a replica over TLS: ``ssl:`` client endpoints, verified against the cell's CA.

Shell (STYLE §6). A replica whose client endpoint is ``ssl:`` serves clients over TLS with
its certificate (`chubbypy.server`). The client checks that certificate twice: it must be
signed by an authority the client trusts (the cell's CA, given as `tls_ca`, else the
system's trusted authorities), and it must name the host the client dialled (a DNS name or
an IP address among its subject alternative names; Twisted checks it with
service_identity). A replica that fails either check is not spoken to: the connection
fails like a refused one, with the reason.

Twisted's own ``ssl:`` client endpoint string verifies no host name, and nothing at all
without a CA directory, so this module builds the endpoint itself.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from twisted.internet._sslverify import IOpenSSLTrustRoot  # ssl re-exports it, untyped
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.interfaces import IReactorTCP, IStreamClientEndpoint
from twisted.internet.ssl import (
    Certificate,
    optionsForClientTLS,
    platformTrust,
    trustRootFromCertificates,
)

from chubbypy.client._addresses import endpoint_fields

__all__ = ["TLS_KIND", "load_trust", "tls_endpoint"]

TLS_KIND: Final = "ssl:"
"""The client endpoint descriptions dialled over TLS."""


def load_trust(ca_file: str | os.PathLike[str] | None) -> IOpenSSLTrustRoot:
    """The authorities a client trusts: every certificate in PEM file `ca_file`, or the
    system's when None. `ValueError`, naming the file, if it cannot be read or holds none."""
    if ca_file is None:
        system: IOpenSSLTrustRoot = platformTrust()  # type: ignore[no-untyped-call]
        return system
    path = Path(ca_file)
    try:
        loaded = x509.load_pem_x509_certificates(path.read_bytes())
    except OSError as error:
        raise ValueError(f"cannot read the CA file {path}: {error.strerror or error}") from None
    except ValueError as error:
        raise ValueError(f"{path} holds no PEM certificate: {error}") from None
    pems = [c.public_bytes(serialization.Encoding.PEM) for c in loaded]
    authorities = [Certificate.loadPEM(pem) for pem in pems]
    trust: IOpenSSLTrustRoot = trustRootFromCertificates(authorities)  # type: ignore[no-untyped-call]
    return trust


def tls_endpoint(
    reactor: IReactorTCP, description: str, trust: IOpenSSLTrustRoot
) -> IStreamClientEndpoint:
    """A TLS endpoint for ``ssl:host=H:port=P``, verifying the replica's certificate
    against `trust` and the name H."""
    fields = endpoint_fields(description)
    host, port = fields.get("host", ""), fields.get("port", "")
    if not host or not port.isdigit():
        raise ValueError(f"{description!r}: an ssl: client endpoint needs host= and port=")
    plain = HostnameEndpoint(reactor, host.encode("idna"), int(port))
    wrapped: IStreamClientEndpoint = wrapClientTLS(
        optionsForClientTLS(host, trustRoot=trust), plain
    )
    return wrapped
