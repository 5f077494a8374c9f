"""DAP4 without a server: constraints, DMRs read by pydap's parser, and data responses
decoded by an independent chunk reader, numpy and pydap's own unpacking."""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote
from xml.etree import ElementTree as ET

import numpy as np
import pytest
import xarray as xr
from pydap.handlers.dap import UNPACKDAP4DATA
from pydap.parsers.dmr import dmr_to_dataset

from outcrop.errors import BadQuery, SourceError, TooLarge
from outcrop.formats import dap4
from outcrop.formats.dap import Hyperslab, Projection, whole

GRIDS = Path(__file__).parents[1] / "data" / "grids"
NS = {"d": dap4.NAMESPACE}


def sample() -> xr.Dataset:
    """A stored-form dataset (as `decode_cf=False` gives it) with awkward content."""
    names = np.array([b"alpha", b"beta", b"gamma"], dtype="S8")
    ds = xr.Dataset(
        {
            "ta": (
                ("time", "lat", "lon"),
                (np.arange(4 * 5 * 6).reshape(4, 5, 6) * 37 % 2000 - 1000).astype("i2"),
                {
                    "_FillValue": -32767,  # a Python int: served typed like the variable
                    "scale_factor": np.float32(0.01),
                    "add_offset": np.float32(273.15),
                    "units": "K",
                },
            ),
            "name": (("station", "strlen"), names.view("S1").reshape(3, 8)),
            "label": (("station",), np.array(["un", "deux", ""], dtype=object)),
            "flag": (("station",), np.array([True, False, True])),
            "half": (("station",), np.array([0.5, -1.25, 3.0], dtype="f2")),
            "big": (("station",), np.array([0, 2**63, 2**64 - 1], dtype=">u8")),
            "tiny": (("station",), np.array([-128, 0, 127], dtype="i1")),
            "bytes": (("station",), np.array([0, 128, 255], dtype="u1")),
            "u16": (("station",), np.array([0, 1, 65535], dtype="u2")),
            "u32": (("station",), np.array([0, 1, 2**32 - 1], dtype="u4")),
            "i32": (("station",), np.array([-(2**31), 0, 2**31 - 1], dtype="i4")),
            "i64": (("station",), np.array([-(2**63), 0, 2**63 - 1], dtype="i8")),
            "scalar": ((), np.float64(3.25), {"units": "m"}),
            "wave": (("station",), np.array([1 + 2j, 0, 1], dtype="c8")),
        },
        coords={
            "time": ("time", np.arange(4.0) * 30, {"units": "days since 2000-01-01"}),
            "lat": ("lat", np.array([40, 20, 0, -20, -40], dtype="f4")),
            "lon": ("lon", np.arange(6, dtype="f4") * 60),
        },
        attrs={
            "title": 'quotes " backslash \\ <tags> & amp',
            "multi": np.array([1.5, -2.25, np.nan]),
            "strs": ["one", "two"],
            "f4": np.float32(0.1),
            "u8": np.uint64(2**64 - 1),
            "lines": "a\nb\tc\rd",
            "empty": "",
        },
    )
    ds["time"].attrs["calendar"] = "360_day"
    return ds


class MemoryValues:
    """Values from an in-memory dataset, in pieces of `rows` along the first axis."""

    def __init__(self, ds: xr.Dataset, rows: int = 1) -> None:
        self.ds = ds
        self.rows = rows
        self.calls: list[tuple[str, tuple[slice, ...]]] = []

    def slabs(self, name: str, index: tuple[slice, ...]) -> Iterator[np.ndarray[Any, Any]]:
        self.calls.append((name, index))
        selected = np.asarray(self.ds.variables[name].values[index])
        if selected.ndim == 0:
            yield selected
            return
        for start in range(0, selected.shape[0], self.rows):
            yield selected[start : start + self.rows]


