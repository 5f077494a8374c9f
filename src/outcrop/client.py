"""The Python client: the catalog, metadata, subsets and lazy datasets over HTTP.

Two HTTP stacks are involved: httpx for the JSON API, and fsspec + aiohttp underneath
`xarray.open_zarr`. Credentials given to the client (`auth=`, `headers=`) go to both, so
a protected server works the same through either; so does `User-Agent: Outcrop/<version>`
(unless `headers` names another). Both verify TLS certificates (their default, never
switched off here).
"""

from __future__ import annotations

import base64
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from outcrop.errors import (
    BadQuery,
    DatasetNotFound,
    Forbidden,
    OutcropError,
    TooLarge,
    UpstreamFailed,
)

if TYPE_CHECKING:
    import xarray as xr

Auth = tuple[str, str]
"""HTTP Basic credentials, `(user, password)`."""

ERRORS: dict[int, type[OutcropError]] = {
    400: BadQuery,
    401: Forbidden,
    403: Forbidden,
    404: DatasetNotFound,
    413: TooLarge,
    502: UpstreamFailed,
    503: UpstreamFailed,
    504: UpstreamFailed,
}


def _user_agent() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"Outcrop/{version('outcrop')}"
    except PackageNotFoundError:
        return "Outcrop/0+unknown"


USER_AGENT = _user_agent()


def open_dataset(
    url: str,
    *,
    auth: Auth | None = None,
    headers: Mapping[str, str] | None = None,
    **kwargs: Any,
) -> xr.Dataset:
    """A lazy `xarray.Dataset` from an Outcrop Zarr URL (`http://host/zarr/{id}`).

    Args:
        url: the dataset's Zarr URL, as `/api/datasets/{id}` lists under `links.zarr`.
        auth: `(user, password)` sent as HTTP Basic authentication with every request.
        headers: extra headers sent with every request (e.g. `Authorization`).
        **kwargs: passed to `xarray.open_zarr` (e.g. `zarr_format=3`, `chunks=`); the
            default is Zarr v2 with consolidated metadata.
    """
    import xarray as xr

    url = url.rstrip("/")
    # Both formats are served; v2's one `.zmetadata` document opens without probing.
    kwargs.setdefault("zarr_format", 2)
    kwargs.setdefault("consolidated", True)
    kwargs["storage_options"] = storage_options(auth, headers, kwargs.get("storage_options"))
    try:
        ds: xr.Dataset = xr.open_zarr(url, **kwargs)
    except OutcropError:
        raise
    except Exception as exc:
        _raise_server_error(url, auth, headers, exc)
        raise
    return ds


