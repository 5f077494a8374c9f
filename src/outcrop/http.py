"""Outbound HTTP from the server side (status checks, and later replication): every request
says who sends it, `User-Agent: Outcrop/<version>` (RFC 9110 §10.1.5), so the operators
of the other end can tell Outcrop's traffic apart, and verifies TLS certificates.

The Python client (`outcrop.client`) sets the same header itself: it imports only `model`
and `errors` from the package.
"""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import httpx


@cache
def user_agent() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"Outcrop/{version('outcrop')}"
    except PackageNotFoundError:  # a source tree without installed metadata
        return "Outcrop/0+unknown"


def client(**kwargs: Any) -> httpx.Client:
    """An `httpx.Client` sending Outcrop's User-Agent (unless `headers` name another) and
    verifying certificates; `verify=False` is refused: an unverified peer could be anyone."""
    import httpx

    if kwargs.get("verify", True) is False:
        raise ValueError("TLS verification cannot be switched off; pass a CA bundle instead")
    headers = {"User-Agent": user_agent(), **dict(kwargs.pop("headers", None) or {})}
    return httpx.Client(headers=headers, **kwargs)
