"""Bearer tokens with roles (docs/api.md "Security").

Tokens come from the config (`api.tokens`, secrets resolved at load from env or file). Each
presented token is compared with every configured one in constant time (`hmac.compare_digest`
over SHA-256 digests, so neither the position nor the length of a mismatch shows in the timing).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass

from config.api import ApiToken, Role

__all__ = ["AuthResult", "TokenTable"]


@dataclass(frozen=True, slots=True)
class AuthResult:
    """Outcome of checking a request: `status` 0 = allowed, else 401 or 403."""

    who: str  # token name, or "anonymous" / "invalid_token"
    role: Role | None
    status: int
    message: str


@dataclass(frozen=True, slots=True)
class _Entry:
    name: str
    role: Role
    digest: bytes


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


class TokenTable:
    def __init__(self, tokens: Sequence[ApiToken]) -> None:
        entries: list[_Entry] = []
        for t in tokens:
            if t.secret is None or not t.secret.value:
                raise ValueError(f"api.tokens: token {t.name!r} has no resolved secret")
            digest = _digest(t.secret.value)
            same = [e.name for e in entries if hmac.compare_digest(e.digest, digest)]
            if same:  # which role would win would depend on the order: refuse
                raise ValueError(f"api.tokens: tokens {same[0]!r} and {t.name!r} have the same secret")
            entries.append(_Entry(t.name, t.role, digest))
        self._entries = tuple(entries)

    def __len__(self) -> int:
        return len(self._entries)

    def identify(self, authorization: str | None) -> tuple[str, Role | None]:
        """(token name, role) for an `Authorization` header; ("anonymous"|"invalid_token", None) otherwise."""
        if not authorization:
            return "anonymous", None
        scheme, _, token = authorization.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return "invalid_token", None
        presented = _digest(token)
        found: _Entry | None = None
        for e in self._entries:  # no early exit: every entry is compared
            if hmac.compare_digest(presented, e.digest) and found is None:
                found = e
        return (found.name, found.role) if found is not None else ("invalid_token", None)

    def check(self, authorization: str | None, needed: Role | None) -> AuthResult:
        """Allow when `needed` is None (public) or the token's role is at least `needed`."""
        who, role = self.identify(authorization)
        if needed is None:
            return AuthResult(who, role, 0, "public")
        if role is None:
            msg = "missing bearer token" if who == "anonymous" else "invalid bearer token"
            return AuthResult(who, None, 401, f"Authorization: {msg} (send 'Authorization: Bearer <token>')")
        if role.rank < needed.rank:
            return AuthResult(who, role, 403, f"Authorization: token {who!r} has role {role.value}; this needs {needed.value}")
        return AuthResult(who, role, 0, "allowed")
