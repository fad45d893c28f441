"""A cell's secrets on disk: read when a replica starts, created once for a new cell.

Shell side. The cell file names secrets; it does not hold them (issue 13: a key shipped in
the repository is a key everyone has). `load_secrets` reads what one replica needs (the
handle key, every principal's token, and either the peer key or its TLS certificate) and
refuses, with one line naming the file and the key, a secret that is missing, too short or
an example's placeholder: a replica never starts on a secret anyone could know.
`create_secrets` is what `chubbypy cell` does on first start: every missing secret is made
fresh (random, mode 0600, in a 0700 directory) and reported, and nothing that exists is
ever replaced.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Final

from attrs import evolve, frozen

from chubbypy.config import TOKEN_CHARS_MIN, CellConfig, is_placeholder
from chubbypy.protocol.client import TOKEN_CHARS_MAX
from chubbypy.server._certificates import (
    CertificateProblem,
    check_replica_certificate,
    client_names,
    issue_replica_certificate,
    new_authority,
)

__all__ = [
    "ReplicaSecrets",
    "SecretsError",
    "TlsFiles",
    "create_secrets",
    "load_secrets",
    "with_secrets",
]

SECRET_BYTES: Final = 32
"""Randomness in each created key or token (256 bits), written as URL-safe base64."""
CREATE_HINT: Final = (
    "`chubbypy cell` creates a cell's missing keys on first start (`chubbypy cell --init` "
    "creates them and exits); copy the same files to every replica's machine"
)


class SecretsError(Exception):
    """A secret a replica needs is missing or unusable; the message is one line."""


@frozen
class TlsFiles:
    """The PEM files of one replica's mutual TLS, checked to belong together."""

    ca: bytes
    certificate: bytes
    key: bytes


@frozen
class ReplicaSecrets:
    """What one replica needs to start: read by `load_secrets`, never logged."""

    handle_key: str
    tokens: tuple[tuple[str, str], ...]
    """Every principal's token: those given inline and those read from token files."""
    peer_key: bytes | None
    """The cell's peer key, or None when the cell has certificates (`tls`)."""
    tls: TlsFiles | None


def load_secrets(config: CellConfig, replica_id: str) -> ReplicaSecrets:
    """Replica `replica_id`'s secrets; `SecretsError` (one line) if any is unusable."""
    auth = config.auth
    handle_key = auth.handle_key
    if handle_key is None:
        handle_key = _read(config, auth.handle_key_file, "auth.handle_key_file", "handle key")
    tokens = list(auth.principals)
    for principal, file in auth.token_files:
        key = f"auth.principals.{principal}.token_file"
        tokens.append((principal, _read(config, file, key, f"{principal}'s token")))
    peer_key = None
    tls = None
    if config.tls is None:
        peer_key = _read(config, auth.peer_key_file, "auth.peer_key_file", "peer key").encode()
    else:
        tls = _tls_files(config, replica_id)
    return ReplicaSecrets(handle_key, tuple(tokens), peer_key, tls)


def with_secrets(config: CellConfig, found: ReplicaSecrets) -> CellConfig:
    """`config` with its secrets read: the handle key and every token given inline, as
    `CellConfig.node_settings` takes them."""
    auth = evolve(config.auth, handle_key=found.handle_key, principals=found.tokens)
    return evolve(config, auth=auth)


def _read(config: CellConfig, written: str, key: str, what: str) -> str:
    """The secret in file `written` (blanks around it stripped), checked."""
    path = config.secret_path(written)
    try:
        text = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise SecretsError(f"no {what}: {path} does not exist ({key}); {CREATE_HINT}") from None
    except (OSError, UnicodeError) as error:
        raise SecretsError(f"cannot read the {what} from {path} ({key}): {error}") from None
    if not TOKEN_CHARS_MIN <= len(text) <= TOKEN_CHARS_MAX:
        raise SecretsError(
            f"the {what} in {path} ({key}) has {len(text)} characters: expected "
            f"{TOKEN_CHARS_MIN} to {TOKEN_CHARS_MAX} (a long random secret)"
        )
    if is_placeholder(text):
        raise SecretsError(
            f"the {what} in {path} ({key}) is an example's placeholder, which anyone can "
            f"read: put a long random secret there, or delete the file and let {CREATE_HINT}"
        )
    return text


