"""Cloud uplink (DESIGN.md §6, docs/persistence.md, docs/uplink.md): the sender thread, its
transports (HTTPS, MQTT), the request and command signatures, and the cloud command queue."""

from interfaces.uplink.sender import Sender, TransientError, make_transport, parse_retry_after
from interfaces.uplink.signing import (
    BATCH_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    sign,
    sign_command,
    timestamp_fresh,
    verify,
    verify_command,
)

__all__ = [
    "BATCH_HEADER",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "Sender",
    "TransientError",
    "make_transport",
    "parse_retry_after",
    "sign",
    "sign_command",
    "timestamp_fresh",
    "verify",
    "verify_command",
]
