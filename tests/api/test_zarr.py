"""Zarr over HTTP, read by xarray/zarr 3 exactly as the local file."""

from __future__ import annotations

import json
import re
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h5py
import httpx
import netCDF4
import numcodecs
import numpy as np
import pytest
import xarray as xr

from tests.conftest import Server, assert_served_as_stored, start_server

GOES = [
    "sci_gxrs-l2-irrad_g13_d20170901_truncated",
    "sci_gxrs-l2-irrad_g15_d20131028_truncated",
    "sci_xrsf-l2-avg1m_g15_d20190102_truncated",
    "sci_xrsf-l2-avg1m_g16_d20210101_truncated",
    "sci_xrsf-l2-flx1s_g17_d20201016_truncated",
]
CASES = [
    ("cmip6/ta_Amon_1950", "cmip6/ta_Amon_1950.nc"),
    ("cmip6/ta_Amon_noleap", "cmip6/ta_Amon_noleap.nc"),
    ("real/grids/A1B_north_america", "real/grids/A1B_north_america.nc"),
    ("real/grids/ostia_monthly", "real/grids/ostia_monthly.nc"),
    ("real/timeseries/SOI_Darwin", "real/timeseries/SOI_Darwin.nc"),
    *[(f"real/timeseries/goes-xrs/{n}", f"real/timeseries/goes-xrs/{n}.nc") for n in GOES],
    ("stores/ta_v2", "stores/ta_v2.zarr"),
    ("stores/ta_v3", "stores/ta_v3.zarr"),
    ("groups/forecast", "groups.nc"),
]
ENCODING_KEYS = (
    "dtype",
    "_FillValue",
    "missing_value",
    "scale_factor",
    "add_offset",
    "units",
    "calendar",
)
# nc4 holds strings, so its view is built through xarray; nc4_numeric, the same file
# without them, is mirrored as stored (formats/mirror.py): every feature is checked on both.
NC4 = ["nc4", "nc4_numeric"]
AWKWARD = [*NC4, "nc3", "named_c", "contiguous_big", "store_v2", "store_v3"]


def local(archive: Path, rel: str) -> xr.Dataset:
    path = archive / rel
    if path.suffix == ".zarr":
        return xr.open_zarr(path)
    group = "forecast" if path.name == "groups.nc" else None
    return xr.open_dataset(path, group=group)


def assert_same_as_local(remote: xr.Dataset, expected: xr.Dataset) -> None:
    """Identical values and attributes, and the encodings that decide how values decode."""
    xr.testing.assert_identical(remote.load(), expected.load())
    for name, var in expected.variables.items():
        for key in ENCODING_KEYS:
            want, got = var.encoding.get(key), remote[name].encoding.get(key)
            if want is None:
                continue
            assert got is not None, (name, key)
            if key == "dtype":
                # zarr reports the dtype in native byte order even for big-endian chunks
                # (a local to_zarr/open_zarr round trip does the same)
                want, got = np.dtype(want), np.dtype(got)
                assert got.newbyteorder("=") == want.newbyteorder("="), (name, key, want, got)
            elif isinstance(want, str):
                assert got == want, (name, key, want, got)
            else:  # JSON attributes come back as Python numbers: compare the exact value
                w, g = np.asarray(want).item(), np.asarray(got).item()
                assert g == w or (w != w and g != g), (name, key, want, got)


@pytest.mark.parametrize("zarr_format", [2, 3])
@pytest.mark.parametrize(("ds_id", "rel"), CASES)
def test_remote_dataset_equals_local_file(
    server: Server, archive: Path, ds_id: str, rel: str, zarr_format: int
) -> None:
    remote = xr.open_zarr(f"{server.url}/zarr/{ds_id}", zarr_format=zarr_format)
    with local(archive, rel) as expected:
        assert_same_as_local(remote, expected)


def test_time_units_keep_the_files_spelling(server: Server, archive: Path) -> None:
    """xarray would write 'hours since 1970-01-01' for an in-memory index coordinate."""
    for fmt in (2, 3):
        remote = xr.open_zarr(f"{server.url}/zarr/real/grids/A1B_north_america", zarr_format=fmt)
        assert remote["time"].encoding["units"] == "hours since 1970-01-01 00:00:00"
        assert remote["forecast_reference_time"].encoding["units"] == (
            "hours since 1970-01-01 00:00:00"
        )


