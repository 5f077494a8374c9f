"""Reader programs run for real (Python, shell, C) and give the values of their formula,
computed here independently with NumPy; request values never reach a shell or a process
unchecked; failures, timeouts, oversize output and early closing end the program."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from outcrop.drivers import Source
from outcrop.drivers.program import ProgramDriver, ProgramSeries
from outcrop.errors import BadQuery, ConfigError, TooLarge, UpstreamFailed
from outcrop.model import Block

READERS = Path(__file__).resolve().parents[2] / "examples" / "readers"
WAVE_PY = READERS / "wave.py"
DRIVER = ProgramDriver()
NS = 1_000_000_000
FILL = -1e31
WAVE_PARAMETERS = [{"name": n, "units": "nT", "fill": "-1e31"} for n in ("bx", "by", "bz")]


def ns(text: str) -> int:
    return int(np.datetime64(text.removesuffix("Z"), "ns").astype(np.int64))


def reference(start: int, stop: int, station: int = 0, gain: int = 1) -> tuple[Any, dict[str, Any]]:
    """The readers' formula (see wave.py), for the whole seconds in [start, stop) ns."""
    t = np.arange(-(-start // NS), -(-stop // NS), dtype=np.int64)
    t = t[(t % 3600 < 600) | (t % 3600 >= 660)]
    u = t + 1000 * station
    values = {
        "bx": (np.abs(u % 600 - 300) - 150) / 4,
        "by": (np.abs(u % 86400 - 43200) - 21600) / 512,
        "bz": (u * 7919 % 10007) / 64 - 78.1875,
    }
    for name, every in (("bx", 97), ("by", 89), ("bz", 1009)):
        values[name] = np.where(t % every == 0, FILL, values[name] * gain)
    return t * NS, values


def collect(blocks: Iterator[Block]) -> tuple[Any, dict[str, Any]]:
    got = list(blocks)
    assert got, "no blocks"
    times = np.concatenate([b.time for b in got])
    assert times.dtype == np.dtype("datetime64[ns]")
    names = list(got[0].values)
    assert all(list(b.values) == names for b in got)
    return times.view(np.int64), {n: np.concatenate([b.values[n] for b in got]) for n in names}


def toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {toml(v)}" for k, v in value.items()) + "}"
    return "[" + ", ".join(toml(v) for v in value) + "]"


def describe(folder: Path, name: str = "test", **keys: Any) -> Path:
    """Write `name.reader.toml` in `folder`: the wave parameters and range unless given."""
    keys = {"start": "2000-01-01T00:00:00Z", "stop": "2040-01-01T00:00:00Z", **keys}
    tables = {k: keys.pop(k) for k in ("parameters", "extras") if k in keys}
    tables.setdefault("parameters", WAVE_PARAMETERS)
    csv = keys.pop("csv", None)
    lines = [f"{k} = {toml(v)}" for k, v in keys.items()]
    if csv is not None:
        lines += ["[csv]", *(f"{k} = {toml(v)}" for k, v in csv.items())]
    for table, rows in tables.items():
        for row in rows:
            lines += [f"[[{table}]]", *(f"{k} = {toml(v)}" for k, v in row.items())]
    path = folder / f"{name}.reader.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def series(path: Path) -> ProgramSeries:
    return DRIVER.series(Source(paths=(path,)))


def wave(folder: Path, *args: str, **keys: Any) -> ProgramSeries:
    """A description running wave.py with `args` (e.g. --format=csv)."""
    command = ["python", str(WAVE_PY), "--start={start}", "--stop={stop}", *args]
    return series(describe(folder, command=command, **keys))


def script(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text)
    path.chmod(0o755)
    return path


def gone(pid: int) -> bool:
    """Whether a process has ended (absent or a zombie), waiting a while for it."""
    for _ in range(500):
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    return True
        except FileNotFoundError:
            return True
        time.sleep(0.02)
    return False


@pytest.fixture(scope="module")
def wave_c(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """wave.c compiled into a temporary folder, with a description beside it."""
    if shutil.which("cc") is None:
        pytest.skip("no C compiler (cc) to build examples/readers/wave.c")
    folder = tmp_path_factory.mktemp("wave_c")
    subprocess.run(["cc", "-O2", "-o", folder / "wave", READERS / "wave.c", "-lm"], check=True)
    text = (READERS / "wave_c.reader.toml").read_text()
    (folder / "wave_c.reader.toml").write_text(text)
    return folder / "wave_c.reader.toml"


# -- values ------------------------------------------------------------------------------------

EDGES = [
    ("2020-01-01T00:09:30.5Z", "2020-01-01T02:00:00Z"),  # fraction, a gap, stop on a sample
    ("2019-12-31T23:58:00Z", "2020-01-01T00:01:00.000000001Z"),  # a day boundary, 1 ns past
]


@pytest.mark.parametrize(("start", "stop"), EDGES)
@pytest.mark.parametrize("example", ["wave", "wave_sh"])
def test_example_readers_give_the_formula(example: str, start: str, stop: str) -> None:
    got_t, got = collect(series(READERS / f"{example}.reader.toml").read(ns(start), ns(stop), []))
    want_t, want = reference(ns(start), ns(stop))
    np.testing.assert_array_equal(got_t, want_t)
    assert list(got) == ["bx", "by", "bz"]
    for name in want:  # exact: the values are binary fractions, printed exactly
        np.testing.assert_array_equal(got[name], want[name])
    assert (got["bx"] == FILL).any()


@pytest.mark.parametrize(("start", "stop"), EDGES)
def test_compiled_reader_gives_the_formula(wave_c: Path, start: str, stop: str) -> None:
    got_t, got = collect(series(wave_c).read(ns(start), ns(stop), ["bz", "bx"]))
    want_t, want = reference(ns(start), ns(stop))
    np.testing.assert_array_equal(got_t, want_t)
    assert list(got) == ["bz", "bx"]  # a CSV without header, columns picked by position
    np.testing.assert_array_equal(got["bz"], want["bz"])
    np.testing.assert_array_equal(got["bx"], want["bx"])


@pytest.mark.parametrize("fmt", ["arrow", "csv", "netcdf"])
def test_each_output_format_gives_the_same_values(tmp_path: Path, fmt: str) -> None:
    start, stop = ns("2021-06-30T23:00:00Z"), ns("2021-07-01T01:30:00Z")
    reader = wave(tmp_path, f"--format={fmt}", "--parameters={parameters}", format=fmt)
    got_t, got = collect(reader.read(start, stop, ["by", "bz", "bx"]))
    want_t, want = reference(start, stop)
    np.testing.assert_array_equal(got_t, want_t)
    assert list(got) == ["by", "bz", "bx"]
    for name in want:
        assert got[name].dtype == np.float64
        np.testing.assert_array_equal(got[name], want[name])


def test_csv_without_header_has_the_columns_asked_for_in_order(tmp_path: Path) -> None:
    # wave.py writes a header: skipped as a line, the columns are then taken by position.
    csv = {"header": False, "skip_rows": 1}
    reader = wave(tmp_path, "--format=csv", "--parameters={parameters}", csv=csv)
    start, stop = ns("2020-01-01T00:00:00Z"), ns("2020-01-01T00:30:00Z")
    _, got = collect(reader.read(start, stop, ["bz", "by"]))
    want = reference(start, stop)[1]
    np.testing.assert_array_equal(got["bz"], want["bz"])
    np.testing.assert_array_equal(got["by"], want["by"])


@pytest.mark.parametrize("fmt", ["arrow", "csv", "netcdf"])
def test_vectors_come_as_rows_of_their_size(tmp_path: Path, fmt: str) -> None:
    start, stop = ns("2020-03-01T00:00:00Z"), ns("2020-03-01T01:00:00Z")
    vector = [{"name": "b", "units": "nT", "fill": "-1e31", "size": [3]}]
    args = (f"--format={fmt}", "--layout=vector", "--station=sodankyla", "--gain=3")
    reader = wave(tmp_path, *args, format=fmt, parameters=vector)
    got_t, got = collect(reader.read(start, stop, ["b"]))
    want_t, want = reference(start, stop, station=2, gain=3)
    np.testing.assert_array_equal(got_t, want_t)
    assert got["b"].shape == (len(want_t), 3)
    np.testing.assert_array_equal(got["b"], np.column_stack([want["bx"], want["by"], want["bz"]]))


def test_extras_reach_the_program_checked_and_change_its_values() -> None:
    reader = series(READERS / "wave_station.reader.toml")
    start, stop = ns("2020-01-01T00:00:00Z"), ns("2020-01-01T00:20:00Z")
    _, got = collect(reader.read(start, stop, [], extras={"station": "tromso", "gain": "+07"}))
    _, want = reference(start, stop, station=1, gain=7)
    np.testing.assert_array_equal(got["b"][:, 1], want["by"])
    _, default = collect(reader.read(start, stop, []))  # kiruna, gain 1
    np.testing.assert_array_equal(default["b"][:, 2], reference(start, stop)[1]["bz"])


def test_placeholders_become_arguments_of_their_own(tmp_path: Path) -> None:
    recorder = script(tmp_path, "record.py", RECORDER)
    command = ["python", str(recorder), "{start}", "--stop={stop}", "p={parameters}", "{{x}}"]
    label = [{"name": "label", "pattern": ".*", "default": ""}]
    reader = series(describe(tmp_path, command=[*command, "{label}"], extras=label))
    start, stop = ns("2020-01-01T00:00:00.25Z"), ns("2020-01-02")
    text = "{stop} $HOME * 'a b'"  # stays as it is: one argument, nothing expanded
    assert list(reader.read(start, stop, ["bz", "bx"], extras={"label": text})) == []
    record = json.loads((tmp_path / "record.json").read_text())
    assert record["argv"] == [
        "2020-01-01T00:00:00.250000000Z",
        "--stop=2020-01-02T00:00:00Z",
        "p=bz,bx",
        "{x}",
        text,
    ]
    assert record["cwd"] == str(tmp_path)  # relative paths start at the description


RECORDER = """import json, os, sys
env = {k: v for k, v in os.environ.items() if k.startswith(("OUTCROP_", "TZ", "READER_"))}
record = {"argv": sys.argv[1:], "cwd": os.getcwd(), "env": env}
open("record.json", "w").write(json.dumps(record))
"""


def test_requests_are_clipped_to_the_valid_range_and_resolution_passed(tmp_path: Path) -> None:
    recorder = script(tmp_path, "record.py", RECORDER)
    command = ["python", str(recorder), "{start}", "{stop}", "{resolution}"]
    path = describe(tmp_path, command=command, reduces=True, start="2020-01-01", stop="2020-02-01")
    reader = series(path)
    for width, text in ((None, "0"), (60 * NS, "60"), (1_500_000_000, "1.5"), (1, "0.000000001")):
        list(reader.read(ns("2019-01-01"), ns("2030-01-01"), [], width=width))
        argv = json.loads((tmp_path / "record.json").read_text())["argv"]
        assert argv == ["2020-01-01T00:00:00Z", "2020-02-01T00:00:00Z", text]
    (tmp_path / "record.json").unlink()
    assert list(reader.read(ns("2030-01-01"), ns("2031-01-01"), [])) == []
    assert not (tmp_path / "record.json").exists()  # nothing to read: nothing run


def test_environment_holds_no_outcrop_settings(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.setenv("OUTCROP_DATABASE_URL", "postgresql://secret@db/x")
    recorder = script(tmp_path, "record.py", RECORDER)
    path = describe(tmp_path, command=["python", str(recorder)], env={"READER_HOME": "/data"})
    list(series(path).read(ns("2020-01-01"), ns("2020-01-02"), []))
    env = json.loads((tmp_path / "record.json").read_text())["env"]
    assert env == {"TZ": "UTC", "READER_HOME": "/data"}


def test_a_table_in_outcrop_toml_reads_like_a_file() -> None:
    import tomllib

    table = tomllib.loads((READERS / "wave.reader.toml").read_text())
    reader = DRIVER.series(Source(paths=(), options={"reader": table, "base": str(READERS)}))
    start, stop = ns("2020-05-05T05:05:05Z"), ns("2020-05-05T05:15:00Z")
    got_t, got = collect(reader.read(start, stop, ["by"]))
    want_t, want = reference(start, stop)
    np.testing.assert_array_equal(got_t, want_t)
    np.testing.assert_array_equal(got["by"], want["by"])


def test_info_comes_from_the_description() -> None:
    info = series(READERS / "wave_station.reader.toml").info()
    assert (info.start, info.stop) == (ns("2000-01-01"), ns("2040-01-01"))
    assert (info.sample_start, info.sample_stop) == (ns("2020-01-01"), ns("2020-01-01T06:00"))
    assert info.cadence == NS and info.reduces is False
    assert [(p.name, p.units, p.fill, p.size) for p in info.parameters] == [
        ("b", "nT", "-1e31", (3,))
    ]
    station, gain = info.extras
    assert station.allowed == ("kiruna", "tromso", "sodankyla") and station.default == "kiruna"
    assert (gain.type, gain.minimum, gain.maximum, gain.default) == ("integer", 1, 100, "1")


# -- request values never reach a process unchecked ---------------------------------------

GUARDED_EXTRAS = [
    {"name": "station", "allowed": ["kiruna", "tromso"], "default": "kiruna"},
    {"name": "gain", "type": "integer", "minimum": 1, "maximum": 100, "default": "1"},
    {"name": "name", "default": "x"},  # a string with neither allowed nor pattern: plain text
    {"name": "ratio", "type": "double", "default": "0.5"},
    {"name": "flag", "type": "boolean", "default": "false"},
]


@pytest.fixture
def guarded(tmp_path: Path) -> tuple[ProgramSeries, Path]:
    """A reader that leaves a marker file when it runs, with extras of each type."""
    script(tmp_path, "marker.sh", 'touch ran\nprintf "%s\\n" "$@" > argv.txt\n')
    args = [f"--{e['name']}={{{e['name']}}}" for e in GUARDED_EXTRAS]
    path = describe(tmp_path, command=["sh", "marker.sh", *args], extras=GUARDED_EXTRAS)
    return series(path), tmp_path


def attacks(x: str) -> list[tuple[str, str]]:
    """(extra, value) pairs that must be refused; `x` is a file they try to create."""
    shell = [f"; touch {x}", f"$(touch {x})", f"`touch {x}`", f"a' ; touch {x}; '", f"| touch {x}"]
    return [
        *(("station", v) for v in [*shell, "../../etc/passwd", "kiruna\0", "kiruna\n", "KIRUNA"]),
        *(("name", v) for v in [*shell, "../../etc/passwd", "a/b", "-rf", "--output=/x", ".."]),
        *(("name", v) for v in ["a\nb", "a\0b", "a\tb", "a\x1bb", "\u2028", "x" * 257]),
        *(("gain", v) for v in [f"1; touch {x}", "abc", "1.5", "0", "101", "1e3", "", " 5"]),
        *(("ratio", v) for v in ["nan", "inf", "1e999", "0x10", "1,5", f"1;touch {x}"]),
        ("flag", "yes"),
        ("flag", f"true; touch {x}"),
    ]


def test_bad_extras_are_refused_before_any_process_starts(guarded: Any) -> None:
    reader, folder = guarded
    x = folder / "X"
    for name, value in attacks(str(x)):
        with pytest.raises(BadQuery) as caught:
            reader.read(ns("2020-01-01"), ns("2020-01-02"), [], extras={name: value})
        assert caught.value.parameter == name, (name, value)
        assert "\0" not in caught.value.message and "\n" not in caught.value.message
        assert not (folder / "ran").exists() and not x.exists(), (name, value)
    # The same reader with good values does run: the marker above could have appeared.
    good = {"station": "tromso", "gain": "007", "name": "Kiruna 2", "ratio": "2e-1", "flag": "1"}
    list(reader.read(ns("2020-01-01"), ns("2020-01-02"), [], extras=good))
    assert (folder / "ran").exists()
    argv = (folder / "argv.txt").read_text().splitlines()
    assert argv == ["--station=tromso", "--gain=7", "--name=Kiruna 2", "--ratio=0.2", "--flag=true"]


def test_unknown_extras_and_parameters_are_refused(guarded: Any) -> None:
    reader, folder = guarded
    with pytest.raises(BadQuery) as caught:
        reader.read(ns("2020-01-01"), ns("2020-01-02"), [], extras={"cmd": "rm -rf /"})
    assert caught.value.parameter == "cmd" and "station" in caught.value.message
    for parameters in (["bx", "bq"], ["bx", "bx"], ["bx,by"]):
        with pytest.raises(BadQuery) as caught:
            reader.read(ns("2020-01-01"), ns("2020-01-02"), parameters)
        assert caught.value.parameter == "parameters"
    assert not (folder / "ran").exists()


def test_free_text_reaches_a_shell_reader_as_one_argument(tmp_path: Path) -> None:
    """wave_sh allows any printable label; no shell runs it, and wave.sh quotes it."""
    reader = series(READERS / "wave_sh.reader.toml")
    x = tmp_path / "X"
    start, stop = ns("2020-01-01T00:00:00Z"), ns("2020-01-01T00:00:10Z")
    for label in (f"; touch {x}", f"$(touch {x})", f"`touch {x}`", f"' ; touch {x} ; '", "*"):
        _, got = collect(reader.read(start, stop, ["bx"], extras={"label": label}))
        np.testing.assert_array_equal(got["bx"], reference(start, stop)[1]["bx"])
        assert not x.exists(), label
    with pytest.raises(BadQuery) as caught:  # still no control characters, even here
        reader.read(start, stop, [], extras={"label": f"\ntouch {x}"})
    assert caught.value.parameter == "label"


# -- failures ---------------------------------------------------------------------------------


def test_stderr_becomes_the_error_when_the_program_fails_before_output(tmp_path: Path) -> None:
    script(tmp_path, "fail.sh", 'echo "warming up" >&2\necho "no data for station X" >&2\nexit 3\n')
    reader = series(describe(tmp_path, command=["sh", "fail.sh"]))
    blocks = reader.read(ns("2020-01-01"), ns("2020-01-02"), [])  # nothing runs yet
    with pytest.raises(UpstreamFailed) as caught:
        next(blocks)
    assert "exit status 3" in caught.value.message
    assert caught.value.message.endswith("warming up\nno data for station X")


def test_a_chatty_stderr_is_kept_bounded(tmp_path: Path) -> None:
    # 20 MB on stderr would fill the pipe and block the program if nobody read it.
    text = "import sys\nfor i in range(200000): print('x' * 99, file=sys.stderr)\nsys.exit(4)\n"
    script(tmp_path, "chatty.py", text)
    reader = series(describe(tmp_path, command=["python", "chatty.py"]))
    with pytest.raises(UpstreamFailed) as caught:
        next(reader.read(ns("2020-01-01"), ns("2020-01-02"), []))
    assert "exit status 4" in caught.value.message and len(caught.value.message) < 5000


def test_exit_status_zero_without_output_is_no_data(tmp_path: Path) -> None:
    reader = series(describe(tmp_path, command=["true"]))
    assert list(reader.read(ns("2020-01-01"), ns("2020-01-02"), [])) == []


@pytest.mark.parametrize("fmt", ["arrow", "csv"])
def test_a_failure_mid_stream_raises_after_some_blocks(tmp_path: Path, fmt: str) -> None:
    command = f'"{sys.executable}" "{WAVE_PY}" --format={fmt} --start="$1" --stop="$2"'
    script(tmp_path, "half.sh", f'{command}\necho "disk error at day 3" >&2\nexit 1\n')
    reader = series(describe(tmp_path, command=["sh", "half.sh", "{start}", "{stop}"], format=fmt))
    blocks = []
    with pytest.raises(UpstreamFailed) as caught:
        for block in reader.read(ns("2020-01-01"), ns("2020-01-04"), []):
            blocks.append(block)
    assert blocks and "disk error at day 3" in caught.value.message
    got_t, got = collect(iter(blocks))  # what came before the failure was right
    want_t, want = reference(ns("2020-01-01"), ns("2020-01-04"))
    np.testing.assert_array_equal(got_t, want_t[: len(got_t)])
    np.testing.assert_array_equal(got["bz"], want["bz"][: len(got_t)])


def test_rows_of_a_program_that_dies_mid_line_are_never_sent(tmp_path: Path) -> None:
    rows = "time,bx,by,bz\n2020-01-01T00:00:00Z,1,2,3\n2020-01-01T00:00:01Z,1,2,3.14"
    script(tmp_path, "cut.sh", f"printf '{rows}'\necho 'killed by the OOM killer' >&2\nexit 9\n")
    reader = series(describe(tmp_path, command=["sh", "cut.sh"]))
    blocks = reader.read(ns("2020-01-01"), ns("2020-01-02"), [])
    with pytest.raises(UpstreamFailed, match="OOM killer"):
        next(blocks)  # the row ending "3.14" might have been "3.14159": nothing is sent


@pytest.mark.parametrize(
    ("output", "problem"),
    [
        ("time,bx,by,bz\n2020-01-01T00:00:01Z,1,2,3\n2020-01-01T00:00:00Z,1,2,3\n", "order"),
        ("time,bx,by\n2020-01-01T00:00:00Z,1,2\n", "bz"),
        ("time,bx,by,bz\nyesterday,1,2,3\n", "yesterday"),
        ("time,bx,by,bz\n2020-01-01T00:00:00Z,1,2,many\n", "many"),
    ],
)
def test_invalid_output_is_an_upstream_failure(tmp_path: Path, output: str, problem: str) -> None:
    (tmp_path / "out.csv").write_text(output)
    reader = series(describe(tmp_path, command=["cat", "out.csv"]))
    with pytest.raises(UpstreamFailed) as caught:
        list(reader.read(ns("2019-01-01"), ns("2021-01-01"), []))
    assert problem in caught.value.message and "test" in caught.value.message


def test_a_missing_arrow_column_is_named(tmp_path: Path) -> None:
    reader = wave(tmp_path, "--parameters=bx", format="arrow")
    with pytest.raises(UpstreamFailed, match="'by'"):
        list(reader.read(ns("2020-01-01"), ns("2020-01-01T01:00"), ["bx", "by"]))


SLOW = """import os, sys, time
import pyarrow as pa
open(sys.argv[1], "w").write(str(os.getpid()))
if len(sys.argv) > 2:
    child = __import__("subprocess").Popen(["sleep", "300"])
    open(sys.argv[2], "w").write(str(child.pid))
batch = pa.record_batch({"time": pa.array([1577836800], pa.timestamp("s")), "bx": [1.0]})
writer = pa.ipc.new_stream(sys.stdout.buffer, batch.schema)
writer.write_batch(batch)
sys.stdout.buffer.flush()
time.sleep(300)
"""
SLOW_PARAMETERS = [{"name": "bx"}]


def slow(folder: Path, *args: str, **keys: Any) -> ProgramSeries:
    script(folder, "slow.py", SLOW)
    command = ["python", "slow.py", *args]
    return series(
        describe(folder, command=command, format="arrow", parameters=SLOW_PARAMETERS, **keys)
    )


def test_the_timeout_kills_the_program_and_its_children(tmp_path: Path) -> None:
    reader = slow(tmp_path, "pid", "child", timeout=2)
    with pytest.raises(UpstreamFailed, match="within 2 s"):
        list(reader.read(ns("2020-01-01"), ns("2020-01-02"), []))
    assert gone(int((tmp_path / "pid").read_text()))
    assert gone(int((tmp_path / "child").read_text()))


def test_the_timeout_holds_when_an_escaped_process_keeps_the_output_open(tmp_path: Path) -> None:
    # A daemon in a session of its own cannot be killed with the reader's process group;
    # it holds stdout open, so the output never ends: the deadline must still hold.
    text = "import subprocess\np = subprocess.Popen(['sleep', '300'], start_new_session=True)\n"
    script(tmp_path, "daemon.py", text + "open('daemon', 'w').write(str(p.pid))\n")
    reader = series(describe(tmp_path, command=["python", "daemon.py"], timeout=5))
    try:
        with pytest.raises(UpstreamFailed, match="within 5 s"):
            list(reader.read(ns("2020-01-01"), ns("2020-01-02"), []))
    finally:
        if (tmp_path / "daemon").exists():
            os.kill(int((tmp_path / "daemon").read_text()), 9)  # the daemon this test started


def test_closing_the_stream_early_kills_the_program(tmp_path: Path) -> None:
    reader = slow(tmp_path, "pid", "child")
    blocks = reader.read(ns("2020-01-01"), ns("2020-01-02"), [])
    assert len(next(blocks)) == 1
    blocks.close()  # type: ignore[attr-defined]  # the client went away
    assert gone(int((tmp_path / "pid").read_text()))
    assert gone(int((tmp_path / "child").read_text()))


def test_reading_past_stop_ends_the_program(tmp_path: Path) -> None:
    # wave.py would write a whole year; the stream stops once times pass `stop`.
    command = ["sh", "-c", 'echo $$ > pid; exec "$0" "$@"', sys.executable, str(WAVE_PY)]
    command += ["--start={start}", "--stop=2021-01-01T00:00:00Z"]
    path = describe(tmp_path, command=command, format="arrow")
    start, stop = ns("2020-01-01T00:00:00Z"), ns("2020-01-01T00:10:00Z")
    got_t, _ = collect(series(path).read(start, stop, []))
    np.testing.assert_array_equal(got_t, reference(start, stop)[0])
    assert gone(int((tmp_path / "pid").read_text()))


def test_concurrent_runs_are_limited_per_reader(tmp_path: Path) -> None:
    first = slow(tmp_path, "pid1", max_concurrent=1, timeout=5)
    running = first.read(ns("2020-01-01"), ns("2020-01-02"), [])
    assert len(next(running)) == 1  # holds the only slot, sleeping
    waiting = series(tmp_path / "test.reader.toml").read(ns("2020-01-01"), ns("2020-01-02"), [])
    with pytest.raises(UpstreamFailed, match="busy"):
        next(waiting)
    running.close()  # type: ignore[attr-defined]
    again = first.read(ns("2020-01-01"), ns("2020-01-02"), [])
    assert len(next(again)) == 1  # the slot is free again
    again.close()  # type: ignore[attr-defined]


def test_output_beyond_max_output_mb_is_cut_off(tmp_path: Path) -> None:
    reader = wave(tmp_path, max_output_mb=1)  # a day of Arrow is about 2.7 MB
    with pytest.raises(TooLarge, match="max_output_mb"):
        list(reader.read(ns("2020-01-01"), ns("2020-01-03"), []))


# -- descriptions and the driver --------------------------------------------------------------

MINIMAL = {"command": ["true"]}


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"colour": "red"}, "colour"),
        ({"format": "xml"}, "format"),
        ({"start": "2030-01-01", "stop": "2020-01-01"}, "stop"),
        ({"start": "yesterday"}, "start"),
        ({"sample_start": "2020-01-01"}, "sample_stop"),
        ({"sample_start": "1990-01-01", "sample_stop": "1990-01-02"}, "sample_start"),
        ({"cadence": "P1M"}, "cadence"),
        ({"cadence": -1}, "cadence"),
        ({"time_units": "fortnights since 1970-01-01"}, "time_units"),
        ({"timeout": 0}, "timeout"),
        ({"command": []}, "command"),
        ({"command": ["./nope"]}, "command"),
        ({"command": ["no-such-program-anywhere"]}, "command"),
        ({"command": ["{start}"]}, "command"),
        ({"command": ["true", "{start}", "--x={nope}"]}, "command"),
        ({"command": ["true", "{resolution}"]}, "reduces"),
        ({"reduces": True}, "reduces"),
        ({"parameters": [{"name": "b", "size": [0]}]}, "parameters.0.size.0"),
        ({"parameters": [{"name": "b", "fill": "none"}]}, "parameters.0.fill"),
        ({"parameters": [{"name": "b", "kind": "double"}]}, "parameters.0.kind"),
        ({"parameters": [{"name": "b"}, {"name": "b"}]}, "parameters"),
        ({"parameters": [{"name": "a,b"}]}, "parameters.0.name"),
        ({"parameters": []}, "parameters"),
        ({"extras": [{"name": "gain", "type": "integer"}]}, "extras"),  # never used
        ({"extras": [{"name": "start"}]}, "extras.0.name"),
        ({"extras": [{"name": "g", "allowed": ["a"], "default": "b"}]}, "extras.0.default"),
        ({"extras": [{"name": "g", "type": "integer", "allowed": ["x"]}]}, "extras.0.allowed"),
        ({"extras": [{"name": "g", "pattern": "("}]}, "extras.0.pattern"),
        ({"csv": {"delimiter": ";;"}}, "csv.delimiter"),
    ],
)
def test_an_invalid_description_names_the_file_and_the_key(
    tmp_path: Path, change: dict[str, Any], key: str
) -> None:
    keys = {**MINIMAL, **change}
    if "extras" in change and key != "extras":  # use the extra, so only `key` is wrong
        keys["command"] = ["true", *(f"{{{e['name']}}}" for e in change["extras"])]
    path = describe(tmp_path, "broken", **keys)
    for attempt in (DRIVER.probe, lambda p: DRIVER.series(Source(paths=(p,)))):
        with pytest.raises(ConfigError) as caught:
            attempt(path)
        assert caught.value.message.startswith(f"broken.reader.toml: {key}: "), caught.value
        assert caught.value.parameter == key


