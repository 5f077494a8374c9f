"""A reader program's time series: the program run for a time range, its output decoded
into blocks (imported when a reader-program dataset is first read, not at start-up)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

from outcrop.drivers.program.decode import DECODERS, Chunk, trim
from outcrop.drivers.program.description import ParameterSpec, Reader, ReaderDescription, expand
from outcrop.drivers.program.process import Run, slot
from outcrop.drivers.program.request import extra_value, iso, seconds_text
from outcrop.errors import BadQuery, OutcropError
from outcrop.model import Block, SeriesInfo


def series_info(desc: ReaderDescription) -> SeriesInfo:
    return SeriesInfo(
        parameters=tuple(p.parameter() for p in desc.parameters),
        start=desc.start,
        stop=desc.stop,
        sample_start=desc.sample_start,
        sample_stop=desc.sample_stop,
        cadence=desc.cadence,
        reduces=desc.reduces,
        title=desc.title,
        description=desc.description,
        extras=tuple(e.extra() for e in desc.extras),
        levels=tuple(sorted(desc.levels)),
    )


class ProgramSeries:
    """A reader program's time series (the `Series` protocol)."""

    def __init__(self, reader: Reader) -> None:
        self.reader = reader
        self._info = series_info(reader.desc)

    def info(self) -> SeriesInfo:
        return self._info

    def read(
        self,
        start: int,
        stop: int,
        parameters: Sequence[str],
        width: int | None = None,
        extras: Mapping[str, str] | None = None,
    ) -> Iterator[Block]:
        """Checks the request now (BadQuery); runs the program at the first `next()`."""
        desc = self.reader.desc
        specs = self._specs(parameters)
        values = self._values(specs, width, extras or {})
        start, stop = max(start, desc.start), min(stop, desc.stop)
        if start >= stop:
            return iter(())
        values.update(start=iso(start), stop=iso(stop))
        argv = [self.reader.program, *(expand(a, values) for a in desc.command[1:])]
        return self._stream(argv, start, stop, specs)

    def _specs(self, parameters: Sequence[str]) -> list[ParameterSpec]:
        known = {p.name: p for p in self.reader.desc.parameters}
        if not parameters:
            return list(known.values())
        wrong = [n for n in parameters if n not in known or list(parameters).count(n) > 1]
        if wrong:
            raise BadQuery(
                f"parameter {wrong[0]!r} is unknown or repeated; known: {', '.join(known)}",
                parameter="parameters",
            )
        return [known[n] for n in parameters]

    def _values(
        self, specs: Sequence[ParameterSpec], width: int | None, extras: Mapping[str, str]
    ) -> dict[str, str]:
        desc = self.reader.desc
        declared = {e.name: e for e in desc.extras}
        unknown = sorted(set(extras) - set(declared))
        if unknown:
            takes = ", ".join(declared) or "no other parameters"
            raise BadQuery(
                f"unknown parameter {unknown[0]!r}; this dataset takes {takes}",
                parameter=unknown[0],
            )
        values = {
            "parameters": ",".join(p.name for p in specs),
            "resolution": seconds_text(width if desc.reduces else None),
        }
        for name, spec in declared.items():
            text = extras.get(name, spec.default)
            if text is None:
                raise BadQuery(f"{name} is required ({spec.type})", parameter=name)
            values[name] = extra_value(spec, text)
        return values

    def _stream(
        self, argv: list[str], start: int, stop: int, specs: list[ParameterSpec]
    ) -> Iterator[Block]:
        with slot(self.reader), Run(self.reader, argv) as run:
            if run.has_output():
                yield from self._decode(run, start, stop, specs)
            else:
                run.finish()  # raises when it failed; else no data

    def _decode(
        self, run: Run, start: int, stop: int, specs: list[ParameterSpec]
    ) -> Iterator[Block]:
        """The blocks; in CSV each is held back until the next one is read or the program
        has exited well, so the last rows of a program that dies mid-line are never sent
        (an Arrow batch cut short does not decode). Once times pass `stop` it ends without
        waiting: closing the run kills the program."""
        blocks = trim(self._chunks(run, specs), start, stop, self.reader.name)
        hold = self.reader.desc.format == "csv"
        held: Block | None = None
        while True:
            try:
                block = next(blocks)
            except StopIteration as end:
                early = bool(end.value)
                break
            if not hold:
                yield block
                continue
            if held is not None:
                yield held
            held = block
        if not early:
            run.finish()
        if held is not None:
            yield held

    def _chunks(self, run: Run, specs: list[ParameterSpec]) -> Iterator[Chunk]:
        """The decoded output; a failure is reported as the program's when it has one."""
        from pyarrow import ArrowException

        chunks = DECODERS[self.reader.desc.format](run, self.reader, specs)
        while True:
            try:
                chunk = next(chunks)
            except StopIteration:
                return
            except (
                OutcropError,
                ArrowException,
                OSError,
                ValueError,
                KeyError,
                TypeError,
                IndexError,
                NotImplementedError,
            ) as exc:
                error = run.failure(exc)
                if error is exc:
                    raise
                raise error from exc
            run.check()
            yield chunk
