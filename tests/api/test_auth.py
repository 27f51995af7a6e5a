"""API tokens: parsing, files, workspace lookup."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from service.api.auth import TokenError, TokenTable, load_tokens, parse_tokens


def test_inline_tokens_map_to_workspaces() -> None:
    assert parse_tokens("alpha-token-1=1, beta-token-22=2", "x") == {
        "alpha-token-1": "1",
        "beta-token-22": "2",
    }


def test_token_file_with_comments(tmp_path: Path) -> None:
    file = tmp_path / "tokens"
    file.write_text("# ops team\nops-token-123=3\n\nci-token-4567=1  # CI\n")
    assert load_tokens("inline-token-9=2", file) == {
        "inline-token-9": "2",
        "ops-token-123": "3",
        "ci-token-4567": "1",
    }


@pytest.mark.parametrize("text", ["no-equals-sign", "short=1", "long-enough-token=abc", "=1"])
def test_bad_entries_are_refused_without_echoing_the_token(text: str) -> None:
    with pytest.raises(TokenError) as caught:
        parse_tokens(text, "SYNC_API_TOKENS")
    assert "SYNC_API_TOKENS" in str(caught.value)
    assert "long-enough-token" not in str(caught.value)


def test_missing_token_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(TokenError, match="SYNC_API_TOKENS_FILE"):
        load_tokens(None, tmp_path / "absent")


def test_lookup_needs_the_bearer_scheme_and_an_exact_token() -> None:
    table = TokenTable({"alpha-token-1": "1", "beta-token-22": "2"})
    assert table.workspace_for("Bearer alpha-token-1") == "1"
    assert table.workspace_for("bearer beta-token-22") == "2"
    assert table.workspace_for("Bearer alpha-token-") is None
    assert table.workspace_for("Basic alpha-token-1") is None
    assert table.workspace_for("alpha-token-1") is None
    assert table.workspace_for(None) is None
    assert not TokenTable({})


def digest(token: str) -> str:
    return "sha256:" + hashlib.sha256(token.encode()).hexdigest()


def test_a_token_given_as_its_digest_is_accepted_and_stored_nowhere(tmp_path: Path) -> None:
    file = tmp_path / "tokens"
    file.write_text(f"{digest('file-token-77')}=3\n")
    tokens = load_tokens(f"{digest('gamma-token-3').upper().replace('SHA256', 'sha256')}=2", file)
    assert not any("gamma-token-3" in t or "file-token-77" in t for t in tokens)
    table = TokenTable({**tokens, "plain-token-1": "1"})
    assert table.workspace_for("Bearer gamma-token-3") == "2"
    assert table.workspace_for("Bearer file-token-77") == "3"
    assert table.workspace_for("Bearer plain-token-1") == "1"
    # Knowing the digest is not knowing the token.
    assert table.workspace_for(f"Bearer {digest('gamma-token-3')}") is None
    assert table.workspace_for("Bearer gamma-token-4") is None
    held = repr(vars(table))
    assert "gamma-token-3" not in held
    assert "plain-token-1" not in held


@pytest.mark.parametrize("entry", ["sha256:abc=1", "sha256:" + "g" * 64 + "=1", "sha256:=1"])
def test_a_digest_must_be_64_hex_digits(entry: str) -> None:
    with pytest.raises(TokenError, match="64 hex digits"):
        parse_tokens(entry, "SYNC_API_TOKENS")
