"""Behind a real nginx, two instances serving different folders under `/a/` and `/b/`:
Zarr (xarray), DAP2 (netCDF4-python), JSON links and every link of the HTML pages go
through the proxy. The nginx configuration is read from docs/deploy-proxy.md."""

from __future__ import annotations

import html
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import httpx
import netCDF4
import numpy as np
import pytest
import xarray as xr

import outcrop
from outcrop.api.middleware import TrustedProxies, forwarded
from tests.conftest import Server, free_port, start_server

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
DOCS = Path(__file__).resolve().parents[2] / "docs"
# The instances' ports in docs/deploy-proxy.md, replaced by the test servers' ports.
DOC_PORTS = {"a": 8701, "b": 8702}


def doc_nginx_block(page: str, marker: str) -> str:
    """The ```nginx block of `docs/<page>` that contains `marker`."""
    text = (DOCS / page).read_text()
    blocks = re.findall(r"^```nginx\n(.*?)^```", text, re.MULTILINE | re.DOTALL)
    matching = [b for b in blocks if marker in b]
    assert len(matching) == 1, f"docs/{page} must show one nginx block with {marker!r}"
    return str(matching[0])


def replace_once(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, f"expected {old!r} once in:\n{text}"
    return text.replace(old, new)


def require_nginx() -> None:
    if not Path(NGINX).exists():
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("nginx is required under CI=true (.ci/run installs nginx-light)")
        pytest.skip("nginx is not installed (apt-get install nginx-light); CI=true makes this fail")


def wait_for_port(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"nginx exited with {process.returncode}: {log.read_text()}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nginx did not listen within 30 s: {log.read_text()}")


@contextmanager
def running_nginx(tmp: Path, http_block: str, ports: list[int]) -> Iterator[None]:
    """nginx in the foreground with `http_block` (upstreams and servers) inside `http {}`,
    until it listens on every one of `ports`; stopped afterwards."""
    require_nginx()
    user = "user root;\n" if os.geteuid() == 0 else ""
    conf = tmp / "nginx.conf"
    conf.write_text(
        f"""{user}daemon off;
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
{http_block}
}}
"""
    )
    errors = tmp / "error.log"
    process = subprocess.Popen(
        [NGINX, "-p", str(tmp), "-c", str(conf), "-e", str(errors)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        for port in ports:
            wait_for_port(port, process, errors)
        yield
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(15)


def proxy_servers(plain: int, tls: int, upstreams: dict[str, int]) -> str:
    """The doc's `server` block listening on `plain`, and a copy on `tls` standing for a
    TLS listener (`X-Forwarded-Proto https`), both in front of `upstreams`."""
    server = doc_nginx_block("deploy-proxy.md", "location /a/")
    for name, port in upstreams.items():
        server = replace_once(server, f"127.0.0.1:{DOC_PORTS[name]}/", f"127.0.0.1:{port}/")
    tls_server = replace_once(server, "X-Forwarded-Proto $scheme;", "X-Forwarded-Proto https;")
    return "\n".join(
        [
            replace_once(server, "listen 80;", f"listen 127.0.0.1:{plain};"),
            replace_once(tls_server, "listen 80;", f"listen 127.0.0.1:{tls};"),
        ]
    )


@dataclass
class Proxy:
    origin: str  # http://127.0.0.1:PORT
    tls_origin: str  # as seen by a client of a TLS-terminating proxy
    a: Server
    b: Server

    def url(self, prefix: str) -> str:
        return f"{self.origin}{prefix}"


def port_of(server: Server) -> int:
    return int(server.url.rsplit(":", 1)[1])


@pytest.fixture(scope="module")
def ocean(archive: Path) -> Path:
    """What instance B serves: another folder (the real files only, under other ids)."""
    return archive / "real"


@pytest.fixture(scope="module")
def proxy(archive: Path, ocean: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    require_nginx()
    tmp = tmp_path_factory.mktemp("nginx")
    a = start_server([str(archive), "--root-path", "/a"], tmp / "state-a")
    try:
        b = start_server([str(ocean), "--root-path", "/b"], tmp / "state-b")
    except RuntimeError:
        a.stop()
        raise
    plain, tls = free_port(), free_port()
    block = proxy_servers(plain, tls, {"a": port_of(a), "b": port_of(b)})
    try:
        with running_nginx(tmp, block, [plain, tls]):
            yield Proxy(f"http://127.0.0.1:{plain}", f"https://127.0.0.1:{tls}", a, b)
    finally:
        a.stop()
        b.stop()


def test_each_prefix_reaches_its_own_instance(proxy: Proxy) -> None:
    def ids(prefix: str) -> set[str]:
        page = httpx.get(f"{proxy.url(prefix)}/api/datasets", params={"limit": 1000})
        return {row["id"] for row in page.raise_for_status().json()["datasets"]}

    a, b = ids("/a"), ids("/b")
    assert {"cmip6/ta_Amon_1950", "real/grids/ostia_monthly"} <= a
    assert "grids/ostia_monthly" in b
    assert "cmip6/ta_Amon_1950" not in b and "grids/ostia_monthly" not in a


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # xarray: "consolidated=False is slower"
@pytest.mark.parametrize("consolidated", [None, False])  # False: the group's listing
@pytest.mark.parametrize("zarr_format", [2, 3])
def test_zarr_read_through_nginx_equals_the_local_file(
    proxy: Proxy, archive: Path, ocean: Path, zarr_format: int, consolidated: bool | None
) -> None:
    for url, path in [
        (f"{proxy.url('/a')}/zarr/cmip6/ta_Amon_1950", archive / "cmip6" / "ta_Amon_1950.nc"),
        (f"{proxy.url('/b')}/zarr/grids/ostia_monthly", ocean / "grids" / "ostia_monthly.nc"),
    ]:
        remote = xr.open_zarr(url, zarr_format=zarr_format, consolidated=consolidated)
        with xr.open_dataset(path) as local:
            xr.testing.assert_identical(remote.load(), local.load())


def test_netcdf4_reads_dap2_through_nginx_like_the_local_file(
    proxy: Proxy, archive: Path, ocean: Path
) -> None:
    for url, path in [
        (f"{proxy.url('/a')}/opendap/cmip6/ta_Amon_1950", archive / "cmip6" / "ta_Amon_1950.nc"),
        (f"{proxy.url('/b')}/opendap/grids/ostia_monthly", ocean / "grids" / "ostia_monthly.nc"),
    ]:
        with netCDF4.Dataset(url) as remote, netCDF4.Dataset(path) as local:
            assert set(remote.variables) == set(local.variables)
            for name, var in local.variables.items():
                np.testing.assert_array_equal(remote[name][...], var[...], err_msg=name)


def test_outcrop_client_through_nginx(proxy: Proxy, ocean: Path) -> None:
    with outcrop.Client(proxy.url("/b")) as client:
        assert "grids/ostia_monthly" in [row["id"] for row in client.datasets()]
        remote = client.open_dataset("grids/ostia_monthly")
    with xr.open_dataset(ocean / "grids" / "ostia_monthly.nc") as local:
        for name in local.data_vars:
            np.testing.assert_array_equal(remote[name].values, local[name].values)


@pytest.mark.parametrize(
    ("prefix", "ds_id"), [("/a", "cmip6/ta_Amon_1950"), ("/b", "grids/A1B_north_america")]
)
def test_json_links_point_through_the_proxy(proxy: Proxy, prefix: str, ds_id: str) -> None:
    base = proxy.url(prefix)
    page = httpx.get(f"{base}/api/datasets", params={"limit": 1000}).json()
    assert page["datasets"] and all(
        row["url"].startswith(f"{base}/api/") for row in page["datasets"]
    )
    row = next((r for r in page["datasets"] if r["id"].startswith(ds_id)), None)
    assert row is not None, [r["id"] for r in page["datasets"]]
    links = httpx.get(row["url"]).raise_for_status().json()["links"]
    assert links["zarr"] == f"{base}/zarr/{row['id']}"
    assert links["html"] == f"{base}/datasets/{row['id']}"
    for url in (links["self"], links["html"], links["zarr"] + "/.zmetadata"):
        assert httpx.get(url).status_code == 200, url


def test_forwarded_proto_from_a_tls_proxy_makes_https_links(proxy: Proxy) -> None:
    plain_url = proxy.tls_origin.replace("https://", "http://")
    links = httpx.get(f"{plain_url}/a/api/datasets/cmip6/ta_Amon_1950").json()["links"]
    assert links["zarr"] == f"{proxy.tls_origin}/a/zarr/cmip6/ta_Amon_1950"


class Links(HTMLParser):
    """Every `href` and `src` of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.found.extend(v for k, v in attrs if k in ("href", "src") and v is not None)


def page_links(url: str) -> list[str]:
    response = httpx.get(url)
    assert response.status_code == 200, url
    parser = Links()
    parser.feed(response.text)
    return parser.found


@pytest.mark.parametrize(
    ("prefix", "pages"),
    [
        ("/a", ["/", "/datasets/cmip6/ta_Amon_1950", "/opendap/cmip6/ta_Amon_1950.html"]),
        ("/b", ["/", "/datasets/grids/ostia_monthly"]),
    ],
)
def test_every_link_of_the_html_pages_goes_through_the_proxy(
    proxy: Proxy, prefix: str, pages: list[str]
) -> None:
    checked: set[str] = set()
    for page in pages:
        url = f"{proxy.url(prefix)}{page}"
        links = page_links(url)
        assert links, url
        for link in links:
            if not link.startswith("?"):  # `?offset=…`: paging the page itself
                path = link.removeprefix(proxy.origin)  # absolute links name the proxy too
                assert path.startswith(f"{prefix}/"), (url, link)
            target = urljoin(url, link)
            assert urlsplit(target).netloc == urlsplit(proxy.origin).netloc, (url, link)
            checked.add(target)
    for target in sorted(checked):
        assert httpx.get(target).status_code == 200, target


def test_dataset_page_shows_urls_through_the_proxy(proxy: Proxy) -> None:
    page = html.unescape(httpx.get(f"{proxy.url('/a')}/datasets/cmip6/ta_Amon_1950").text)
    assert f'outcrop.open_dataset("{proxy.url("/a")}/zarr/cmip6/ta_Amon_1950")' in page
    assert f"{proxy.url('/a')}/opendap/cmip6/ta_Amon_1950" in page


def test_openapi_ui_works_through_the_proxy(proxy: Proxy) -> None:
    docs = httpx.get(f"{proxy.url('/b')}/docs").text
    assert "'/b/openapi.json'" in docs
    assert httpx.get(f"{proxy.url('/b')}/openapi.json").json()["info"]["title"] == "Outcrop"


def test_the_proxy_request_id_reaches_the_response(proxy: Proxy) -> None:
    response = httpx.get(f"{proxy.url('/a')}/healthz")
    assert len(response.headers["x-request-id"]) == 32  # nginx's $request_id


FORWARDED = {
    "X-Forwarded-Proto": "https",
    "X-Forwarded-Host": "evil.example.org",
    "X-Forwarded-For": "203.0.113.9, 127.0.0.1",
}


def test_forwarded_headers_from_an_untrusted_peer_are_ignored_on_a_real_socket(
    ocean: Path, tmp_path: Path
) -> None:
    # The proxy is elsewhere: this client (127.0.0.1) is not it.
    env = {"OUTCROP_FORWARDED_ALLOW_IPS": "192.0.2.10"}
    server = start_server([str(ocean)], tmp_path / "state", env)
    try:
        url = f"{server.url}/api/datasets/grids/ostia_monthly"
        links = httpx.get(url, headers=FORWARDED).raise_for_status().json()["links"]
        landing = httpx.get(f"{server.url}/", headers=FORWARDED).text
    finally:
        server.stop()
    assert links["zarr"] == f"{server.url}/zarr/grids/ostia_monthly"
    assert "evil.example.org" not in landing and "https:" not in landing


def scope(client: str, headers: dict[str, str]) -> dict[str, object]:
    raw = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    return {"client": (client, 1234), "scheme": "http", "headers": [(b"host", b"app"), *raw]}


def test_forwarded_headers_from_a_trusted_proxy_are_applied() -> None:
    seen = forwarded(scope("127.0.0.1", FORWARDED), TrustedProxies("127.0.0.1"))
    assert seen["scheme"] == "https"
    assert (b"host", b"evil.example.org") in seen["headers"]  # type: ignore[operator]
    assert seen["client"] == ("203.0.113.9", 0)


def test_forwarded_headers_from_anyone_else_are_ignored() -> None:
    original = scope("198.51.100.7", FORWARDED)
    seen = forwarded(original, TrustedProxies("127.0.0.1, 10.0.0.0/8"))
    assert seen is original
    assert forwarded(scope("10.1.2.3", FORWARDED), TrustedProxies("10.0.0.0/8"))["scheme"] == (
        "https"
    )
