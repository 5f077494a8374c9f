"""DAP2 without a server: constraints, DDS and DAS read back by pydap's parsers, and the
XDR of `.dods` decoded independently (numpy, the DAP2 rules) and by pydap's unpacker,
compared with the stored values."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xarray as xr
from pydap.handlers.dap import unpack_dap2_data
from pydap.lib import old_BytesReader, walk
from pydap.model import BaseType, GridType, StructureType
from pydap.parsers.das import parse_das
from pydap.parsers.dds import dds_to_dataset

from outcrop.errors import BadQuery
from outcrop.formats import dap2
from outcrop.formats.dap import Hyperslab, Projection

GRIDS = Path(__file__).resolve().parents[1] / "data" / "grids"
# pydap's dtype for each DAP2 type → how XDR sends it (Int16 and UInt16 in 4 bytes)
XDR = {"|u1": "u1", ">i2": ">i4", ">u2": ">u4", ">i4": ">i4", ">u4": ">u4", ">f4": ">f4"}
XDR[">f8"] = ">f8"


class MemoryValues:
    """`Values` over a loaded dataset, in pieces of `size` values that end anywhere
    (inside rows and strings), as a slab reader may."""

    def __init__(self, ds: xr.Dataset, size: int = 7) -> None:
        self.ds = ds
        self.size = size
        self.asked: list[tuple[str, tuple[slice, ...]]] = []

    def slabs(self, name: str, index: tuple[slice, ...]) -> Iterator[np.ndarray[Any, Any]]:
        self.asked.append((name, index))
        data = np.asarray(self.ds.variables[name].values[index])
        if data.ndim == 0:
            yield data
            return
        flat = data.reshape(-1)
        for start in range(0, flat.size, self.size):
            yield flat[start : start + self.size]


def awkward() -> xr.Dataset:
    """A dataset in its stored form with every dtype, strings, scalars and odd names."""
    chars = np.array([b"abc", b"abcdef", b""], dtype="S6").view("S1").reshape(3, 6)
    every = {
        "v_int8": np.array([-128, -1, 0, 127, 5], "i1"),
        "v_uint8": np.array([0, 1, 128, 255, 7], "u1"),
        "v_bool": np.array([True, False, True, True, False]),
        "v_uint16": np.array([0, 1, 40000, 65535, 3], "u2"),
        "v_int32": np.array([-(2**31), -1, 0, 2**31 - 1, 3], "i4"),
        "v_uint32": np.array([0, 1, 2**31, 2**32 - 1, 9], "u4"),
        "v_int64": np.array([-(2**53), -1, -9223372036854775806, 2**53, 12], "i8"),
        "v_uint64": np.array([0, 1, 2**40, 2**53, 4], "u8"),
        "v_float32": np.array([np.nan, -1.5, 0.1, 1e20, 3], "f4"),
        "v_float64": np.array([np.inf, -np.inf, 0.1, 1e300, 3], "f8"),
    }
    ds = xr.Dataset(
        {
            "ta": (
                ("time", "lat", "lon"),
                (np.arange(60).reshape(3, 4, 5) * 7 - 100).astype("i2"),
                {
                    "_FillValue": np.int16(-32767),
                    "scale_factor": 0.01,
                    "add_offset": 250.0,
                    "long_name": 'Air "temperature" \\ at 2 m',
                },
            ),
            **{name: ("lon", values) for name, values in every.items()},
            "chars": (("n", "strlen"), chars),
            "names": ("n", np.array(["alpha", "", 'üñí "q"'], dtype=object)),
            "scalar_u1": ((), np.uint8(200)),
            "scalar_i1": ((), np.int8(-5)),
            "scalar_i2": ((), np.int16(-3)),
            "scalar_f8": ((), np.float64(1.25)),
            "Float32": (("lat", "n"), np.arange(12, dtype="f4").reshape(4, 3), odd_attrs()),
        },
        coords={
            "time": ("time", [0.0, 30.0, 60.0], {"units": "days since 2000-01-01"}),
            "lat": ("lat", np.array([60, 20, -20, -60], "f4"), {"units": "degrees_north"}),
            "lon": ("lon", np.arange(5, dtype="f4") * 72),
        },
        attrs={"title": 'Global "quoted" \\ back', "history": "line1\nline2", "f8": 6371229.0},
    )
    ds["v_int64"].attrs["_FillValue"] = np.int64(-9223372036854775806)
    ds["v_float32"].attrs["_FillValue"] = np.float32(1e20)
    ds.encoding["unlimited_dims"] = {"time"}
    return ds


def odd_attrs() -> dict[str, Any]:
    return {
        "Model scenario": "A1B",
        "Dataset": np.array([1, 2, 3], "i2"),
        "u8attr": np.uint64(2**60),
        "i8attr": np.array([-5, 6], "i8"),
        "i1attr": np.array([-5, 6], "i1"),
        "u4attr": np.uint32(2**32 - 1),
        "f4nan": np.float32(np.nan),
        "f4fill": np.float32(1e20),
        "f8inf": np.array([np.inf, -np.inf, 0.1]),
        "empty": "",
        "multi": ["a", "b"],
        "raw": b"bytes \xc3\xa9",
    }


def wire_values(values: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """Stored values as the DAP2 type chosen for them holds them (the mapping table)."""
    kind, size = values.dtype.kind, values.dtype.itemsize
    if kind == "b" or (kind == "i" and size == 1):
        return values.view("u1") if kind == "i" else values.astype("u1")
    if kind in "iu" and size == 8:
        return values.astype("f8")
    return values


def decode(body: bytes) -> tuple[Any, dict[str, Any]]:
    """Independent XDR decoding of a `.dods` body, walking the DDS as pydap parses it:
    numeric arrays carry their count twice, Strings once; Int16/UInt16 take 4 bytes;
    Byte arrays are padded to 4; a scalar Byte takes 4 bytes."""
    head, data = body.split(b"\nData:\n", 1)
    dataset = dds_to_dataset(head.decode("ascii") + "\n")
    found: dict[str, Any] = {}
    pos = 0

    def take(n: int) -> bytes:
        nonlocal pos
        pos += n
        assert pos <= len(data)
        return data[pos - n : pos]

    for var in walk(dataset, BaseType):
        n = math.prod(var.shape)
        if var.shape:
            counts = np.frombuffer(take(4 if var.dtype.kind == "S" else 8), ">u4")
            assert (counts == n).all()
        if var.dtype.kind == "S":
            items = []
            for _ in range(n):
                length = int(np.frombuffer(take(4), ">u4")[0])
                items.append(take(length))
                assert take(-length % 4) == bytes(-length % 4)
            found[var.id] = items
            continue
        wire = np.dtype(XDR[var.dtype.str])
        if not var.shape and wire == np.dtype("u1"):
            word = take(4)
            assert word[0] == word[3] and word[1:3] == b"\0\0"
            found[var.id] = np.frombuffer(word[3:], "u1").reshape(())
            continue
        found[var.id] = np.frombuffer(take(n * wire.itemsize), wire).reshape(var.shape)
        if wire == np.dtype("u1"):
            assert take(-n % 4) == bytes(-n % 4)
    assert pos == len(data)
    return dataset, found


def body(ds: xr.Dataset, query: str = "", name: str = "awk.nc") -> bytes:
    constraint = dap2.parse_constraint(query, ds)
    return b"".join(dap2.dods(ds, name, constraint, MemoryValues(ds)))


def expected_strings(var: xr.Variable, index: tuple[slice, ...] = ()) -> list[bytes]:
    values = np.asarray(var.values)
    if var.dtype == np.dtype("S1"):
        values = values.view(f"S{var.shape[-1]}")[..., 0]
    return [v if isinstance(v, bytes) else v.encode() for v in values[index].ravel().tolist()]


# -- constraints ------------------------------------------------------------------------------


def test_an_empty_constraint_is_the_whole_dataset() -> None:
    assert dap2.parse_constraint("", awkward()) == ()


def test_percent_encoded_hyperslabs_are_read_with_inclusive_stops() -> None:
    constraint = dap2.parse_constraint("ta%5B0:1:2%5D%5B1:3%5D%5B4%5D,lat", awkward())
    assert constraint == (
        Projection("ta", (Hyperslab(0, 1, 2), Hyperslab(1, 1, 3), Hyperslab(4, 1, 4))),
        Projection("lat", (Hyperslab(0, 1, 3),)),
    )


def test_grid_members_and_strides_are_projections_of_the_grid() -> None:
    constraint = dap2.parse_constraint("ta.ta[0:2:2][0][1:3:4],ta.lon[0:4:4]", awkward())
    assert constraint == (
        Projection("ta", (Hyperslab(0, 2, 2), Hyperslab(0, 1, 0), Hyperslab(1, 3, 4)), "ta"),
        Projection("ta", (Hyperslab(0, 4, 4),), "lon"),
    )


def test_a_char_array_is_constrained_without_its_string_length() -> None:
    assert dap2.parse_constraint("chars[1:2]", awkward()) == (
        Projection("chars", (Hyperslab(1, 1, 2),)),
    )


def test_escaped_names_and_names_with_dots_are_found() -> None:
    ds = xr.Dataset({"a b": ("x", [1.0, 2.0]), "air.2m": ("x", [3.0, 4.0])}, {"x": [0, 1]})
    # once escaped (pydap), twice (libnetcdf: a URL-encoded DAP2 escape), dots raw or not
    for query in ("a%20b[1],air.2m", "a%2520b[1],air%2E2m", "a%2520b%5B1%5D,air%252E2m"):
        assert dap2.parse_constraint(query, ds) == (
            Projection("a b", (Hyperslab(1, 1, 1),)),
            Projection("air.2m", (Hyperslab(0, 1, 1),)),
        )
    # pydap's air%2E2m.air%2E2m, which its HTTP library sends with the dots decoded
    assert dap2.parse_constraint("air.2m.air.2m[1],air.2m.x", ds) == (
        Projection("air.2m", (Hyperslab(1, 1, 1),), "air.2m"),
        Projection("air.2m", (Hyperslab(0, 1, 1),), "x"),
    )


def test_the_same_projection_twice_is_answered_once() -> None:
    assert len(dap2.parse_constraint("lat,lat[0:3],time", awkward())) == 2


@pytest.mark.parametrize(
    ("query", "words"),
    [
        ("ta[0:3][0][0]", ["ta", "'time'", "3 positions", "[0:1:3]"]),
        ("ta[0][2:1][0]", ["ta", "'lat'", "stop 1 is before the start 2"]),
        ("ta[0][0:0:3][0]", ["'lat'", "stride 0"]),
        ("ta[0]", ["ta[time = 3][lat = 4][lon = 5]", "3 dimension(s)", "1 hyperslab(s)"]),
        ("scalar_u1[0]", ["scalar_u1", "scalar"]),
        ("chars[0][0]", ["chars[n = 3]", "1 dimension(s)"]),
        ("nope", ["'nope'", "ta, v_int8"]),
        ("ta.nope", ["'ta.nope'"]),
        ("Float32.lat", ["'Float32.lat'"]),
        ("ta[-1][0][0]", ["[-1]", "non-negative"]),
        ("ta[a:b]", ["[a:b]"]),
        ("ta[0]]", ["[0]]"]),
        ("ta,,lat", ["''"]),
        ("ta&lat>3", ["selections"]),
        ("lat<=3", ["selections"]),
        ("mean(ta,0)", ["server functions"]),
        ("ta[0:1][0][0],ta[0][0][0]", ["ta is asked for twice"]),
    ],
)
def test_bad_constraints_are_refused_naming_what_is_wrong(query: str, words: list[str]) -> None:
    ds = awkward()
    with pytest.raises(BadQuery) as caught:
        dap2.declarations(ds, dap2.parse_constraint(query, ds))
    for word in words:
        assert word in caught.value.message
    assert caught.value.parameter == "constraint"


# -- DDS --------------------------------------------------------------------------------------


def test_the_dds_declares_grids_arrays_scalars_and_strings_as_pydap_reads_them() -> None:
    ds = awkward()
    text = dap2.dds(ds, "awk.nc", ())
    assert text.startswith("Dataset {\n") and text.endswith("\n} awk.nc;\n")
    parsed = dds_to_dataset(text)
    assert isinstance(parsed["ta"], GridType)
    assert list(parsed["ta"].keys()) == ["ta", "time", "lat", "lon"]
    assert parsed["ta"]["ta"].shape == (3, 4, 5)
    assert list(parsed["ta"]["ta"].dims) == ["time", "lat", "lon"]
    assert isinstance(parsed["v_int8"], GridType)
    for name in ("Float32", "names", "chars", "scalar_u1", "time", "lat"):
        assert isinstance(parsed[name], BaseType)
    assert parsed["chars"].shape == (3,)
    assert parsed["names"].shape == (3,)
    assert parsed["scalar_f8"].shape == ()
    dtypes = {var.id: var.dtype.str for var in walk(parsed, BaseType)}
    assert dtypes["ta.ta"] == ">i2"
    assert dtypes["v_int8.v_int8"] == dtypes["v_uint8.v_uint8"] == dtypes["v_bool.v_bool"] == "|u1"
    assert dtypes["v_uint16.v_uint16"] == ">u2"
    assert dtypes["v_uint32.v_uint32"] == ">u4"
    assert dtypes["v_int64.v_int64"] == dtypes["v_uint64.v_uint64"] == ">f8"
    assert dtypes["v_float32.v_float32"] == dtypes["Float32"] == ">f4"
    assert dtypes["names"] == dtypes["chars"] == "|S128"


def test_a_projected_grid_keeps_its_maps_sliced_alike() -> None:
    text = dap2.dds(awkward(), "awk.nc", dap2.parse_constraint("ta[0:2:2][1:3][4]", awkward()))
    grid = dds_to_dataset(text)["ta"]
    assert isinstance(grid, GridType)
    assert grid["ta"].shape == (2, 3, 1)
    assert (grid["time"].shape, grid["lat"].shape, grid["lon"].shape) == ((2,), (3,), (1,))


def test_grid_members_answer_a_structure_in_grid_order() -> None:
    ds = awkward()
    text = dap2.dds(ds, "awk.nc", dap2.parse_constraint("lon,ta.lat[1],ta.ta[0][0][0]", ds))
    parsed = dds_to_dataset(text)
    assert isinstance(parsed["ta"], StructureType)
    assert not isinstance(parsed["ta"], GridType)
    assert list(parsed["ta"].keys()) == ["ta", "lat"]
    assert list(parsed.keys()) == ["ta", "lon"]  # the dataset's order, not the request's


def test_names_outside_the_dap2_set_are_percent_escaped() -> None:
    ds = xr.Dataset({"a b": ("x y", [1.0, 2.0]), "Grid": ((), 1.0)}, attrs={"é": "x"})
    text = dap2.dds(ds, "my file.nc", ())
    assert "Float64 a%20b[x%20y = 2];" in text
    assert "Float64 Grid;" in text  # reserved words are names as they are
    assert text.endswith("} my%20file.nc;\n")
    assert set(dds_to_dataset(text).keys()) == {"a%20b", "Grid"}
    assert "String %C3%A9 " in dap2.das(ds)


# -- DAS --------------------------------------------------------------------------------------


def test_the_das_carries_every_attribute_type_as_pydap_reads_it() -> None:
    attrs = parse_das(dap2.das(awkward()))["Float32"]
    assert attrs["Model%20scenario"] == "A1B"
    assert attrs["Dataset"] == [1, 2, 3]
    assert attrs["u8attr"] == float(2**60)
    assert attrs["i8attr"] == [-5, 6]
    assert attrs["i1attr"] == [-5, 6]
    assert attrs["u4attr"] == 2**32 - 1
    assert math.isnan(attrs["f4nan"])
    assert attrs["f4fill"] == float(np.float32(1e20))  # the float32's exact value
    assert attrs["f8inf"] == [math.inf, -math.inf, 0.1]
    assert attrs["empty"] == ""
    assert attrs["multi"] == ["a", "b"]
    assert attrs["raw"] == "bytes é"


def test_das_types_follow_the_stored_types() -> None:
    lines = dap2.das(awkward()).splitlines()
    for line in (
        "Int16 _FillValue -32767;",
        "Float64 scale_factor 0.01;",
        "Float32 _FillValue 1.0000000200408773e+20;",
        "Float64 _FillValue -9.223372036854776e+18;",
        "Byte i1attr -5, 6;",
        "Int32 i8attr -5, 6;",
        "UInt32 u4attr 4294967295;",
        "Float32 f4nan NaN;",
        "Float64 f8inf Inf, -Inf, 0.1;",
    ):
        assert line in [text.strip() for text in lines]


def test_quotes_and_backslashes_in_strings_are_escaped() -> None:
    text = dap2.das(awkward())
    assert 'String long_name "Air \\"temperature\\" \\\\ at 2 m";' in text
    assert 'String title "Global \\"quoted\\" \\\\ back";' in text


def test_clients_are_told_signedness_encoding_and_the_unlimited_dimension() -> None:
    das = parse_das(dap2.das(awkward()))
    assert das["v_int8"]["_Unsigned"] == "false"
    assert das["scalar_i1"]["_Unsigned"] == "false"
    for name in ("v_uint8", "v_uint16", "v_uint32", "scalar_u1"):
        assert das[name]["_Unsigned"] == "true"
    for name in ("v_bool", "v_int32", "scalar_i2", "ta"):
        assert "_Unsigned" not in das[name]
    assert das["names"]["_Encoding"] == "utf-8"
    assert "_Encoding" not in das["chars"]
    assert das["NC_GLOBAL"] == {
        "title": 'Global \\"quoted\\" \\\\ back',  # pydap leaves the escapes in
        "history": "line1\nline2",
        "f8": 6371229.0,
    }
    assert das["DODS_EXTRA"] == {"Unlimited_Dimension": "time"}


def test_a_variable_keeps_its_own_unsigned_attribute() -> None:
    ds = xr.Dataset({"b": ("x", np.array([1, 2], "i1"), {"_Unsigned": "true"})})
    assert parse_das(dap2.das(ds))["b"] == {"_Unsigned": "true"}


# -- the data response ------------------------------------------------------------------------


def test_dods_of_the_whole_dataset_decodes_to_the_stored_values() -> None:
    ds = awkward()
    _, found = decode(body(ds))
    for name, var in ds.variables.items():
        key = f"{name}.{name}" if f"{name}.{name}" in found else str(name)
        if dap2.dap_type(var) == "String":
            assert found[key] == expected_strings(var)
        else:
            want = wire_values(np.asarray(var.values))
            np.testing.assert_array_equal(found[key], want, strict=False)
            assert found[key].shape == want.shape
    assert found["ta.lat"].tolist() == ds["lat"].values.tolist()  # a map


def test_pydap_unpacks_the_dods_body_to_the_stored_values() -> None:
    ds = awkward().drop_vars(["names"])  # pydap decodes Strings as ASCII only
    raw = body(ds)
    head, data = raw.split(b"\nData:\n", 1)
    parsed = dds_to_dataset(head.decode("ascii"))
    parsed.data = unpack_dap2_data(old_BytesReader(data), parsed)
    np.testing.assert_array_equal(parsed["ta"]["ta"].data, ds["ta"].values)
    np.testing.assert_array_equal(
        parsed["v_int8"]["v_int8"].data.astype("u1").view("i1"), ds["v_int8"].values
    )
    assert parsed["scalar_u1"].data == 200
    assert parsed["chars"].data.tolist() == [b"abc", b"abcdef", b""]
    np.testing.assert_array_equal(parsed["Float32"].data, ds["Float32"].values)


@pytest.mark.parametrize(
    "query",
    [
        "ta[0:2:2][1:3][0:3:4]",
        "ta.ta[2][0:3:3][1:2:4]",
        "ta.lat[1:2:3],ta.time[1]",
        "v_int8[1:2:4],v_uint16[4],v_bool[0:1],chars[1:2],names[0:2:2]",
        "Float32[1:2:3][0:2:2],scalar_i1,scalar_f8",
    ],
)
def test_strided_hyperslabs_are_exact(query: str) -> None:
    ds = awkward()
    constraint = dap2.parse_constraint(query, ds)
    _, found = decode(body(ds, query))
    for projection in constraint:
        name = projection.member or projection.name
        var = ds.variables[name]
        index = projection.index()
        key = name if projection.member is None and name in found else f"{projection.name}.{name}"
        if dap2.dap_type(var) == "String":
            assert found[key] == expected_strings(var, index)
        else:
            np.testing.assert_array_equal(found[key], wire_values(np.asarray(var.values[index])))


@pytest.mark.parametrize(
    "query",
    ["", "ta[0:2:2][1:3][0:3:4]", "ta.lat[1]", "v_uint8[1:3],v_bool", "scalar_u1,scalar_i2"],
)
def test_dods_length_is_the_body_length(query: str) -> None:
    ds = awkward().drop_vars(["names", "chars"])
    constraint = dap2.parse_constraint(query, ds)
    assert dap2.dods_length(ds, "awk.nc", constraint) == len(body(ds, query))


@pytest.mark.parametrize("dtype", ["u1", "i1", "?", "i2", "u2", "i4", "u4", "i8", "u8", "f2"])
@pytest.mark.parametrize("size", [0, 1, 3, 4, 5])
def test_dods_length_holds_for_every_type_and_count(dtype: str, size: int) -> None:
    ds = xr.Dataset({"v": ("x", np.ones(size, dtype)), "s": ((), np.ones((), dtype))})
    _, found = decode(body(ds))
    assert dap2.dods_length(ds, "awk.nc", ()) == len(body(ds))
    assert found["v"].shape == (size,)


def test_string_responses_have_no_length_known_before_reading() -> None:
    assert dap2.dods_length(awkward(), "awk.nc", ()) is None
    assert dap2.dods_length(awkward(), "awk.nc", dap2.parse_constraint("ta", awkward()))


def test_sixty_four_bit_integers_beyond_two_to_the_53_are_refused_before_any_byte() -> None:
    ds = xr.Dataset({"big": ("x", np.array([1, 2**60], "i8")), "ok": ("x", np.array([1, 2]))})
    blocks = dap2.dods(ds, "big.nc", (), MemoryValues(ds))
    with pytest.raises(BadQuery, match=r"big holds 64-bit integers beyond ±2\*\*53 \(such as"):
        next(blocks)
    _, found = decode(body(ds, "ok,big[0]"))
    assert found["big"].tolist() == [1.0]


def test_servable_leaves_out_what_dap2_cannot_carry_exactly() -> None:
    ds = xr.Dataset(
        {
            "huge": ("x", np.array([1, -(2**62)], "i8")),
            "filled": ("x", np.array([2**53, -9223372036854775806], "i8")),
            "unsigned": ("x", np.array([0, 2**63], "u8")),
        },
        coords={"x": ("x", np.array([0, 2**53 + 1], "i8"))},
    )
    ds["filled"].attrs["_FillValue"] = np.int64(-9223372036854775806)
    ds.encoding["unlimited_dims"] = {"x"}
    served = dap2.servable(ds, MemoryValues(ds))
    assert list(served.variables) == ["filled"]
    assert served.encoding["unlimited_dims"] == {"x"}
    assert "Float64 filled[x = 2];" in dap2.dds(served, "a.nc", ())
    with pytest.raises(BadQuery, match=r"huge holds 64-bit integers .* DAP4"):
        dap2.parse_constraint("huge[0]", served)
    kept = awkward()  # ±2**53 and a fill value are exact: nothing to leave out
    assert dap2.servable(kept, MemoryValues(kept)) is kept


def test_no_value_is_read_twice_and_none_outside_the_request() -> None:
    ds = awkward()
    values = MemoryValues(ds)
    list(dap2.dods(ds, "awk.nc", dap2.parse_constraint("ta[1][2][3:4]", ds), values))
    assert values.asked == [
        ("ta", (slice(1, 2, 1), slice(2, 3, 1), slice(3, 5, 1))),
        ("time", (slice(1, 2, 1),)),
        ("lat", (slice(2, 3, 1),)),
        ("lon", (slice(3, 5, 1),)),
    ]


def test_blocks_stay_bounded_whatever_the_variable_size() -> None:
    ds = xr.Dataset({"v": (("y", "x"), np.zeros((300, 1000), "f4"))})
    blocks = list(dap2.dods(ds, "x.nc", (), MemoryValues(ds, size=50_000)))
    assert max(len(b) for b in blocks[1:]) <= 50_000 * 4


@pytest.mark.parametrize("path", sorted(GRIDS.glob("*.nc")), ids=lambda p: p.name)
def test_real_files_round_trip_through_pydap_parsers_and_xdr(path: Path) -> None:
    with xr.open_dataset(path, decode_cf=False) as ds:
        ds.load()
        parsed = dds_to_dataset(dap2.dds(ds, path.name, ()))
        das = parse_das(dap2.das(ds))
        _, found = decode(body(ds, name=path.name))
    assert set(parsed.keys()) == {str(name) for name in ds.variables}
    for name, var in ds.variables.items():
        key = f"{name}.{name}" if f"{name}.{name}" in found else str(name)
        np.testing.assert_array_equal(found[key], var.values)
        for attr, value in var.attrs.items():
            np.testing.assert_array_equal(das[str(name)][dap2.escape(str(attr))], value)
    assert das["NC_GLOBAL"] == {str(k): v for k, v in ds.attrs.items()}
    assert das["DODS_EXTRA"] == {"Unlimited_Dimension": "time"}


# -- .ascii, errors, version ------------------------------------------------------------------


def test_ascii_writes_the_dds_then_each_array_row_by_row() -> None:
    ds = awkward()
    query = "ta[0:1][1:2][0:2],lat[0:1],names,scalar_i1,v_float32"
    text = b"".join(dap2.ascii(ds, "awk.nc", dap2.parse_constraint(query, ds), MemoryValues(ds)))
    dds, values = text.decode().split("-" * 45 + "\n")
    assert dds == dap2.dds(ds, "awk.nc", dap2.parse_constraint(query, ds))
    assert values == (
        "ta.ta[2][2][3]\n"
        "[0][0], -65, -58, -51\n"
        "[0][1], -30, -23, -16\n"
        "[1][0], 75, 82, 89\n"
        "[1][1], 110, 117, 124\n"
        "\n"
        "ta.time[2]\n0.0, 30.0\n\n"
        "ta.lat[2]\n20.0, -20.0\n\n"
        "ta.lon[3]\n0.0, 72.0, 144.0\n\n"
        "v_float32.v_float32[5]\nNaN, -1.5, 0.1, 1e+20, 3.0\n\n"
        "v_float32.lon[5]\n0.0, 72.0, 144.0, 216.0, 288.0\n\n"
        'names[3]\n"alpha", "", "üñí \\"q\\""\n\n'
        "scalar_i1\n-5\n\n"
        "lat[2]\n60.0, 20.0\n\n"
    )


def test_errors_are_dap2_error_documents_with_escaped_messages() -> None:
    assert dap2.error('no "x" \\ here', 400) == (
        b'Error {\n    code = 400;\n    message = "no \\"x\\" \\\\ here";\n};\n'
    )


def test_version_names_the_protocol_and_the_server() -> None:
    text = dap2.version()
    assert text.startswith("Core version: DAP/2.0\nServer version: outcrop/")
