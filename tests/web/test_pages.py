"""The HTML pages in a real browser (Debian's chromium driven by playwright)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import xarray as xr
from playwright.sync_api import Page

from tests.conftest import Server, start_server

NASTY = '<script>window.pwned = 1</script><b id="injected">bold</b>'


def file_ids(archive: Path) -> set[str]:
    found = set(archive.rglob("*.nc")) | set(archive.rglob("*.zarr"))
    return {p.relative_to(archive).with_suffix("").as_posix() for p in found} - {"groups"}


def listed_ids(page: Page) -> list[str]:
    return page.locator("#datasets tbody tr td:first-child").all_inner_texts()


def test_landing_page_lists_the_datasets(page: Page, server: Server, archive: Path) -> None:
    requested: list[str] = []
    page.on("request", lambda r: requested.append(r.url))
    page.goto(f"{server.url}/")
    ids = listed_ids(page)
    assert file_ids(archive) <= set(ids)
    assert ids == sorted(ids)
    assert all(url.startswith(server.url) for url in requested), requested  # no CDN


def test_clicking_a_dataset_shows_its_variables(page: Page, server: Server, archive: Path) -> None:
    page.goto(f"{server.url}/")
    page.get_by_role("link", name="cmip6/ta_Amon_1950", exact=True).click()
    page.wait_for_url(f"{server.url}/datasets/cmip6/ta_Amon_1950")
    variables = page.locator("#variables tbody tr")
    with xr.open_dataset(archive / "cmip6" / "ta_Amon_1950.nc") as local:
        assert variables.locator("td:first-child").all_inner_texts() == list(local.data_vars)
        row = variables.first.locator("td").all_inner_texts()
        assert row[1] == "time, lat, lon"
        assert row[2] == " \N{MULTIPLICATION SIGN} ".join(str(n) for n in local["ta"].shape)
        assert row[3] == str(local["ta"].dtype)
        dims = page.locator("#dims tbody tr").all_inner_texts()
        assert [d.split("\t") for d in dims] == [[k, str(v)] for k, v in local.sizes.items()]
        lat = page.locator("#coords tbody tr", has_text="degrees_north")
        cells = lat.locator("td").all_inner_texts()
        assert float(cells[4]) == float(local["lat"][0])
        assert float(cells[5]) == float(local["lat"][-1])
        title = page.locator("#attrs dt", has_text="title")
        assert title.count() == 1
        assert local.attrs["title"] in page.locator("#attrs").inner_text()


def test_the_python_snippet_on_the_page_opens_the_dataset(
    page: Page, server: Server, archive: Path
) -> None:
    page.goto(f"{server.url}/datasets/cmip6/ta_Amon_noleap")
    snippet = page.locator("#python").inner_text()
    assert f'outcrop.open_dataset("{server.url}/zarr/cmip6/ta_Amon_noleap")' in snippet
    namespace: dict[str, object] = {}
    exec(snippet, namespace)
    remote = namespace["ds"]
    assert isinstance(remote, xr.Dataset)
    with xr.open_dataset(archive / "cmip6" / "ta_Amon_noleap.nc") as local:
        np.testing.assert_array_equal(remote["ta"].values, local["ta"].values)


def test_search_box_filters_through_the_api(page: Page, server: Server) -> None:
    page.goto(f"{server.url}/")
    with page.expect_response(lambda r: "/api/datasets?q=noleap" in r.url):
        page.fill("#q", "noleap")
    page.wait_for_function("document.querySelectorAll('#datasets tbody tr').length === 1")
    assert listed_ids(page) == ["cmip6/ta_Amon_noleap"]
    assert page.locator("#count").inner_text().startswith("1 dataset")


def test_search_without_javascript_uses_the_query_string(server: Server) -> None:
    text = httpx.get(f"{server.url}/", params={"q": "ostia"}).text
    assert "real/grids/ostia_monthly" in text
    assert "cmip6/ta_Amon_1950" not in text


def test_unknown_dataset_gets_an_html_404(page: Page, server: Server) -> None:
    response = page.goto(f"{server.url}/datasets/no/such/dataset")
    assert response.status == 404
    assert response.headers["content-type"].startswith("text/html")
    assert page.locator("h1").inner_text() == "Not found"
    assert "no/such/dataset" in page.locator("#message").inner_text()


def test_openapi_ui_loads_without_a_cdn(page: Page, server: Server) -> None:
    requested: list[str] = []
    page.on("request", lambda r: requested.append(r.url))
    page.goto(f"{server.url}/docs")
    page.locator(".opblock-summary-path", has_text="/api/datasets").first.wait_for()
    assert all(url.startswith(server.url) for url in requested), requested


@pytest.fixture(scope="module")
def nasty_server(archive: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A dataset whose title, attributes and variable name try to inject markup."""
    folder = tmp_path_factory.mktemp("nasty")
    served = folder / "served"
    served.mkdir()
    ds = xr.Dataset(
        {"t": ("x", np.arange(3.0), {"long_name": NASTY, "units": "<i>K</i>"})},
        coords={"x": ("x", np.arange(3), {"units": NASTY})},
        attrs={"title": NASTY, "comment": "a & b < c"},
    )
    ds.to_netcdf(served / "nasty.nc")
    server = start_server([str(served)], folder / "state")
    yield server
    server.stop()


def test_everything_is_html_escaped(page: Page, nasty_server: Server) -> None:
    for path in ("/", "/datasets/nasty"):
        page.goto(f"{nasty_server.url}{path}")
        assert page.evaluate("window.pwned") is None
        assert page.locator("#injected").count() == 0
        assert NASTY in page.locator("main").inner_text()
    assert "a & b < c" in page.locator("#attrs").inner_text()


def test_live_search_results_are_escaped_too(page: Page, nasty_server: Server) -> None:
    page.goto(f"{nasty_server.url}/")
    with page.expect_response(lambda r: "/api/datasets?q=nasty" in r.url):
        page.fill("#q", "nasty")
    page.wait_for_function("document.querySelector('#count').textContent.includes('nasty')")
    assert page.evaluate("window.pwned") is None
    assert page.locator("#injected").count() == 0
    assert NASTY in page.locator("#datasets").inner_text()
