"""The image collection page in a real browser (Debian's chromium driven by playwright)."""

from __future__ import annotations

import pytest

pytest.importorskip("astropy")

from playwright.sync_api import Page

from tests.images.conftest import Sky
from tests.web.conftest import browser, page  # noqa: F401  (fixtures)


def test_collections_page_links_each_collection(page: Page, sky: Sky) -> None:  # noqa: F811
    page.goto(f"{sky.server.url}/images")
    page.get_by_role("link", name="demo", exact=True).click()
    page.wait_for_url(f"{sky.server.url}/images/demo")
    assert page.locator("#collection").inner_text() == "demo"


def test_search_by_position_lists_images_and_previews_a_cutout(page: Page, sky: Sky) -> None:  # noqa: F811
    requested: list[str] = []
    page.on("request", lambda r: requested.append(r.url))
    page.goto(f"{sky.server.url}/images/demo")
    page.wait_for_function("document.querySelectorAll('#images tbody tr').length === 5")
    page.fill("#ra", "250.4226")
    page.fill("#dec", "36.4602")
    page.fill("#size", "1arcmin")
    with page.expect_response(lambda r: "format=png" in r.url) as cutout:
        page.click("#image-search button[type=submit]")
    assert cutout.value.status == 200
    page.wait_for_function("document.querySelectorAll('#images tbody tr').length === 2")
    ids = page.locator("#images tbody tr td:first-child").all_inner_texts()
    assert sorted(ids) == ["demo:real/m13.fits", "demo:real/m13_rice.fits"]
    assert page.locator("#count").inner_text().startswith("1\N{EN DASH}2 of 2 images")
    page.wait_for_function("document.getElementById('cutout').naturalWidth === 60")
    assert page.locator("#cutout").get_attribute("data-image") == ids[0]
    assert all(url.startswith(sky.server.url) or url.startswith("blob:") for url in requested)


def test_a_position_outside_the_previewed_image_says_why(page: Page, sky: Sky) -> None:  # noqa: F811
    page.goto(f"{sky.server.url}/images/demo?ra=0.3&dec=-5&radius=30arcmin&size=1arcmin")
    page.wait_for_function("document.getElementById('message').textContent !== ''")
    assert "demo:made/zero.fits" in page.locator("#message").inner_text()


def test_filter_menu_narrows_the_list(page: Page, sky: Sky) -> None:  # noqa: F811
    page.goto(f"{sky.server.url}/images/demo")
    page.wait_for_function("document.querySelectorAll('#images tbody tr').length === 5")
    page.select_option("#filter", "g")
    page.click("#image-search button[type=submit]")
    page.wait_for_function("document.querySelectorAll('#images tbody tr').length === 1")
    assert page.locator("#images tbody tr td:first-child").inner_text() == "demo:made/pole.fits"


def test_unknown_collection_is_a_404_page(page: Page, sky: Sky) -> None:  # noqa: F811
    response = page.goto(f"{sky.server.url}/images/nothing-here")
    assert response is not None and response.status == 404
    assert "nothing-here" in page.locator("#message").inner_text()
