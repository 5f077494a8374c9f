"""The OPeNDAP request form (`/opendap/{id}.html`): in Debian's chromium, a person picks a
variable and index ranges and gets the URLs; the values behind them equal the local file's."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote
from xml.etree import ElementTree

import httpx
import numpy as np
import pytest
import xarray as xr
from playwright.sync_api import Locator, Page

from tests.conftest import Server, start_server

DATASET = "cmip6/ta_Amon_1950"
FORM = f"/opendap/{DATASET}.html"
CE = "ta[0:1:2][5:5:10][0:1:3]"
DATA_LINKS = ("#get-ascii", "#get-dods", "#get-dap", "#get-dds", "#get-dmr")
NUMBER = re.compile(r"(?<![\w.])[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?(?![\w.])")
NASTY_NAME = 'a b<i>&c"'
ODD_NAME = "air temp.2m"
NASTY_TEXT = '<script>window.pwned = 1</script><b id="injected">bold</b>'


def stored(archive: Path) -> xr.Dataset:
    """The local file as DAP serves it: undecoded (packed int16, time as numbers)."""
    return xr.open_dataset(archive / "cmip6" / "ta_Amon_1950.nc", decode_cf=False)


def variable_row(page: Page, name: str) -> Locator:
    return page.locator("tr.variable").filter(
        has=page.locator("label.name", has_text=re.compile(f"^{re.escape(name)}$"))
    )


def set_range(row: Locator, dim: str, start: int, stride: int, stop: int | str) -> None:
    box = row.locator(f'.dim[data-dim="{dim}"]')
    box.locator("input.start").fill(str(start))
    box.locator("input.stride").fill(str(stride))
    box.locator("input.stop").fill(str(stop))


def ask_for_ta(page: Page) -> None:
    """What the person does: tick `ta`, then time 0..2, lat 5..10 every 5th, lon 0..3."""
    row = variable_row(page, "ta")
    row.locator("input.pick").check()
    set_range(row, "time", 0, 1, 2)
    set_range(row, "lat", 5, 5, 10)
    set_range(row, "lon", 0, 1, 3)


def test_form_lists_every_variable_coordinates_first(
    page: Page, server: Server, archive: Path
) -> None:
    requested: list[str] = []
    page.on("request", lambda r: requested.append(r.url))
    page.goto(server.url + FORM)
    names = page.locator("#variables tr.variable label.name").all_inner_texts()
    with stored(archive) as local:
        assert names == [*local.coords, *local.data_vars]
        for name in names:
            var = local.variables[name]
            row = variable_row(page, name)
            assert row.locator(".type").inner_text() == str(var.dtype)
            dims = row.locator(".dim")
            assert dims.locator(".dim-name").all_inner_texts() == list(var.dims)
            assert dims.locator(".size").all_inner_texts() == [f"({n})" for n in var.shape]
            assert (
                dims.locator("input.start").evaluate_all("a => a.map(i => i.value)")
                == ["0"] * var.ndim
            )
            assert dims.locator("input.stop").evaluate_all("a => a.map(i => i.value)") == [
                str(n - 1) for n in var.shape
            ]
            assert row.locator("summary").inner_text().startswith(f"{len(var.attrs)} attribute")
            assert not row.locator("details").get_attribute("open")
        assert page.locator("#data-url").input_value() == f"{server.url}/opendap/{DATASET}"
        summary = page.locator("#global-attrs summary").inner_text()
        assert summary == f"Global attributes ({len(local.attrs)})"
        assert page.locator("#global-attrs").get_attribute("open") is None
        page.locator("#global-attrs summary").click()
        assert local.attrs["title"] in page.locator("#global-attrs dl").inner_text()
    assert "ncdump -h" in page.locator("#shell").inner_text()
    assert all(url.startswith(server.url) for url in requested), requested  # no CDN


def test_ticking_ta_and_giving_ranges_builds_the_urls(page: Page, server: Server) -> None:
    page.goto(server.url + FORM)
    ask_for_ta(page)
    data_url = f"{server.url}/opendap/{DATASET}"
    assert page.locator("#dap2-ce").inner_text() == CE
    assert page.locator("#ascii-url").inner_text() == f"{data_url}.ascii?{CE}"
    assert page.locator("#dods-url").inner_text() == f"{data_url}.dods?{CE}"
    assert page.locator("#get-ascii").get_attribute("href") == f"/opendap/{DATASET}.ascii?{CE}"
    dap4 = quote("/" + CE, safe="")
    assert page.locator("#dap-url").inner_text() == f"{data_url}.dap?dap4.ce={dap4}"
    assert page.locator("#dmr-url").inner_text() == f"{data_url}.dmr?dap4.ce={dap4}"
    assert page.locator("#das-url").inner_text() == f"{data_url}.das"

    set_range(variable_row(page, "time"), "time", 3, 2, 9)  # ticks `time` too
    assert page.locator("#dap2-ce").inner_text() == f"time[3:2:9],{CE}"
    assert page.locator("#dap4-ce").inner_text() == f"/time[3:2:9];/{CE}"


def test_a_range_beyond_the_dimension_gets_a_message_and_no_links(
    page: Page, server: Server
) -> None:
    page.goto(server.url + FORM)
    ask_for_ta(page)
    row = variable_row(page, "ta")
    set_range(row, "lat", 5, 5, 72)
    problem = row.locator(".problem")
    assert problem.is_visible()
    assert "lat: stop must be a whole number from 5 to 71" in problem.inner_text()
    assert row.locator('.dim[data-dim="lat"] input.stop').get_attribute("aria-invalid") == "true"
    for link in DATA_LINKS:
        assert page.locator(link).get_attribute("href") is None, link
        assert page.locator(link).get_attribute("aria-disabled") == "true", link
    assert "Fix the ranges of ta" in page.locator("#status").inner_text()

    set_range(row, "lat", 5, 0, 10)
    assert "lat: stride must be a whole number of at least 1" in problem.inner_text()
    set_range(row, "lat", 5, 5, 10)
    assert problem.is_hidden()
    assert page.locator("#get-ascii").get_attribute("href") == f"/opendap/{DATASET}.ascii?{CE}"


def numbers(text: str) -> list[float]:
    """Every number of a DAP2 ASCII response outside `[…]` (indices) and names."""
    body = text.split("\n---", 1)[-1]  # the DDS some servers put first ends at a dashed line
    return [float(n) for n in NUMBER.findall(re.sub(r"\[[^\]]*\]", " ", body))]


def contains_run(found: list[float], expected: np.ndarray) -> bool:
    """Whether `expected` (flattened, in C order) appears in `found` as one contiguous run."""
    want = expected.ravel().astype(float).tolist()
    return any(found[i : i + len(want)] == want for i in range(len(found) - len(want) + 1))


def test_get_ascii_returns_the_stored_values(page: Page, server: Server, archive: Path) -> None:
    page.goto(server.url + FORM)
    ask_for_ta(page)
    with page.expect_response(lambda r: ".ascii?" in r.url) as answer:
        page.locator("#get-ascii").click()
    response = answer.value
    assert response.status == 200, response.text()
    found = numbers(response.text())
    with stored(archive) as local:
        ta = local["ta"].values[0:3, 5:11:5, 0:4]
        assert ta.dtype == np.int16
        assert contains_run(found, ta), found
        for name, index in (("time", slice(0, 3)), ("lat", slice(5, 11, 5)), ("lon", slice(0, 4))):
            assert contains_run(found, local[name].values[index]), name


def test_form_over_plain_http_names_every_variable(server: Server, archive: Path) -> None:
    response = httpx.get(server.url + FORM)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    with stored(archive) as local:
        for name in local.variables:
            assert f'data-name="{name}"' in response.text


def test_unknown_dataset_form_is_an_html_404(server: Server) -> None:
    response = httpx.get(f"{server.url}/opendap/no/such/dataset.html")
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("text/html")
    assert "no/such/dataset" in response.text


@pytest.fixture(scope="module")
def nasty_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A dataset whose names and attributes try to inject markup and break URLs."""
    folder = tmp_path_factory.mktemp("nasty-dap")
    served = folder / "served"
    served.mkdir()
    ds = xr.Dataset(
        {
            NASTY_NAME: ("x", np.arange(3.0), {"long_name": NASTY_TEXT}),
            ODD_NAME: ("x", np.arange(3.0) * 2),
            "label": ("x", np.array([b"ab", b"cd", b"ef"])),
        },
        coords={"x": ("x", np.arange(3), {"units": NASTY_TEXT})},
        attrs={"title": NASTY_TEXT, "comment": "a & b < c"},
    )
    ds["label"].encoding = {"dtype": "S1", "char_dim_name": "nchar"}  # char label(x, nchar)
    ds.to_netcdf(served / "nasty.nc")
    server = start_server([str(served)], folder / "state")
    yield server
    server.stop()


