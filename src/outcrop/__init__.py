"""Outcrop: scientific data archives on the network.

Remote datasets open exactly as local files do::

    import outcrop
    ds = outcrop.open_dataset("http://127.0.0.1:8765/zarr/cmip6/ta_Amon_1950")
"""

from outcrop.client import Client, open_dataset
from outcrop.errors import (
    BadQuery,
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
    "DatasetNotFound",
    "Forbidden",
    "OutcropError",
    "SourceError",
    "TooLarge",
    "UpstreamFailed",
    "open_dataset",
]
