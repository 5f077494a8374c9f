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
def package_version() -> str:
    """This Outcrop's version (`0+unknown` in a source tree without installed metadata)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("outcrop")
    except PackageNotFoundError:
        return "0+unknown"


def user_agent() -> str:
    return f"Outcrop/{package_version()}"


def client(**kwargs: Any) -> httpx.Client:
    """An `httpx.Client` sending Outcrop's User-Agent (unless `headers` name another) and
    verifying certificates; `verify=False` is refused: an unverified peer could be anyone."""
    import httpx

    if kwargs.get("verify", True) is False:
        raise ValueError("TLS verification cannot be switched off; pass a CA bundle instead")
    headers = {"User-Agent": user_agent(), **dict(kwargs.pop("headers", None) or {})}
    return httpx.Client(headers=headers, **kwargs)
