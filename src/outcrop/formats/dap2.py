"""DAP2 (OPeNDAP 2.0, ESE-RFC-004.1.2) on the wire: constraint expressions, the DDS, the
DAS, the data response (`.dods`, XDR), its `.ascii` form, errors and `.ver`.

Variables. A variable whose every dimension has a 1-D coordinate variable of that name is
a Grid (its Array, then those coordinates as Maps), as THREDDS and Hyrax serve it; the
others are Arrays, or scalars. A projection of Grid members (`temp.temp`, `temp.lat`)
answers a Structure of those members, as libdap does: a projected Grid is no longer a
Grid. The response lists variables in the dataset's order, whatever the order asked.

Types. DAP2 has no signed byte and no 64-bit integers (§3.2.1); each stored dtype is sent
so that netCDF4 / xarray over libnetcdf and pydap read the stored values back:

| stored dtype | DAP2 type | on the wire (§7.3.2, XDR) | added to the DAS |
|---|---|---|---|
| uint8 / bool | Byte | 1 byte, arrays padded to 4 | `_Unsigned "true"` (uint8) |
| int8 | Byte | the byte's bits | `_Unsigned "false"` |
| int16 / uint16 | Int16 / UInt16 | 4 bytes | `_Unsigned "true"` (uint16) |
| int32 / uint32 | Int32 / UInt32 | 4 bytes | `_Unsigned "true"` (uint32) |
| int64 / uint64 | Float64 | 8 bytes | (exact only: see below) |
| float16, float32 | Float32 | 4 bytes | |
| float64 | Float64 | 8 bytes | |
| char array (`S1`) | String, less the last dim | length, bytes, padding | |
| str (NC_STRING), bytes | String | length, UTF-8, padding | `_Encoding "utf-8"` (str) |

libnetcdf makes every Byte, UInt16 and UInt32 signed (its netCDF-3 model of DAP2) and
every String a char array of 64 (`maxStrlen64`); `_Unsigned` and `_Encoding` let netCDF4
and xarray turn them back into the stored values. A 64-bit integer is sent only when
exact in Float64 (|v| <= 2**53, or a `_FillValue` / `missing_value`, which converts as
its attribute does): `servable()` leaves out the variables that hold others (DAP4 carries
them), and `.dods` refuses them before its first byte. Numeric arrays carry their count
twice, Strings once (§7.3.2.1). A scalar Byte is written `v 0 0 v`: libdap and libnetcdf read an XDR
char as a 4-byte big-endian integer (its last byte), pydap reads the first byte.

Attributes keep their type (64-bit integers: Int32 or UInt32 when they fit, else
Float64); floats are written as the shortest text of their exact value (a Float32
widened to 64 bits), so pydap's Python floats still equal the data they describe (xarray
masks `_FillValue` by equality); NaN and Inf are spelt out; strings are quoted with `"` and
`\\` escaped (§7.2.1). Names keep letters, digits, `_` and `-`; every other character is
written `%XX` (its UTF-8 bytes), as the DAP2 grammar asks; libnetcdf and pydap keep such
names escaped (`Model%20scenario`), as with THREDDS.
"""

from __future__ import annotations

import math
import re
import string
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

import numpy as np

from outcrop.errors import BadQuery
from outcrop.formats.dap import Constraint, Hyperslab, Projection, Values, hyperslabs
from outcrop.http import package_version

if TYPE_CHECKING:
    import xarray as xr

PARAMETER = "constraint"
NUMERIC = {
    "b1": "Byte",
    "u1": "Byte",
    "i1": "Byte",
    "i2": "Int16",
    "u2": "UInt16",
    "i4": "Int32",
    "u4": "UInt32",
    "i8": "Float64",
    "u8": "Float64",
    "f2": "Float32",
    "f4": "Float32",
    "f8": "Float64",
}
WIRE: dict[str, np.dtype[Any]] = {
    "Byte": np.dtype("u1"),
    "Int16": np.dtype(">i4"),
    "UInt16": np.dtype(">u4"),
    "Int32": np.dtype(">i4"),
    "UInt32": np.dtype(">u4"),
    "Float32": np.dtype(">f4"),
    "Float64": np.dtype(">f8"),
}
EXACT = 2**53  # the largest integer run a Float64 holds without a gap
SAFE = frozenset(string.ascii_letters + string.digits + "_-")
DROPPED = "dap2_dropped"  # encoding key: the variables `servable` left out
RULE = "-" * 45 + "\n"  # between the DDS and the values of `.ascii`, as THREDDS writes it


