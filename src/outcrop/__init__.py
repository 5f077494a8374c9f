"""Outcrop: scientific data archives on the network.

Remote datasets open exactly as local files do::

    import outcrop
    ds = outcrop.open_dataset("http://127.0.0.1:8765/zarr/cmip6/ta_Amon_1950")
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from outcrop.errors import (
    BadQuery,
    ConfigError,
    DatasetNotFound,
    Forbidden,
    OutcropError,
    SourceError,
    TooLarge,
    UpstreamFailed,
)

__all__ = [
    "BadQuery",
    "Client",
    "ConfigError",
    "DatasetNotFound",
    "Forbidden",
    "OutcropError",
    "SourceError",
    "TooLarge",
    "UpstreamFailed",
    "open_dataset",
]

if TYPE_CHECKING:
    from outcrop.client import Client, open_dataset


def __getattr__(name: str) -> Any:
    # The client pulls in httpx and xarray; `outcrop serve` never needs them at start-up.
    if name in ("Client", "open_dataset"):
        from outcrop import client

        return getattr(client, name)
    raise AttributeError(f"module 'outcrop' has no attribute {name!r}")
