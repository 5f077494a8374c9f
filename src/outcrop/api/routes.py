"""Route sets: each protocol's routes, switched on or off by `settings.routes`
(`OUTCROP_ROUTES=rest,zarr`).

Every set, built-in or not, is found through the entry-point group `outcrop.routes`; the
entry point names a `RouteSet`, whose `add(site)` puts its routes on the server. A site
adds a protocol without forking, e.g. in its package's `pyproject.toml`:

    [project.entry-points."outcrop.routes"]
    instaseis = "mysite.instaseis:ROUTES"   # ROUTES = RouteSet("instaseis", "…", add)

Routers are imported inside `add`, so a server with few sets does not import the others
(imports dominate start-up time). `add` runs when the FastAPI application is built, after
the server started listening (`api.app.OutcropApp`); a set's fast-path prefixes, which
answer from the start, are added by its `prefixes` function, which must not need FastAPI.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any

from outcrop.errors import ConfigError

if TYPE_CHECKING:
    from anyio import CapacityLimiter
    from fastapi import APIRouter, FastAPI

    from outcrop.api.middleware import ASGIApp
    from outcrop.jobs import Stoppable
    from outcrop.pipeline import Pipeline
    from outcrop.settings import Settings

GROUP = "outcrop.routes"
ALL = "all"


@dataclass(frozen=True)
class Prefix:
    """A bare ASGI app answering every path under `prefix` ahead of FastAPI (the fast paths).

    `route` names its requests in metrics and logs (one name for the whole prefix, so the
    number of series stays bounded); `level` is the level of their access lines; paths
    ending in one of `except_suffixes` go to FastAPI instead (e.g. the OPeNDAP HTML form).
    """

    prefix: str
    app: ASGIApp
    route: str
    level: int = logging.INFO
    except_suffixes: tuple[str, ...] = ()

    def answers(self, path: str) -> bool:
        return path.startswith(self.prefix) and not path.endswith(self.except_suffixes)


@dataclass
class Site:
    """What a route set adds itself to: FastAPI routers, prefix apps, and services started
    with the server (each a function returning something to `stop()` at shutdown).

    `api` (and `include`) exist in `RouteSet.add`, which runs when the FastAPI application
    is built; `RouteSet.prefixes` runs before, with only the prefixes to add to."""

    settings: Settings
    pipeline: Pipeline
    limiter: CapacityLimiter
    prefixes: list[Prefix] = field(default_factory=list)
    services: list[Callable[[], Stoppable | None]] = field(default_factory=list)
    application: FastAPI | None = None  # set when the FastAPI application is built

    @property
    def api(self) -> FastAPI:
        if self.application is None:
            raise RuntimeError(
                "the FastAPI application is built after start-up: add routes in "
                "RouteSet.add, not in RouteSet.prefixes"
            )
        return self.application

    def include(self, router: APIRouter) -> None:
        self.api.include_router(router)


@dataclass(frozen=True)
class RouteSet:
    """A named group of routes that `add(site)` installs; `prefixes(site)`, if given,
    adds the set's fast-path prefixes at start-up, before the FastAPI application exists
    (a prefix `add` registers answers only once the application is built)."""

    name: str
    description: str
    add: Callable[[Site], None]
    prefixes: Callable[[Site], None] | None = None


def route_sets() -> dict[str, RouteSet]:
    """Every installed route set by name, from the entry points (built-ins included)."""
    found: dict[str, RouteSet] = {}
    for ep in entry_points(group=GROUP):
        found[ep.name] = _checked(ep.name, ep.load())
    for builtin in BUILTIN:  # running from a source tree without installed metadata
        found.setdefault(builtin.name, builtin)
    return found


def _checked(name: str, value: Any) -> RouteSet:
    if not isinstance(value, RouteSet):
        raise ConfigError(
            f"entry point {name!r} of group {GROUP!r} names {value!r}, not an "
            "outcrop.api.routes.RouteSet",
            parameter="routes",
        )
    return value


def selected(names: Iterable[str], known: dict[str, RouteSet]) -> list[RouteSet]:
    """The sets `names` switches on (`all`: every one), in the order they are known."""
    wanted = set(names)
    if ALL in wanted:
        return list(known.values())
    unknown = sorted(wanted - set(known))
    if unknown:
        raise ConfigError(
            f"unknown route set{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} in "
            f"routes (OUTCROP_ROUTES); known sets are {', '.join(sorted(known))}, or {ALL}",
            parameter="routes",
        )
    return [s for name, s in known.items() if name in wanted]


def install_prefixes(site: Site, chosen: Iterable[RouteSet]) -> None:
    """Add the fast-path prefixes of the `chosen` sets to `site` (at start-up)."""
    for route_set in chosen:
        if route_set.prefixes is not None:
            route_set.prefixes(site)


def install(site: Site, chosen: Iterable[RouteSet]) -> list[str]:
    """Add the `chosen` sets' routes to `site` (its FastAPI application built); their names."""
    names = []
    for route_set in chosen:
        route_set.add(site)
        names.append(route_set.name)
    return names


