"""`outcrop ingest images`: FITS headers and footprints into the catalog database."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from outcrop.cli import ConfigOpt, DataDirOpt, app, check_exists, fail
from outcrop.errors import OutcropError
from outcrop.log import configure
from outcrop.settings import Settings, load_settings

if TYPE_CHECKING:
    from outcrop.images.service import ImageService, SavedFile

ingest_app = typer.Typer(help="Ingest collections into the catalog.", no_args_is_help=True)
app.add_typer(ingest_app, name="ingest")


@ingest_app.command("images")
def ingest_images(
    collection: Annotated[
        str, typer.Argument(help="Collection name (letters, digits, '.', '_', '-').")
    ],
    paths: Annotated[
        list[str],
        typer.Argument(help="FITS files, folders of them, or http(s) URLs of FITS files."),
    ],
    recursive: Annotated[
        bool, typer.Option("--recursive", "-r", help="Also look in sub-folders.")
    ] = False,
    base_url: Annotated[
        str | None,
        typer.Option(
            help="Public URL of the folders given: each image's download URL is this plus "
            "its path relative to the folder (for a file given directly, its name)."
        ),
    ] = None,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Read every file again, unchanged ones too (after an upgrade that reads "
            "headers differently, e.g. exposure units).",
        ),
    ] = False,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Read every image HDU of the FITS files (headers only), and store footprint, time,
    instrument, filter and keywords in COLLECTION. Unchanged files are skipped; unreadable
    ones and those without a celestial WCS are reported without stopping. Files ingested
    before from under the PATHs that no longer exist are removed (a URL: when it answers
    404 or 410). Exit status 0 when any file was ingested, unchanged or removed, 1 when
    none was found or every one failed, 2 on a usage or configuration error. The server
    may be running: new images appear in its searches as each file is stored."""
    from pathlib import Path

    from rich.progress import Progress

    try:
        check_exists([], config)
        settings = load_settings(config, data_dir=data_dir)
        configure("warning", settings.quiet)
        service = _service(settings)
        # a path that is gone is fine when it held files of the collection: they go too
        local = [Path(p) for p in paths if "://" not in p]
        check_exists(
            [p for p in local if p.exists() or not service.knows(collection, str(p))], None
        )
        with Progress(transient=False) as bar:
            task = bar.add_task(f"ingesting into {collection}", total=None)

            def step(result: SavedFile, done: int, total: int) -> None:
                bar.update(task, completed=done, total=total)
                if result.status == "failed":
                    bar.console.print(
                        f"[red]failed[/red] {result.error}", markup=True, highlight=False
                    )
                elif result.status == "removed":
                    bar.console.print(
                        f"[yellow]removed[/yellow] {result.source} (no longer there; "
                        f"{result.images} images)",
                        markup=True,
                        highlight=False,
                    )

            results = service.ingest(
                collection,
                paths,
                recursive=recursive,
                base_url=base_url,
                force=force,
                progress=step,
            )
    except OutcropError as exc:
        fail(exc.message)
        return
    raise typer.Exit(_report(results))


def _service(settings: Settings) -> ImageService:
    from outcrop.db import connect
    from outcrop.images.service import ImageService

    return ImageService(settings, connect(settings.db_url))


def _report(results: list[SavedFile]) -> int:
    from outcrop.images.service import ingest_status

    kinds = ("ingested", "unchanged", "failed", "removed")
    counts = {s: sum(r.status == s for r in results) for s in kinds}
    images = sum(r.images for r in results if r.status == "ingested")
    gone = sum(r.images for r in results if r.status == "removed")
    typer.echo(
        f"{len(results)} files: {counts['ingested']} ingested ({images} images), "
        f"{counts['unchanged']} unchanged, {counts['failed']} failed, "
        f"{counts['removed']} removed ({gone} images)"
    )
    if not results:
        typer.echo("no FITS files found (.fits, .fit, .fts, .fz, .gz of them)", err=True)
    return ingest_status(results)
