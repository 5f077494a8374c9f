"""Behind a real nginx under a path prefix: Zarr reads, JSON links and HTML pages all point
through the proxy. The nginx configuration is the one docs/deploy-proxy.md shows."""

from __future__ import annotations

import html
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
import xarray as xr

import outcrop
from outcrop.api.middleware import TrustedProxies, forwarded
from tests.conftest import Server, free_port, start_server

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
PREFIX = "/outcrop"

# The `location` block of docs/deploy-proxy.md; TLS_PROTO stands in for a TLS listener.
LOCATION = """
    location /outcrop/ {
        proxy_pass http://127.0.0.1:UPSTREAM/;
        proxy_http_version 1.1;
        proxy_set_header Host $http_host;
        proxy_set_header X-Forwarded-Host $http_host;
        proxy_set_header X-Forwarded-Proto PROTO;
        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        proxy_set_header X-Request-ID $request_id;
        proxy_buffering off;
    }
"""


def nginx_conf(tmp: Path, plain: int, tls: int, upstream: int) -> str:
    user = "user root;\n" if os.geteuid() == 0 else ""
    location = LOCATION.replace("UPSTREAM", str(upstream))
    return f"""{user}daemon off;
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    server {{
        listen 127.0.0.1:{plain};
        {location.replace("PROTO", "$scheme")}
    }}
    server {{
        listen 127.0.0.1:{tls};
        {location.replace("PROTO", "https")}
    }}
}}
"""


@dataclass
class Proxy:
    url: str  # http://127.0.0.1:PORT/outcrop
    tls_url: str  # as seen by a client of a TLS-terminating proxy (X-Forwarded-Proto https)
    upstream: Server


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


@pytest.fixture(scope="module")
def proxy(archive: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    if not Path(NGINX).exists():
        if os.environ.get("CI"):
            pytest.fail("nginx is required in CI (.ci/run installs nginx-light)")
        pytest.skip("nginx is not installed: apt-get install nginx-light")
    tmp = tmp_path_factory.mktemp("nginx")
    upstream = start_server([str(archive), "--root-path", PREFIX], tmp / "state")
    plain, tls = free_port(), free_port()
    upstream_port = int(upstream.url.rsplit(":", 1)[1])
    conf = tmp / "nginx.conf"
    conf.write_text(nginx_conf(tmp, plain, tls, upstream_port))
    errors = tmp / "error.log"
    process = subprocess.Popen(
        [NGINX, "-p", str(tmp), "-c", str(conf), "-e", str(errors)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_for_port(plain, process, errors)
        wait_for_port(tls, process, errors)
        yield Proxy(
            f"http://127.0.0.1:{plain}{PREFIX}", f"https://127.0.0.1:{tls}{PREFIX}", upstream
        )
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(15)
        upstream.stop()


def test_zarr_read_through_nginx_equals_the_local_file(proxy: Proxy, archive: Path) -> None:
    for zarr_format in (2, 3):
        url = f"{proxy.url}/zarr/cmip6/ta_Amon_1950"
        remote = xr.open_zarr(url, zarr_format=zarr_format)
        with xr.open_dataset(archive / "cmip6" / "ta_Amon_1950.nc") as local:
            xr.testing.assert_identical(remote.load(), local.load())


def test_outcrop_client_through_nginx(proxy: Proxy, archive: Path) -> None:
    with outcrop.Client(proxy.url) as client:
        ids = [row["id"] for row in client.datasets()]
        assert "real/grids/ostia_monthly" in ids
        remote = client.open_dataset("real/grids/ostia_monthly")
    with xr.open_dataset(archive / "real" / "grids" / "ostia_monthly.nc") as local:
        for name in local.data_vars:
            np.testing.assert_array_equal(remote[name].values, local[name].values)


def test_json_links_point_through_the_proxy(proxy: Proxy) -> None:
    page = httpx.get(f"{proxy.url}/api/datasets", params={"q": "ta_Amon_1950"}).json()
    assert [row["url"] for row in page["datasets"]] == [
        f"{proxy.url}/api/datasets/cmip6/ta_Amon_1950"
    ]
    links = httpx.get(f"{proxy.url}/api/datasets/cmip6/ta_Amon_1950").json()["links"]
    assert links["zarr"] == f"{proxy.url}/zarr/cmip6/ta_Amon_1950"
    assert links["html"] == f"{proxy.url}/datasets/cmip6/ta_Amon_1950"
    for url in (links["self"], links["html"], links["zarr"] + "/.zmetadata"):
        assert httpx.get(url).status_code == 200, url


def test_forwarded_proto_from_a_tls_proxy_makes_https_links(proxy: Proxy) -> None:
    plain_url = proxy.tls_url.replace("https://", "http://")
    links = httpx.get(f"{plain_url}/api/datasets/cmip6/ta_Amon_1950").json()["links"]
    assert links["zarr"] == f"{proxy.tls_url}/zarr/cmip6/ta_Amon_1950"


def test_html_pages_link_through_the_proxy(proxy: Proxy) -> None:
    landing = httpx.get(f"{proxy.url}/")
    assert landing.status_code == 200
    assert f'href="{PREFIX}/datasets/cmip6/ta_Amon_1950"' in landing.text
    assert f'href="{PREFIX}/static/style.css"' in landing.text
    page = html.unescape(httpx.get(f"{proxy.url}/datasets/cmip6/ta_Amon_1950").text)
    assert f'outcrop.open_dataset("{proxy.url}/zarr/cmip6/ta_Amon_1950")' in page
    assert httpx.get(f"{proxy.url}/static/style.css").status_code == 200


def test_openapi_ui_works_through_the_proxy(proxy: Proxy) -> None:
    docs = httpx.get(f"{proxy.url}/docs").text
    assert f"'{PREFIX}/openapi.json'" in docs
    assert httpx.get(f"{proxy.url}/openapi.json").json()["info"]["title"] == "Outcrop"


def test_the_proxy_request_id_reaches_the_response(proxy: Proxy) -> None:
    response = httpx.get(f"{proxy.url}/healthz")
    assert len(response.headers["x-request-id"]) == 32  # nginx's $request_id


def scope(client: str, headers: dict[str, str]) -> dict[str, object]:
    raw = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    return {"client": (client, 1234), "scheme": "http", "headers": [(b"host", b"app"), *raw]}


FORWARDED = {
    "X-Forwarded-Proto": "https",
    "X-Forwarded-Host": "data.example.org",
    "X-Forwarded-For": "203.0.113.9, 127.0.0.1",
}


def test_forwarded_headers_from_a_trusted_proxy_are_applied() -> None:
    seen = forwarded(scope("127.0.0.1", FORWARDED), TrustedProxies("127.0.0.1"))
    assert seen["scheme"] == "https"
    assert (b"host", b"data.example.org") in seen["headers"]  # type: ignore[operator]
    assert seen["client"] == ("203.0.113.9", 0)


def test_forwarded_headers_from_anyone_else_are_ignored() -> None:
    original = scope("198.51.100.7", FORWARDED)
    seen = forwarded(original, TrustedProxies("127.0.0.1, 10.0.0.0/8"))
    assert seen is original
    assert forwarded(scope("10.1.2.3", FORWARDED), TrustedProxies("10.0.0.0/8"))["scheme"] == (
        "https"
    )
