"""The contenders of both suites: who serves what, at which URLs, measured against whom.

Zarr (issue 2): Outcrop, xpublish + xpublish-zarr, nginx serving static copies (the limit)
and local reads. OPeNDAP (issue 3): Outcrop's DAP2 and DAP4, xpublish-opendap (the
reference), pydap's server, local reads of the NetCDF4 file and its NetCDF3 copy, and
nginx replaying Outcrop's DAP2 answers from files (the limit of libnetcdf's client).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import dataset

V2_META, V2_CHUNK = "/.zmetadata", "/temp/{t}.0.0"
V3_META, V3_CHUNK = "/zarr.json", "/temp/c/{t}/0/0"
# one time step, `temp[t][0:359][0:719]`, brackets percent-encoded (wrk sends the URL as is)
STEP = f"temp%5B{{t}}%5D%5B0:{dataset.NY - 1}%5D%5B0:{dataset.NX - 1}%5D"
DAP2_STEP = ".dods?" + STEP
DAP4_STEP = ".dap?dap4.ce=/" + STEP
SUITES = (
    "zarr",
    "dap",
    "series",
    "jobs",
    "images",
    "service",
)  # series (issue 4), jobs (issue 5): no contenders


@dataclass(frozen=True)
class Contender:
    """One row of the tables: a server (or a local reader) and the URLs it answers."""

    name: str
    label: str
    server: str | None  # "outcrop", "xpublish", "pydap", "nginx"; None: local read
    path: str  # URL path of the dataset, or the local file or store under the data folder
    meta: str = ""
    chunk: str = ""
    ref: str | None = None  # whom ratios and targets divide by: nginx, or xpublish-opendap
    ref2: str | None = None  # nginx serving the same bytes, or the local read of the same file
    protocol: str = "zarr"  # what the client speaks to the server: zarr, dap2, dap4
    source: str = "nc/grid.nc"  # the file a server publishes, under the data folder
    suites: tuple[str, ...] = ("zarr",)
    env: tuple[tuple[str, str], ...] = ()  # settings an Outcrop contender runs with

    @property
    def kind(self) -> str:
        if self.server:
            return self.protocol
        return "local-nc" if self.path.endswith(".nc") else "local-zarr"

    @property
    def zarr_format(self) -> int:
        """Which format the client must read: Outcrop answers both at one URL, and zarr
        would otherwise pick v3 for the v2 contender."""
        return 2 if self.meta == V2_META or "zarr2" in self.path else 3

    def client_url(self, url: str) -> str:
        """The URL the client opens: libnetcdf speaks DAP4 to `dap4://` URLs."""
        return "dap4://" + url.removeprefix("http://") if self.protocol == "dap4" else url


V2 = {"meta": V2_META, "chunk": V2_CHUNK}
V3 = {"meta": V3_META, "chunk": V3_CHUNK}
N2, N3 = {**V2, "ref": "nginx-zarr2"}, {**V3, "ref": "nginx-zarr3"}
NGINX_Z = "nginx, static Zarr v{} of Outcrop's bytes (grid.nc's zlib+shuffle chunks as Blosc)"
DAP: dict[str, Any] = {
    "meta": ".dds",
    "chunk": DAP2_STEP,
    "ref": "xpublish-opendap",
    "protocol": "dap2",
    "suites": ("dap",),
}
NC4 = {"ref2": "local-nc"}
NC3 = {"ref2": "local-nc3", "source": dataset.NC3}
CONTENDERS = [
    Contender("local-nc", "local NetCDF4 file", None, "nc/grid.nc", suites=("zarr", "dap")),
    Contender("local-zarr2", "local Zarr v2 copy", None, "zarr2/grid.zarr", ref="nginx-zarr2"),
    Contender("local-zarr3", "local Zarr v3 copy", None, "zarr3/grid.zarr", ref="nginx-zarr3"),
    Contender("nginx-zarr2", "nginx, static Zarr v2", "nginx", "/zarr2/grid.zarr", **N2),
    Contender("nginx-zarr3", "nginx, static Zarr v3", "nginx", "/zarr3/grid.zarr", **N3),
    Contender("nginx-zarr2-zlib", NGINX_Z.format(2), "nginx", "/zarr2z/grid.zarr", **N2),
    Contender("nginx-zarr3-zlib", NGINX_Z.format(3), "nginx", "/zarr3z/grid.zarr", **N3),
    Contender(
        "outcrop-zarr2",
        "Outcrop, Zarr v2",
        "outcrop",
        "/zarr/grid",
        **V2,
        ref="nginx-zarr2",
        ref2="nginx-zarr2-zlib",
    ),
    Contender(
        "outcrop-zarr3",
        "Outcrop, Zarr v3",
        "outcrop",
        "/zarr/grid",
        **V3,
        ref="nginx-zarr3",
        ref2="nginx-zarr3-zlib",
    ),
    Contender(
        "outcrop-zarr2-lz4",
        "Outcrop, Zarr v2, chunks transcoded to Blosc lz4 (`OUTCROP_ZARR_CODEC=lz4`)",
        "outcrop",
        "/zarr/grid",
        **V2,
        ref="nginx-zarr2",
        env=(("OUTCROP_ZARR_CODEC", "lz4"),),
    ),
    Contender(
        "outcrop-zarr3-lz4",
        "Outcrop, Zarr v3, chunks transcoded to Blosc lz4 (`OUTCROP_ZARR_CODEC=lz4`)",
        "outcrop",
        "/zarr/grid",
        **V3,
        ref="nginx-zarr3",
        env=(("OUTCROP_ZARR_CODEC", "lz4"),),
    ),
    Contender(
        "xpublish-zarr3",
        "xpublish 0.5.2 + xpublish-zarr 0.1.0",
        "xpublish",
        "/datasets/grid/zarr",
        **V3,
        ref="nginx-zarr3",
    ),
    Contender("local-nc3", "local NetCDF3 copy", None, dataset.NC3, suites=("dap",)),
    Contender(
        "xpublish-opendap",
        "xpublish 0.5.2 + xpublish-opendap 0.2.0, grid.nc",
        "xpublish",
        "/datasets/grid/opendap",
        **DAP,
        **NC4,
    ),
    Contender(
        "xpublish-opendap-nc3",
        "xpublish 0.5.2 + xpublish-opendap 0.2.0, grid3.nc",
        "xpublish",
        "/datasets/grid/opendap",
        **DAP,
        **NC3,
    ),
    Contender("pydap-server", "pydap 3.5.9 server, grid.nc", "pydap", "/grid.nc", **DAP, **NC4),
    Contender(
        "outcrop-dap2-nc4", "Outcrop, DAP2, grid.nc", "outcrop", "/opendap/grid", **DAP, **NC4
    ),
    Contender(
        "outcrop-dap2-nc3", "Outcrop, DAP2, grid3.nc", "outcrop", "/opendap/grid3", **DAP, **NC3
    ),
    Contender(
        "nginx-dap2-replay",
        "nginx replaying Outcrop's grid3.nc answers: the client's limit",
        "nginx",
        "/opendap/grid3",
        **DAP,
        **NC3,
    ),
    Contender(
        "outcrop-dap4-nc4",
        "Outcrop, DAP4 (dap4://), grid.nc",
        "outcrop",
        "/opendap/grid",
        **{**DAP, "meta": ".dmr.xml", "chunk": DAP4_STEP, "protocol": "dap4"},
        **NC4,
    ),
]
EXTRAS = ("outcrop-restart", "outcrop-stream")  # issue 2 only
