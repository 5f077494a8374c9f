"""Settings from (highest first) arguments, environment `OUTCROP_*`, `.env`, `outcrop.toml`.

Every field carries a description; `docs/configuration.md` lists them all, and a test
fails when one is missing there.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

LogLevel = Literal["debug", "info", "warning", "error", "critical"]


def default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "outcrop"


class DatasetConfig(BaseModel):
    """A dataset declared explicitly in `outcrop.toml` (`[[datasets]]`)."""

    id: str = Field(description="Dataset id, `/`-separated, e.g. `cmip6/ta_Amon`.")
    source: str = Field(
        description="A file, a glob or a folder; relative paths are relative to the config file."
    )
    title: str = Field("", description="Human title; defaults to the file's `title` attribute.")
    description: str = Field("", description="Free text shown in the catalog.")
    driver: str = Field("grid", description="Driver name (entry point `outcrop.drivers`).")
    aggregate: str | None = Field(
        None, description="Dimension along which the files of a glob or folder are joined."
    )
    group: str | None = Field(None, description="NetCDF4/HDF5 group path to expose.")
    attrs: dict[str, Any] = Field(default_factory=dict, description="Global attributes to add.")
    hide_attrs: list[str] = Field(
        default_factory=list, description="Global or variable attributes to hide."
    )


class Settings(BaseSettings):
    """Everything an operator can set."""

    model_config = SettingsConfigDict(
        env_prefix="OUTCROP_", env_file=".env", extra="ignore", toml_file=None
    )

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
        None, description="SQLAlchemy URL of the catalog database; default SQLite in data_dir."
    )
    cache_mb: int = Field(
        256, ge=0, description="Memory budget, in MB, of the LRU of encoded chunks."
    )
    open_files: int = Field(64, ge=1, description="How many opened datasets are kept open.")
    max_response_mb: int = Field(
        2048, ge=1, description="Largest subset response, in MB (decoded); larger gets 413."
    )
    threads: int = Field(
        16, ge=1, description="Threads for blocking file and array work per worker."
    )
    cors_origins: list[str] = Field(
        default_factory=lambda: ["*"], description="Origins allowed by CORS."
    )
    log_level: LogLevel = Field("info", description="Lowest level of log lines written.")
    quiet: bool = Field(False, description="Write no log lines at all.")
    datasets: list[DatasetConfig] = Field(
        default_factory=list, description="Datasets declared explicitly (`[[datasets]]`)."
    )
    config_file: Path | None = Field(
        None, description="The `outcrop.toml` these settings were read from, if any."
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml = TomlConfigSettingsSource(settings_cls)
        return (init_settings, env_settings, dotenv_settings, toml)

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'catalog.sqlite'}"


def load_settings(config: Path | None = None, **overrides: Any) -> Settings:
    """Read settings, with `config` (an `outcrop.toml`) below env and `overrides` above all."""
    given = {k: v for k, v in overrides.items() if v is not None}
    config = config or _default_config()
    if config is None:
        return Settings(**given)
    cls = type(
        "FileSettings",
        (Settings,),
        {"model_config": {**Settings.model_config, "toml_file": config}},
    )
    settings = cls(**given)
    base = config.resolve().parent
    for ds in settings.datasets:
        if not Path(ds.source).is_absolute():
            ds.source = str(base / ds.source)
    settings.paths = [p if p.is_absolute() else base / p for p in settings.paths]
    settings.config_file = config.resolve()
    return Settings.model_validate(settings.model_dump())


def _default_config() -> Path | None:
    path = os.environ.get("OUTCROP_CONFIG")
    if path:
        return Path(path)
    here = Path("outcrop.toml")
    return here if here.is_file() else None
