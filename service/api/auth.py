"""Bearer tokens: each sees one workspace. Compared in constant time, never logged."""

from __future__ import annotations

import hmac
from pathlib import Path


class TokenError(ValueError):
    """A token list that cannot be read; the message never contains a token."""


def parse_tokens(text: str, origin: str) -> dict[str, str]:
    """`token=workspaceId` pairs separated by commas or newlines; `#` starts a comment."""
    tokens: dict[str, str] = {}
    for n, raw in enumerate(text.replace(",", "\n").splitlines(), start=1):
        entry = raw.split("#", 1)[0].strip()
        if not entry:
            continue
        token, sep, workspace = entry.rpartition("=")
        token, workspace = token.strip(), workspace.strip()
        if not sep or not token or not workspace.isdigit():
            raise TokenError(f"{origin}: entry {n} is not token=workspaceId (numeric)")
        if len(token) < 8:
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


class TokenTable:
    def __init__(self, tokens: dict[str, str]) -> None:
        self._tokens = [(t.encode(), ws) for t, ws in tokens.items()]

    def __bool__(self) -> bool:
        return bool(self._tokens)

    def workspace_for(self, authorization: str | None) -> str | None:
        """The workspace of a valid `Bearer <token>` header, else None. Every known token is
        compared, so the time taken does not tell which one came close."""
        if not authorization:
            return None
        scheme, _, presented = authorization.partition(" ")
        if scheme.lower() != "bearer" or not presented.strip():
            return None
        candidate = presented.strip().encode()
        found: str | None = None
        for token, workspace in self._tokens:
            if hmac.compare_digest(token, candidate):
                found = workspace
        return found
