"""Standard Webhooks verification (https://www.standardwebhooks.com/).

The signed content is ``{webhook-id}.{webhook-timestamp}.{body}``, signed with
HMAC-SHA256 under the ``whsec_``-prefixed base64 secret; ``webhook-signature``
holds one or more space-separated ``v1,<base64>`` signatures. Hand-written
(about 30 lines) rather than the ``standardwebhooks`` package: the package
raises ``ValueError``, ``binascii.Error`` or ``UnicodeDecodeError`` on malformed
input, each of which would have to be mapped to 401 anyway.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import time
from collections.abc import Mapping


class WebhookRefused(Exception):
    """The request is not a validly signed, fresh webhook. Always answered 401."""


def _key(secret: str) -> bytes:
    raw = secret.removeprefix("whsec_")
    try:
        return base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("the webhook secret must be whsec_<base64>") from None


def check_secret(secret: str) -> None:
    """Raise ValueError early (at startup) for a secret that is not ``whsec_<base64>``."""
    _key(secret)


def generate_secret() -> str:
    """A new random ``whsec_<base64>`` secret (24 bytes)."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


def sign(secret: str, webhook_id: str, timestamp: int, body: bytes) -> str:
    """The ``v1,<base64>`` signature of a webhook (what a sender puts in the header)."""
    content = f"{webhook_id}.{timestamp}.".encode() + body
    digest = hmac.new(_key(secret), content, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def callback_token(secret: str, job_id: str) -> str:
    """The token that binds webhook deliveries to one job (in its ``callback_url``).

    The job id sits in the URL, outside what the sender signs: without this token a
    delivery signed for job A would complete job B when posted to B's URL. Derived from
    the secret (HMAC), it is unguessable, needs no storage, and every process sharing
    the secret computes the same one.
    """
    digest = hmac.new(_key(secret), b"toolplex-callback." + job_id.encode(),
                      hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest[:24]).decode()


def bound_to(secret: str, job_id: str, token: str | None) -> bool:
    """True when ``token`` is ``job_id``'s callback token (compared in constant time)."""
    return hmac.compare_digest((token or "").encode(), callback_token(secret, job_id).encode())


def verify(secret: str, headers: Mapping[str, str], body: bytes, *,
           tolerance: float = 300.0, now: float | None = None) -> str:
    """Check a webhook's signature and freshness; return its ``webhook-id``.

    Raises:
        WebhookRefused: Missing or malformed headers, a stale or future timestamp,
            or no matching signature (compared in constant time).
    """
    webhook_id = headers.get("webhook-id", "")
    stamp = headers.get("webhook-timestamp", "")
    signatures = headers.get("webhook-signature", "")
    if not webhook_id or not stamp or not signatures:
        raise WebhookRefused("missing webhook-id, webhook-timestamp or webhook-signature")
    try:
        timestamp = int(stamp)
    except ValueError:
        raise WebhookRefused("webhook-timestamp is not an integer") from None
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance:
        raise WebhookRefused("webhook-timestamp is outside the 5-minute tolerance")
    expected = sign(secret, webhook_id, timestamp, body).encode()
    for candidate in signatures.split():
        if hmac.compare_digest(candidate.encode("utf-8", "replace"), expected):
            return webhook_id
    raise WebhookRefused("no valid signature")