# -- variables as DAP2 sees them ------------------------------------------------------------


def escape(name: str, safe: frozenset[str] = SAFE) -> str:
    """A name as the DDS and DAS write it: other characters as %XX of their UTF-8 bytes."""
    return "".join(c if c in safe else "".join(f"%{b:02X}" for b in c.encode()) for c in name)


def is_chars(var: xr.Variable) -> bool:
    """A NetCDF char array: its last dimension is the strings' length."""
    return var.dtype == np.dtype("S1") and var.ndim > 0


def dap_type(var: xr.Variable) -> str | None:
    """The DAP2 type a variable is sent as; None for dtypes DAP2 cannot carry."""
    if var.dtype.kind in "SUO":
        return "String"
    return NUMERIC.get(f"{var.dtype.kind}{var.dtype.itemsize}")


def dap_dims(var: xr.Variable) -> tuple[tuple[str, int], ...]:
    """(name, size) of the dimensions a client sees (a char array loses its last)."""
    dims = tuple(zip(map(str, var.dims), var.shape, strict=True))
    return dims[:-1] if is_chars(var) else dims


def visible(ds: xr.Dataset) -> list[str]:
    """The variables DAP2 can carry, in the dataset's order."""
    return [str(name) for name, var in ds.variables.items() if dap_type(var) is not None]


def maps(ds: xr.Dataset, name: str) -> tuple[str, ...]:
    """A Grid's map names (its dimensions), or () when `name` is not a Grid."""
    var = ds.variables[name]
    dims = tuple(map(str, var.dims))
    if not dims or name in dims or len(set(dims)) < len(dims) or dap_type(var) == "String":
        return ()
    for dim in dims:
        coord = ds.variables.get(dim)
        if coord is None or coord.dims != (dim,) or dap_type(coord) in (None, "String"):
            return ()
    return dims


# -- constraint expressions (§4.1) ------------------------------------------------------------


_SYNTAX = re.compile(r"%(?:5[bBdD]|3[aA])")  # `[`, `]`, `:` as clients escape them


def parse_constraint(query: str, ds: xr.Dataset) -> Constraint:
    """The projections of a DAP2 constraint expression (the URL's raw query string).

    `var`, `var[i]`, `var[start:stop]`, `var[start:stride:stop]` (stop inclusive), one
    hyperslab per dimension or none (all of it), `Grid.member` with or without
    hyperslabs, several separated by commas; names may be %-escaped. Selections and
    server functions are refused: they apply to Sequences, which Outcrop does not serve.
    """
    # Only the syntax is decoded here; names are decoded part by part, once split, so an
    # escaped `&`, `,`, `.` or `<` in a name is not read as syntax.
    text = _SYNTAX.sub(lambda m: unquote(m.group(0)), query).strip()
    projections, _, selections = text.partition("&")
    if selections.strip("&") or any(op in projections for op in "<>="):
        raise BadQuery(
            f"selections ({text!r}) apply to DAP2 Sequences, which this server does not "
            "have; subset grids with hyperslabs: var[start:stride:stop]",
            parameter=PARAMETER,
        )
    if "(" in projections:
        raise BadQuery(
            f"server functions ({projections!r}) are not supported; ask for variables "
            "and hyperslabs: var[start:stride:stop]",
            parameter=PARAMETER,
        )
    if not projections.strip():
        return ()
    asked = (_projection(part.strip(), ds) for part in projections.split(","))
    constraint = tuple(dict.fromkeys(asked))
    declarations(ds, constraint)  # refuses a variable asked for twice, differently
    return constraint


