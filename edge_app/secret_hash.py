"""Stored secrets as scrypt hashes: one line `scrypt$N$r$p$<salt>$<hash>` (unpadded base64).

Used for the web page's admin password (edge_app.web.auth) and the remote unlock code
(edge_app.hub.code). scrypt (Python's hashlib, no extra dependency) is memory-hard: with
N=2**15, r=8 each hash costs 128 * N * r = 32 MiB and ~0.1 s on a Pi 4, so guesses are slow
and costly. Parameters read back from a file are bounded, so an edited file cannot make each
check take minutes or gigabytes.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass

SCHEME = "scrypt"
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**15, 8, 1  # 128 * N * r = 32 MiB of memory per hash
SCRYPT_DKLEN = 32
# A stored hash may ask for at most this much scrypt memory (128 * N * r bytes): bounds what a
# hand-edited file can make the hub allocate, and every line that parses can be computed.
MAX_SCRYPT_MEMORY = 64 * 1024 * 1024
# OpenSSL's own limit, with headroom over 128 * N * r for its per-block extras.
SCRYPT_MAXMEM = MAX_SCRYPT_MEMORY + 4 * 1024 * 1024
SALT_BYTES = 16
_N_RANGE = (2**10, 2**16)
_R_RANGE = (1, 16)
_P_RANGE = (1, 4)


class HashFormatError(ValueError):
    """The text is not a `scrypt$N$r$p$salt$hash` line."""


class CostRefused(HashFormatError):
    """The line's scrypt parameters are outside the accepted bounds."""


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


def _scrypt(secret: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(
        secret.encode("utf-8"), salt=salt, n=n, r=r, p=p, maxmem=SCRYPT_MAXMEM, dklen=SCRYPT_DKLEN
    )


@dataclass(frozen=True)
class ScryptHash:
    n: int
    r: int
    p: int
    salt: bytes
    digest: bytes

    @classmethod
    def of(cls, secret: str) -> ScryptHash:
        """A fresh salted hash of the secret at the default cost."""
        salt = secrets.token_bytes(SALT_BYTES)
        digest = _scrypt(secret, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
        return cls(SCRYPT_N, SCRYPT_R, SCRYPT_P, salt, digest)

    @classmethod
    def parse(cls, text: str) -> ScryptHash:
        """The hash in a line; HashFormatError (CostRefused for its parameters) if not one."""
        try:
            scheme, n, r, p, salt, digest = text.strip().split("$")
            values = int(n), int(r), int(p)
            raw_salt, raw_digest = _unb64(salt), _unb64(digest)
        except ValueError:
            raise HashFormatError("not an scrypt hash line") from None
        if scheme != SCHEME or len(raw_digest) != SCRYPT_DKLEN or len(raw_salt) < SALT_BYTES:
            raise HashFormatError("not an scrypt hash line")
        (n_, r_, p_) = values
        if (
            n_ & (n_ - 1)
            or not _N_RANGE[0] <= n_ <= _N_RANGE[1]
            or not _R_RANGE[0] <= r_ <= _R_RANGE[1]
            or not _P_RANGE[0] <= p_ <= _P_RANGE[1]
            or 128 * n_ * r_ > MAX_SCRYPT_MEMORY
        ):
            raise CostRefused(f"scrypt parameters N={n_} r={r_} p={p_} refused")
        return cls(n_, r_, p_, raw_salt, raw_digest)

    def line(self) -> str:
        return f"{SCHEME}${self.n}${self.r}${self.p}${_b64(self.salt)}${_b64(self.digest)}"

    def matches(self, secret: str) -> bool:
        """Constant-time comparison of the secret's scrypt hash with the stored one."""
        actual = _scrypt(secret, self.salt, self.n, self.r, self.p)
        return hmac.compare_digest(actual, self.digest)


def is_hash_line(text: str) -> bool:
    """Whether `text` is one `scrypt$N$r$p$salt$hash` line, with parameters in bounds or not:
    a file edge-app wrote (refused parameters are fixed by writing it anew)."""
    try:
        ScryptHash.parse(text)
    except CostRefused:
        return True
    except HashFormatError:
        return False
    return True
