"""Settings from (highest first) arguments, environment `OUTCROP_*`, `.env`, `outcrop.toml`.

Every field carries a description; `docs/configuration.md` lists them all, and a test
fails when one is missing there.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    InitSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from outcrop.errors import ConfigError

LogLevel = Literal["debug", "info", "warning", "error", "critical"]
ZarrCodecName = Literal["stored", "lz4", "zstd"]
CONFIG_NAME = "outcrop.toml"
DOTENV = ".env"


def default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "outcrop"


class DatasetConfig(BaseModel):
    """A dataset declared explicitly in `outcrop.toml` (`[[datasets]]`)."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(description="Dataset id, `/`-separated, e.g. `cmip6/ta_Amon`.")
    source: str = Field(
        "",
        description="A file, a glob (`*`, `?`, `[…]`, `**`) or a folder; relative paths are "
        "relative to the config file. With `reader`, the folder the reader's relative paths "
        "start from (default: the config file's folder).",
    )
    title: str = Field("", description="Human title; defaults to the file's `title` attribute.")
    description: str = Field("", description="Free text shown in the catalog and searched.")
    driver: str = Field("grid", description="Driver name (entry point group `outcrop.drivers`).")
    aggregate: str | None = Field(
        None,
        description="Dimension along which the files of a glob or folder are joined into one "
        "dataset (e.g. `time` for one file per year). Required when `source` matches several "
        "files.",
    )
    group: str | None = Field(None, description="NetCDF4/HDF5 or Zarr group path to expose.")
    attrs: dict[str, Any] = Field(
        default_factory=dict, description="Global attributes to add (or replace)."
    )
    hide_attrs: list[str] = Field(
        default_factory=list, description="Names of global or variable attributes to hide."
    )
    reader: dict[str, Any] | None = Field(
        None,
        description="A reader program described inline (`[datasets.reader]`, the keys of a "
        "`.reader.toml` file, see docs/readers.md); sets `driver` to `program`.",
    )

    @model_validator(mode="after")
    def _source_or_reader(self) -> DatasetConfig:
        if self.reader is not None:
            self.driver = "program"
            self.source = self.source or "."
        elif not self.source:
            raise ValueError(f"dataset {self.id!r} needs a `source` (or a `reader` table)")
        return self

    @field_validator("id")
    @classmethod
    def _valid_id(cls, value: str) -> str:
        parts = value.split("/")
        if not value or any(p in {"", ".", ".."} or p != p.strip() for p in parts) or "\\" in value:
            raise ValueError(
                f"dataset id {value!r} must be `/`-separated names without empty, `.` or `..` "
                "parts, leading or trailing spaces or backslashes, e.g. `cmip6/ta_Amon`"
            )
        return value


