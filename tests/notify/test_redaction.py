"""Redaction (pure): no piece of a webhook URL or signing secret survives in shown text."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from exposuremon.notify.redaction import REDACTED, redact, secret_parts

# ---------------------------------------------------------------------------------- secrets


def test_secret_parts_of_a_webhook_url_are_redacted() -> None:
    """Path tokens and query values go; scheme and host stay, so the error still says where."""
    url = "https://hooks.slack.com/services/T0001/B0002/XXSECRETXX?token=QSECRET&x=1"
    parts = secret_parts(url, "signing-secret")
    text = f"POST {url} failed; path /services/T0001/B0002/XXSECRETXX; QSECRET; signing-secret"
    clean = redact(text, parts)
    for leaked in ("XXSECRETXX", "QSECRET", "signing-secret", "T0001"):
        assert leaked not in clean
    assert "hooks.slack.com" in clean
    assert REDACTED in clean
    assert parts == sorted(parts, key=len, reverse=True)


@given(st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_", min_size=8, max_size=40))
def test_no_token_survives_redaction(token: str) -> None:
    """A token anywhere in a URL's path or query never appears in a redacted text."""
    for url in (f"https://h.example/a/{token}", f"https://h.example/hook?sig={token}"):
        assert token not in redact(f"error at {url}: {token}", secret_parts(url))