def _projection(item: str, ds: xr.Dataset) -> Projection:
    path, bracket, rest = item.partition("[")
    if not path or not all(part for part in path.split(".")):
        raise BadQuery(
            f"cannot read {item!r} in the constraint: write name, name[start:stride:stop]… "
            "or Grid.member, separated by commas",
            parameter=PARAMETER,
        )
    parts = [unquote(part) for part in path.split(".")]
    try:
        name, member = _resolve(ds, parts)
    except BadQuery:  # libnetcdf escapes names twice (`air%2520temp`)
        twice = [unquote(part) for part in parts]
        if twice == parts:
            raise
        name, member = _resolve(ds, twice)
    slabs = _slabs(item, bracket + rest)
    var = ds.variables[member or name]
    shown = name if member is None else f"{name}.{member}"
    return Projection(name, hyperslabs(shown, dap_dims(var), slabs, PARAMETER), member)


def _resolve(ds: xr.Dataset, path: list[str]) -> tuple[str, str | None]:
    """(variable, Grid member or None) named by a dotted path. Names may hold dots (a
    client's `%2E` may arrive decoded), so every split of the path is tried."""
    joined = ".".join(path)
    if joined in ds.variables and dap_type(ds.variables[joined]) is not None:
        return joined, None
    for cut in range(1, len(path)):
        grid, member = ".".join(path[:cut]), ".".join(path[cut:])
        members = maps(ds, grid) if grid in ds.variables else ()
        if members and member in (grid, *members):
            return grid, member
    if joined in ds.encoding.get(DROPPED, ()):
        raise BadQuery(_wide_message(joined), parameter=PARAMETER)
    names = visible(ds)
    listed = ", ".join(names[:30]) + (", …" if len(names) > 30 else "")
    raise BadQuery(
        f"no variable {joined!r} in this dataset; its variables are {listed} "
        "(a Grid's members as grid.member)",
        parameter=PARAMETER,
    )


def _slabs(item: str, text: str) -> list[tuple[int, int, int | None]]:
    """(start, stride, stop) of each `[…]` in `text`."""
    if not text:
        return []
    if not (text.startswith("[") and text.endswith("]")):
        raise BadQuery(f"cannot read the hyperslabs of {item!r}", parameter=PARAMETER)
    slabs: list[tuple[int, int, int | None]] = []
    for part in text[1:-1].split("]["):
        numbers = [n.strip() for n in part.split(":")]
        if not 1 <= len(numbers) <= 3 or not all(n.isdigit() for n in numbers):
            raise BadQuery(
                f"cannot read [{part}] in {item!r}: write [index], [start:stop] or "
                "[start:stride:stop] with non-negative integers (stop inclusive)",
                parameter=PARAMETER,
            )
        values = [int(n) for n in numbers]
        stride = values[1] if len(values) == 3 else 1
        slabs.append((values[0], stride, values[-1]))
    return slabs


# -- what a response holds -------------------------------------------------------------------


@dataclass(frozen=True)
class Leaf:
    """One array or scalar of a response: a variable, and its hyperslabs as clients see
    its dimensions."""

    name: str
    slabs: tuple[Hyperslab, ...]

    @property
    def count(self) -> int:
        return math.prod(slab.count for slab in self.slabs)

    def index(self, var: xr.Variable) -> tuple[slice, ...]:
        """The stored variable's index (a char array's strings whole)."""
        strings = (slice(None),) if is_chars(var) else ()
        return tuple(s.as_slice() for s in self.slabs) + strings


@dataclass(frozen=True)
class Declaration:
    """One top-level variable of a response: an Array (or scalar), a Grid or a Structure."""

    kind: str
    name: str
    leaves: tuple[Leaf, ...]

    def path(self, leaf: Leaf) -> str:
        own = escape(leaf.name)
        return own if self.kind == "Array" else f"{escape(self.name)}.{own}"


def declarations(ds: xr.Dataset, constraint: Constraint) -> tuple[Declaration, ...]:
    """What a constraint answers, in the dataset's order."""
    if not constraint:
        return tuple(_whole(ds, name, None) for name in visible(ds))
    asked: dict[str, list[Projection]] = {}
    for projection in constraint:
        asked.setdefault(projection.name, []).append(projection)
    return tuple(_projected(ds, name, asked[name]) for name in visible(ds) if name in asked)