class Settings(BaseSettings):
    """Everything an operator can set."""

    model_config = SettingsConfigDict(env_prefix="OUTCROP_", env_file=DOTENV, extra="ignore")
    # The `outcrop.toml` a subclass made by `load_settings` reads, below env and `.env`.
    config_path: ClassVar[Path | None] = None

    paths: list[Path] = Field(
        default_factory=list, description="Folders (or files) whose datasets are served."
    )
    host: str = Field("127.0.0.1", description="Address to listen on.")
    port: int = Field(8765, ge=0, le=65535, description="TCP port to listen on.")
    workers: int = Field(1, ge=1, description="Number of server worker processes.")
    root_path: str = Field(
        "", description="Path prefix when served behind a reverse proxy, e.g. `/outcrop`."
    )
    forwarded_allow_ips: str = Field(
        "127.0.0.1", description="Proxies whose `X-Forwarded-*` headers are trusted (`*`: all)."
    )
    data_dir: Path = Field(
        default_factory=default_data_dir,
        description="Folder for the catalog database and caches.",
    )
    database_url: str | None = Field(
        None,
        description="SQLAlchemy URL of the catalog database, e.g. "
        "`postgresql+psycopg://user@host/db`; default SQLite `catalog.sqlite` in `data_dir`.",
    )
    cache_mb: int = Field(
        256, ge=0, description="Memory budget, in MB, of the LRU of encoded chunks."
    )
    zarr_codec: ZarrCodecName = Field(
        "stored",
        description="How Zarr chunks of NetCDF4/HDF5 variables are compressed: `stored` "
        "serves the file's own chunk bytes as they are (zlib: no server work, but clients "
        "decompress at 150 to 200 MB/s); `lz4` (Blosc) or `zstd` transcodes them once into "
        "a codec clients decompress several times faster, kept in `data_dir/chunks`.",
    )
    zarr_cache_mb: int = Field(
        4096,
        ge=0,
        description="Disk budget, in MB, of transcoded Zarr chunks (in `data_dir/chunks`, "
        "with `zarr_codec` other than `stored`); least recently used chunks go first.",
    )
    series_cache_mb: int = Field(
        2048,
        ge=0,
        description="Disk budget, in MB, of the multi-resolution cache of reduced time-series "
        "blocks (in `data_dir/series`); least recently used blocks go first.",
    )
    open_files: int = Field(
        64, ge=1, description="How many opened datasets are kept open (least recently used go)."
    )
    max_response_mb: int = Field(
        2048, ge=1, description="Largest subset response, in MB (decoded); larger gets 413."
    )
    threads: int = Field(
        16, ge=1, description="Threads for blocking file and array work per worker."
    )
    cors_origins: list[str] = Field(
        default_factory=lambda: ["*"], description="Origins allowed by CORS."
    )
    queue_url: str | None = Field(
        None,
        description="Job queue: unset runs jobs inside `outcrop serve` (huey on SQLite in "
        "`data_dir/jobs`); `redis://host:6379/0` queues them on Redis for `outcrop worker`.",
    )
    job_workers: int = Field(
        1,
        ge=0,
        description="Threads consuming jobs inside each `outcrop serve` process "
        "(embedded queue only; 0: none).",
    )
    job_expiry_hours: float = Field(
        24, gt=0, description="Hours a finished, failed or cancelled job and its zip are kept."
    )
    job_max_files: int = Field(100, ge=1, description="Most datasets one job may name.")
    job_max_operations: int = Field(20, ge=1, description="Most operations one job may chain.")
    job_max_output_mb: int = Field(
        4096, ge=1, description="Largest total output of one job, in MB (before zipping)."
    )
    job_timeout_s: float = Field(3600, gt=0, description="Longest run time of one job, seconds.")
    job_lease_s: float = Field(
        60,
        gt=0,
        description="A running job whose worker has not reported for this many seconds is "
        "taken to be dead and queued again.",
    )
    job_file_delay_s: float = Field(
        0, ge=0, description="Pause after each file of a job, seconds (for tests and demos)."
    )
    dask_scheduler: str | None = Field(
        None, description="Address of a Dask scheduler for job array work, e.g. `tcp://h:8786`."
    )
    jobs_dir: Path | None = Field(
        None,
        description="Folder of job zips and uploads (default data_dir/jobs); with several "
        "nodes and workers, one folder they all share.",
    )
    upload_max_mb: int = Field(50, ge=1, description="Largest file uploaded with a job, in MB.")
    cutout_max_pixels: int = Field(
        4096, ge=16, description="Longest side of an image cutout, in pixels (larger: 400)."
    )
    image_cache_mb: int = Field(
        1024, ge=0, description="Disk budget of cached image cutouts (data_dir/cutouts), MB."
    )
    routes: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["all"],
        description="Route sets served, e.g. `rest,zarr,opendap,hapi,das2,jobs,images,web`, "
        "or `all` (plugins register more through the `outcrop.routes` entry-point group).",
    )
    log_file: Path | None = Field(
        None, description="Also write log lines to this file (`outcrop start`: data_dir/logs)."
    )
    log_level: LogLevel = Field("info", description="Lowest level of log lines written.")
    quiet: bool = Field(False, description="Write no log lines at all.")
    datasets: list[DatasetConfig] = Field(
        default_factory=list, description="Datasets declared explicitly (`[[datasets]]`)."
    )
    config: Path | None = Field(
        None,
        description="The `outcrop.toml` to read; default `./outcrop.toml` when it exists.",
    )

    @field_validator("routes", mode="before")
    @classmethod
    def _split_routes(cls, value: Any) -> Any:
        """`OUTCROP_ROUTES=rest,zarr` as well as a TOML list."""
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @model_validator(mode="after")
    def _unique_dataset_ids(self) -> Settings:
        seen: set[str] = set()
        for ds in self.datasets:
            if ds.id in seen:
                raise ValueError(f"dataset id {ds.id!r} is declared twice")
            seen.add(ds.id)
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        path = getattr(settings_cls, "config_path", None)
        if path is None:
            return (init_settings, env_settings, dotenv_settings)
        toml = InitSettingsSource(settings_cls, read_config(path))
        return (init_settings, env_settings, dotenv_settings, toml)

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'catalog.sqlite'}"


