"""The Python client: the catalog, metadata, subsets and lazy datasets over HTTP."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import httpx

from outcrop.errors import BadQuery, DatasetNotFound, OutcropError, TooLarge

if TYPE_CHECKING:
    import xarray as xr


def open_dataset(url: str, **kwargs: Any) -> xr.Dataset:
    """A lazy `xarray.Dataset` from an Outcrop Zarr URL (`http://host/zarr/{id}`)."""
    import xarray as xr

    kwargs.setdefault("consolidated", True)
    ds: xr.Dataset = xr.open_zarr(url, **kwargs)
    return ds


class Client:
    """An Outcrop server: `Client("http://127.0.0.1:8765")`."""

    def __init__(
        self,
        url: str,
        *,
        auth: httpx.Auth | tuple[str, str] | None = None,
        transport: httpx.BaseTransport | None = None,
        timeout: float = 60.0,
    ) -> None:
        self.url = url.rstrip("/")
        self.http = httpx.Client(base_url=self.url, auth=auth, transport=transport, timeout=timeout)

    def datasets(self, q: str = "") -> list[dict[str, Any]]:
        """Every dataset of the catalog (all pages), optionally filtered by text."""
        found: list[dict[str, Any]] = []
        while True:
            page = self._get_json("/api/datasets", {"q": q, "limit": 1000, "offset": len(found)})
            found.extend(page["datasets"])
            if len(found) >= page["total"] or not page["datasets"]:
                return found

    def info(self, ds_id: str) -> dict[str, Any]:
        info: dict[str, Any] = self._get_json(f"/api/datasets/{ds_id}")
        return info

    def open_dataset(self, ds_id: str, **kwargs: Any) -> xr.Dataset:
        return open_dataset(f"{self.url}/zarr/{ds_id}", **kwargs)

    def _get_json(self, path: str, params: dict[str, Any] | None = None) -> Any:
        response = self.http.get(path, params=params)
        raise_for_problem(response)
        return response.json()

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def raise_for_problem(response: httpx.Response) -> None:
    """Raise the matching OutcropError for an error response, with the server's message."""
    if response.status_code < 400:
        return
    try:
        detail = response.json().get("detail", response.text)
        parameter = response.json().get("parameter")
    except ValueError:
        detail, parameter = response.text, None
    if response.status_code == 404:
        raise DatasetNotFound(detail)
    if response.status_code == 400:
        raise BadQuery(detail, parameter=parameter)
    if response.status_code == 413:
        body = response.json()
        raise TooLarge(detail, size=body.get("size", 0), limit=body.get("limit", 0))
    raise OutcropError(f"{response.status_code}: {detail}")
