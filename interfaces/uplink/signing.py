"""The uplink request signature, shared by the sender and the reference receiver.

    X-EMS-Timestamp: <unix seconds, integer>
    X-EMS-Signature: sha256=<hex HMAC-SHA256(key, timestamp + "." + body)>

`body` is the exact request body on the wire (the gzip bytes). A receiver checks the signature
first, then that the timestamp is within its window, which bounds how long a captured request
can be replayed (duplicates inside the window are caught by the batch id).

Commands from the receiver to the site (docs/uplink.md) are JSON envelopes signed the other way
with the same key: `signature` = `sha256=` + hex HMAC-SHA256(key, "ems.command/1\n" + the canonical
JSON of the envelope without `signature`: sorted keys, compact, UTF-8). The prefix keeps a batch
signature from ever passing as a command's. The envelope holds the nonce, issued_at, expires_at and
the body, so all of them are signed.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping

__all__ = [
    "BATCH_HEADER",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "sign",
    "sign_command",
    "timestamp_fresh",
    "verify",
    "verify_command",
]

SIGNATURE_HEADER = "X-EMS-Signature"
TIMESTAMP_HEADER = "X-EMS-Timestamp"
BATCH_HEADER = "X-EMS-Batch-Id"
_PREFIX = "sha256="
_COMMAND_DOMAIN = b"ems.command/1\n"


def sign(key: bytes, timestamp: str, body: bytes) -> str:
    return _PREFIX + hmac.new(key, timestamp.encode("ascii") + b"." + body, hashlib.sha256).hexdigest()


def verify(key: bytes, timestamp: str, body: bytes, signature: str) -> bool:
    try:
        expected = sign(key, timestamp, body)
    except UnicodeEncodeError:
        return False
    return hmac.compare_digest(expected.encode("ascii"), signature.strip().encode("ascii", "replace"))


def timestamp_fresh(timestamp: str, *, now_s: float, max_skew_s: float) -> bool:
    """True when `timestamp` is an integer within ±max_skew_s of now."""
    if not timestamp.isdigit() or len(timestamp) > 12:
        return False
    return abs(int(timestamp) - now_s) <= max_skew_s


def _command_bytes(envelope: Mapping[str, object]) -> bytes:
    body = {k: v for k, v in envelope.items() if k != "signature"}
    return _COMMAND_DOMAIN + json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def sign_command(key: bytes, envelope: Mapping[str, object]) -> str:
    """The `signature` field of a command envelope (every other field is covered)."""
    return _PREFIX + hmac.new(key, _command_bytes(envelope), hashlib.sha256).hexdigest()


def verify_command(key: bytes, envelope: Mapping[str, object]) -> bool:
    """Constant-time check of an envelope's `signature`; False for anything unreadable."""
    given = envelope.get("signature")
    if not isinstance(given, str):
        return False
    try:
        expected = sign_command(key, envelope)
    except (TypeError, ValueError):  # not JSON-serialisable: forged or broken
        return False
    return hmac.compare_digest(expected.encode("ascii"), given.strip().encode("ascii", "replace"))