def _whole(ds: xr.Dataset, name: str, slabs: tuple[Hyperslab, ...] | None) -> Declaration:
    """A variable with all its members: a Grid with its maps sliced alike, or an Array."""
    if slabs is None:
        slabs = tuple(Hyperslab.whole(size) for _, size in dap_dims(ds.variables[name]))
    members = maps(ds, name)
    if not members:
        return Declaration("Array", name, (Leaf(name, slabs),))
    grid = (Leaf(name, slabs), *(Leaf(m, (s,)) for m, s in zip(members, slabs, strict=True)))
    return Declaration("Grid", name, grid)


def _projected(ds: xr.Dataset, name: str, projections: list[Projection]) -> Declaration:
    """One variable asked for once or more: whole, or some of its Grid's members."""
    whole = {p.slabs for p in projections if p.member is None}
    members: dict[str, tuple[Hyperslab, ...]] = {}
    for p in projections:
        if p.member is not None and members.setdefault(p.member, p.slabs) != p.slabs:
            raise _twice(f"{name}.{p.member}")
    if len(whole) > 1:
        raise _twice(name)
    if whole:
        declaration = _whole(ds, name, whole.pop())
        sent = {leaf.name: leaf.slabs for leaf in declaration.leaves}
        if any(sent[m] != slabs for m, slabs in members.items()):
            raise _twice(name)
        return declaration
    order = (name, *maps(ds, name))
    leaves = tuple(Leaf(m, members[m]) for m in order if m in members)
    return Declaration("Structure", name, leaves)


def _twice(name: str) -> BadQuery:
    return BadQuery(
        f"{name} is asked for twice with different hyperslabs; ask for it once",
        parameter=PARAMETER,
    )


# -- DDS (§7.2.2) ----------------------------------------------------------------------------


def dds(ds: xr.Dataset, name: str, constraint: Constraint) -> str:
    """The Dataset Descriptor Structure of what `constraint` answers."""
    return _dds(ds, name, declarations(ds, constraint))


def _dds(ds: xr.Dataset, name: str, found: tuple[Declaration, ...]) -> str:
    body = "".join(_declare(ds, declaration) for declaration in found)
    return f"Dataset {{\n{body}}} {escape(name, SAFE | {'.'})};\n"


def _declare(ds: xr.Dataset, declaration: Declaration) -> str:
    name = escape(declaration.name)
    lines = [_leaf_line(ds, leaf) for leaf in declaration.leaves]
    if declaration.kind == "Array":
        return "    " + lines[0]
    if declaration.kind == "Grid":
        members = "".join("        " + line for line in lines[1:])
        array = f"     ARRAY:\n        {lines[0]}     MAPS:\n{members}"
        return f"    Grid {{\n{array}    }} {name};\n"
    members = "".join("        " + line for line in lines)
    return f"    Structure {{\n{members}    }} {name};\n"


def _leaf_line(ds: xr.Dataset, leaf: Leaf) -> str:
    var = ds.variables[leaf.name]
    dims = "".join(
        f"[{escape(dim)} = {slab.count}]"
        for (dim, _), slab in zip(dap_dims(var), leaf.slabs, strict=True)
    )
    return f"{dap_type(var)} {escape(leaf.name)}{dims};\n"


# -- DAS (§7.2.1) ----------------------------------------------------------------------------


def das(ds: xr.Dataset) -> str:
    """The Dataset Attribute Structure: each variable's attributes, then `NC_GLOBAL`, and
    the unlimited dimension in `DODS_EXTRA` (which libnetcdf reads back as unlimited)."""
    parts = ["Attributes {\n"]
    for name in visible(ds):
        var = ds.variables[name]
        parts.append(_container(escape(name), _attributes(var.attrs) + _extra(var)))
    parts.append(_container("NC_GLOBAL", _attributes(ds.attrs)))
    unlimited = ds.encoding.get("unlimited_dims") or ()
    record = [str(dim) for dim in ds.dims if dim in unlimited]
    if record:
        line = f'String Unlimited_Dimension "{escape(record[0])}";\n'
        parts.append(_container("DODS_EXTRA", [line]))
    parts.append("}\n")
    return "".join(parts)


def _container(name: str, lines: list[str]) -> str:
    body = "".join("        " + line for line in lines)
    return f"    {name} {{\n{body}    }}\n"


