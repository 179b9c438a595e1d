"""The power-loss layer on a Docker host: a member's data folder served by chaos-powerfs (powerfs.py) from a helper
container the run owns, so that the writes the member did not fsync can be dropped.

The arrangement (checked on this kernel, ../shared/DESIGN.md): two host folders per member under the state
directory, `backing` (what is synced: the member's data as its disk holds it) and `mnt`, made a shared mount point
of its own (`mount --bind mnt mnt; mount --make-rshared mnt`). The helper (`/dev/fuse`, SYS_ADMIN, AppArmor
unconfined: what a FUSE mount in a container needs) binds `mnt` with `rshared` propagation and mounts its file
system there; the mount propagates back to the host's `mnt`, and a member that binds `mnt` as its data folder
(`rslave`) reads and writes through the layer.

If the helper dies, its mount stays behind, broken ("Transport endpoint is not connected"), until someone unmounts
it: `remove` unmounts whatever is left and is safe to repeat. Everything is named after the fault's tag and the
member, so the undo, the guard and the reaper find it from those alone.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from python_on_whales import DockerException, docker

from durable_chaos.docker_engine import PROJECT_LABEL
from durable_chaos.faults.netns import HELPER_LABEL
from durable_chaos.images import FromDebian, ImageSpec, content_tag, local_or_upstream
from durable_chaos.state import state_dir

HERE = Path(__file__).parent
MOUNT_TIMEOUT_S = 10.0  # a cold start of python3 and libfuse in the helper


def powerfs_image() -> ImageSpec:
    # mfusepy is one pure-Python module (ctypes over libfuse3): the helper gets the copy installed here, found
    # without importing it (importing needs libfuse3, which the runner's host may lack).
    files = (HERE / "Dockerfile", HERE / "powerfs.py", Path(importlib.util.find_spec("mfusepy").origin))
    return local_or_upstream(content_tag("chaos-powerfs", files),
                             FromDebian(packages=("python3", "fuse3"), dockerfile=files[0], context_files=files[1:]),
                             "CHAOS_POWERFS_IMAGE")


class LayerError(RuntimeError):
    pass


@dataclass(frozen=True)
class Layer:
    """One member's layer, named by the fault's tag (or a subject copy's id) and the member's service."""

    tag: str
    service: str

    @property
    def folder(self) -> Path:
        return state_dir() / "powerfs" / self.tag / self.service

    @property
    def backing(self) -> Path:
        return self.folder / "backing"

    @property
    def mountpoint(self) -> Path:
        return self.folder / "mnt"

    @property
    def helper(self) -> str:
        return f"chaos-powerfs-{self.tag}-{self.service}"

    def volume(self, data_path: str) -> tuple[str, str, str]:
        """The member's bind of its data folder through the layer (python-on-whales' `volumes=` form)."""
        return (str(self.mountpoint), data_path, "rslave")

    def mounted(self) -> bool:
        return _fuse_mounted(self.mountpoint)

    def start(self, owner: tuple[int, int, int] = (0, 0, 0o755)) -> None:
        """The helper running and its file system mounted on `mountpoint` (again, if a retried start finds it).
        `owner`: (uid, gid, mode) of the data folder as the member expects it (PostgreSQL's initdb, run as
        postgres, must own its data directory)."""
        if self.mounted() and _running(self.helper):
            return
        self.remove(keep_data=True)  # a dead helper's broken mount, or a half-done start
        self.backing.mkdir(parents=True, exist_ok=True)
        os.chown(self.backing, owner[0], owner[1])
        os.chmod(self.backing, owner[2])
        self.mountpoint.mkdir(parents=True, exist_ok=True)
        _run("mount", "--bind", str(self.mountpoint), str(self.mountpoint))
        _run("mount", "--make-rshared", str(self.mountpoint))
        docker.run(powerfs_image().ref, ["serve", "/backing", "/mnt/layer"], detach=True, name=self.helper,
                   devices=["/dev/fuse"], cap_add=["SYS_ADMIN"], security_options=["apparmor=unconfined"],
                   volumes=[(str(self.backing), "/backing"), (str(self.mountpoint), "/mnt/layer", "rshared")],
                   labels={HELPER_LABEL: self.tag}, restart="no", pull="never")
        deadline = time.monotonic() + MOUNT_TIMEOUT_S
        while not self.mounted():
            if time.monotonic() > deadline or not _running(self.helper):
                log = _logs(self.helper)
                self.remove(keep_data=True)
                raise LayerError(f"the power-loss layer for {self.service} did not mount within "
                                 f"{MOUNT_TIMEOUT_S:g}s: {log.strip()[-300:]}")
            time.sleep(0.05)

    def ask(self, command: str) -> dict:
        """`stats`, `drop` (the power loss: forget every write not fsynced) or `sync`, answered by the helper."""
        try:
            out = docker.execute(self.helper, ["python3", "/usr/local/bin/chaos-powerfs", command])
        except DockerException as exc:
            raise LayerError(f"the power-loss layer for {self.service} did not answer {command!r}: "
                             f"{(exc.stderr or str(exc)).strip()[-300:]}") from exc
        return json.loads(out.strip().splitlines()[-1])

    def remove(self, keep_data: bool = False) -> bool:
        """The helper gone and nothing mounted at `mountpoint`; the folders too unless `keep_data`. Idempotent:
        True if there was anything to remove."""
        found = docker.container.exists(self.helper)
        if found:  # (`docker rm -f` succeeds on a name that does not exist)
            docker.container.remove(self.helper, force=True)
        # The FUSE mount (propagated here), then our bind of the folder onto itself: each `umount` takes the top one.
        while _mounted_at(self.mountpoint):
            _run("umount", "-l", str(self.mountpoint))
            found = True
        if not keep_data and self.folder.exists():
            shutil.rmtree(self.folder)
            found = True
            for empty in (self.folder.parent, self.folder.parent.parent):
                try:
                    empty.rmdir()
                except OSError:
                    break
        return found


# -- a subject copy on layers: every member's data folder through its own layer ---------------------------------


def _project_folder(project: str) -> Path:
    return state_dir() / "powerfs" / project


def override_file(project: str) -> Path:
    """The compose file added to a subject copy's own while its members' data is on layers (activities/docker.py
    `compose_client` adds it when it exists): each member's data path bound from its layer's mount point."""
    return _project_folder(project) / "compose.layers.yaml"


def on_layers(project: str) -> bool:
    return override_file(project).exists()


def subject_layers(project: str, data_paths: dict[str, str]) -> list[Layer]:
    return [Layer(project, service) for service in sorted(data_paths)]


def owner_in_image(image: str, path: str) -> tuple[int, int, int]:
    """(uid, gid, mode) of `path` in `image`. A data directory its program creates at run time is not in the
    image: then the owner of its nearest parent there, and 0700, as such a program makes it (PostgreSQL refuses a
    data directory others may read). Read from the tar header `docker cp` sends, from a container created and
    never started, so any image will do (one FROM scratch too)."""
    # A command of its own: an image with neither ENTRYPOINT nor CMD cannot be created without one (and the
    # container never starts, so the command need not exist in it).
    probe = docker.container.create(image, ["true"], labels={HELPER_LABEL: "owner-probe"})
    try:
        for candidate in [PurePosixPath(path), *PurePosixPath(path).parents]:
            with subprocess.Popen(["docker", "cp", f"{probe.id}:{candidate}", "-"], stdout=subprocess.PIPE,
                                  stderr=subprocess.DEVNULL) as cp:
                try:
                    with tarfile.open(fileobj=cp.stdout, mode="r|") as tar:
                        first = tar.next()
                except tarfile.TarError:
                    first = None
                cp.kill()
            if first is not None:
                return first.uid, first.gid, first.mode & 0o7777 if str(candidate) == path else 0o700
    finally:
        probe.remove(force=True)
    return 0, 0, 0o700


def put_on_layers(project: str, data_paths: dict[str, str], images: dict[str, str]) -> None:
    """Every member's layer running, its data folder owned as in the member's image, then the compose file that
    binds each one. The members must be (re)created after this (with fresh data: what they held is not moved)."""
    for layer in subject_layers(project, data_paths):
        layer.start(owner_in_image(images[layer.service], data_paths[layer.service]))
    services = {service: {"volumes": [{"type": "bind", "source": str(Layer(project, service).mountpoint),
                                       "target": path, "bind": {"propagation": "rslave"}}]}
                for service, path in sorted(data_paths.items())}
    override_file(project).write_text(json.dumps({"services": services}, indent=1) + "\n")  # JSON is YAML


def layers_ready(project: str, data_paths: dict[str, str]) -> bool:
    return on_layers(project) and all(layer.mounted() and _running(layer.helper)
                                      for layer in subject_layers(project, data_paths))


def remove_layers(project: str) -> bool:
    """Every layer of the project, its compose file and folder gone (its members must be down first). Idempotent."""
    folder = _project_folder(project)
    if not folder.exists():
        return False
    override_file(project).unlink(missing_ok=True)
    for service in sorted(p.name for p in folder.iterdir() if p.is_dir()):
        Layer(project, service).remove()
    if folder.exists():
        shutil.rmtree(folder)
    return True


def remove_layers_of_gone_copies(older_than_s: float = 600.0) -> list[str]:
    """The layers of every subject copy that has no container any more (taken down by hand, `docker compose down`,
    which knows nothing of them), removed; the projects they were for. Asked when a worker starts. A copy's layers
    are put in place just before its members are created (preflight), so only those older than `older_than_s` are
    taken for gone: another worker's preflight may be between the two."""
    root = state_dir() / "powerfs"
    if not root.exists():
        return []
    gone = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        if time.time() - folder.stat().st_mtime < older_than_s:
            continue
        if docker.container.list(all=True, filters=[("label", f"{PROJECT_LABEL}={folder.name}")]):
            continue
        remove_layers(folder.name)
        gone.append(folder.name)
    return gone


def lost_record(layer: Layer, tag: str) -> Path:
    """What one power loss dropped on this member (the `drop` answer), kept beside its layer for the evidence."""
    return layer.folder / f"lost-{tag}.json"


def _run(*argv: str) -> None:
    done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode != 0:
        raise LayerError(f"{' '.join(argv)}: {done.stderr.strip() or f'exit code {done.returncode}'}")


def _mounts() -> list[tuple[str, str]]:
    """(mount point, file system type) of every mount the host has, from /proc/self/mountinfo."""
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        sep = fields.index("-")
        found.append((fields[4].encode().decode("unicode_escape"), fields[sep + 1]))
    return found


def _mounted_at(path: Path) -> bool:
    return any(point == str(path) for point, _ in _mounts())


def _fuse_mounted(path: Path) -> bool:
    return any(point == str(path) and kind.startswith("fuse") for point, kind in _mounts())


def _running(name: str) -> bool:
    try:
        return docker.container.inspect(name).state.running
    except DockerException:
        return False


def _logs(name: str) -> str:
    try:
        return docker.container.logs(name)
    except DockerException:
        return "(no helper)"
