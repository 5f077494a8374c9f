"""OPeNDAP through the clients we did not write: libnetcdf (netCDF4-python, xarray's
netcdf4 engine, ncdump) and pydap (dap2, dap4, xarray's pydap engine), against the local
files read by netCDF4 itself.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import warnings
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import netCDF4
import numpy as np
import pytest
import xarray as xr

from tests.conftest import DATA, Server, start_server

NCDUMP = shutil.which("ncdump")

# (dataset id, file relative to the served folder)
FILES = {
    "awkward": "awkward.nc",
    "ta_Amon_1950": "ta_Amon_1950.nc",
    "ta_Amon_noleap": "ta_Amon_noleap.nc",
    "ostia_monthly": "ostia_monthly.nc",
    "A1B_north_america": "A1B_north_america.nc",
}
SELECTIONS = [  # per dimension count: (start, stop, step) as python slices
    lambda shape: tuple(slice(None) for _ in shape),
    lambda shape: tuple(slice(n // 3, n - n // 4) for n in shape),
    lambda shape: tuple(slice(1 % max(n, 1), n, 3) for n in shape),
    lambda shape: tuple(slice(n - 1, n) for n in shape),
]


def write_awkward(path: Path) -> None:
    """Every NetCDF-4 type, strings and char arrays, a 4-D variable, packed and filled
    values, awkward names and attribute texts."""
    rng = np.random.default_rng(3)
    with netCDF4.Dataset(path, "w") as nc:
        nc.title = 'Awkward "quoted" \\ backslashed'
        nc.history = "line one\nline two"
        nc.setncattr("numbers", np.array([1.5, -2.25, 3.0]))
        nc.setncattr("Float32", np.float32(1.25))  # a DAP type name as an attribute name
        for name, size in (("time", None), ("level", 3), ("lat", 5), ("lon", 8), ("strlen", 6)):
            nc.createDimension(name, size)
        time = nc.createVariable("time", "f8", ("time",))
        time.units = "days since 2000-01-01 00:00:00"
        time.calendar = "360_day"
        time[:] = np.arange(4) * 30.0
        lat = nc.createVariable("lat", "f4", ("lat",))
        lat.units = "degrees_north"
        lat[:] = np.linspace(60, -60, 5)  # descending
        lon = nc.createVariable("lon", "f4", ("lon",))
        lon.units = "degrees_east"
        lon[:] = np.arange(8) * 45.0  # 0-360
        level = nc.createVariable("level", "i4", ("level",))
        level[:] = [1000, 850, 500]
        packed = nc.createVariable(
            "packed", "i2", ("time", "lat", "lon"), fill_value=np.int16(-32767), zlib=True
        )
        packed.scale_factor = 0.01
        packed.add_offset = 273.15
        packed.units = "K"
        packed.set_auto_maskandscale(False)
        raw = rng.integers(-3000, 3000, (4, 5, 8)).astype("i2")
        raw[0, 0, :3] = -32767
        packed[:] = raw
        four = nc.createVariable(
            "four_d", "f4", ("time", "level", "lat", "lon"), zlib=True, chunksizes=(1, 1, 5, 8)
        )
        four.long_name = 'a "4-D" field \\ with escapes'
        four[:] = rng.normal(size=(4, 3, 5, 8)).astype("f4")
        for dtype in ("i1", "u1", "u2", "u4", "i8", "u8"):
            var = nc.createVariable(f"v_{dtype}", dtype, ("lat", "lon"))
            info = np.iinfo(dtype)
            values = np.linspace(max(info.min, -(2**40)), min(info.max, 2**40), 40)
            var[:] = values.astype(dtype).reshape(5, 8)
            var.valid_max = np.array(info.max if dtype != "u8" else 2**40, dtype=dtype)
        big = nc.createVariable("v_i8_huge", "i8", ("lat",))
        big[:] = np.array([2**62, -(2**62), 1, 2**53 + 1, 0], dtype="i8")
        names = nc.createVariable("station", str, ("lat",))
        for i, text in enumerate(["Zürich", 'a "quote"', "back\\slash", "", "x" * 40]):
            names[i] = text
        chars = nc.createVariable("code", "S1", ("lat", "strlen"))
        chars[:] = netCDF4.stringtochar(np.array(["ABC", "de", "", "123456", "x y"], "S6"))
        scalar = nc.createVariable("crs", "i4", ())
        scalar.grid_mapping_name = "latitude_longitude"
        scalar.assignValue(0)
        reserved = nc.createVariable("Grid", "f8", ("lat",))  # a DAP keyword as a name
        reserved[:] = np.arange(5.0)
        spaced = nc.createVariable("air temp", "f4", ("lat",))  # a space in a name
        spaced[:] = np.arange(5.0) + 0.5


@pytest.fixture(scope="module")
def dap_folder(archive: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("dap")
    write_awkward(root / "awkward.nc")
    shutil.copy(archive / "cmip6" / "ta_Amon_1950.nc", root)
    shutil.copy(archive / "cmip6" / "ta_Amon_noleap.nc", root)
    shutil.copy(archive / "groups.nc", root)
    for name in ("ostia_monthly.nc", "A1B_north_america.nc"):
        shutil.copy(DATA / "grids" / name, root)
    return root


@pytest.fixture(scope="module")
def dap_server(dap_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server([str(dap_folder)], tmp_path_factory.mktemp("dap-state"))
    yield srv
    srv.stop()


def local_raw(path: Path) -> netCDF4.Dataset:
    nc = netCDF4.Dataset(path)
    nc.set_auto_maskandscale(False)
    nc.set_auto_chartostring(False)
    return nc


def numeric_variables(nc: netCDF4.Dataset) -> list[str]:
    return [n for n, v in nc.variables.items() if v.dtype != str and v.dtype.kind != "S"]


# -- libnetcdf ---------------------------------------------------------------------------
@pytest.mark.parametrize("ds_id", list(FILES))
def test_netcdf4_reads_every_variable_like_the_local_file(
    dap_server: Server, dap_folder: Path, ds_id: str
) -> None:
    """Decoded values (mask, scale) of whole variables, hyperslabs and strided ones."""
    url = f"{dap_server.url}/opendap/{ds_id}"
    with netCDF4.Dataset(dap_folder / FILES[ds_id]) as local, netCDF4.Dataset(url) as remote:
        assert set(remote.dimensions) >= set(local.dimensions) - {"strlen"}
        for name in numeric_variables(local):
            lv = local[name]
            if name in DAP2_ABSENT:
                assert dap2_name(name) not in remote.variables
                continue
            rv = remote[dap2_name(name)]
            assert rv.dimensions == lv.dimensions, name
            for attr in ("units", "calendar", "scale_factor", "add_offset", "_FillValue"):
                if attr in lv.ncattrs():
                    np.testing.assert_array_equal(rv.getncattr(attr), lv.getncattr(attr))
            if not {"_FillValue", "missing_value"} & set(lv.ncattrs()):
                # netCDF4 masks a type's default fill value only in local files
                lv.set_auto_mask(False)
                rv.set_auto_mask(False)
            for make in SELECTIONS:
                sel = make(lv.shape)
                expected, got = lv[sel], rv[sel]
                np.testing.assert_array_equal(np.ma.getmaskarray(got), np.ma.getmaskarray(expected))
                np.testing.assert_array_equal(np.ma.filled(got, 0), np.ma.filled(expected, 0))


# DAP2 has no 64-bit integers: those that Float64 holds exactly are served as Float64,
# the others are left out of DAP2 (DAP4 carries them).
DAP2_ABSENT = {"v_i8_huge"}


def dap2_name(name: str) -> str:
    """libnetcdf keeps the DDS's %-escapes in names (`air%20temp`)."""
    return name.replace(" ", "%20")


