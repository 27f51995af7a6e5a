"""Bearer tokens: each sees one workspace. Compared in constant time, never logged.

A token may be configured as its SHA-256 digest, `sha256:<64 hex digits>=workspaceId`
(`printf %s "$TOKEN" | sha256sum`), so the plain token is stored nowhere on the server. Plain
tokens are hashed when loaded: only digests are kept, and a presented token is hashed once and
compared with every digest."""

from __future__ import annotations

import hashlib
import hmac
import re
from pathlib import Path

DIGEST_PREFIX = "sha256:"
_HEX_DIGEST = re.compile(r"^[0-9a-fA-F]{64}$")


class TokenError(ValueError):
    """A token list that cannot be read; the message never contains a token."""


def parse_tokens(text: str, origin: str) -> dict[str, str]:
    """`token=workspaceId` pairs separated by commas or newlines; `#` starts a comment; a token
    written `sha256:<hex>` is that token's digest."""
    tokens: dict[str, str] = {}
    for n, raw in enumerate(text.replace(",", "\n").splitlines(), start=1):
        entry = raw.split("#", 1)[0].strip()
        if not entry:
            continue
        token, sep, workspace = entry.rpartition("=")
        token, workspace = token.strip(), workspace.strip()
        if not sep or not token or not workspace.isdigit():
            raise TokenError(f"{origin}: entry {n} is not token=workspaceId (numeric)")
        if token.startswith(DIGEST_PREFIX):
            if not _HEX_DIGEST.match(token.removeprefix(DIGEST_PREFIX)):
                raise TokenError(f"{origin}: entry {n}: sha256: needs 64 hex digits")
            token = token.lower()
        elif len(token) < 8:
            raise TokenError(f"{origin}: entry {n}: a token needs at least 8 characters")
        tokens[token] = workspace
    return tokens


def load_tokens(inline: str | None, file: Path | None) -> dict[str, str]:
    tokens: dict[str, str] = {}
    if inline:
        tokens.update(parse_tokens(inline, "SYNC_API_TOKENS"))
    if file is not None:
        try:
            text = file.read_text()
        except OSError as exc:
            raise TokenError(f"SYNC_API_TOKENS_FILE: cannot read {file}: {exc.strerror}") from None
        tokens.update(parse_tokens(text, f"SYNC_API_TOKENS_FILE ({file})"))
    return tokens


def token_digest(token: str) -> bytes:
    """The SHA-256 digest a table keeps of a configured token (plain or `sha256:<hex>`)."""
    if token.startswith(DIGEST_PREFIX):
        return bytes.fromhex(token.removeprefix(DIGEST_PREFIX))
    return hashlib.sha256(token.encode()).digest()


class TokenTable:
    def __init__(self, tokens: dict[str, str]) -> None:
        self._digests = [(token_digest(t), ws) for t, ws in tokens.items()]

    def __bool__(self) -> bool:
        return bool(self._digests)

    def workspace_for(self, authorization: str | None) -> str | None:
        """The workspace of a valid `Bearer <token>` header, else None. Every known token is
        compared, so the time taken does not tell which one came close."""
        if not authorization:
            return None
        scheme, _, presented = authorization.partition(" ")
        if scheme.lower() != "bearer" or not presented.strip():
            return None
        candidate = hashlib.sha256(presented.strip().encode()).digest()
        found: str | None = None
        for digest, workspace in self._digests:
            if hmac.compare_digest(digest, candidate):
                found = workspace
        return found