def read_chunks(body: bytes) -> list[tuple[int, bytes]]:
    """(flags, payload) of each chunk: a 4-byte big-endian header, flags in the top byte."""
    chunks, offset = [], 0
    while offset < len(body):
        (header,) = struct.unpack(">I", body[offset : offset + 4])
        length = header & 0xFFFFFF
        chunks.append((header >> 24, body[offset + 4 : offset + 4 + length]))
        offset += 4 + length
    assert offset == len(body)
    return chunks


def response(ds: xr.Dataset, ce: str, checksums: bool = False, rows: int = 1) -> bytes:
    constraint = dap4.parse_constraint(ce, ds)
    return b"".join(dap4.dap(ds, "sample.nc", constraint, MemoryValues(ds, rows), checksums))


def split(body: bytes) -> tuple[int, str, bytes, list[int]]:
    """(first flags, DMR text, data bytes, flags of the data chunks)."""
    (first, dmr_bytes), *data = read_chunks(body)
    assert dmr_bytes.endswith(b"\r\n")
    return first, dmr_bytes[:-2].decode(), b"".join(p for _, p in data), [f for f, _ in data]


def decode(ds: xr.Dataset, constraint: tuple[Projection, ...], data: bytes, checksums: bool):
    """{name: (values, checksum or None)}, decoded with numpy from the DAP4 rules."""
    out, offset = {}, 0
    for p in constraint:
        dtype = ds.variables[p.name].dtype
        count = int(np.prod(p.shape))
        start = offset
        if dtype.kind in "OU":
            values = []
            for _ in range(count):
                (size,) = struct.unpack("<q", data[offset : offset + 8])
                values.append(data[offset + 8 : offset + 8 + size].decode())
                offset += 8 + size
            array = np.array(values, dtype=object).reshape(p.shape)
        else:
            wire = {"b": "u1", "S": "S1", "f": "<f4" if dtype.itemsize == 2 else None}
            code = wire.get(dtype.kind) or dtype.newbyteorder("<").str
            array = np.frombuffer(data, code, count, offset).reshape(p.shape)
            offset += array.nbytes
        crc = None
        if checksums:
            (crc,) = struct.unpack("<I", data[offset : offset + 4])
            assert crc == zlib.crc32(data[start:offset])
            offset += 4
        out[p.name] = (array, crc)
    assert offset == len(data)
    return out


# --------------------------------------------------------------------------- constraints


def test_empty_constraint_projects_every_servable_variable_whole_in_dataset_order():
    ds = sample()
    constraint = dap4.parse_constraint("", ds)
    expected = [str(k) for k in ds.variables if k != "wave"]  # complex has no DAP4 type
    assert [p.name for p in constraint] == expected
    for p in constraint:
        assert p.shape == ds.variables[p.name].shape
        assert isinstance(p, dap4.Dap4Projection) and p.shared


@pytest.mark.parametrize(
    ("ce", "slabs"),
    [
        ("/ta[0:1:3][0:4][0:5]", ((0, 1, 3), (0, 1, 4), (0, 1, 5))),
        ("ta[1][2:3][]", ((1, 1, 1), (2, 1, 3), (0, 1, 5))),
        ("/ta[0:2:3][1:3:4][0:5:5]", ((0, 2, 3), (1, 3, 4), (0, 5, 5))),
        ("/ta[2:][1:2:][]", ((2, 1, 3), (1, 2, 4), (0, 1, 5))),
        ("/ta", ((0, 1, 3), (0, 1, 4), (0, 1, 5))),
        (" /ta[ 3 : 3 ][0][5] ", ((3, 1, 3), (0, 1, 0), (5, 1, 5))),
    ],
)
def test_slices_are_inclusive_hyperslabs(ce, slabs):
    (p,) = dap4.parse_constraint(ce, sample())
    assert p.name == "ta"
    assert p.slabs == tuple(Hyperslab(*s) for s in slabs)


def test_projections_come_in_dataset_order_and_a_repeat_is_one_projection():
    constraint = dap4.parse_constraint("/lon;/ta[0][0][0];/time;/lon[]", sample())
    assert [p.name for p in constraint] == ["ta", "time", "lon"]


