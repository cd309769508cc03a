"""Client-side encryption with age (docs/contract.md, "Encryption at rest"): bundles, LFS
objects and forge metadata are encrypted to REPOVAULT_ENCRYPT_RECIPIENTS before they leave the
host, and decrypted with the identity file of REPOVAULT_DECRYPT_IDENTITY by restores and checks.

Through the `age` command (Debian package `age`), which streams: a multi-GB bundle goes from
file to file in 64 KiB chunks, never held in memory, and outside the Python interpreter, so
upload threads and lease renewals keep running meanwhile. age authenticates every chunk: a
changed, cut or reordered ciphertext fails to decrypt, it never yields other plaintext. The
archiver holds only public keys: it cannot read what it wrote, nor what earlier runs wrote.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from repovault_pipeline.core.common.errors import ArchiveError
from repovault_pipeline.core.vault.records import Encryption

AGE_SUFFIX = ".age"
_NO_MATCH = "no identity matched"
_DAMAGE = ("payload", "header", "unexpected intro", "stream")  # the ciphertext, not the identity


class NotDecryptable(ArchiveError):
    """An encrypted object cannot be decrypted here: no identity is configured, or it is not
    one of the recipients. Says so in one line; the stored copy is not known to be damaged."""


class DecryptFailed(ArchiveError):
    """The identity matches but the ciphertext does not authenticate: the stored copy is
    damaged or was replaced."""


class Sealed(Protocol):
    """A document that records its `encryption` (a manifest, `lfs.json`)."""

    @property
    def encryption(self) -> Encryption | None: ...


@dataclass(frozen=True)
class Sealing:
    """The age recipients a snapshot is encrypted to, as its manifest records them under
    `encryption` (public keys: public information, and what finds the matching identity)."""

    recipients: tuple[str, ...]

    @property
    def seal(self) -> str:
        """A short fingerprint of the recipients: part of the keys of shared objects (LFS
        objects, release assets), so changing the recipients stores them again, readable by
        the new identities, instead of reusing copies only the old ones can open."""
        joined = "\n".join(sorted(self.recipients)).encode()
        return hashlib.sha256(joined).hexdigest()[:16]

    def record(self) -> Encryption:
        """`encryption` as a manifest (or `lfs.json`) records it."""
        return Encryption(scheme="age", recipients=list(self.recipients), seal=self.seal)

    @classmethod
    def of(cls, doc: Sealed | None) -> Sealing | None:
        """The sealing a manifest (or `lfs.json`) records; None for a plaintext one."""
        found = doc.encryption if doc is not None else None
        return cls(tuple(found.recipients)) if found else None

    def named(self) -> str:
        """The recipients in a line: the first ones, shortened."""
        if not self.recipients:
            return "named in earlier manifests"
        shown = ", ".join(r[:16] + "..." for r in self.recipients[:3])
        more = f" and {len(self.recipients) - 3} more" if len(self.recipients) > 3 else ""
        return shown + more


def sealing(recipients: tuple[str, ...]) -> Sealing | None:
    """The sealing REPOVAULT_ENCRYPT_RECIPIENTS asks for (None: off); refuses at once when the
    `age` command is missing, before anything is cloned or written."""
    if not recipients:
        return None
    _age()
    return Sealing(recipients)


def _age() -> str:
    found = shutil.which("age")
    if found is None:
        raise ArchiveError(
            "REPOVAULT_ENCRYPT_RECIPIENTS is set (or a snapshot is encrypted) but the `age` "
            "command is not installed; install it (Debian package age)"
        )
    return found


def encrypt_file(sealed: Sealing, source: Path, dest: Path) -> None:
    """`source` encrypted into `dest`, streamed."""
    _run([*_encrypt(sealed), "--output", str(dest), str(source)], f"encrypting {source.name}")


def encrypt_bytes(sealed: Sealing, data: bytes) -> bytes:
    return _run(_encrypt(sealed), "encrypting", data)


def _encrypt(sealed: Sealing) -> list[str]:
    return [_age(), "--encrypt", *(a for r in sealed.recipients for a in ("--recipient", r))]


def decrypt_file(
    identity: Path | None, sealed: Sealing, what: str, source: Path, dest: Path
) -> None:
    """`source` decrypted into `dest`, streamed; `what` names the encrypted thing in errors
    (e.g. `snapshot 2024... of github.com/o/r`). age removes a partial `dest` on failure."""
    args = [*_decrypt(identity, sealed, what), "--output", str(dest), str(source)]
    _run(args, what, sealed=sealed)


def decrypt_bytes(identity: Path | None, sealed: Sealing, what: str, data: bytes) -> bytes:
    return _run(_decrypt(identity, sealed, what), what, data, sealed)


def _decrypt(identity: Path | None, sealed: Sealing, what: str) -> list[str]:
    return [_age(), "--decrypt", "--identity", str(_identity(identity, sealed, what))]


def require_identity(identity: Path | None, sealed: Sealing | None, what: str) -> None:
    """Refuse at once, before a download, when `sealed` needs an identity and none is usable."""
    if sealed is not None:
        _identity(identity, sealed, what)


def _identity(identity: Path | None, sealed: Sealing, what: str) -> Path:
    if identity is None or not identity.is_file():
        state = "is not set" if identity is None else "names no readable file"
        raise NotDecryptable(f"{_advice(sealed, what)} (REPOVAULT_DECRYPT_IDENTITY {state})")
    return identity


def _advice(sealed: Sealing, what: str) -> str:
    return (
        f"{what} is encrypted to age recipients {sealed.named()}; set "
        "REPOVAULT_DECRYPT_IDENTITY to a matching identity file"
    )


def _run(
    args: list[str], what: str, data: bytes | None = None, sealed: Sealing | None = None
) -> bytes:
    """Run age; its first error line (which never holds key material) in the error."""
    done = subprocess.run(args, input=data, capture_output=True, check=False)
    if done.returncode == 0:
        return done.stdout
    error = next(
        (line for line in done.stderr.decode(errors="replace").splitlines() if "error" in line),
        f"age exited with {done.returncode}",
    )
    if sealed is None:
        raise ArchiveError(f"{what} failed: {error}")
    if _NO_MATCH in error:
        raise NotDecryptable(f"{_advice(sealed, what)} (the identity given is not one of them)")
    if any(word in error for word in _DAMAGE):
        raise DecryptFailed(f"{what} does not decrypt: {error}")
    raise NotDecryptable(f"{_advice(sealed, what)} ({error})")  # the identity file itself
