"""Outside tools the benchmark drives (wrk, stress-ng): Debian packages, installed on first use when absent."""

from __future__ import annotations

import os
import shutil
import subprocess


class ToolMissing(RuntimeError):
    pass


def ensure_tool(command: str, package: str | None = None) -> str:
    """The path of `command`, installing its Debian package first when it is absent (as root, with apt-get)."""
    if path := shutil.which(command):
        return path
    package = package or command
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise ToolMissing(f"{command} is not installed: install the Debian package {package} (apt-get install {package})")
    done = subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", package], capture_output=True,
                          text=True, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    if done.returncode != 0 or not (path := shutil.which(command)):
        raise ToolMissing(f"apt-get install {package} failed: {(done.stderr or done.stdout).strip()[-300:]}")
    return path