def _extra(var: xr.Variable) -> list[str]:
    """Attributes clients need to read the values back as stored.

    `_Unsigned`: libnetcdf makes every DAP2 Byte, UInt16 and UInt32 signed (its
    netCDF-3 model), and netCDF4 and xarray undo that by this attribute; xarray also
    reads pydap's unsigned Byte of an int8 variable as signed by it. `_Encoding`: libnetcdf
    turns Strings into char arrays, which netCDF4 and xarray decode back to str by it.
    """
    kind, size = var.dtype.kind, var.dtype.itemsize
    if kind in "OU" and "_Encoding" not in var.attrs:
        return ['String _Encoding "utf-8";\n']
    if "_Unsigned" in var.attrs or kind not in "iu" or size > 4:
        return []
    if kind == "u":
        return ['String _Unsigned "true";\n']
    return ['String _Unsigned "false";\n'] if size == 1 else []


def _attributes(attrs: dict[Any, Any]) -> list[str]:
    lines = []
    for name, value in attrs.items():
        kind, texts = _attribute(value)
        if texts:
            lines.append(f"{kind} {escape(str(name))} {', '.join(texts)};\n")
    return lines


def _attribute(value: Any) -> tuple[str, list[str]]:
    """An attribute's DAP2 type and its values as the DAS writes them (none: left out)."""
    if isinstance(value, str | bytes):
        return "String", [_quote(value)]
    array = np.asarray(value).ravel()
    kind = array.dtype.kind
    if kind in "SUO":
        return "String", [_quote(v) for v in array.tolist()]
    if kind == "b":
        return "Byte", [str(int(v)) for v in array.tolist()]
    if kind in "iu":
        return _integers(array)
    if kind == "f":
        dap = "Float32" if array.dtype.itemsize <= 4 else "Float64"
        return dap, [_float(v) for v in array]
    return "String", [_quote(str(value))]


def _integers(array: np.ndarray[Any, Any]) -> tuple[str, list[str]]:
    """Integers in the narrowest DAP2 type that holds them all (64-bit ones included)."""
    values = array.tolist()
    if array.dtype.itemsize < 8:
        return NUMERIC[f"{array.dtype.kind}{array.dtype.itemsize}"], [str(v) for v in values]
    if all(-(2**31) <= v < 2**31 for v in values):
        return "Int32", [str(v) for v in values]
    if all(0 <= v < 2**32 for v in values):
        return "UInt32", [str(v) for v in values]
    return "Float64", [repr(float(v)) for v in values]


def _float(value: np.floating[Any]) -> str:
    """A float as the shortest text of its exact value (a Float32 widened to 64 bits), so
    that libnetcdf (strtod, then to float) and pydap (a Python float, compared with the
    data as xarray masks `_FillValue`) both read back the stored value; NaN and Inf
    spelt out."""
    if np.isnan(value):
        return "NaN"
    if np.isinf(value):
        return "Inf" if value > 0 else "-Inf"
    return repr(float(value))


def _quote(value: Any) -> str:
    """A quoted DAS / error string, `"` and `\\` escaped with a backslash (§7.2.1);
    bytes as UTF-8 where they are, else Latin-1."""
    if isinstance(value, bytes):
        try:
            value = value.decode()
        except UnicodeDecodeError:
            value = value.decode("latin-1")
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


# -- the data response (§7.3) ----------------------------------------------------------------


def dods_length(ds: xr.Dataset, name: str, constraint: Constraint) -> int | None:
    """The exact length of the `.dods` body, or None when it holds Strings (their lengths
    are known only once read)."""
    found = declarations(ds, constraint)
    sizes = [_leaf_length(ds, leaf) for d in found for leaf in d.leaves]
    if any(size is None for size in sizes):
        return None
    head = len((_dds(ds, name, found) + "Data:\n").encode())
    return head + sum(size for size in sizes if size is not None)


def dods(ds: xr.Dataset, name: str, constraint: Constraint, values: Values) -> Iterator[bytes]:
    """The `.dods` body: the DDS, `Data:` on its own line, then each array in XDR.

    The first block comes only once the 64-bit integers to send are known to be exact
    in Float64 (BadQuery otherwise), so the caller can still answer with an error.
    """
    found = declarations(ds, constraint)
    leaves = [leaf for declaration in found for leaf in declaration.leaves]
    for leaf in leaves:
        _check_exact(ds, leaf, values)
    yield (_dds(ds, name, found) + "Data:\n").encode()
    for leaf in leaves:
        yield from _xdr(ds.variables[leaf.name], leaf, values)