def _part(router: APIRouter, keep: Callable[[str], bool]) -> APIRouter:
    """The routes of `router` whose path `keep` accepts, as a router of their own."""
    from fastapi import APIRouter

    part = APIRouter()
    part.routes.extend(r for r in router.routes if keep(getattr(r, "path", "")))
    return part


def _is_dap_page(path: str) -> bool:
    return path.startswith("/opendap/")


def add_rest(site: Site) -> None:
    from outcrop.api import rest

    site.include(rest.router)


def zarr_prefix(site: Site) -> None:
    from outcrop.api.zarr import ZarrApp

    app = ZarrApp(site.pipeline, site.limiter)
    site.prefixes.append(Prefix("/zarr/", app, "/zarr/{path}", logging.DEBUG))


def opendap_prefix(site: Site) -> None:
    from outcrop.api.opendap import OpendapApp

    app = OpendapApp(site.pipeline, site.limiter)
    site.prefixes.append(Prefix("/opendap/", app, "/opendap/{path}", except_suffixes=(".html",)))


def add_zarr(site: Site) -> None:
    """Nothing beyond its prefix."""


def add_opendap(site: Site) -> None:
    """The HTML form of each dataset (`/opendap/{id}.html`)."""
    from outcrop.web import pages

    site.include(_part(pages.router, _is_dap_page))


def add_hapi(site: Site) -> None:
    from outcrop.api import hapi

    site.include(hapi.router)


def add_das2(site: Site) -> None:
    from outcrop.api import das2

    site.include(das2.router)


def add_jobs(site: Site) -> None:
    """The jobs API, and the embedded queue's consumer: a server without the jobs routes
    runs no jobs (`outcrop worker` does, or a node with them)."""
    from outcrop.api import jobs

    site.include(jobs.router)
    if site.settings.queue_url is None and site.settings.job_workers > 0:
        site.services.append(lambda: _consumer(site.settings))


def _consumer(settings: Settings) -> Stoppable:
    from outcrop.jobs import start_consumer

    return start_consumer(settings)


def add_images(site: Site) -> None:
    from outcrop.api import images

    site.include(images.router)


def add_web(site: Site) -> None:
    from outcrop.web import images as image_pages
    from outcrop.web import pages

    site.include(image_pages.router)
    site.include(_part(pages.router, lambda path: not _is_dap_page(path)))
    site.api.mount("/static", pages.static_files(), name="static")


REST = RouteSet("rest", "catalog, metadata and subsets (/api/datasets…)", add_rest)
ZARR = RouteSet("zarr", "Zarr v2 and v3 (/zarr/…)", add_zarr, zarr_prefix)
OPENDAP = RouteSet(
    "opendap",
    "OPeNDAP DAP2 and DAP4, and its HTML form (/opendap/…)",
    add_opendap,
    opendap_prefix,
)
HAPI = RouteSet("hapi", "HAPI 3 time series (/hapi/…)", add_hapi)
DAS2 = RouteSet("das2", "das2 time series (/das2/…)", add_das2)
JOBS = RouteSet("jobs", "asynchronous jobs (/api/jobs…) and the embedded job consumer", add_jobs)
IMAGES = RouteSet("images", "sky image queries and cutouts (/api/images…)", add_images)
WEB = RouteSet("web", "HTML pages for people (/, /datasets/…, /static)", add_web)
BUILTIN = (REST, ZARR, OPENDAP, HAPI, DAS2, JOBS, IMAGES, WEB)