def test_xarray_netcdf4_engine_equals_local(dap_server: Server, dap_folder: Path) -> None:
    for ds_id in ("ta_Amon_1950", "ta_Amon_noleap", "ostia_monthly", "A1B_north_america"):
        local = xr.open_dataset(dap_folder / FILES[ds_id])
        remote = xr.open_dataset(f"{dap_server.url}/opendap/{ds_id}", engine="netcdf4")
        xr.testing.assert_equal(remote, local)
        for name in local.variables:
            attrs = {dap2_name(k): v for k, v in local[name].attrs.items()}
            assert remote[name].attrs == attrs, name
            for key in ("units", "calendar", "dtype", "scale_factor", "add_offset"):
                assert remote[name].encoding.get(key) == local[name].encoding.get(key), (
                    name,
                    key,
                )
        name = next(iter(local.data_vars))
        strided = {d: slice(1, None, 3) for d in local[name].dims}
        xr.testing.assert_equal(remote[name].isel(strided), local[name].isel(strided))


@pytest.mark.skipif(NCDUMP is None, reason="ncdump (Debian netcdf-bin) is not installed")
def test_ncdump_header_and_values(dap_server: Server, dap_folder: Path) -> None:
    url = f"{dap_server.url}/opendap/ta_Amon_1950"
    path = dap_folder / "ta_Amon_1950.nc"
    remote = _ncdump("-h", url)
    local = _ncdump("-h", str(path))
    assert _declarations(remote) == _declarations(local)
    assert _attributes(remote) == _attributes(local)
    for var in ("ta", "time", "lat"):
        assert _data(_ncdump("-v", var, url), var) == _data(_ncdump("-v", var, str(path)), var)


