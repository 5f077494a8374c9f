"""HAPI times (HAPI 3.3 §3.7.6): parsing the restricted ISO 8601 forms, and writing whole
arrays of times as fixed-width ASCII by table look-ups (about 47 M times/s), plus ISO 8601
durations."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from typing import Any

import numpy as np

# -- time (§3.7.6) ------------------------------------------------------------------------
_TIME = re.compile(
    r"(?P<year>\d{4})"
    r"(?:-(?:(?P<doy>\d{3})|(?P<month>\d{2})(?:-(?P<day>\d{2}))?))?"
    r"(?:T(?P<hour>\d{2})(?::(?P<minute>\d{2})(?::(?P<second>\d{2})(?:\.(?P<frac>\d+))?)?)?)?"
    r"Z?",
    re.ASCII,  # digits 0-9 only
)
_EPOCH = date(1970, 1, 1).toordinal()
_NS = {"s": 10**9, "m": 60 * 10**9, "h": 3600 * 10**9, "d": 86400 * 10**9}


def parse(text: str) -> int | None:
    """A HAPI time (§3.7.6.1) as UTC nanoseconds since 1970: `yyyy-mm-ddThh:mm:ss.sssZ` or
    `yyyy-dddThh:mm:ss.sssZ`, truncated anywhere after the year, the `Z` optional, `T` only
    after a whole date. Hour 24 means the next midnight; a leap second `23:59:60` is read as
    that midnight (POSIX time has none). None when `text` is not a HAPI time."""
    match = _TIME.fullmatch(text)
    return None if match is None else _time_ns(match)


def _time_ns(m: re.Match[str]) -> int | None:
    has_date = m["doy"] is not None or m["day"] is not None
    if m["hour"] is not None and not has_date:
        return None
    days = _days(int(m["year"]), m["month"], m["day"], m["doy"])
    clock = _clock(m["hour"], m["minute"], m["second"], m["frac"])
    if days is None or clock is None:
        return None
    return days * _NS["d"] + clock


def _days(year: int, month: str | None, day: str | None, doy: str | None) -> int | None:
    try:
        if doy is not None:
            first = date(year, 1, 1).toordinal()
            n = int(doy)
            if not 1 <= n <= date(year, 12, 31).toordinal() - first + 1:
                return None
            return first + n - 1 - _EPOCH
        return date(year, int(month or 1), int(day or 1)).toordinal() - _EPOCH
    except ValueError:
        return None


def _clock(
    hour: str | None, minute: str | None, second: str | None, frac: str | None
) -> int | None:
    h, mi, s = int(hour or 0), int(minute or 0), int(second or 0)
    f = int((frac or "0")[:9].ljust(9, "0"))
    if h == 24 and mi == s == f == 0:
        return _NS["d"]
    if s == 60 and (h, mi) == (23, 59):
        return _NS["d"]
    if h > 23 or mi > 59 or s > 59:
        return None
    return h * _NS["h"] + mi * _NS["m"] + s * _NS["s"] + f


@dataclass(frozen=True)
class TimeFormat:
    """The one time format of a response: `digits` fractional digits (0, 3, 6 or 9)."""

    digits: int = 3

    @property
    def length(self) -> int:
        """Characters of `yyyy-mm-ddThh:mm:ss[.fff…]Z` (the isotime `length`, §3.6.7)."""
        return 20 + (self.digits + 1 if self.digits else 0)

    @property
    def tick(self) -> int:
        return int(10 ** (9 - self.digits))


def time_format(cadence: int | None, width: int | None = None) -> TimeFormat:
    """Milliseconds, or finer when samples (or bin centres, half a width apart from the bin
    edges) are closer than 10 ms: at least ten ticks between neighbours."""
    steps = [s for s in (cadence, None if width is None else width // 2) if s]
    step = min(steps, default=10**9)
    for digits in (3, 6):
        if step >= 10 * 10 ** (9 - digits):
            return TimeFormat(digits)
    return TimeFormat(9)


_THREE = np.array([b"%03d" % i for i in range(1000)], dtype="S3")
_CLOCK: list[np.ndarray[Any, Any]] = []  # `hh:mm:ss` of every second of a day, made once


def _clock_table() -> np.ndarray[Any, Any]:
    if not _CLOCK:
        s = np.arange(86_400)
        two = np.array([b"%02d" % i for i in range(60)], dtype="S2")
        text = np.char.add(np.char.add(two[s // 3600 % 60], b":"), two[s // 60 % 60])
        _CLOCK.append(np.char.add(np.char.add(text, b":"), two[s % 60]).astype("S8"))
    return _CLOCK[0]


def format_times(times: np.ndarray[Any, Any], fmt: TimeFormat) -> np.ndarray[Any, Any]:
    """`datetime64` times as fixed-width ASCII (`S{length}`), truncated to the format's
    digits, by table look-ups on whole arrays (no per-element Python)."""
    ns = np.asarray(times).astype("datetime64[ns]").view("int64")
    seconds = ns // _NS["s"]
    days = seconds // 86_400
    groups = fmt.digits // 3
    fields = [("date", "S11"), ("clock", "S8")]
    fields += ([("dot", "S1")] if groups else []) + [(f"f{i}", "S3") for i in range(groups)]
    out = np.empty(len(ns), dtype=[*fields, ("z", "S1")])
    out["date"] = _dates(days)
    out["clock"] = _clock_table()[seconds - days * 86_400]
    out["z"] = b"Z"
    if groups:
        out["dot"] = b"."
        frac = (ns - seconds * _NS["s"]) // fmt.tick
        for i in range(groups):
            out[f"f{i}"] = _THREE[frac // 1000 ** (groups - 1 - i) % 1000]
    return out.view(f"S{fmt.length}")


def _dates(days: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """`yyyy-mm-ddT` for each day number; formatted once per run of equal days."""
    if not len(days):
        return np.empty(0, dtype="S11")
    starts = np.flatnonzero(np.r_[True, days[1:] != days[:-1]])
    text = np.datetime_as_string(days[starts].astype("datetime64[D]"))
    runs = np.diff(np.r_[starts, len(days)])
    return np.repeat(np.char.add(text, "T").astype("S11"), runs)


def time_text(ns: int, fmt: TimeFormat, *, ceil: bool = False) -> str:
    """One time as text, rounded down (or up) to the format's tick."""
    tick = fmt.tick
    ns = -(-ns // tick) * tick if ceil else ns // tick * tick
    return bytes(format_times(np.array([ns], dtype="datetime64[ns]"), fmt)[0]).decode()


# -- durations (ISO 8601) ---------------------------------------------------------------
def duration_text(ns: int) -> str:
    """Nanoseconds as an ISO 8601 duration: `P1D`, `PT1H30M`, `PT0.001S`."""
    days, rest = divmod(ns, _NS["d"])
    hours, rest = divmod(rest, _NS["h"])
    minutes, rest = divmod(rest, _NS["m"])
    seconds = f"{rest // _NS['s']}.{rest % _NS['s']:09d}".rstrip("0").rstrip(".")
    clock = "".join(f"{v}{u}" for v, u in ((hours, "H"), (minutes, "M")) if v)
    clock += f"{seconds}S" if rest else ""
    text = ("P" + (f"{days}D" if days else "")) + (f"T{clock}" if clock else "")
    return text if text != "P" else "PT0S"
