"""What a request puts in a reader's argv: extras checked against their declaration, times
and resolutions as text. Nothing here trusts the request."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from outcrop.errors import BadQuery

if TYPE_CHECKING:
    from outcrop.drivers.program.description import ExtraSpec

NS = 1_000_000_000
MAX_EXTRA_CHARS = 256
# What a string extra with neither `allowed` nor `pattern` may be: no `/`, no shell or
# quoting characters, and no leading `-` (an option) or `.` (a hidden or parent name).
PLAIN_TEXT = re.compile(r"([A-Za-z0-9_][A-Za-z0-9_.,:+@= -]*)?", re.ASCII)
INTEGER = re.compile(r"[+-]?[0-9]+", re.ASCII)
DOUBLE = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?", re.ASCII)
BOOLEANS = {"true": "true", "false": "false", "1": "true", "0": "false"}


def extra_value(spec: ExtraSpec, text: str, check_allowed: bool = True) -> str:
    """A request's value of an extra, checked, in the canonical text the program gets."""
    shown = repr(text if len(text) <= 40 else text[:40] + "…")
    if len(text) > MAX_EXTRA_CHARS:
        raise BadQuery(
            f"{spec.name} must be at most {MAX_EXTRA_CHARS} characters", parameter=spec.name
        )
    if not text.isprintable():  # control characters (NUL, newline, …), lone surrogates
        raise BadQuery(
            f"{spec.name} must not hold control characters, not {shown}", parameter=spec.name
        )
    value = _typed(spec, text, shown)
    if check_allowed and spec.allowed and value not in _canonical_allowed(spec):
        choices = ", ".join(spec.allowed)
        raise BadQuery(f"{spec.name} must be one of {choices}, not {shown}", parameter=spec.name)
    if spec.pattern is not None and not re.fullmatch(spec.pattern, value):
        raise BadQuery(f"{spec.name} must match {spec.pattern}, not {shown}", parameter=spec.name)
    free = spec.type == "string" and spec.pattern is None and not spec.allowed
    if free and not PLAIN_TEXT.fullmatch(value):
        raise BadQuery(
            f"{spec.name} may hold letters, digits, spaces and _ . , : + @ = - (but not start "
            f"with . or -), not {shown}",
            parameter=spec.name,
        )
    return value


def _canonical_allowed(spec: ExtraSpec) -> set[str]:
    return {_typed(spec, a, repr(a)) for a in spec.allowed}


def _typed(spec: ExtraSpec, text: str, shown: str) -> str:
    """The value as its type's canonical text, within minimum … maximum."""
    if spec.type == "string":
        return text
    if spec.type == "boolean":
        if text.lower() not in BOOLEANS:
            raise BadQuery(f"{spec.name} must be true or false, not {shown}", parameter=spec.name)
        return BOOLEANS[text.lower()]
    pattern = INTEGER if spec.type == "integer" else DOUBLE
    if not pattern.fullmatch(text) or not math.isfinite(float(text)):
        raise BadQuery(
            f"{spec.name} must be a{'n' * (spec.type == 'integer')} {spec.type}, not {shown}",
            parameter=spec.name,
        )
    number = int(text) if spec.type == "integer" else float(text)
    low = -math.inf if spec.minimum is None else spec.minimum
    high = math.inf if spec.maximum is None else spec.maximum
    if not low <= number <= high:
        raise BadQuery(
            f"{spec.name} must be between {low:g} and {high:g}, not {shown}", parameter=spec.name
        )
    return str(number) if spec.type == "integer" else repr(number)


def iso(ns: int) -> str:
    """`YYYY-MM-DDTHH:MM:SS[.fffffffff]Z`, the fraction only when it is not zero."""
    seconds, fraction = divmod(ns, NS)
    text = datetime.fromtimestamp(seconds, UTC).replace(tzinfo=None).isoformat()
    return f"{text}.{fraction:09d}Z" if fraction else f"{text}Z"


def seconds_text(ns: int | None) -> str:
    """Nanoseconds as decimal seconds (`0.5`, `60`); `0` for None (full resolution)."""
    if not ns or ns <= 0:
        return "0"
    whole, fraction = divmod(ns, NS)
    return f"{whole}.{fraction:09d}".rstrip("0") if fraction else str(whole)
