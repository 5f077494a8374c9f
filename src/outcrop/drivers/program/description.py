"""The description of a reader program (docs/readers.md): a `.reader.toml` file or a
`reader` table, parsed, checked and cached until it changes."""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import sys
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PositiveInt,
    ValidationError,
    field_validator,
)

from outcrop.drivers import Source
from outcrop.drivers.program import SUFFIX
from outcrop.drivers.program.request import NS, extra_value
from outcrop.errors import BadQuery, ConfigError
from outcrop.model import Extra, Parameter, ParameterType

BUILTINS = ("start", "stop", "parameters", "resolution")
# `{name}` is a placeholder; `{{` and `}}` stand for literal braces.
PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([^{}]*)\}")
IDENTIFIER = r"[A-Za-z_][A-Za-z0-9_]*"
PARAMETER_NAME = r"[A-Za-z_][A-Za-z0-9_.-]*"
UNIT_NS = {
    **dict.fromkeys(("nanoseconds", "nanosecond", "ns"), 1),
    **dict.fromkeys(("microseconds", "microsecond", "us"), 1_000),
    **dict.fromkeys(("milliseconds", "millisecond", "ms"), 1_000_000),
    **dict.fromkeys(("seconds", "second", "sec", "s"), NS),
    **dict.fromkeys(("minutes", "minute", "min"), 60 * NS),
    **dict.fromkeys(("hours", "hour", "hr", "h"), 3600 * NS),
    **dict.fromkeys(("days", "day", "d"), 86400 * NS),
}
DURATION = re.compile(
    r"P(?:(?P<W>[\d.]+)W)?(?:(?P<D>[\d.]+)D)?"
    r"(?:T(?:(?P<H>[\d.]+)H)?(?:(?P<M>[\d.]+)M)?(?:(?P<S>[\d.]+)S)?)?"
)
DURATION_NS = {"W": 604800 * NS, "D": 86400 * NS, "H": 3600 * NS, "M": 60 * NS, "S": NS}
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def parse_time(value: object) -> int:
    """ISO 8601 text, or a TOML date-time or date, as UTC nanoseconds since 1970."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value.strip())
    if isinstance(value, date) and not isinstance(value, datetime):
        value = datetime(value.year, value.month, value.day)
    if not isinstance(value, datetime):
        raise ValueError(f"expected an ISO 8601 time such as 2020-01-01T00:00:00Z, not {value!r}")
    delta = (value if value.tzinfo else value.replace(tzinfo=UTC)) - EPOCH
    return (delta.days * 86400 + delta.seconds) * NS + delta.microseconds * 1000


def parse_duration(value: object) -> int:
    """An ISO 8601 duration (`PT1S`, `PT0.5S`, `P1D`; no years or months) or a number of
    seconds, as nanoseconds."""
    try:
        if isinstance(value, int | float) and not isinstance(value, bool):
            ns = Decimal(str(value)) * NS
        elif isinstance(value, str) and (m := DURATION.fullmatch(value)) and value[-1] != "T":
            parts = (Decimal(v) * DURATION_NS[k] for k, v in m.groupdict().items() if v)
            ns = sum(parts, Decimal(0))
        else:
            raise ValueError
    except (ValueError, InvalidOperation):
        raise ValueError(
            f"expected an ISO 8601 duration like PT1S or seconds, not {value!r}"
        ) from None
    if ns <= 0:
        raise ValueError(f"must be positive, not {value!r}")
    return int(ns)


def parse_units(text: str) -> tuple[int, int]:
    """`UNIT since EPOCH` (e.g. `seconds since 1970-01-01`) as (ns per unit, epoch ns)."""
    unit, _, epoch = text.strip().partition(" since ")
    if unit.strip().lower() not in UNIT_NS or not epoch:
        units = ", ".join(sorted({k for k in UNIT_NS if len(k) > 3}))
        raise ValueError(f"expected `UNIT since TIME` with UNIT one of {units}, not {text!r}")
    return UNIT_NS[unit.strip().lower()], parse_time(epoch.strip().replace(" ", "T", 1))


def _text(value: object) -> object:
    """TOML numbers and booleans given where text is expected, as text."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value) if isinstance(value, int | float) else value


Time = Annotated[int, BeforeValidator(parse_time)]
Duration = Annotated[int, BeforeValidator(parse_duration)]
Text = Annotated[str, BeforeValidator(_text)]


