"""Reader programs: a time series whose samples a program writes to stdout, in any language.

A description (a `NAME.reader.toml` file, or a `reader` table of a dataset in
`outcrop.toml`) names the command as an argv list with placeholders, the output format
(CSV, Arrow IPC stream or NetCDF), the parameters and the valid time range; docs/readers.md
has every key. The program never runs through a shell, and every value a request puts in
its argv is checked against the declared type before any process starts.

The driver is loaded with every other at start-up; the description's models and the
decoders are imported when a description is first read.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from outcrop.drivers import Probe, Source
from outcrop.errors import BadQuery

if TYPE_CHECKING:
    import xarray as xr

    from outcrop.drivers.program.series import ProgramSeries

__all__ = ["SUFFIX", "ProgramDriver", "ProgramSeries", "ReaderDescription", "load"]

SUFFIX = ".reader.toml"


def __getattr__(name: str) -> Any:
    """`ProgramSeries`, `ReaderDescription` and `load`, imported when first asked for."""
    if name == "ProgramSeries":
        from outcrop.drivers.program.series import ProgramSeries

        return ProgramSeries
    if name in ("ReaderDescription", "load"):
        from outcrop.drivers.program import description

        return getattr(description, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class ProgramDriver:
    """Datasets described by `NAME.reader.toml` files (or `reader` tables): time series."""

    name = "program"
    suffix = SUFFIX  # a dataset's id is its file's path without it: `mag/kiruna.reader.toml`

    def can_open(self, path: Path) -> bool:
        return path.name.endswith(SUFFIX) and path.is_file()

    def open(self, source: Source, stored: bool = False) -> xr.Dataset:
        raise BadQuery(
            "this dataset is a reader-program time series: ask for a time range at "
            "/hapi/data?dataset=ID&start=…&stop=… or through /das2/…; it has no gridded form"
        )

    def probe(self, path: Path) -> Probe:
        from outcrop.drivers.program.description import load

        return Probe(title=load(Source(paths=(path,))).desc.title, groups=("",), series=("",))

    def series(self, source: Source) -> ProgramSeries:
        from outcrop.drivers.program.description import load
        from outcrop.drivers.program.series import ProgramSeries

        return ProgramSeries(load(source))

    def version(self, source: Source) -> str:
        """Changes when the description, the program or a file its command names changes
        (size or modification time), or when the description's `version` is bumped."""
        from outcrop.drivers.program.description import load

        reader = load(source)
        digest = hashlib.sha256(reader.content + str(reader.folder).encode())
        for path in reader.files:
            try:
                st = path.stat()
                digest.update(f"\n{path}:{st.st_size}:{st.st_mtime_ns}".encode())
            except OSError:
                digest.update(f"\n{path}:missing".encode())
        return digest.hexdigest()[:16]