def _leaf_length(ds: xr.Dataset, leaf: Leaf) -> int | None:
    kind = dap_type(ds.variables[leaf.name])
    if kind is None or kind == "String":
        return None
    wire = WIRE[kind]
    if not leaf.slabs:  # a scalar: XDR pads a Byte to 4 bytes
        return max(wire.itemsize, 4)
    n = leaf.count
    return 8 + n * wire.itemsize + (-n % 4 if kind == "Byte" else 0)


def _xdr(var: xr.Variable, leaf: Leaf, values: Values) -> Iterator[bytes]:
    kind = dap_type(var)
    if kind == "String":
        yield from _xdr_strings(var, leaf, values)
        return
    assert kind is not None
    wire = WIRE[kind]
    if not leaf.slabs:
        value = np.asarray(next(iter(values.slabs(leaf.name, ())))).astype(wire)
        yield bytes([int(value), 0, 0, int(value)]) if kind == "Byte" else value.tobytes()
        return
    n = leaf.count
    yield struct.pack(">II", n, n)
    if n:
        for piece in values.slabs(leaf.name, leaf.index(var)):
            yield np.asarray(piece).astype(wire, copy=False).tobytes()
    if kind == "Byte" and n % 4:
        yield bytes(-n % 4)


def _xdr_strings(var: xr.Variable, leaf: Leaf, values: Values) -> Iterator[bytes]:
    if leaf.slabs:
        yield struct.pack(">I", leaf.count)
    for block in _strings(var, leaf, values):
        yield b"".join(
            struct.pack(">I", len(item)) + item + bytes(-len(item) % 4) for item in block
        )


def _strings(var: xr.Variable, leaf: Leaf, values: Values) -> Iterator[list[bytes]]:
    """A String leaf's values as UTF-8, in blocks (a char array's rows, NULs trimmed)."""
    if leaf.count == 0:
        return
    pieces = values.slabs(leaf.name, leaf.index(var))
    if not is_chars(var):
        for piece in pieces:
            yield [_utf8(item) for item in np.asarray(piece).ravel().tolist()]
        return
    length = var.shape[-1]
    if length == 0:
        yield [b""] * leaf.count
        return
    for block in _rows(pieces, length):
        yield np.ascontiguousarray(block).view(f"S{length}").ravel().tolist()


def _utf8(item: Any) -> bytes:
    if isinstance(item, bytes):
        return item
    if item is None or (isinstance(item, float) and np.isnan(item)):
        return b""
    return str(item).encode()


def _rows(pieces: Iterable[np.ndarray[Any, Any]], width: int) -> Iterator[np.ndarray[Any, Any]]:
    """The flattened concatenation of `pieces`, as 2-D blocks of whole rows of `width`
    (pieces may end inside a row)."""
    rest: np.ndarray[Any, Any] | None = None
    for piece in pieces:
        flat = np.asarray(piece).ravel()
        if rest is not None and rest.size:
            flat = np.concatenate([rest, flat])
        whole = flat.size - flat.size % width
        if whole:
            yield flat[:whole].reshape(-1, width)
        rest = flat[whole:]


def servable(ds: xr.Dataset, values: Values) -> xr.Dataset:
    """The dataset as DAP2 carries it exactly: without its 64-bit integer variables that
    hold values a Float64 would change (DAP4 carries them), as Hyrax leaves out what DAP2
    cannot express. Blocking: reads those variables, slab by slab; meant to be called
    once per dataset version, its result used for every DAP2 document.

    Without it, a `.dods` response holding such values is refused before its first byte;
    but libnetcdf asks for all the small variables of a dataset in one request, so one
    such variable would make all of them unreadable.
    """
    dropped = [
        str(name)
        for name, var in ds.variables.items()
        if _inexact(var, str(name), tuple(slice(None) for _ in var.shape), values) is not None
    ]
    if not dropped:
        return ds
    out = ds.drop_vars(dropped)
    out.encoding = {**ds.encoding, DROPPED: tuple(dropped)}
    return out