def test_data_is_dask_backed_until_asked_for(server: Server, archive: Path) -> None:
    remote = xr.open_zarr(f"{server.url}/zarr/cmip6/ta_Amon_1950")
    assert type(remote["ta"].data).__module__.startswith("dask")
    with xr.open_dataset(archive / "cmip6/ta_Amon_1950.nc") as expected:
        np.testing.assert_array_equal(
            remote["ta"].isel(time=3).values, expected["ta"].isel(time=3).values
        )


def test_missing_chunk_is_404_and_unknown_dataset_is_404(server: Server) -> None:
    r = httpx.get(f"{server.url}/zarr/no/such/dataset/.zmetadata")
    assert r.status_code == 404
    assert "no dataset" in r.json()["detail"]
    r = httpx.get(f"{server.url}/zarr/cmip6/ta_Amon_1950/ta/999.0.0")
    assert r.status_code == 404


# -- awkward files, generated here -----------------------------------------------------

STATIONS = np.array(["ab", "cdefg", ""], "S5")
GRID = np.arange(70).reshape(10, 7)


def write_nc4(path: Path, text: bool = True) -> None:
    """NetCDF4 variables with the features that break naive Zarr views; `text`: with a
    char array and a string variable."""
    with netCDF4.Dataset(path, "w", format="NETCDF4") as nc:
        nc.createDimension("time", None)
        nc.createDimension("y", 10)
        nc.createDimension("x", 7)
        nc.createDimension("strlen", 5)
        nc.createDimension("station", 3)
        t = nc.createVariable("time", "f8", ("time",))
        t.units, t.calendar = "hours since 1970-01-01 00:00:00", "proleptic_gregorian"
        t[:] = np.arange(6) * 6.0
        crs = nc.createVariable("crs", "i4", ())
        crs.grid_mapping_name, crs.semi_major_axis = "latitude_longitude", 6371229.0
        if text:
            chars = netCDF4.stringtochar(STATIONS)
            nc.createVariable("name", "S1", ("station", "strlen"))[:] = chars
            labels = np.array(["alpha", "béta", ""], object)
            nc.createVariable("label", str, ("station",))[:] = labels
        for dt in ("i1", "u1", "u2", "u4", "i8", "u8"):
            v = nc.createVariable(
                f"v_{dt}", dt, ("y", "x"), zlib=True, chunksizes=(4, 3), fill_value=np.array(7, dt)
            )
            v[:] = (GRID % 50).astype(dt)
        mv = nc.createVariable("with_missing", "i2", ("y", "x"), zlib=True, chunksizes=(4, 3))
        mv.missing_value = np.int16(-99)
        mv[:] = np.where(GRID == 8, -99, GRID).astype("i2")
        fl = nc.createVariable("flags", "u1", ("time",), zlib=True, chunksizes=(4,))
        fl.flag_masks, fl.flag_meanings = np.array([1, 2, 4], "u1"), "low high saturated"
        fl[:] = np.array([0, 1, 2, 3, 4, 7], "u1")
        edge = nc.createVariable(
            "edge", "f4", ("time", "y", "x"), zlib=True, shuffle=True, chunksizes=(4, 4, 3)
        )
        edge.units = "K"
        edge[:] = np.random.default_rng(0).normal(size=(6, 10, 7)).astype("f4")
        nc.createVariable("contig", "f8", ("y", "x"), contiguous=True)[:] = GRID
        checked = nc.createVariable(
            "checked", "f4", ("y", "x"), zlib=True, fletcher32=True, chunksizes=(5, 7)
        )
        checked[:] = GRID
        # the checksum's 4 bytes leave a partial 8-byte element that numcodecs won't unshuffle
        checked8 = nc.createVariable(
            "checked_f8", "f8", ("y", "x"), zlib=True, fletcher32=True, chunksizes=(5, 7)
        )
        checked8[:] = GRID
        holes = nc.createVariable(
            "holes", "f4", ("y", "x"), zlib=True, chunksizes=(5, 7), fill_value=np.float32(-1.5)
        )
        holes[0:5, :] = GRID[:5]
        nc.createVariable("holes_default", "i4", ("y", "x"), chunksizes=(5, 7))[5:, :] = 1
        for codec in ("bzip2", "zstd"):
            nc.createVariable(f"{codec}ed", "f4", ("y", "x"), compression=codec)[:] = GRID
        nc.createVariable("bigchunk", "f4", ("time",), zlib=True, chunksizes=(1024,))[:] = 1.5
        be = nc.createVariable(
            "bigendian", ">f4", ("y", "x"), zlib=True, chunksizes=(5, 7), endian="big"
        )
        be[:] = GRID
        be_bz = nc.createVariable(
            "bigendian_bz", ">f4", ("y", "x"), compression="bzip2", endian="big"
        )
        be_bz[:] = GRID
        # a chunk whose zlib stream is exactly as long as the chunk: Blosc would take such
        # a stream for uncompressed bytes (the seed and the zeros were searched for that)
        nc.createDimension("n", NOISY)
        nc.createVariable("noisy", "i4", ("n",), zlib=True, chunksizes=(NOISY,))[:] = noisy()