def storage_options(
    auth: Auth | None,
    headers: Mapping[str, str] | None,
    given: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """fsspec HTTP options carrying the credentials as headers of aiohttp's session
    (`client_kwargs`), merged over what the caller already gave."""
    options = dict(given or {})
    client_kwargs = dict(options.get("client_kwargs") or {})
    sent = {"User-Agent": USER_AGENT, **dict(client_kwargs.get("headers") or {})}
    if auth is not None:
        # aiohttp deprecates its BasicAuth object in favour of the plain header (RFC 7617).
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode("ascii")
        sent["Authorization"] = f"Basic {token}"
    sent.update(headers or {})
    client_kwargs["headers"] = sent
    options["client_kwargs"] = client_kwargs
    return options


def _raise_server_error(
    url: str, auth: Auth | None, headers: Mapping[str, str] | None, cause: Exception
) -> None:
    """After a failed `open_zarr`, ask the server why and raise its error, if it has one."""
    try:
        sent = {"User-Agent": USER_AGENT, **dict(headers or {})}
        response = httpx.get(f"{url}/.zmetadata", auth=auth, headers=sent, timeout=30)
    except httpx.HTTPError as exc:
        raise UpstreamFailed(f"cannot reach {url}: {exc}") from cause
    if response.status_code >= 400:
        try:
            raise_for_problem(response)
        except OutcropError as exc:
            raise exc from cause


class Client:
    """An Outcrop server: `Client("http://127.0.0.1:8765")`.

    Args:
        url: the server's base URL (with its path prefix when behind a proxy).
        auth: `(user, password)` for HTTP Basic authentication, or any `httpx.Auth` for
            the JSON API (only a tuple can be passed on to `open_dataset`).
        headers: headers sent with every request, through httpx and through fsspec.
        transport: an httpx transport; an async one such as
            `httpx.ASGITransport(app=create_app(settings))` talks to an in-process server.
        timeout: seconds to wait for a response of the JSON API.
    """

    def __init__(
        self,
        url: str,
        *,
        auth: httpx.Auth | Auth | None = None,
        headers: Mapping[str, str] | None = None,
        transport: httpx.BaseTransport | httpx.AsyncBaseTransport | None = None,
        timeout: float = 60.0,
    ) -> None:
        if isinstance(transport, httpx.AsyncBaseTransport):
            transport = BlockingTransport(transport)
        self.url = url.rstrip("/")
        self.auth = auth
        self.headers = dict(headers or {})
        self.http = httpx.Client(
            base_url=self.url,
            auth=auth,
            headers={"User-Agent": USER_AGENT, **self.headers},
            transport=transport,
            timeout=timeout,
        )

    def datasets(self, q: str = "") -> list[dict[str, Any]]:
        """Every dataset of the catalog (all pages), optionally filtered by text."""
        found: list[dict[str, Any]] = []
        while True:
            page = self._get_json("/api/datasets", {"q": q, "limit": 1000, "offset": len(found)})
            found.extend(page["datasets"])
            if len(found) >= page["total"] or not page["datasets"]:
                return found

    def info(self, ds_id: str) -> dict[str, Any]:
        """A dataset's dims, coordinate ranges, variables, attributes, version and links."""
        info: dict[str, Any] = self._get_json(f"/api/datasets/{ds_id}")
        return info

    def open_dataset(self, ds_id: str, **kwargs: Any) -> xr.Dataset:
        """The dataset as a lazy `xarray.Dataset`, read over Zarr (`kwargs` go to
        `xarray.open_zarr`)."""
        auth = self.auth if isinstance(self.auth, tuple) else None
        if self.auth is not None and auth is None:
            raise TypeError(
                "open_dataset passes credentials to fsspec/aiohttp, which takes a "
                "(user, password) tuple or headers=, not an httpx.Auth object"
            )
        return open_dataset(
            f"{self.url}/zarr/{ds_id}", auth=auth, headers=self.headers or None, **kwargs
        )

    def subset(
        self,
        ds_id: str,
        variables: str | Sequence[str] | None = None,
        format: str = "nc",
        path: str | os.PathLike[str] | None = None,
        *,
        stride: Mapping[str, int] | None = None,
        **selectors: Any,
    ) -> xr.Dataset | Path:
        """A subset by coordinate values (`GET /api/datasets/{id}/data`).

        Args:
            ds_id: the dataset id.
            variables: data variables to keep (default all); their coordinates come along.
            format: nc, csv, json, arrow or parquet.
            path: where to write the response; without it, format nc is returned as an
                `xarray.Dataset` loaded in memory (other formats need a path).
            stride: every k-th point along dimensions, e.g. `{"lat": 2, "lon": 2}`.
            **selectors: `lat=(-10, 10)` or `lat=slice(-10, 10)` keeps an inclusive range
                (None leaves an end open); `time="2000-06-15"` keeps the nearest point.
                Times may be strings, datetimes, cftime dates or numpy datetime64.
        """
        if path is None and format != "nc":
            raise BadQuery(f"format={format} needs path= to write to", parameter="path")
        params = subset_params(variables, format, stride, selectors)
        target = Path(path) if path is not None else None
        with self.http.stream("GET", f"/api/datasets/{ds_id}/data", params=params) as response:
            if response.status_code >= 400:
                response.read()
                raise_for_problem(response)
            if target is not None:
                _save(response, target)
                return target
            return _read_netcdf(response)

    def _get_json(self, path: str, params: dict[str, Any] | None = None) -> Any:
        try:
            response = self.http.get(path, params=params)
        except httpx.TransportError as exc:
            raise UpstreamFailed(f"cannot reach {self.url}: {exc}") from exc
        raise_for_problem(response)
        return response.json()

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def subset_params(
    variables: str | Sequence[str] | None,
    format: str,
    stride: Mapping[str, int] | None,
    selectors: Mapping[str, Any],
) -> dict[str, str]:
    """The query parameters of a subset request."""
    params = {"format": format}
    if variables:
        params["var"] = variables if isinstance(variables, str) else ",".join(variables)
    if stride:
        params["stride"] = ",".join(f"{dim}:{step}" for dim, step in stride.items())
    for name, value in selectors.items():
        if isinstance(value, slice):
            value = (value.start, value.stop)
        if isinstance(value, tuple | list):
            if len(value) != 2:
                raise BadQuery(f"{name}: give (start, stop) or one value", parameter=name)
            params[name] = "/".join("" if v is None else _text(v) for v in value)
        else:
            params[name] = _text(value)
    return params


def _text(value: Any) -> str:
    """A selector value as the server reads it: ISO 8601 for times (numpy's `str` of a
    datetime64 is ISO already), else `str`."""
    if hasattr(value, "isoformat"):
        return str(value.isoformat())
    return str(value)


def _save(response: httpx.Response, target: Path) -> None:
    """Write a response body to `target`, whole or not at all."""
    partial = target.with_name(target.name + ".part")
    with partial.open("wb") as out:
        for block in response.iter_bytes():
            out.write(block)
    partial.replace(target)


def _read_netcdf(response: httpx.Response) -> xr.Dataset:
    import xarray as xr

    with tempfile.TemporaryDirectory(prefix="outcrop-") as folder:
        path = Path(folder) / "subset.nc"
        _save(response, path)
        with xr.open_dataset(path) as ds:
            return ds.load()


class BlockingTransport(httpx.BaseTransport):
    """An async httpx transport (e.g. `ASGITransport`) driven from the blocking client, on
    an event loop in a helper thread (as Starlette's `TestClient` does)."""

    def __init__(self, transport: httpx.AsyncBaseTransport) -> None:
        from anyio.from_thread import start_blocking_portal

        self.transport = transport
        self._portal_cm = start_blocking_portal()
        self.portal = self._portal_cm.__enter__()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        return self.portal.call(self._send, request)

    async def _send(self, request: httpx.Request) -> httpx.Response:
        response = await self.transport.handle_async_request(request)
        # The raw bytes: httpx decodes Content-Encoding once, in the outer client.
        body = b"".join([chunk async for chunk in response.aiter_raw()])
        await response.aclose()
        return httpx.Response(
            response.status_code,
            headers=response.headers,
            content=body,
            extensions=response.extensions,
        )

    def close(self) -> None:
        self.portal.call(self.transport.aclose)
        self._portal_cm.__exit__(None, None, None)


def raise_for_problem(response: httpx.Response) -> None:
    """Raise the matching OutcropError for an error response, with the server's message
    (the `detail` of an RFC 9457 problem document, else the body's text)."""
    if response.status_code < 400:
        return
    body = _problem_body(response)
    detail = str(body.get("detail") or response.text[:500] or response.reason_phrase)
    parameter = body.get("parameter")
    cls = ERRORS.get(response.status_code, OutcropError)
    if cls is TooLarge:
        raise TooLarge(
            detail,
            size=int(body.get("size", 0)),
            limit=int(body.get("limit", 0)),
            parameter=parameter,
        )
    if cls is OutcropError:
        detail = f"{response.status_code} {response.reason_phrase}: {detail}"
    raise cls(detail, parameter=parameter)


def _problem_body(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}
