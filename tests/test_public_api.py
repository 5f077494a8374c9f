"""The public surface of `import outcrop`: a change to it must be deliberate (as in httpx)."""

from __future__ import annotations

import subprocess
import sys
import types

import outcrop

PUBLIC = [
    "BadQuery",
    "Client",
    "ConfigError",
    "DatasetNotFound",
    "Forbidden",
    "OutcropError",
    "SourceError",
    "TooLarge",
    "UpstreamFailed",
    "open_dataset",
]


def test_public_names_are_exactly_the_documented_ones() -> None:
    # Changing this list is changing the public API: update CHANGELOG.md and the docs too.
    assert sorted(outcrop.__all__) == PUBLIC


def test_every_public_name_resolves() -> None:
    for name in outcrop.__all__:
        assert getattr(outcrop, name) is not None, name


def test_no_other_public_attributes() -> None:
    public = {
        name
        for name in dir(outcrop)
        if not name.startswith("_")
        and not isinstance(getattr(outcrop, name), types.ModuleType)
        and name not in {"annotations", "TYPE_CHECKING", "Any"}
    }
    assert public <= set(PUBLIC)


def test_errors_are_outcrop_errors_and_builtins() -> None:
    assert issubclass(outcrop.DatasetNotFound, KeyError)
    assert issubclass(outcrop.BadQuery, ValueError)
    assert issubclass(outcrop.Forbidden, PermissionError)
    for name in PUBLIC:
        value = getattr(outcrop, name)
        if isinstance(value, type) and name != "Client":
            assert issubclass(value, outcrop.OutcropError), name


def test_star_import_gives_the_public_names() -> None:
    namespace: dict[str, object] = {}
    exec("from outcrop import *", namespace)
    assert set(PUBLIC) <= set(namespace)


def test_importing_outcrop_does_not_import_the_client_stack() -> None:
    # `outcrop serve` starts faster when `import outcrop` leaves xarray and httpx alone.
    code = "import sys, outcrop; print(sorted({'xarray', 'httpx'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