def test_a_program_must_be_executable(tmp_path: Path) -> None:
    (tmp_path / "reader").write_text("#!/bin/sh\n")
    with pytest.raises(ConfigError, match="not executable"):
        series(describe(tmp_path, command=["./reader"]))
    (tmp_path / "reader").chmod(0o755)
    assert series(describe(tmp_path, command=["./reader"])).reader.program == str(
        tmp_path / "reader"
    )


def test_invalid_toml_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "bad.reader.toml").write_text('command = ["true"\n')
    with pytest.raises(ConfigError, match=r"^bad\.reader\.toml: not valid TOML"):
        DRIVER.probe(tmp_path / "bad.reader.toml")


def test_the_driver_opens_reader_descriptions_only(tmp_path: Path) -> None:
    path = describe(tmp_path, "mag", command=["true"], title="Magnetometer")
    (tmp_path / "dir.reader.toml").mkdir()
    (tmp_path / "outcrop.toml").write_text("")
    assert (DRIVER.name, DRIVER.suffix) == ("program", ".reader.toml")
    assert DRIVER.can_open(path)
    assert not DRIVER.can_open(tmp_path / "dir.reader.toml")
    assert not DRIVER.can_open(tmp_path / "outcrop.toml")
    probe = DRIVER.probe(path)
    assert (probe.title, probe.groups) == ("Magnetometer", ("",))
    with pytest.raises(BadQuery, match="/hapi/data"):
        DRIVER.open(Source(paths=(path,)))


def test_the_version_follows_the_description_and_the_program(tmp_path: Path) -> None:
    reader = script(tmp_path, "reader.sh", "#!/bin/sh\n")
    path = describe(tmp_path, command=["./reader.sh"])
    source = Source(paths=(path,))
    first = DRIVER.version(source)
    assert DRIVER.version(source) == first
    os.utime(reader, ns=(reader.stat().st_atime_ns, reader.stat().st_mtime_ns + NS))
    second = DRIVER.version(source)
    assert second != first  # the program changed
    describe(tmp_path, command=["./reader.sh"], version="2")
    third = DRIVER.version(source)
    assert third not in (first, second)  # bumped by hand
    script(tmp_path, "helper.py", "")
    describe(tmp_path, command=["./reader.sh", "helper.py"], version="2")
    fourth = DRIVER.version(source)
    os.utime(tmp_path / "helper.py", ns=(0, NS))
    assert DRIVER.version(source) != fourth  # a file the command names changed