class ParameterSpec(BaseModel):
    """One `[[parameters]]` table: a `Parameter` of the series."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=f"^{PARAMETER_NAME}$")
    type: ParameterType = "double"
    units: str | None = None
    fill: Text | None = None
    size: tuple[PositiveInt, ...] = ()
    description: str = ""
    length: PositiveInt | None = None

    @field_validator("size", mode="before")
    @classmethod
    def _one_number(cls, value: object) -> object:
        return (value,) if isinstance(value, int) else value

    def parameter(self) -> Parameter:
        return Parameter(
            self.name, self.type, self.units, self.fill, self.size, self.description, self.length
        )

    def columns(self) -> list[str]:
        """The CSV columns it occupies: its name, or `name_0 … name_{n-1}` for a vector."""
        if not self.size:
            return [self.name]
        return [f"{self.name}_{i}" for i in range(math.prod(self.size))]


class ExtraSpec(BaseModel):
    """One `[[extras]]` table: a request parameter passed to the program."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=f"^{IDENTIFIER}$")
    type: Literal["string", "integer", "double", "boolean"] = "string"
    default: Text | None = None
    allowed: tuple[Text, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    pattern: str | None = None
    description: str = ""

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"not a regular expression: {exc}") from None
        return value

    def extra(self) -> Extra:
        return Extra(
            self.name,
            self.type,
            self.default,
            self.allowed,
            self.minimum,
            self.maximum,
            self.pattern,
            self.description,
        )


class CsvOptions(BaseModel):
    """The `[csv]` table: how the program writes CSV."""

    model_config = ConfigDict(extra="forbid")

    header: bool = True
    delimiter: str = Field(",", min_length=1, max_length=1)
    skip_rows: int = Field(0, ge=0)


class ReaderDescription(BaseModel):
    """A reader program's description (docs/readers.md)."""

    model_config = ConfigDict(extra="forbid")

    title: str = ""
    description: str = ""
    command: list[str] = Field(min_length=1)
    format: Literal["csv", "arrow", "netcdf"] = "csv"
    time: str = Field("time", min_length=1)
    time_units: str | None = None
    csv: CsvOptions = Field(default_factory=CsvOptions)
    parameters: list[ParameterSpec] = Field(min_length=1)
    start: Time
    stop: Time
    sample_start: Time | None = None
    sample_stop: Time | None = None
    cadence: Duration | None = None
    levels: list[Duration] = Field(default_factory=list)
    reduces: bool = False
    extras: list[ExtraSpec] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)
    timeout: float = Field(60.0, gt=0)
    max_concurrent: int = Field(4, ge=1)
    max_output_mb: float = Field(1024.0, gt=0)
    version: str = ""

    @field_validator("time_units")
    @classmethod
    def _units(cls, value: str | None) -> str | None:
        if value is not None:
            parse_units(value)
        return value


@dataclass(frozen=True)
class Reader:
    """A loaded, checked description and what running it needs."""

    desc: ReaderDescription
    name: str  # for messages: the file name, or the dataset's id
    folder: Path  # the working directory; relative paths start here
    program: str  # the resolved command[0]
    content: bytes  # the description, for the version
    files: tuple[Path, ...]  # the program and literal arguments naming files, for the version

    @property
    def key(self) -> str:
        return hashlib.sha256(self.content + str(self.folder).encode()).hexdigest()

    @property
    def uses_parameters(self) -> bool:
        return any("parameters" in placeholders(a) for a in self.desc.command)


def placeholders(arg: str) -> list[str]:
    return [m[1] for m in PLACEHOLDER.finditer(arg) if m[1] is not None]


def expand(arg: str, values: Mapping[str, str]) -> str:
    return PLACEHOLDER.sub(lambda m: m[0][0] if m[1] is None else values[m[1]], arg)


def load(source: Source) -> Reader:
    """The description of a source: a `.reader.toml` file, or an inline `reader` table."""
    if source.paths:
        path = source.paths[0]
        try:
            st = path.stat()
        except OSError as exc:
            raise ConfigError(f"{path.name}: cannot read: {exc.strerror}") from None
        return _load_file(str(path), st.st_size, st.st_mtime_ns)
    table = source.options.get("reader")
    if not isinstance(table, dict):
        raise ConfigError("a reader dataset needs a `.reader.toml` file or a `reader` table")
    text = json.dumps(table, sort_keys=True, default=str)
    base = str(source.options.get("base") or ".")
    return _load_table(text, base, str(source.options.get("name") or "reader table"))


@lru_cache(maxsize=256)
def _load_file(path: str, size: int, mtime_ns: int) -> Reader:
    file = Path(path)
    try:
        content = file.read_bytes()
        raw = tomllib.loads(content.decode())
    except OSError as exc:
        raise ConfigError(f"{file.name}: cannot read: {exc.strerror}") from None
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{file.name}: not valid TOML: {exc}") from None
    return _reader(raw, file.name, file.parent.resolve(), content)