def test_dimension_constraint_slices_every_variable_that_does_not_slice_it_itself():
    ds = sample()
    constraint = dap4.parse_constraint("/lat=[1:2:4];/ta;/lat[];/four=[]", ds.rename(lon="four"))
    ta, lat = constraint
    assert ta.slabs[1] == lat.slabs[0] == Hyperslab(1, 2, 4)
    assert ta.slabs[2] == Hyperslab(0, 1, 5)
    assert ta.shared and lat.shared
    (local,) = dap4.parse_constraint("/lat=[1:2:4];/ta[][0:1][]", ds)
    assert local.slabs[1] == Hyperslab(0, 1, 1) and not local.shared


def test_only_dimension_constraints_project_every_variable():
    constraint = dap4.parse_constraint("/station=[1]", sample())
    assert "ta" in [p.name for p in constraint]
    assert {p.slabs[0] for p in constraint if p.name in ("label", "big")} == {Hyperslab(1, 1, 1)}


def test_scalars_accept_no_slice_an_empty_one_or_zero():
    for ce in ("/scalar", "/scalar[]", "/scalar[0]"):
        (p,) = dap4.parse_constraint(ce, sample())
        assert p.slabs == ()


def test_escaped_and_spaced_names():
    ds = xr.Dataset({"a.b;c": ("x", [1, 2]), "with space": ("x", [3, 4])})
    (p,) = dap4.parse_constraint(r"/a\.b\;c[1]", ds)
    assert (p.name, p.slabs) == ("a.b;c", (Hyperslab(1, 1, 1),))
    (q,) = dap4.parse_constraint("/with space[0:1]", ds)
    assert q.name == "with space"


@pytest.mark.parametrize(
    ("ce", "words"),
    [
        ("/nope", ["'nope'", "variables: ta, name"]),
        ("/g/ta", ["groups"]),
        ("/wave", ["'wave'"]),
        ("/ta[0:4][0][0]", ["last index is 3"]),
        ("/ta[2:1][0][0]", ["start 2 is after the stop 1"]),
        ("/ta[0:0:3][0][0]", ["stride must be at least 1"]),
        ("/ta[-1][0][0]", ["[-1] for dimension 'time' of variable 'ta'", "malformed"]),
        ("/ta[a][0][0]", ["malformed", "[start:stride:stop]"]),
        ("/ta[0:1:2:3][0][0]", ["malformed"]),
        ("/ta[0::3][0][0]", ["malformed"]),
        ("/ta[0][0]", ["2 slice(s)", "3 dimension(s) (time, lat, lon)"]),
        ("/ta[0:1,3][0][0]", ["disjoint"]),
        ("/ta|ta>3", ["filters"]),
        ("/ta{x}", ["fields"]),
        ("/scalar[1]", ["scalar"]),
        ("/depth=[0:1]", ["dimension 'depth'", "dimensions: time"]),
        ("/lat=[0][1]", ["exactly one slice"]),
        ("/lat=[0:9]", ["dimension 'lat'", "last index is 4"]),
        ("/ta[0][0][0];/ta[1][0][0]", ["twice"]),
    ],
)
def test_bad_constraints_say_what_is_wrong(ce, words):
    with pytest.raises(BadQuery) as caught:
        dap4.parse_constraint(ce, sample())
    assert caught.value.parameter == "dap4.ce"
    for word in words:
        assert word in caught.value.message


# --------------------------------------------------------------------------- DMR


