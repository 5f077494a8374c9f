"""The one error tree. Each error also inherits the builtin it resembles; none knows HTTP.

`api/errors.py` maps each class to a status code, and each protocol renders it the way
its clients expect.
"""

from __future__ import annotations


class OutcropError(Exception):
    """Base of every error Outcrop raises on purpose."""

    def __init__(self, message: str, *, parameter: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.parameter = parameter


class DatasetNotFound(OutcropError, KeyError):
    """No dataset, variable or chunk by that name."""

    def __str__(self) -> str:
        return self.message


class BadQuery(OutcropError, ValueError):
    """The request is malformed or asks for something that does not exist."""


class TooLarge(OutcropError, ValueError):
    """The request would produce more bytes than the configured limit."""

    def __init__(self, message: str, *, size: int, limit: int, parameter: str | None = None):
        super().__init__(message, parameter=parameter)
        self.size = size
        self.limit = limit


class Forbidden(OutcropError, PermissionError):
    """The caller may not see this dataset or path."""


class SourceError(OutcropError, OSError):
    """A source file could not be opened or is inconsistent (e.g. an aggregation overlaps)."""


class UpstreamFailed(OutcropError, ConnectionError):
    """A remote server or an external program failed."""


class ConfigError(OutcropError, ValueError):
    """A setting, the `outcrop.toml` file or a dataset declaration is invalid."""