def load_settings(config: Path | None = None, **overrides: Any) -> Settings:
    """Settings from `overrides` (None means not given) above env, `.env` and `config`.

    `config` defaults to `OUTCROP_CONFIG` (environment or `.env`), then `./outcrop.toml`.
    """
    given = {k: v for k, v in overrides.items() if v is not None}
    path = config or find_config()
    try:
        if path is None:
            return Settings(**given)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist", parameter="config")
        cls = type("FileSettings", (Settings,), {"config_path": path})
        read = cls(**given, config=path.resolve())
        return Settings.model_validate(read.model_dump())
    except ValidationError as exc:
        raise ConfigError(_explain(exc, path)) from exc
    except SettingsError as exc:
        raise ConfigError(f"invalid setting: {exc}") from exc


def find_config() -> Path | None:
    """`OUTCROP_CONFIG` from the environment or `.env`, else `./outcrop.toml` if present."""
    named = os.environ.get("OUTCROP_CONFIG") or _dotenv_value("OUTCROP_CONFIG")
    if named:
        return Path(named)
    here = Path(CONFIG_NAME)
    return here if here.is_file() else None


def _dotenv_value(name: str) -> str | None:
    from dotenv import dotenv_values

    return dotenv_values(DOTENV).get(name) if Path(DOTENV).is_file() else None


def read_config(path: Path) -> dict[str, Any]:
    """The settings an `outcrop.toml` sets, with its relative paths made absolute."""
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}", parameter="config") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}", parameter="config") from exc
    allowed = set(Settings.model_fields) - {"config"}
    for key in data:
        if key not in allowed:
            raise ConfigError(
                f"{path}: unknown setting {key!r}; known settings are {', '.join(sorted(allowed))}",
                parameter=key,
            )
    return _rebase(data, path.resolve().parent)


def _rebase(data: dict[str, Any], base: Path) -> dict[str, Any]:
    """Paths in a config file are relative to the file, not to the working directory."""
    out = dict(data)
    if isinstance(out.get("paths"), list):
        out["paths"] = [_under(base, p) for p in out["paths"]]
    if isinstance(out.get("data_dir"), str):
        out["data_dir"] = _under(base, out["data_dir"])
    if isinstance(out.get("datasets"), list):
        out["datasets"] = [_rebase_dataset(d, base) for d in out["datasets"]]
    return out


def _rebase_dataset(decl: Any, base: Path) -> Any:
    if not isinstance(decl, dict):
        return decl
    if isinstance(decl.get("reader"), dict) and "source" not in decl:
        return {**decl, "source": str(base)}  # an inline reader's paths start here
    if isinstance(decl.get("source"), str):
        return {**decl, "source": _under(base, decl["source"])}
    return decl


def _under(base: Path, value: Any) -> Any:
    if not isinstance(value, str):
        return value
    path = Path(value).expanduser()
    return str(path if path.is_absolute() else base / path)


def _explain(exc: ValidationError, path: Path | None) -> str:
    where = f" (environment, .env or {path})" if path else " (environment or .env)"
    problems = [
        f"{'.'.join(str(p) for p in err['loc']) or 'settings'}: {err['msg']}"
        for err in exc.errors()
    ]
    return f"invalid settings{where}: " + "; ".join(problems)