def test_dmr_read_by_pydap_has_every_variable_with_its_type_shape_and_attributes():
    ds = sample()
    document = dap4.dmr(ds, "sample.nc", ())
    parsed = dmr_to_dataset(document)
    assert unquote(parsed.name) == "sample.nc"  # pydap quotes it
    assert dict(parsed.dimensions) == {str(k): v for k, v in ds.sizes.items()}
    expected = {  # pydap reads Char as uint8 and String as its string type
        "name": np.dtype("u1"),
        "flag": np.dtype("u1"),
        "half": np.dtype("f4"),
    }
    for name, var in ds.variables.items():
        if name == "wave":
            assert name not in parsed
            continue
        got = parsed[name]
        assert got.shape == var.shape
        assert [d.lstrip("/") for d in got.dims] == list(var.dims)
        if var.dtype.kind not in "OU":
            assert got.dtype == expected.get(str(name), var.dtype.newbyteorder("="))
        for key, value in var.attrs.items():
            assert np.all(np.asarray(got.attributes[key]) == np.asarray(value)), key
    attrs = parsed.attributes
    assert attrs["title"] == ds.attrs["title"]
    np.testing.assert_array_equal(attrs["multi"], ds.attrs["multi"])
    assert attrs["strs"] == ["one", "two"]
    assert attrs["f4"] == float(np.float32(0.1))  # the stored float, exactly
    assert attrs["u8"] == 2**64 - 1
    assert attrs["lines"] == "a\nb\tc\rd"
    assert attrs["empty"] == ""


def element(document: str, name: str) -> ET.Element:
    found = ET.fromstring(document).find(f"*[@name='{name}']")
    assert found is not None
    return found


def test_dmr_types_fill_values_and_escaping():
    ds = sample()
    document = dap4.dmr(ds, 'a "quoted" & <odd> name', ())
    root = ET.fromstring(document)
    assert root.tag == f"{{{dap4.NAMESPACE}}}Dataset"
    assert root.get("name") == 'a "quoted" & <odd> name'
    assert (root.get("dapVersion"), root.get("dmrVersion")) == ("4.0", "1.0")
    kinds = {
        el.get("name"): el.tag.split("}")[1] for el in root if el.find("d:Dim", NS) is not None
    }
    assert kinds["ta"] == "Int16" and kinds["name"] == "Char" and kinds["label"] == "String"
    assert kinds["flag"] == "UInt8" and kinds["half"] == "Float32" and kinds["big"] == "UInt64"
    assert kinds["tiny"] == "Int8" and kinds["bytes"] == "UInt8" and kinds["u16"] == "UInt16"
    assert [d.get("name") for d in element(document, "name").findall("d:Dim", NS)] == [
        "/station",
        "/strlen",
    ]
    fill = element(document, "ta").find("d:Attribute[@name='_FillValue']", NS)
    assert (fill.get("type"), fill.get("value")) == ("Int16", "-32767")
    offset = element(document, "ta").find("d:Attribute[@name='add_offset']", NS)
    assert offset.get("type") == "Float32"
    assert np.float32(float(offset.get("value"))) == np.float32(273.15)
    title = root.find("d:Attribute[@name='title']", NS)
    assert title.get("value") == ds.attrs["title"]


def test_dmr_of_control_characters_replaces_what_xml_cannot_carry():
    ds = xr.Dataset(attrs={"bell": "ring\x07", 'k"ey': "v"})
    root = ET.fromstring(dap4.dmr(ds, "x", ()))
    assert root.find("d:Attribute[@name='bell']", NS).get("value") == "ring\ufffd"
    assert root.find("d:Attribute[@name='k\"ey']", NS).get("value") == "v"


def test_constrained_dmr_redeclares_shared_dimensions_and_gives_local_slices_anonymous_ones():
    ds = sample()
    constraint = dap4.parse_constraint("/lat=[1:2:4];/lat;/ta[0:1][][1:2:5];/lon", ds)
    document = dap4.dmr(ds, "x", constraint)
    root = ET.fromstring(document)
    declared = {d.get("name"): d.get("size") for d in root.findall("d:Dimension", NS)}
    assert declared == {"lat": "2", "lon": "6"}
    assert [d.attrib for d in element(document, "ta").findall("d:Dim", NS)] == [
        {"size": "2"},
        {"size": "2"},
        {"size": "3"},
    ]
    parsed = dmr_to_dataset(document)
    assert [str(k) for k in parsed] == ["ta", "lat", "lon"]
    for p in constraint:
        assert parsed[p.name].shape == p.shape