def test_names_and_attributes_are_escaped(page: Page, nasty_server: Server) -> None:
    page.goto(f"{nasty_server.url}/opendap/nasty.html")
    for summary in page.locator("main summary").all():
        summary.click()
    assert page.evaluate("window.pwned") is None
    assert page.locator("#injected").count() == 0
    assert NASTY_TEXT in page.locator("main").inner_text()
    assert "a & b < c" in page.locator("#global-attrs").inner_text()
    assert NASTY_NAME in page.locator("#variables label.name").all_inner_texts()


def dap2_escaped(name: str) -> str:
    """DAP2's escape: every character but letters, digits, `_` and `-` as %XX (UTF-8)."""
    return quote(name, safe="").replace(".", "%2E").replace("~", "%7E")


@pytest.mark.parametrize(
    ("name", "dap4_slabs"),
    [(ODD_NAME, "[0:1:1]"), (NASTY_NAME, "[0:1:1]"), ("label", "[0:1:1][0:1:1]")],
)
def test_the_urls_shown_reach_the_variable(
    page: Page, nasty_server: Server, name: str, dap4_slabs: str
) -> None:
    """Odd names escaped as each protocol wants, and a char array's string length left
    out of DAP2 (where it is a String array), kept in DAP4 (a Char array)."""
    page.goto(f"{nasty_server.url}/opendap/nasty.html")
    set_range(variable_row(page, name), "x", 0, 1, 1)
    assert page.locator("#dap2-ce").inner_text() == dap2_escaped(name) + "[0:1:1]"
    dap4 = "/" + re.sub(r"([^\w-])", r"\\\1", name) + dap4_slabs
    assert page.locator("#dap4-ce").inner_text() == dap4
    dds = httpx.get(page.locator("#dds-url").inner_text())
    assert dds.status_code == 200, dds.text
    assert f"{dap2_escaped(name)}[x = 2]" in dds.text
    dmr = httpx.get(page.locator("#dmr-url").inner_text())
    assert dmr.status_code == 200, dmr.text
    assert name in {e.get("name") for e in ElementTree.fromstring(dmr.content).iter()}
