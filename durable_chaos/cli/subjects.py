"""`starter.py subjects`: every subject this machine knows, and building their images with progress."""

from __future__ import annotations

import concurrent.futures
import json
import subprocess
import time

import typer
from rich.console import Console
from rich.table import Table

from activities.images import ImageBuildFailed, ensure_images, image_exists, missing_images
from durable_chaos.cli.common import EXIT_INFRA, err_console, fail
from subjects import BadSubjectFile, UnknownSubject, get_subject, known
from subjects.base import ImageSpec
from subjects.declarative import schema


def _docker_up() -> bool:
    return subprocess.run(["docker", "info"], capture_output=True).returncode == 0


def build_images_with_progress(whose: str, images: list[ImageSpec]) -> None:
    """Build missing images here (the subject's, and a fault's helper), showing what the build is doing (it can take
    a minute).

    Done by the starter before the run starts, so the user sees it; preflight would build them too, but only its
    worker's log would show why it takes long. Skipped when Docker is not reachable: preflight says so properly."""
    # `docker image inspect` answers "missing" when Docker is down too: only then is `docker info` worth asking.
    if not missing_images(images) or not _docker_up():
        return
    began = time.monotonic()
    last = ["starting"]
    with err_console.status(f"building the images of {whose}") as status, \
            concurrent.futures.ThreadPoolExecutor(1) as pool:
        build = pool.submit(ensure_images, images, lambda line: last.__setitem__(0, line))
        while not build.done():
            # Ticks on its own: a Debian rootfs prints nothing for most of its minute.
            status.update(f"[bold]building the images of {whose}[/] ({time.monotonic() - began:.0f}s): "
                          f"[dim]{last[0][:90]}[/]")
            time.sleep(0.25)
        try:
            built = build.result()
        except ImageBuildFailed as err:
            fail(EXIT_INFRA, f"cannot build the images of {whose}: {err}")
    err_console.print(f"built {', '.join(built)} in {time.monotonic() - began:.0f}s")


def subjects(
    as_json: bool = typer.Option(False, "--json", help="Print the list as JSON."),
    print_schema: bool = typer.Option(False, "--schema",
                                      help="Print the JSON Schema of subject.yaml (for editors) and exit."),
) -> None:
    """Every subject you can run: shipped and installed ones (entry points), and subject folders on
    CHAOS_SUBJECT_PATH. A folder anywhere else runs with `chaos --subject ./path/to/folder`."""
    if print_schema:
        print(json.dumps(schema(), indent=2))
        return
    docker_up = _docker_up()
    rows = []
    for found in known():
        try:
            s = get_subject(str(found.folder) if found.folder else found.name)
        except (UnknownSubject, BadSubjectFile) as err:
            rows.append({"name": found.name, "origin": found.origin, "error": str(err)})
            continue
        images = {i.ref: (image_exists(i.ref) if docker_up else None) for i in s.images()}
        rows.append({"name": s.name, "targets": list(s.targets), "services": list(s.services),
                     "origin": s.origin or found.origin, "project": s.default_project,
                     "port_base": s.default_port_base, "images": images})
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    table = Table(title="Subjects", title_justify="left", caption=(
        "✓ image built  · ✗ not built yet (the first run builds it)  · ? Docker unreachable"), caption_justify="left")
    table.add_column("name", no_wrap=True, style="bold")
    table.add_column("targets", no_wrap=True)
    table.add_column("images", no_wrap=True)
    table.add_column("defined in", overflow="fold")
    marks = {True: "[green]✓[/]", False: "[yellow]✗[/]", None: "[dim]?[/]"}
    for r in rows:
        if "error" in r:
            table.add_row(r["name"], "[red]cannot load[/]", "", f"{r['origin']}\n[red]{r['error']}[/]")
            continue
        table.add_row(r["name"], ", ".join(r["targets"]),
                      "\n".join(f"{marks[ok]} {ref}" for ref, ok in r["images"].items()) or "-", r["origin"])
    Console().print(table)
