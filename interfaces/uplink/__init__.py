"""Cloud uplink (DESIGN.md §6, docs/persistence.md): the sender thread and the request signature."""

from interfaces.uplink.sender import Sender, TransientError, parse_retry_after
from interfaces.uplink.signing import BATCH_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, sign, timestamp_fresh, verify

__all__ = [
    "BATCH_HEADER",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "Sender",
    "TransientError",
    "parse_retry_after",
    "sign",
    "timestamp_fresh",
    "verify",
]