@lru_cache(maxsize=256)
def _load_table(text: str, base: str, name: str) -> Reader:
    return _reader(json.loads(text), name, Path(base).resolve(), text.encode())


def _reader(raw: dict[str, Any], name: str, folder: Path, content: bytes) -> Reader:
    try:
        desc = ReaderDescription.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"])
        msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
        msg = msg.removeprefix("Value error, ")
        raise ConfigError(f"{name}: {key}: {msg}", parameter=key) from None
    for check in (_check_times, _check_names, _check_extras, _check_command):
        problem = check(desc)
        if problem:
            raise ConfigError(f"{name}: {problem[0]}: {problem[1]}", parameter=problem[0])
    program = _program(desc.command[0], folder, name)
    literal = [folder / a for a in desc.command[1:] if not placeholders(a) and "\0" not in a]
    files = [Path(program)] + [p for p in literal if p.is_file()]
    return Reader(desc, name.removesuffix(SUFFIX), folder, program, content, tuple(files))


Problem = tuple[str, str] | None


def _check_times(desc: ReaderDescription) -> Problem:
    if desc.start >= desc.stop:
        return "stop", "must be after start"
    samples = (desc.sample_start, desc.sample_stop)
    if samples.count(None) == 1:
        return "sample_stop", "sample_start and sample_stop go together"
    low, high = desc.sample_start, desc.sample_stop
    if low is not None and high is not None and not desc.start <= low < high <= desc.stop:
        return "sample_start", "the sample range must lie within start … stop"
    return None


def _check_names(desc: ReaderDescription) -> Problem:
    columns = [desc.time] + [c for p in desc.parameters for c in p.columns()]
    twice = sorted({c for c in columns if columns.count(c) > 1})
    if twice:
        return "parameters", f"names and vector columns must be unique: {', '.join(twice)}"
    for i, p in enumerate(desc.parameters):
        if p.fill is not None and p.type in ("double", "integer"):
            try:
                float(p.fill) if p.type == "double" else int(p.fill)
            except ValueError:
                return f"parameters.{i}.fill", f"{p.fill!r} is not a {p.type}"
    return None


def _check_extras(desc: ReaderDescription) -> Problem:
    names = [e.name for e in desc.extras]
    for i, spec in enumerate(desc.extras):
        if spec.name in BUILTINS or names.count(spec.name) > 1:
            return f"extras.{i}.name", f"{spec.name!r} is built in or declared twice"
        if spec.minimum is not None and spec.maximum is not None and spec.minimum > spec.maximum:
            return f"extras.{i}.maximum", "must not be below minimum"
        for key, value in [("default", spec.default), *(("allowed", a) for a in spec.allowed)]:
            try:
                value is None or extra_value(spec, value, check_allowed=key == "default")
            except BadQuery as exc:
                return f"extras.{i}.{key}", exc.message
    return None


def _check_command(desc: ReaderDescription) -> Problem:
    known = {*BUILTINS, *(e.name for e in desc.extras)}
    if placeholders(desc.command[0]) or not desc.command[0]:
        return "command", "the program (first item) must be a fixed name, without placeholders"
    used = {p for arg in desc.command for p in placeholders(arg)}
    if used - known:
        names = ", ".join(f"{{{n}}}" for n in sorted(used - known))
        allowed = ", ".join(f"{{{n}}}" for n in sorted(known))
        return "command", f"unknown placeholder {names}; known: {allowed} (`{{{{` for a brace)"
    if (e := next((e for e in desc.extras if e.name not in used), None)) is not None:
        return "extras", f"{e.name!r} is declared but the command never uses {{{e.name}}}"
    if ("resolution" in used) != desc.reduces:
        return "reduces", "the command uses {resolution} exactly when reduces = true"
    return None


def _program(first: str, folder: Path, name: str) -> str:
    """The program's path: `python` is the interpreter running Outcrop, a name with a `/`
    is relative to the description's folder, any other name is looked up on PATH."""
    if first == "python":
        return sys.executable
    if "/" not in first:
        found = shutil.which(first)
        if found is None:
            raise ConfigError(f"{name}: command: {first!r} is not on PATH", parameter="command")
        return found
    path = (folder / first).resolve()
    if not path.is_file() or not os.access(path, os.X_OK):
        problem = "is not executable (chmod +x)" if path.is_file() else "does not exist"
        raise ConfigError(f"{name}: command: {path} {problem}", parameter="command")
    return str(path)