def _check_exact(ds: xr.Dataset, leaf: Leaf, values: Values) -> None:
    var = ds.variables[leaf.name]
    found = _inexact(var, leaf.name, leaf.index(var), values)
    if found is not None:
        raise BadQuery(_wide_message(leaf.name, f" (such as {found})"))


def _inexact(var: xr.Variable, name: str, index: tuple[slice, ...], values: Values) -> Any:
    """A value of a 64-bit integer selection that Float64 would change, or None. Fill
    values do not count: they convert as their attributes do, so they still match."""
    if var.dtype.kind not in "iu" or var.dtype.itemsize != 8 or 0 in var.shape:
        return None
    fills = [
        np.ravel(var.attrs[key]) for key in ("_FillValue", "missing_value") if key in var.attrs
    ]
    known = np.concatenate(fills) if fills else np.zeros(0, var.dtype)
    for piece in values.slabs(name, index):
        block = np.asarray(piece)
        bad = ((block > EXACT) | (block < -EXACT)) & ~np.isin(block, known)
        if bad.any():
            return block[bad].flat[0]
    return None


def _wide_message(name: str, example: str = "") -> str:
    return (
        f"{name} holds 64-bit integers beyond ±2**53{example}, which DAP2 has no exact "
        "type for; read it over DAP4 (.dmr and .dap), which carries them"
    )


# -- .ascii ----------------------------------------------------------------------------------


def ascii(ds: xr.Dataset, name: str, constraint: Constraint, values: Values) -> Iterator[bytes]:
    """The `.ascii` response as THREDDS writes it: the DDS, a rule, then each array under
    its name and shape, one line per row (`[i][j], v, v, …`), stored values as they are."""
    found = declarations(ds, constraint)
    yield (_dds(ds, name, found) + RULE).encode()
    for declaration in found:
        for leaf in declaration.leaves:
            yield from _ascii_leaf(ds.variables[leaf.name], leaf, declaration.path(leaf), values)


def _ascii_leaf(var: xr.Variable, leaf: Leaf, path: str, values: Values) -> Iterator[bytes]:
    shape = tuple(slab.count for slab in leaf.slabs)
    yield (path + "".join(f"[{n}]" for n in shape) + "\n").encode()
    texts = _texts(var, leaf, values)
    if len(shape) <= 1:
        first = True
        for block in texts:
            yield (("" if first else ", ") + ", ".join(block)).encode()
            first = False
        yield b"\n\n"
        return
    row = 0
    for block in _rows(texts, shape[-1]) if shape[-1] else ():
        lines = []
        for cells in block:
            where = np.unravel_index(row, shape[:-1])
            lines.append("".join(f"[{int(i)}]" for i in where) + ", " + ", ".join(cells) + "\n")
            row += 1
        yield "".join(lines).encode()
    yield b"\n"


def _texts(var: xr.Variable, leaf: Leaf, values: Values) -> Iterator[np.ndarray[Any, Any]]:
    """A leaf's values as text, in flat blocks."""
    if dap_type(var) == "String":
        for block in _strings(var, leaf, values):
            yield np.array([_quote(item) for item in block], dtype=object)
        return
    if leaf.count == 0:
        return
    for piece in values.slabs(leaf.name, leaf.index(var)):
        flat = np.asarray(piece).ravel()
        if flat.dtype.kind == "b":
            flat = flat.astype("u1")
        text = flat.astype(str)
        if flat.dtype.kind == "f":
            text[np.isnan(flat)] = "NaN"
            text[np.isposinf(flat)] = "Inf"
            text[np.isneginf(flat)] = "-Inf"
        yield text


# -- errors and version ----------------------------------------------------------------------


def error(message: str, code: int) -> bytes:
    """The DAP2 error document (§7.2.4), sent instead of any other response."""
    return f"Error {{\n    code = {code};\n    message = {_quote(message)};\n}};\n".encode()


def version() -> str:
    """The `.ver` document: the protocol and the server's version."""
    return f"Core version: DAP/2.0\nServer version: outcrop/{package_version()}\n"