def test_odd_names_are_escaped_as_pydap_and_libnetcdf_read_them():
    ds = xr.Dataset({'t "2" & <x>': (("n obs", "x.y"), np.zeros((3, 2), "f4"))})
    document = dap4.dmr(ds, "x", ())
    dims = [d.get("name") for d in element(document, 't "2" & <x>').findall("d:Dim", NS)]
    assert dims == ["/n obs", "/x.y"]
    (variable,) = dmr_to_dataset(document).values()
    assert unquote(variable.name) == 't "2" & <x>' and variable.shape == (3, 2)


def test_a_plain_projection_keeps_shared_dimensions_only_when_whole():
    ds = sample()
    whole_ta = dap4.dmr(ds, "x", (whole(ds, "ta"),))
    assert element(whole_ta, "ta").find("d:Dim", NS).get("name") == "/time"
    cut = Projection("ta", (Hyperslab(0, 1, 0), Hyperslab(0, 1, 4), Hyperslab(0, 1, 5)))
    assert element(dap4.dmr(ds, "x", (cut,)), "ta").find("d:Dim", NS).get("size") == "1"


def test_dmr_with_checksums_adds_the_crc_attribute():
    ds = sample()
    constraint = dap4.parse_constraint("/ta;/label", ds)
    sums = dap4.crc32s(ds, constraint, MemoryValues(ds))
    document = dap4.dmr(ds, "x", constraint, sums)
    data = split(response(ds, "/ta;/label", checksums=True))[2]
    decoded = decode(ds, constraint, data, checksums=True)
    for name in ("ta", "label"):
        attr = element(document, name).find("d:Attribute[@name='_DAP4_Checksum_CRC32']", NS)
        assert attr.get("type") == "UInt32"
        assert int(attr.get("value")) == decoded[name][1] == sums[name]


@pytest.mark.parametrize("path", sorted(GRIDS.glob("*.nc")), ids=lambda p: p.name)
def test_dmr_of_real_files_matches_the_file(path):
    with xr.open_dataset(path, decode_cf=False) as ds:
        parsed = dmr_to_dataset(dap4.dmr(ds, path.name, ()))
        for name, var in ds.variables.items():
            got = parsed[name]
            assert (got.shape, got.dtype) == (var.shape, var.dtype)
            for key, value in var.attrs.items():
                assert np.all(np.asarray(got.attributes[key]) == np.asarray(value))
        assert parsed.attributes == ds.attrs


# --------------------------------------------------------------------------- data


@pytest.mark.parametrize("checksums", [False, True])
def test_data_response_framing(monkeypatch, checksums):
    monkeypatch.setattr(dap4, "CHUNK_SIZE", 64)
    body = response(sample(), "", checksums)
    chunks = read_chunks(body)
    assert chunks[0][0] == dap4.LITTLE_ENDIAN | (0 if checksums else dap4.NO_CHECKSUMS)
    assert chunks[0][1].startswith(b'<?xml version="1.0" encoding="UTF-8"?>')
    assert [f for f, _ in chunks[1:]] == [dap4.LITTLE_ENDIAN] * (len(chunks) - 2) + [
        dap4.LITTLE_ENDIAN | dap4.END
    ]
    assert all(len(p) == 64 for _, p in chunks[1:-1]) and len(chunks[-1][1]) <= 64


@pytest.mark.parametrize("checksums", [False, True])
@pytest.mark.parametrize("rows", [1, 3])
def test_data_decode_to_the_selected_values(checksums, rows):
    ds = sample()
    ce = "/lat=[1:2:4];/ta[0:2:3][][1:3:5];/name[0:2:2][1:7];/label[1:2];/big;/half;/flag;/scalar"
    constraint = dap4.parse_constraint(ce, ds)
    _, document, data, _ = split(response(ds, ce, checksums, rows))
    decoded = decode(ds, constraint, data, checksums)
    for p in constraint:
        expected = np.asarray(ds.variables[p.name].values[p.index()])
        got = decoded[p.name][0]
        if expected.dtype.kind == "f":
            expected = expected.astype("f4" if expected.dtype.itemsize == 2 else expected.dtype)
        assert got.shape == expected.shape
        np.testing.assert_array_equal(got, expected.astype(got.dtype), strict=False)
    if checksums:
        for p in constraint:
            attr = element(document, p.name).find("d:Attribute[@name='_DAP4_Checksum_CRC32']", NS)
            assert int(attr.get("value")) == decoded[p.name][1]