NOISY = 1024


def noisy() -> np.ndarray[Any, Any]:
    values = np.random.default_rng(2).integers(-(2**31), 2**31 - 1, NOISY).astype("i4")
    values[:16] = 0
    return values


def write_nc3(path: Path) -> None:
    """NetCDF3: big-endian storage, char arrays, packed and small ints, missing_value."""
    with netCDF4.Dataset(path, "w", format="NETCDF3_CLASSIC") as nc:
        nc.createDimension("time", None)
        nc.createDimension("x", 4)
        nc.createDimension("strlen", 3)
        t = nc.createVariable("time", "f8", ("time",))
        t.units, t.calendar = "days since 2000-01-01 00:00:00", "noleap"
        t[:] = [0, 1, 2]
        nc.createVariable("crs", "i4", ()).grid_mapping_name = "latitude_longitude"
        small = nc.createVariable("small", "i1", ("time", "x"), fill_value=np.int8(-1))
        small[:] = np.arange(12).reshape(3, 4)
        packed = nc.createVariable("packed", "i2", ("time", "x"), fill_value=np.int16(-32767))
        packed.scale_factor, packed.add_offset = 0.5, 10.0
        packed[:] = np.ma.masked_array(np.arange(12.0).reshape(3, 4), np.eye(3, 4, dtype=bool))
        code = nc.createVariable("code", "S1", ("x", "strlen"))
        code[:] = netCDF4.stringtochar(np.array(["a", "bb", "ccc", ""], "S3"))
        mv = nc.createVariable("mv", "f4", ("time", "x"))
        mv.missing_value = np.float32(1e20)
        mv[:] = np.where(np.arange(12).reshape(3, 4) == 5, 1e20, 1.0)


def write_named_c(path: Path) -> None:
    """Variables named like Zarr v3 key parts: `c` (1-d and 2-d) and `zarr`."""
    ds = xr.Dataset(
        {
            "c": (("y", "x"), GRID.astype("f4")),
            "zarr": ("x", np.arange(7, dtype="i2")),
        },
        coords={"x": np.arange(7), "y": np.arange(10)},
    )
    encoding = {n: {"zlib": True, "chunksizes": (3, 2)[: ds[n].ndim]} for n in ("c", "zarr")}
    ds.to_netcdf(path, encoding=encoding)


def write_contiguous_big(path: Path) -> None:
    """A contiguous 12 MB variable: xarray gives it one dask chunk, Zarr must not."""
    data = np.arange(1500 * 1000, dtype="f8").reshape(1500, 1000)
    ds = xr.Dataset({"big": (("row", "col"), data)})
    ds.to_netcdf(path, encoding={"big": {"contiguous": True}})


def write_stores(folder: Path) -> None:
    """Zarr sources whose chunking and codecs differ from what the view serves."""
    ds = xr.Dataset(
        {
            "v": (("t", "x"), np.arange(50, dtype="i4").reshape(10, 5)),
            "scalar": ((), np.float64(2.5)),
        },
        attrs={"title": "store"},
    )
    ds["v"].encoding = {"_FillValue": np.int32(-1)}
    chunked = ds.chunk({"t": 3, "x": 2})
    chunked.to_zarr(folder / "store_v2.zarr", zarr_format=2, consolidated=True)
    chunked.to_zarr(folder / "store_v3.zarr", zarr_format=3, consolidated=False)