def _ncdump(*args: str) -> str:
    assert NCDUMP is not None
    done = subprocess.run([NCDUMP, *args], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def _declarations(text: str) -> list[str]:
    return sorted(
        ln.strip()
        for ln in text.splitlines()
        if re.match(r"\s+\w+ \w+\(.*\) ;", ln) or "UNLIMITED" in ln
    )


def _attributes(text: str) -> list[str]:
    return sorted(
        ln.strip()
        for ln in text.splitlines()
        if re.match(r"\s+\w*:\w+ = ", ln) and ":_NCProperties" not in ln and ":_" not in ln
    )


def _data(text: str, var: str) -> str:
    body = text.split("data:", 1)[1]
    found = re.search(rf"\n {var} =(.*?);", body, re.S)
    assert found, text[-500:]
    return " ".join(found.group(1).split())


# -- pydap ---------------------------------------------------------------------------------
@pytest.mark.parametrize("protocol", ["dap2", "dap4"])
@pytest.mark.parametrize("ds_id", ["ta_Amon_1950", "awkward", "ostia_monthly"])
def test_pydap_reads_stored_values(
    dap_server: Server, dap_folder: Path, ds_id: str, protocol: str
) -> None:
    from pydap.client import open_url

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        remote = open_url(f"{dap_server.url}/opendap/{ds_id}", protocol=protocol)
    with local_raw(dap_folder / FILES[ds_id]) as local:
        for name in numeric_variables(local):
            lv = local[name]
            if protocol == "dap2" and name in DAP2_ABSENT:
                continue
            rv = _pydap_var(remote, dap2_name(name) if protocol == "dap2" else name)
            for make in SELECTIONS:
                sel = make(lv.shape)
                expected = np.asarray(lv[sel])
                got = np.asarray(rv[sel]) if lv.ndim else np.asarray(rv[:])
                if rv.attributes.get("_Unsigned") == "false":  # DAP2 Byte is unsigned:
                    got = got.astype(lv.dtype.str.replace("i", "u")).view(lv.dtype)  # int8
                np.testing.assert_array_equal(got.reshape(expected.shape), expected, err_msg=name)


def _pydap_var(ds: Any, name: str) -> Any:
    for key in (name, "/" + name):
        try:
            var = ds[key]
        except KeyError:
            continue
        return var.array if hasattr(var, "array") and not hasattr(var, "shape") else var
    raise KeyError(name)


def test_xarray_pydap_engine_equals_local(dap_server: Server, dap_folder: Path) -> None:
    local = xr.open_dataset(dap_folder / "ta_Amon_1950.nc")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        remote = xr.open_dataset(f"{dap_server.url}/opendap/ta_Amon_1950", engine="pydap")
    xr.testing.assert_equal(remote, local)


# -- DAP4 through libnetcdf ----------------------------------------------------------------
@pytest.mark.parametrize("ds_id", ["ta_Amon_1950", "awkward", "A1B_north_america"])
def test_netcdf4_dap4_reads_like_local(dap_server: Server, dap_folder: Path, ds_id: str) -> None:
    url = "dap4://" + dap_server.url.removeprefix("http://") + f"/opendap/{ds_id}"
    with netCDF4.Dataset(dap_folder / FILES[ds_id]) as local, netCDF4.Dataset(url) as remote:
        for name in numeric_variables(local):
            lv, rv = local[name], remote[name]
            assert rv.dtype == lv.dtype, name
            for make in SELECTIONS:
                sel = make(lv.shape)
                expected, got = lv[sel], rv[sel]
                np.testing.assert_array_equal(np.ma.getmaskarray(got), np.ma.getmaskarray(expected))
                np.testing.assert_array_equal(np.ma.filled(got, 0), np.ma.filled(expected, 0))


# -- protocol details ----------------------------------------------------------------------
def test_dods_headers_exact_length_and_xdr(dap_server: Server, dap_folder: Path) -> None:
    """The body is the DDS, `\nData:\n`, then XDR: the count twice, Int16 as 4 bytes."""
    url = f"{dap_server.url}/opendap/ta_Amon_1950.dods?ta.ta[0:1:2][0:2:10][5:1:7]"
    r = httpx.get(url)
    assert r.status_code == 200
    assert r.headers["content-description"] == "dods_data"
    assert r.headers["xdods-server"]
    assert r.headers["access-control-allow-origin"] == "*"
    assert int(r.headers["content-length"]) == len(r.content)
    dds, data = r.content.split(b"\nData:\n", 1)
    assert re.search(rb"Int16 ta\[time = 3\]\[lat = 6\]\[lon = 3\];", dds)
    count, again = np.frombuffer(data[:8], ">u4")
    assert count == again == 3 * 6 * 3
    got = np.frombuffer(data[8 : 8 + 4 * count], ">i4").reshape(3, 6, 3)
    with local_raw(dap_folder / "ta_Amon_1950.nc") as local:
        np.testing.assert_array_equal(got, local["ta"][0:3, 0:11:2, 5:8])


@pytest.mark.parametrize(
    ("query", "words"),
    [
        ("ta[0:1:99][0][0]", ["ta", "99"]),
        ("ta[5:1:2][0][0]", ["ta"]),
        ("nope", ["nope"]),
        ("ta[0:0:3][0][0]", ["stride"]),
        ("ta[0][0", ["ta"]),
        ("ta[0][0][0][0]", ["ta"]),
    ],
)
def test_bad_constraints_get_a_dap2_error(dap_server: Server, query: str, words: list[str]) -> None:
    for suffix in (".dods", ".dds", ".ascii"):
        r = httpx.get(f"{dap_server.url}/opendap/ta_Amon_1950{suffix}?{query}")
        assert r.status_code == 400, (suffix, query, r.text)
        assert r.text.startswith("Error {"), r.text
        assert re.search(r"code = 400;", r.text)
        message = re.search(r'message = "(.*)";', r.text, re.S)
        assert message
        for word in words:
            assert word in message.group(1), message.group(1)


def test_bad_dap4_constraint_gets_the_dap4_error_document(dap_server: Server) -> None:
    r = httpx.get(
        f"{dap_server.url}/opendap/ta_Amon_1950.dap", params={"dap4.ce": "/ta[0:1:99][0][0]"}
    )
    assert r.status_code == 400
    assert "<Error" in r.text and "ta" in r.text


def test_unknown_dataset_and_suffix(dap_server: Server) -> None:
    r = httpx.get(f"{dap_server.url}/opendap/nope.dds")
    assert r.status_code == 404 and r.text.startswith("Error {")
    r = httpx.get(f"{dap_server.url}/opendap/ta_Amon_1950.json")
    assert r.status_code == 404 and "suffix" in r.text


def test_id_may_keep_its_file_extension(dap_server: Server) -> None:
    a = httpx.get(f"{dap_server.url}/opendap/ta_Amon_1950.nc.dds")
    b = httpx.get(f"{dap_server.url}/opendap/ta_Amon_1950.dds")
    assert a.status_code == b.status_code == 200 and a.text == b.text


def test_group_is_its_own_dataset(dap_server: Server, dap_folder: Path) -> None:
    url = f"{dap_server.url}/opendap/groups/forecast"
    with netCDF4.Dataset(url) as remote, netCDF4.Dataset(dap_folder / "groups.nc") as local:
        np.testing.assert_array_equal(remote["wind"][:], local["forecast"]["wind"][:])


def test_too_large_is_refused_before_data(
    dap_folder: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    srv = start_server(
        [str(dap_folder)],
        tmp_path_factory.mktemp("dap-small"),
        env={"OUTCROP_MAX_RESPONSE_MB": "1"},
    )
    try:
        r = httpx.get(f"{srv.url}/opendap/ostia_monthly.dods?surface_temperature")
        assert r.status_code == 413 and r.text.startswith("Error {") and "1 MB" in r.text
    finally:
        srv.stop()


def test_strings_and_char_arrays(dap_server: Server, dap_folder: Path) -> None:
    """DAP4 carries NC_STRING and char arrays as the file has them. DAP2 has Strings only
    (sent as UTF-8): libnetcdf makes them char arrays of 64 (`maxStrlen64`) and reads a
    `\\` in them as an escape."""
    path = dap_folder / "awkward.nc"
    host = dap_server.url.removeprefix("http://")
    with local_raw(path) as local:
        station = list(local["station"][:])
        code = local["code"][:]
    with netCDF4.Dataset(f"dap4://{host}/opendap/awkward") as remote:
        remote.set_auto_chartostring(False)
        assert list(remote["station"][:]) == station
        np.testing.assert_array_equal(remote["code"][:], code)
    with netCDF4.Dataset(f"{dap_server.url}/opendap/awkward") as remote:
        got = list(remote["station"][:])  # `_Encoding = "utf-8"` makes them str
        assert got == [w.replace("\\", "") for w in station]  # libnetcdf drops the `\\`
        codes = [str(s) for s in netCDF4.chartostring(np.ma.filled(remote["code"][:], b""))]
        assert codes == [str(s) for s in netCDF4.chartostring(code)]


def test_dap4_checksums_are_verified_by_libnetcdf(dap_server: Server, dap_folder: Path) -> None:
    host = dap_server.url.removeprefix("http://")
    url = f"dap4://{host}/opendap/ta_Amon_1950?dap4.checksum=true"
    with netCDF4.Dataset(url) as remote, netCDF4.Dataset(dap_folder / "ta_Amon_1950.nc") as local:
        np.testing.assert_array_equal(remote["ta"][:], local["ta"][:])
    r = httpx.get(
        f"{dap_server.url}/opendap/ta_Amon_1950.dap",
        params={"dap4.ce": "/lat", "dap4.checksum": "true"},
    )
    assert r.status_code == 200 and r.headers["content-type"].startswith(
        "application/vnd.opendap.dap4.data"
    )
    body = _dap4_payload(r.content)
    dmr, data = body.split(b"\r\n", 1)
    with local_raw(dap_folder / "ta_Amon_1950.nc") as local:
        lat = np.asarray(local["lat"][:])
    raw = lat.astype("<f8").tobytes()
    assert data[: len(raw)] == raw
    assert int.from_bytes(data[len(raw) : len(raw) + 4], "little") == zlib.crc32(raw)
    assert b"_DAP4_Checksum_CRC32" in dmr


def _dap4_payload(body: bytes) -> bytes:
    """The chunks' contents joined (each chunk: 4-byte header, flags and 24-bit length)."""
    out, at = bytearray(), 0
    while at < len(body):
        header = int.from_bytes(body[at : at + 4], "big")
        flags, size = header >> 24, header & 0xFFFFFF
        out += body[at + 4 : at + 4 + size]
        at += 4 + size
        if flags & 0x01:
            break
    return bytes(out)


def test_a_read_failing_mid_body_drops_the_connection(tmp_path: Path) -> None:
    """Values never arrive silently wrong: a file cut short while its response streams
    ends the connection before the announced length."""
    folder = tmp_path / "files"
    folder.mkdir()
    path = folder / "big.nc"
    rng = np.random.default_rng(0)
    with netCDF4.Dataset(path, "w") as nc:
        nc.createDimension("t", 64)
        nc.createDimension("x", 262_144)
        var = nc.createVariable("v", "f4", ("t", "x"), zlib=True, chunksizes=(1, 262_144))
        for t in range(64):
            var[t] = rng.random(262_144, dtype="f4")
    srv = start_server([str(folder)], tmp_path / "state")
    try:
        with httpx.stream("GET", f"{srv.url}/opendap/big.dods?v") as r:
            assert r.status_code == 200
            announced = int(r.headers["content-length"])
            blocks = r.iter_raw()
            received = len(next(blocks))
            with path.open("r+b") as f:
                f.truncate(1 << 20)
            with pytest.raises(httpx.RemoteProtocolError):
                for block in blocks:
                    received += len(block)
            assert received < announced
    finally:
        srv.stop()


def test_content_negotiation_without_suffix(dap_server: Server) -> None:
    url = f"{dap_server.url}/opendap/ta_Amon_1950"
    dmr = httpx.get(url, headers={"Accept": "application/vnd.opendap.dap4.dataset-metadata+xml"})
    assert dmr.status_code == 200 and "<Dataset" in dmr.text
    assert dmr.text == httpx.get(f"{url}.dmr").text
    data = httpx.get(
        url,
        params={"dap4.ce": "/lat"},
        headers={"Accept": "application/vnd.opendap.dap4.data"},
    )
    assert data.status_code == 200
    assert data.content == httpx.get(f"{url}.dap", params={"dap4.ce": "/lat"}).content
    person = httpx.get(url, headers={"Accept": "text/html"}, follow_redirects=True)
    assert person.status_code == 200 and str(person.url).endswith("/opendap/ta_Amon_1950.html")


def test_zarr_and_netcdf3_sources_read_like_local(server: Server, archive: Path) -> None:
    """Sources without stored HDF5 chunks go through the driver: a Zarr store is served
    in the form `to_netcdf` would store it, a NetCDF3 file as it is."""
    with netCDF4.Dataset(f"{server.url}/opendap/stores/ta_v2") as remote:
        local = xr.open_zarr(archive / "stores" / "ta_v2.zarr")
        np.testing.assert_array_equal(
            np.ma.filled(remote["ta"][:], np.nan), local["ta"].values.astype("f8")
        )
        assert remote["ta"].dtype == np.dtype("i2")  # still packed, as the store has it
        assert remote["ta"].scale_factor == 0.01
        assert remote["time"].units == "days since 1990-01-01"
    local3 = xr.open_dataset(archive / "cmip6" / "ta_Amon_noleap.nc")
    remote3 = xr.open_dataset(f"{server.url}/opendap/cmip6/ta_Amon_noleap", engine="netcdf4")
    xr.testing.assert_identical(remote3.ta, local3.ta)


@pytest.mark.parametrize("path", ["/opendap/ta_Amon_1950.dds", "/zarr/ta_Amon_1950/.zmetadata"])
def test_cors_preflight_and_other_methods(dap_server: Server, path: str) -> None:
    preflight = httpx.options(
        f"{dap_server.url}{path}",
        headers={"Origin": "https://example.org", "Access-Control-Request-Method": "GET"},
    )
    assert preflight.status_code == 204
    assert "GET" in preflight.headers["access-control-allow-methods"]
    post = httpx.post(f"{dap_server.url}{path}", content=b"x")
    assert post.status_code == 405 and post.headers["allow"] == "GET, HEAD, OPTIONS"


def test_size_limit_counts_what_is_sent(tmp_path: Path) -> None:
    """A char array's strings count whole (its projection has no string-length
    dimension); a Grid member counts alone, not as its Grid."""
    folder = tmp_path / "files"
    folder.mkdir()
    with netCDF4.Dataset(folder / "chars.nc", "w") as nc:
        nc.createDimension("n", 1000)
        nc.createDimension("strlen", 800)
        nc.createDimension("x", 1000)
        for dim in ("n", "x"):
            nc.createVariable(dim, "f8", (dim,))[:] = np.arange(1000.0)
        nc.createVariable("names", "S1", ("n", "strlen"))[:] = b"a"  # 0.76 MB of chars
        nc.createVariable("field", "f8", ("n", "x"))[:] = 1.0  # 7.6 MB, a Grid
    srv = start_server([str(folder)], tmp_path / "state", env={"OUTCROP_MAX_RESPONSE_MB": "1"})
    try:
        r = httpx.get(f"{srv.url}/opendap/chars.dods?names")
        assert r.status_code == 200  # 0.76 MB
        r = httpx.get(f"{srv.url}/opendap/chars.dods?names,x,field.x")
        assert r.status_code == 200, r.text  # field.x is x: 8 kB, not the 7.6 MB field
        r = httpx.get(f"{srv.url}/opendap/chars.dods?field[0:1:49][0:1:999]")
        assert r.status_code == 200, r.text  # 0.38 MB
        r = httpx.get(f"{srv.url}/opendap/chars.dods?names,field[0:1:49][0:1:999]")
        assert r.status_code == 413, r.text  # 0.76 MB of strings + 0.38 MB
    finally:
        srv.stop()