@pytest.mark.parametrize(
    ("ce", "checksums"),
    [
        ("/lat=[1:2:4];/ta[0:2:3][][1:3:5];/lat;/label;/big;/scalar;/u16", True),
        # pydap skips 4 bytes after every variable, checksums or not: one variable only
        ("/ta[1:2:3][1][0:5:5]", False),
    ],
)
def test_pydap_unpacks_the_data_response(ce, checksums):
    ds = sample().drop_vars(["wave"])
    constraint = dap4.parse_constraint(ce, ds)
    body = response(ds, ce, checksums)
    unpacked = UNPACKDAP4DATA(io.BufferedReader(io.BytesIO(body)), checksums).dataset
    for p in constraint:
        got = np.asarray(unpacked[p.name].data)
        expected = np.asarray(ds.variables[p.name].values[p.index()])
        if expected.dtype.kind == "O":
            got, expected = got.astype(str), expected.astype(str)
        np.testing.assert_array_equal(got, expected)


def test_responses_larger_than_the_buffer_are_read_twice_and_are_the_same(monkeypatch):
    ds = sample()
    held = response(ds, "", checksums=True)
    monkeypatch.setattr(dap4, "BUFFERED", 0)
    values = MemoryValues(ds)
    constraint = dap4.parse_constraint("", ds)
    twice = b"".join(dap4.dap(ds, "sample.nc", constraint, values, True))
    assert twice == held
    assert len(values.calls) == 2 * len(constraint)


def test_data_that_change_between_the_two_readings_end_in_an_error(monkeypatch):
    monkeypatch.setattr(dap4, "BUFFERED", 0)
    ds = sample()

    class Drifting(MemoryValues):
        def slabs(self, name, index):
            for array in super().slabs(name, index):
                yield array + len(self.calls) if array.dtype.kind in "iuf" else array

    stream = dap4.dap(ds, "x", dap4.parse_constraint("/ta", ds), Drifting(ds), True)
    with pytest.raises(SourceError, match="'ta' changed"):
        b"".join(stream)


def test_without_checksums_values_are_read_once_lazily():
    ds = sample()
    values = MemoryValues(ds)
    stream = dap4.dap(ds, "x", dap4.parse_constraint("/ta;/lat", ds), values, False)
    assert values.calls == []
    b"".join(stream)
    assert [name for name, _ in values.calls] == ["ta", "lat"]


def test_validation_happens_before_the_first_byte(monkeypatch):
    ds = sample()
    values = MemoryValues(ds)
    with pytest.raises(BadQuery, match="'nope'"):
        dap4.dap(ds, "x", (Projection("nope", ()),), values, False)
    monkeypatch.setattr(dap4, "MAX_CHUNK", 100)
    with pytest.raises(TooLarge):
        dap4.dap(ds, "x", (), values, True)


def test_a_dataset_without_variables_still_ends_with_an_end_chunk():
    body = b"".join(dap4.dap(xr.Dataset(), "x", (), MemoryValues(xr.Dataset()), False))
    assert [(f, p) for f, p in read_chunks(body)[1:]] == [(dap4.LITTLE_ENDIAN | dap4.END, b"")]


def test_big_endian_sources_are_sent_little_endian():
    ds = xr.Dataset({"v": ("x", np.array([1.5, -2.0, 3.25], dtype=">f8"))})
    data = split(b"".join(dap4.dap(ds, "x", (), MemoryValues(ds), False)))[2]
    np.testing.assert_array_equal(np.frombuffer(data, "<f8"), [1.5, -2.0, 3.25])


# --------------------------------------------------------------------------- errors


def test_error_document():
    root = ET.fromstring(dap4.error('no variable "x" <here> & there', 400))
    assert root.tag == f"{{{dap4.NAMESPACE}}}Error"
    assert root.get("httpcode") == "400"
    assert root.find("d:Message", NS).text == 'no variable "x" <here> & there'