@pytest.fixture(scope="module")
def awkward(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("awkward")
    write_nc4(root / "nc4.nc")
    write_nc4(root / "nc4_numeric.nc", text=False)
    write_nc3(root / "nc3.nc")
    write_named_c(root / "named_c.nc")
    write_contiguous_big(root / "contiguous_big.nc")
    write_stores(root)
    return root


@pytest.fixture(scope="module")
def awkward_server(awkward: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server([str(awkward)], tmp_path_factory.mktemp("awkward-state"))
    yield srv
    srv.stop()


def open_local(folder: Path, ds_id: str) -> xr.Dataset:
    if (folder / f"{ds_id}.zarr").exists():
        return xr.open_zarr(folder / f"{ds_id}.zarr")
    return xr.open_dataset(folder / f"{ds_id}.nc")


@pytest.mark.parametrize("zarr_format", [2, 3])
@pytest.mark.parametrize("ds_id", AWKWARD)
def test_awkward_variables_equal_local_file(
    awkward_server: Server, awkward: Path, ds_id: str, zarr_format: int
) -> None:
    remote = xr.open_zarr(f"{awkward_server.url}/zarr/{ds_id}", zarr_format=zarr_format)
    with open_local(awkward, ds_id) as expected:
        assert_same_as_local(remote, expected)


def test_char_arrays_keep_their_netcdf_encoding(awkward_server: Server) -> None:
    for fmt in (2, 3):
        remote = xr.open_zarr(f"{awkward_server.url}/zarr/nc4", zarr_format=fmt)
        assert remote["name"].encoding["dtype"] == np.dtype("S1")
        assert remote["name"].encoding["char_dim_name"] == "strlen"
        np.testing.assert_array_equal(remote["name"].values, STATIONS)


def get_json(url: str) -> dict[str, Any]:
    r = httpx.get(url)
    assert r.status_code == 200, (url, r.text)
    doc: dict[str, Any] = r.json()
    return doc


def get_bytes(url: str) -> bytes:
    r = httpx.get(url)
    assert r.status_code == 200, (url, r.text)
    return r.content


def chunk_url(base: str, name: str, coords: tuple[int, ...], fmt: int) -> str:
    if fmt == 2:
        return f"{base}/{name}/{'.'.join(map(str, coords)) or '0'}"
    return f"{base}/{name}/c" + "".join(f"/{i}" for i in coords)


@pytest.mark.parametrize("zarr_format", [2, 3])
@pytest.mark.parametrize("ds_id", NC4)
@pytest.mark.parametrize(
    ("name", "coords"),
    [("edge", (1, 2, 2)), ("checked", (1, 0)), ("bigendian", (0, 0)), ("v_u8", (2, 2))],
)
def test_stored_chunks_go_out_with_their_bytes_unchanged(
    awkward_server: Server,
    awkward: Path,
    ds_id: str,
    name: str,
    coords: tuple[int, ...],
    zarr_format: int,
) -> None:
    """zlib/shuffle/fletcher32 chunks go out with the bytes HDF5 stored, never decoded:
    zlib ones behind a Blosc header, the others as they are."""
    url = chunk_url(f"{awkward_server.url}/zarr/{ds_id}", name, coords, zarr_format)
    served_as_stored(awkward, ds_id, name, coords, url)


@pytest.mark.parametrize("zarr_format", [2, 3])
@pytest.mark.parametrize("ds_id", NC4)
def test_a_stored_stream_as_long_as_its_chunk_goes_out_inflated(
    awkward_server: Server, awkward: Path, ds_id: str, zarr_format: int
) -> None:
    """Blosc copies a stream as long as its block instead of inflating it: that one chunk
    goes out inflated (still shuffled, as Blosc expects), and decodes to the values."""
    with h5py.File(awkward / f"{ds_id}.nc") as f:
        stored = f["noisy"].id.read_direct_chunk((0,))[1]
    assert len(stored) == NOISY * 4  # what makes this chunk the case tested here
    url = chunk_url(f"{awkward_server.url}/zarr/{ds_id}", "noisy", (0,), zarr_format)
    served = get_bytes(url)
    assert np.array_equal(np.frombuffer(numcodecs.Blosc().decode(served), "<i4"), noisy())
    remote = xr.open_zarr(f"{awkward_server.url}/zarr/{ds_id}", zarr_format=zarr_format)
    assert np.array_equal(remote["noisy"].values, noisy())


# the variables of the awkward NetCDF-4 files compressed with zlib (alone or after shuffle)
ZLIB_VARIABLES = ["edge", "v_i1", "v_u2", "v_i8", "v_u8", "flags", "bigendian", "holes", "noisy"]


@pytest.mark.parametrize("driver", ["zarr", "zarr3"])
@pytest.mark.parametrize("ds_id", NC4)
def test_tensorstore_reads_the_stored_values(
    awkward_server: Server, awkward: Path, ds_id: str, driver: str
) -> None:
    """tensorstore, a Zarr implementation of its own (C++, with its own Blosc), reads every
    zlib variable as the file stores it, in v2 and v3: Outcrop's framed chunks are plain
    Blosc chunks to any reader, not only to numcodecs."""
    import tensorstore as ts

    base = f"{awkward_server.url}/zarr/{ds_id}/"
    with h5py.File(awkward / f"{ds_id}.nc") as f:
        for name in ZLIB_VARIABLES:
            kvstore = {"driver": "http", "base_url": base, "path": f"{name}/"}
            array = ts.open({"driver": driver, "kvstore": kvstore}, read=True).result()
            values = array.read().result()
            assert values.dtype == f[name].dtype.newbyteorder("="), name
            assert np.array_equal(values, f[name][...]), name


def served_as_stored(
    folder: Path, ds_id: str, name: str, coords: tuple[int, ...], url: str
) -> bytes:
    """The bytes at `url`, checked to be the stored chunk at `coords` (written with every
    filter: no filter skipped) as served."""
    served = get_bytes(url)
    with h5py.File(folder / f"{ds_id}.nc") as f:
        var = f[name]
        offset = tuple(i * c for i, c in zip(coords, var.chunks, strict=True))
        mask, stored = var.id.read_direct_chunk(offset)
        assert mask == 0
        assert_served_as_stored(served, var, bytes(stored))
    return served


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_chunks_and_documents_revalidate_with_their_etag(
    awkward_server: Server, zarr_format: int
) -> None:
    """A cache in front (a browser, nginx `proxy_cache_revalidate`) asks again with the
    ETag and gets a 304 without a body; another tag, or none, gets the bytes."""
    base = f"{awkward_server.url}/zarr/nc4_numeric"
    doc = ".zmetadata" if zarr_format == 2 else "zarr.json"
    for url in (f"{base}/{doc}", chunk_url(base, "edge", (1, 2, 2), zarr_format)):
        first = httpx.get(url)
        etag = first.headers["etag"]
        assert first.status_code == 200
        assert first.headers["cache-control"] == "no-cache"
        for asked in (etag, f'"other", W/{etag}', "*"):
            again = httpx.get(url, headers={"If-None-Match": asked})
            assert again.status_code == 304, (url, asked)
            assert again.content == b""
            assert again.headers["etag"] == etag
        other = httpx.get(url, headers={"If-None-Match": '"other"'})
        assert other.status_code == 200
        assert other.content == first.content
    # the other format's views are other representations: their tags differ
    other_doc = ".zmetadata" if zarr_format == 3 else "zarr.json"
    assert httpx.get(f"{base}/{other_doc}").headers["etag"] != etag
    # a chunk that was never written is still a 404, whatever the validator
    missing = httpx.get(
        chunk_url(base, "edge", (9, 9, 9), zarr_format), headers={"If-None-Match": "*"}
    )
    assert missing.status_code == 404


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_a_byte_range_of_a_stored_chunk_is_that_range_of_the_files_bytes(
    awkward_server: Server, awkward: Path, zarr_format: int
) -> None:
    """RFC 9110 §14, as nginx answers a static copy: one range is a 206 of the stored
    bytes; past the end a 416; several ranges, a malformed one or an `If-Range` naming
    another version get the whole chunk."""
    url = chunk_url(f"{awkward_server.url}/zarr/nc4_numeric", "edge", (1, 2, 2), zarr_format)
    stored = served_as_stored(awkward, "nc4_numeric", "edge", (1, 2, 2), url)
    size = len(stored)
    etag = httpx.head(url).headers["etag"]
    assert httpx.head(url).headers["accept-ranges"] == "bytes"
    for asked, (start, stop) in {
        "bytes=0-9": (0, 10),
        "bytes=5-": (5, size),
        "bytes=-7": (size - 7, size),
        f"bytes=-{size + 10}": (0, size),
        f"bytes=3-{size + 100}": (3, size),
        f"bytes={size - 1}-{size - 1}": (size - 1, size),
    }.items():
        for extra in ({}, {"If-Range": etag}):
            r = httpx.get(url, headers={"Range": asked, **extra})
            assert r.status_code == 206, asked
            assert r.content == stored[start:stop], asked
            assert r.headers["content-range"] == f"bytes {start}-{stop - 1}/{size}"
            assert r.headers["content-length"] == str(stop - start)
    head = httpx.head(url, headers={"Range": "bytes=0-9"})
    assert (head.status_code, head.headers["content-length"]) == (206, "10")
    for asked in (f"bytes={size}-", f"bytes={size + 5}-{size + 9}", "bytes=-0"):
        r = httpx.get(url, headers={"Range": asked})
        assert r.status_code == 416, asked
        assert r.headers["content-range"] == f"bytes */{size}"
    for asked, extra in [
        ("bytes=0-1,4-5", {}),
        ("bytes=9-2", {}),
        ("bytes=-", {}),
        ("lines=0-3", {}),
        ("bytes=\u00b2-3".encode("latin-1"), {}),  # a digit only in Unicode
        ("bytes=0-3", {"If-Range": '"an-older-version"'}),
        ("bytes=0-3", {"If-Range": "Mon, 23 Nov 2026 00:00:00 GMT"}),
    ]:
        r = httpx.get(url, headers={"Range": asked, **extra})
        assert (r.status_code, r.content) == (200, stored), (asked, extra)


@pytest.mark.parametrize(
    ("ds_id", "name"),
    [
        *[
            (ds_id, name)
            for ds_id in NC4
            for name in ("contig", "bzip2ed", "zstded", "bigendian_bz", "checked_f8")
        ],
        ("nc4", "name"),
    ],
)
def test_encoded_chunks_decode_to_local_values(
    awkward_server: Server, awkward: Path, ds_id: str, name: str
) -> None:
    """Unknown filters, contiguous and char variables: zstd-encoded chunks, checked by hand."""
    base = f"{awkward_server.url}/zarr/{ds_id}"
    meta = get_json(f"{base}/{name}/.zarray")
    assert meta["compressor"]["id"] == "zstd"
    assert meta["filters"] is None
    with netCDF4.Dataset(awkward / f"{ds_id}.nc") as nc:
        nc.set_auto_maskandscale(False)
        nc.set_auto_chartostring(False)
        expected = nc[name][:]
    chunk = tuple(meta["chunks"])
    raw = numcodecs.Zstd().decode(get_bytes(chunk_url(base, name, (0,) * len(chunk), 2)))
    got = np.frombuffer(raw, dtype=meta["dtype"]).reshape(chunk)
    region = tuple(slice(0, min(c, s)) for c, s in zip(chunk, expected.shape, strict=True))
    np.testing.assert_array_equal(got[region], np.asarray(expected)[region])


@pytest.mark.parametrize("ds_id", NC4)
def test_unwritten_chunks_read_as_the_files_fill_value(
    awkward_server: Server, awkward: Path, ds_id: str
) -> None:
    base = f"{awkward_server.url}/zarr/{ds_id}"
    for fmt in (2, 3):
        # _FillValue -1.5 is both the HDF5 fill and the Zarr fill: a missing key
        assert httpx.get(chunk_url(base, "holes", (1, 0), fmt)).status_code == 404
    # no _FillValue: libnetcdf reads its default fill, which a v3 array declares...
    assert httpx.get(chunk_url(base, "holes_default", (0, 0), 3)).status_code == 404
    # ...but a v2 fill_value would mask it, so v2 gets the fill values encoded
    assert httpx.get(chunk_url(base, "holes_default", (0, 0), 2)).status_code == 200
    with xr.open_dataset(awkward / f"{ds_id}.nc") as expected:
        assert int(expected["holes_default"][0, 0]) == netCDF4.default_fillvals["i4"]
        for fmt in (2, 3):
            remote = xr.open_zarr(base, zarr_format=fmt)
            xr.testing.assert_identical(remote["holes"].load(), expected["holes"].load())
            xr.testing.assert_identical(
                remote["holes_default"].load(), expected["holes_default"].load()
            )


def test_large_contiguous_variable_is_served_in_bounded_chunks(awkward_server: Server) -> None:
    meta = get_json(f"{awkward_server.url}/zarr/contiguous_big/big/.zarray")
    assert meta["shape"] == [1500, 1000]
    assert 1 < meta["chunks"][0] < 1500
    assert np.prod(meta["chunks"]) * 8 <= 4 * 2**20


@pytest.mark.parametrize("ds_id", NC4)
def test_chunks_larger_than_the_variable_are_served_raw(
    awkward_server: Server, awkward: Path, ds_id: str
) -> None:
    """An unlimited dim chunked by 1024 on disk with 6 values: the file's chunk, as is."""
    base = f"{awkward_server.url}/zarr/{ds_id}"
    assert get_json(f"{base}/bigchunk/.zarray")["chunks"] == [1024]
    served_as_stored(awkward, ds_id, "bigchunk", (0,), f"{base}/bigchunk/0")


@pytest.mark.parametrize(
    "key",
    [
        "nonexistent/.zarray",
        "nonexistent/zarr.json",
        "nonexistent/0.0",
        "nonexistent/c/0/0",
        "edge/0.0",
        "edge/0.0.0.0",
        "edge/0.0.x",
        "edge/0.0.-1",
        "edge/00.0.0",
        "edge/0.0.\uff10",
        "edge/9.0.0",
        "edge/c/0/0",
        "edge/c/0/0/x",
        "edge/c0/0/0",
        "edge/c/0.0.0",
        "crs/0.0",
        "c/c/0",
        "c/0.0.0",
    ],
)
def test_unknown_keys_are_404_with_a_problem_body(awkward_server: Server, key: str) -> None:
    ds_id = "named_c" if key.startswith("c/") else "nc4"
    r = httpx.get(f"{awkward_server.url}/zarr/{ds_id}/{key}")
    assert r.status_code == 404, (key, r.status_code, r.text)
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["status"] == 404


def test_variable_named_c_is_not_taken_for_a_v3_key(awkward_server: Server, awkward: Path) -> None:
    base = f"{awkward_server.url}/zarr/named_c"
    v2 = get_json(f"{base}/c/.zarray")
    v3 = get_json(f"{base}/c/zarr.json")
    assert v2["zarr_format"] == 2 and v3["zarr_format"] == 3
    for url in (f"{base}/c/1.1", f"{base}/c/c/1/1"):
        served_as_stored(awkward, "named_c", "c", (1, 1), url)


def test_zarr_source_chunks_follow_the_source_chunking(awkward_server: Server) -> None:
    for ds_id in ("store_v2", "store_v3"):
        meta = get_json(f"{awkward_server.url}/zarr/{ds_id}/v/.zarray")
        assert meta["chunks"] == [3, 2]
        assert meta["shape"] == [10, 5]


def test_scalar_variables_have_a_chunk_key_in_both_formats(awkward_server: Server) -> None:
    base = f"{awkward_server.url}/zarr/store_v2"
    doc = json.loads(httpx.get(f"{base}/scalar/.zarray").content)
    assert doc["shape"] == []
    for fmt in (2, 3):
        remote = xr.open_zarr(base, zarr_format=fmt)
        assert float(remote["scalar"]) == 2.5


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # xarray: "consolidated=False is slower"
@pytest.mark.parametrize("zarr_format", [2, 3])
@pytest.mark.parametrize(
    ("ds_id", "rel"),
    [
        ("cmip6/ta_Amon_1950", "cmip6/ta_Amon_1950.nc"),
        ("real/grids/ostia_monthly", "real/grids/ostia_monthly.nc"),
        ("stores/ta_v3", "stores/ta_v3.zarr"),
        ("groups/forecast", "groups.nc"),  # also the group `forecast` of dataset `groups`
    ],
)
def test_a_store_opened_without_consolidated_metadata_equals_the_local_file(
    server: Server, archive: Path, ds_id: str, rel: str, zarr_format: int
) -> None:
    """zarr-python then lists the group through fsspec (the `href`s of the group's page)
    and reads each member's own metadata; an unlisted group read as an empty dataset."""
    url = f"{server.url}/zarr/{ds_id}"
    remote = xr.open_zarr(url, zarr_format=zarr_format, consolidated=False)
    with local(archive, rel) as expected:
        assert_same_as_local(remote, expected)


def test_a_dataset_url_without_a_key_lists_its_members(server: Server, archive: Path) -> None:
    """`/zarr/{id}` sends to the group's folder; its page links every variable, and no
    metadata document (a reader of the other format would take it for a member)."""
    r = httpx.get(f"{server.url}/zarr/cmip6/ta_Amon_1950")
    assert (r.status_code, r.headers["location"]) == (308, "ta_Amon_1950/")
    page = httpx.get(f"{server.url}/zarr/cmip6/ta_Amon_1950/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    with netCDF4.Dataset(archive / "cmip6/ta_Amon_1950.nc") as nc:
        names = set(nc.variables)
    assert set(re.findall(r'href="([^"]+)"', page.text)) == names
    assert 'href=".zmetadata' not in page.text
    assert 'href="zarr.json' not in page.text
    again = httpx.get(page.url, headers={"If-None-Match": page.headers["etag"]})
    assert again.status_code == 304


def test_plain_netcdf4_files_are_mirrored_and_files_with_strings_go_through_xarray(
    awkward_server: Server,
) -> None:
    """Which builder made a view shows in its ETag (`-m`: mirrored as stored), so the
    tests above check each feature through both."""
    for fmt, doc in ((2, ".zmetadata"), (3, "zarr.json")):
        mirrored = httpx.get(f"{awkward_server.url}/zarr/nc4_numeric/{doc}")
        through_xarray = httpx.get(f"{awkward_server.url}/zarr/nc4/{doc}")
        assert mirrored.headers["etag"].endswith(f'-{fmt}-m"')
        assert through_xarray.headers["etag"].endswith(f'-{fmt}"')


def test_pipelined_requests_get_their_own_answers_in_order(
    awkward_server: Server, awkward: Path
) -> None:
    """Several requests sent at once on one connection (the server holds each answer's
    small writes for one event-loop step, cli/protocol.py): every answer arrives whole and
    in order, small and large, stored chunk, 404 and HEAD, and a streamed CSV."""
    import socket

    import h11

    base = "/zarr/nc4_numeric"
    csv = "/api/datasets/contiguous_big/data?var=big&row=0/99&format=csv"
    targets = [
        ("GET", f"{base}/.zmetadata"),
        ("GET", f"{base}/edge/1.2.2"),
        ("HEAD", f"{base}/.zmetadata"),
        ("GET", "/zarr/no/such/.zmetadata"),
        ("GET", "/zarr/contiguous_big/big/0.0"),
        ("GET", csv),
        ("GET", f"{base}/edge/c/0/0/0"),
    ]
    host, port = awkward_server.url.removeprefix("http://").split(":")
    request = "".join(f"{m} {t} HTTP/1.1\r\nHost: {host}\r\n\r\n" for m, t in targets)
    client = h11.Connection(h11.CLIENT)
    answers: list[tuple[int, bytes]] = []
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(request.encode())
        for method, target in targets:
            client.send(h11.Request(method=method, target=target, headers=[("Host", host)]))
            client.send(h11.EndOfMessage())  # (already sent above, all at once)
            status, body = 0, b""
            while True:
                event = client.next_event()
                if event is h11.NEED_DATA:
                    data = sock.recv(1 << 20)
                    assert data, "the connection closed before every answer arrived"
                    client.receive_data(data)
                elif isinstance(event, h11.Response):
                    status = event.status_code
                elif isinstance(event, h11.Data):
                    body += event.data
                elif isinstance(event, h11.EndOfMessage):
                    break
            answers.append((status, body))
            client.start_next_cycle()
    one_by_one = [httpx.request(m, f"{awkward_server.url}{t}") for m, t in targets]
    assert [status for status, _ in answers] == [200, 200, 200, 404, 200, 200, 200]
    with h5py.File(awkward / "nc4_numeric.nc") as f:
        var = f["edge"]
        assert_served_as_stored(answers[1][1], var, var.id.read_direct_chunk((4, 8, 6))[1])
        assert_served_as_stored(answers[6][1], var, var.id.read_direct_chunk((0, 0, 0))[1])
    assert answers[2][1] == b""
    assert len(answers[4][1]) > 1 << 16  # larger than what the server holds back
    assert len(answers[5][1]) > 1 << 16
    for target, (_, body), alone in zip(targets, answers, one_by_one, strict=True):
        assert body == alone.content, target  # as on a connection of its own


def assert_warns_only_of_what_docs_zarr_md_names(
    url: str, zarr_format: int | None, numcodecs_v3: bool = False
) -> None:
    """zarr-python and xarray find nothing to warn about in what Outcrop serves (a fill
    value, attribute or codec they cannot take) but the two warnings docs/zarr.md tells
    users of: without `zarr_format`, both formats are there and v3 is used; in v3, a
    file's fletcher32 chunks are declared with numcodecs codecs (`numcodecs_v3`: the
    dataset has such a variable; zlib and shuffle alone go out as Blosc, a v3 codec).
    Zarr v2 warns of nothing."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        xr.open_zarr(url, zarr_format=zarr_format).load()
    messages = [f"{w.category.__name__}: {w.message}" for w in caught]
    both = [m for m in messages if "Both zarr.json (Zarr format 3) and .zgroup" in m]
    assert len(both) == (1 if zarr_format is None else 0), messages
    numcodecs = [m for m in messages if "Numcodecs codecs are not in the Zarr version 3" in m]
    assert bool(numcodecs) == (numcodecs_v3 and zarr_format != 2), messages
    assert [m for m in messages if m not in both + numcodecs] == []


@pytest.mark.parametrize("zarr_format", [2, 3, None])
@pytest.mark.parametrize("ds_id", [c[0] for c in CASES])
def test_opening_and_reading_warns_only_of_what_docs_zarr_md_names(
    server: Server, ds_id: str, zarr_format: int | None
) -> None:
    assert_warns_only_of_what_docs_zarr_md_names(f"{server.url}/zarr/{ds_id}", zarr_format)


@pytest.mark.parametrize("zarr_format", [2, 3, None])
@pytest.mark.parametrize("ds_id", AWKWARD)
def test_awkward_variables_warn_only_of_what_docs_zarr_md_names(
    awkward_server: Server, ds_id: str, zarr_format: int | None
) -> None:
    url = f"{awkward_server.url}/zarr/{ds_id}"
    assert_warns_only_of_what_docs_zarr_md_names(url, zarr_format, numcodecs_v3=ds_id in NC4)
