"""The uplink request signature, shared by the sender and the reference receiver.

    X-EMS-Timestamp: <unix seconds, integer>
    X-EMS-Signature: sha256=<hex HMAC-SHA256(key, timestamp + "." + body)>

`body` is the exact request body on the wire (the gzip bytes). A receiver checks the signature
first, then that the timestamp is within its window, which bounds how long a captured request
can be replayed (duplicates inside the window are caught by the batch id).
"""

from __future__ import annotations

import hashlib
import hmac

__all__ = ["BATCH_HEADER", "SIGNATURE_HEADER", "TIMESTAMP_HEADER", "sign", "timestamp_fresh", "verify"]

SIGNATURE_HEADER = "X-EMS-Signature"
TIMESTAMP_HEADER = "X-EMS-Timestamp"
BATCH_HEADER = "X-EMS-Batch-Id"
_PREFIX = "sha256="


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