def _tls_files(config: CellConfig, replica_id: str) -> TlsFiles:
    assert config.tls is not None
    files = []
    for key in ("ca", "cert", "key"):
        path = config.secret_path(getattr(config.tls, key), replica_id)
        try:
            files.append(path.read_bytes())
        except OSError as error:
            hint = "; `chubbypy cell --auto-tls` creates a cell CA and certificates"
            raise SecretsError(
                f"no TLS file for tls.{key}: {path}: {error.strerror or error}{hint}"
            ) from None
    found = TlsFiles(*files)
    try:
        check_replica_certificate(found.ca, found.certificate, found.key, replica_id)
    except CertificateProblem as problem:
        cert = config.secret_path(config.tls.cert, replica_id)
        raise SecretsError(f"tls.cert {cert}: {problem}") from None
    return found


# --- creating -----------------------------------------------------------------------------


def create_secrets(config: CellConfig, *, auto_tls: bool = False) -> list[Path]:
    """Create every secret of the cell that does not exist yet; the files created.

    Keys and tokens are fresh random strings. With `auto_tls` and a ``tls:`` section, a
    missing CA is made (its key beside it) and a missing replica certificate is issued by
    it. An existing file is never replaced.
    """
    created: list[Path] = []
    auth = config.auth
    wanted = [] if auth.handle_key is not None else [auth.handle_key_file]
    if config.tls is None:
        wanted.append(auth.peer_key_file)
    wanted += [file for _, file in auth.token_files]
    for written in wanted:
        path = config.secret_path(written)
        if _create(path, secrets.token_urlsafe(SECRET_BYTES).encode() + b"\n"):
            created.append(path)
    if auto_tls and config.tls is not None:
        created += _create_certificates(config)
    _publish_ca(config)
    return created


PUBLIC_CA_NAME = "ca.pem"
"""The public copy of the cell's CA certificate, in the data directory."""


def public_ca_path(config: CellConfig) -> Path | None:
    """Where clients find the cell's CA certificate (readable by every user: the CA in
    ``_secrets/`` is not, and a certificate is no secret); None without TLS or a CA."""
    if config.tls is None:
        return None
    path = config.data_dir / PUBLIC_CA_NAME
    return path if path.is_file() else None


def _publish_ca(config: CellConfig) -> None:
    """Keep the public copy of the CA certificate (mode 0644) the same as the CA's."""
    if config.tls is None:
        return
    try:
        certificate = config.secret_path(config.tls.ca).read_bytes()
    except OSError:
        return  # no CA here (the operator's own, elsewhere): nothing to publish
    public = config.data_dir / PUBLIC_CA_NAME
    if public.is_file() and public.read_bytes() == certificate:
        return
    public.parent.mkdir(parents=True, exist_ok=True)
    temporary = public.with_suffix(".tmp")
    temporary.write_bytes(certificate)
    temporary.chmod(0o644)
    temporary.replace(public)


def _create_certificates(config: CellConfig) -> list[Path]:
    assert config.tls is not None
    created: list[Path] = []
    ca_path = config.secret_path(config.tls.ca)
    ca_key_path = ca_path.with_suffix(".key")
    if not ca_path.exists():
        certificate, key = new_authority(config.cell)
        _create(ca_key_path, key)
        _create(ca_path, certificate, mode=0o644)
        created += [ca_path, ca_key_path]
    for replica in config.replicas:
        cert_path = config.secret_path(config.tls.cert, replica.id)
        key_path = config.secret_path(config.tls.key, replica.id)
        if cert_path.exists() and key_path.exists():
            continue
        try:
            authority = (ca_path.read_bytes(), ca_key_path.read_bytes())
        except OSError as error:
            raise SecretsError(
                f"cannot issue {replica.id}'s certificate: the CA's key {ca_key_path} "
                f"cannot be read ({error.strerror or error}): issue it with your own CA"
            ) from None
        names = [replica.id, *client_names(replica.client)]
        certificate, key = issue_replica_certificate(authority, replica.id, names)
        key_path.unlink(missing_ok=True)
        cert_path.unlink(missing_ok=True)
        _create(key_path, key)
        _create(cert_path, certificate, mode=0o644)
        created += [cert_path, key_path]
    return created


def _create(path: Path, contents: bytes, mode: int = 0o600) -> bool:
    """Write a new file of `contents` with `mode`, unless `path` exists; whether it did.

    O_EXCL: two cells started at once on one data directory cannot both write a key.
    """
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError:
        return False
    with os.fdopen(descriptor, "wb") as file:
        file.write(contents)
    return True
