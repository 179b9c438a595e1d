"""chaos-powerfs: a pass-through FUSE file system that keeps every write nobody fsynced in its own memory, so that a
power loss can be played: `drop` forgets those writes, as a machine that loses power forgets its page cache.

A killed process loses nothing the kernel already took: its writes sit in the page cache and reach the disk later.
That is why `kill` cannot stand in for a power loss, and why the bugs that lose acknowledged data on a power loss
(an acknowledgement sent before the fsync) stay hidden from chaos tools. Here the page cache is ours: a write lands
in a per-file table of pages, a read sees it, and only fsync(2) or fdatasync(2) of that file writes the pages to the
backing folder and fsyncs them there. `drop` empties the tables; what is left in the backing folder is exactly what
had been synced.

Why our own: this is Jepsen's lazyfs idea, but lazyfs is C++ built against libfuse3 with no Debian package, and no
Python library keeps un-synced writes apart. The FUSE binding is mfusepy (ctypes over Debian's libfuse3); the page
table is about a hundred lines of the standard library.

What a power loss here loses, and what it does not:
- file contents written (or truncated) and not fsynced since: lost;
- metadata (create, mkdir, rename, unlink, link, chmod, utimens) is applied to the backing folder at once, as if
  every directory were synced: a power loss here is narrower than a real one, which can also lose a new file's name;
- sync(2) and syncfs(2) do not reach a FUSE file system through libfuse's high-level interface: they sync nothing
  here (a program that relies on them loses its writes, which is what a real machine's firmware could do, too).

Usage (in the helper container, or on any host with fuse3 and mfusepy):
    chaos-powerfs serve BACKING MOUNTPOINT [--control SOCKET]   # runs until unmounted or killed
    chaos-powerfs stats|drop|sync [--control SOCKET]             # one JSON line
`stats` counts the pages waiting for an fsync; `drop` forgets them (the power loss); `sync` writes them all (a clean
shutdown, also done on unmount). Standard library and mfusepy only: it runs in the helper image, not in the runner.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import socket
import sys
import threading

PAGE = 4096
CONTROL = "/run/chaos-powerfs.sock"


class Pending:
    """One file's writes since its last fsync: whole pages as the file now reads, its size now, and where the
    backing file stops counting (bytes from `zero_from` on read as zeros: a truncate shortened the file since)."""

    __slots__ = ("size", "pages", "zero_from", "path", "written")

    def __init__(self, size: int, path: str) -> None:
        self.size = size
        self.pages: dict[int, bytearray] = {}
        self.zero_from = size
        self.path = path  # the last name it was reached by (a rename moves it): for `sync` without an open handle
        self.written = 0  # bytes write(2) took since the last fsync (a page written twice counts twice)


class PageTable:
    """Every file's pending writes, by inode of the backing file (a rename keeps them, an unlink of the last name
    forgets them). The FUSE callbacks and the control socket share it under one lock."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.files: dict[int, Pending] = {}
        self.dropped_bytes = 0
        self.synced_bytes = 0

    def get(self, ino: int) -> Pending | None:
        return self.files.get(ino)

    def for_write(self, ino: int, fd: int, path: str) -> Pending:
        p = self.files.get(ino)
        if p is None:
            p = self.files[ino] = Pending(os.fstat(fd).st_size, path)
        return p

    def read(self, fd: int, p: Pending, size: int, offset: int) -> bytes:
        end = min(offset + size, p.size)
        out = bytearray()
        pos = offset
        while pos < end:
            number, within = divmod(pos, PAGE)
            page = p.pages.get(number)
            if page is not None:
                take = min(PAGE - within, end - pos)
                out += page[within:within + take]
            else:  # up to the next pending page, from the backing file in one read
                stop = pos + (PAGE - within)
                while stop < end and (stop // PAGE) not in p.pages:
                    stop += PAGE
                take = min(stop, end) - pos
                out += backing(fd, p, pos, take)
            pos += take
        return bytes(out)

    def write(self, fd: int, p: Pending, data: bytes, offset: int) -> None:
        pos, done = offset, 0
        while done < len(data):
            number, within = divmod(pos, PAGE)
            page = p.pages.get(number)
            if page is None:
                page = p.pages[number] = bytearray(backing(fd, p, number * PAGE, PAGE))
            take = min(PAGE - within, len(data) - done)
            page[within:within + take] = data[done:done + take]
            pos += take
            done += take
        p.size = max(p.size, offset + len(data))
        p.written += len(data)

    def truncate(self, p: Pending, length: int) -> None:
        # Longer needs nothing: past `size` the backing file has no bytes, or only bytes past `zero_from` (a
        # shorter truncate put it there), so the new bytes read as zeros.
        if length < p.size:
            for number in [n for n in p.pages if n * PAGE >= length]:
                del p.pages[number]
            number, within = divmod(length, PAGE)
            if within and number in p.pages:
                p.pages[number][within:] = bytes(PAGE - within)
            p.zero_from = min(p.zero_from, length)
        p.size = length

    def flush(self, ino: int, wfd: int) -> int:
        """Write one file's pages to its backing file (open for writing as `wfd`) and fsync it. Returns bytes."""
        p = self.files.pop(ino, None)
        if p is None:
            os.fsync(wfd)
            return 0
        os.ftruncate(wfd, min(p.zero_from, p.size))  # what a truncate removed is gone from the backing file too
        written = 0
        for number in sorted(p.pages):
            start = number * PAGE
            length = min(PAGE, p.size - start)
            if length > 0:
                os.pwrite(wfd, bytes(p.pages[number][:length]), start)
                written += length
        os.ftruncate(wfd, p.size)
        os.fsync(wfd)
        self.synced_bytes += written
        return written

    def pending(self) -> dict:
        """Files with writes nobody synced, the bytes written to them since, and the pages that hold them."""
        return {"files": len(self.files), "bytes": sum(p.written for p in self.files.values()),
                "pages": sum(len(p.pages) for p in self.files.values())}

    def stats(self) -> dict:
        return {**self.pending(), "dropped_bytes_total": self.dropped_bytes, "synced_bytes_total": self.synced_bytes}

    def drop(self) -> dict:
        lost = self.pending()
        self.files.clear()
        self.dropped_bytes += lost["bytes"]
        return lost


def backing(fd: int, p: Pending, pos: int, n: int) -> bytes:
    """`n` bytes of the backing file from `pos`: zeros past `zero_from` and past its end."""
    if pos >= p.zero_from:
        return bytes(n)
    real = os.pread(fd, min(n, p.zero_from - pos), pos)
    return real + bytes(n - len(real))


def _operations(root: str, table: PageTable):
    """The FUSE callbacks over `root` (mfusepy is imported here: the control commands do not need libfuse)."""
    import mfusepy

    def full(path: str) -> str:
        return os.path.join(root, path.lstrip("/"))

    def oserror(fn):
        def wrapped(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except OSError as err:
                raise mfusepy.FuseOSError(err.errno or errno.EIO) from None
        wrapped.__name__ = fn.__name__
        return wrapped

    class PowerFS(mfusepy.Operations):
        use_ns = True

        def __init__(self) -> None:
            self.inodes: dict[int, int] = {}  # open handle (a backing fd) -> inode

        # -- metadata: straight through --------------------------------------------------------------------------

        @oserror
        def getattr(self, path, fh=None):
            st = os.fstat(fh) if fh is not None else os.lstat(full(path))
            attrs = {key: getattr(st, key) for key in ("st_mode", "st_ino", "st_nlink", "st_uid", "st_gid",
                                                       "st_size", "st_blocks", "st_blksize")}
            attrs.update(st_atime=st.st_atime_ns, st_mtime=st.st_mtime_ns, st_ctime=st.st_ctime_ns)
            with table.lock:
                p = table.get(st.st_ino)
                if p is not None:
                    attrs["st_size"] = p.size
                    attrs["st_blocks"] = (p.size + 511) // 512
            return attrs

        @oserror
        def readdir(self, path, fh):
            return [".", "..", *os.listdir(full(path))]

        @oserror
        def readlink(self, path):
            return os.readlink(full(path))

        def _as_caller(self, path: str) -> None:
            # The daemon runs as root: what it creates for a member must be the member's (PostgreSQL, as postgres,
            # then writes into the directories its initdb made).
            uid, gid, _ = mfusepy.fuse_get_context()
            os.lchown(full(path), uid, gid)

        @oserror
        def mkdir(self, path, mode):
            os.mkdir(full(path), mode)
            self._as_caller(path)
            return 0

        @oserror
        def rmdir(self, path):
            os.rmdir(full(path))
            return 0

        @oserror
        def symlink(self, target, source):
            os.symlink(source, full(target))
            self._as_caller(target)
            return 0

        @oserror
        def link(self, target, source):
            os.link(full(source), full(target))
            return 0

        @oserror
        def chmod(self, path, mode):
            os.chmod(full(path), mode)
            return 0

        @oserror
        def chown(self, path, uid, gid):
            os.lchown(full(path), uid, gid)
            return 0

        @oserror
        def utimens(self, path, times=None):
            os.utime(full(path), ns=times, follow_symlinks=False)
            return 0

        @oserror
        def statfs(self, path):
            sv = os.statvfs(full(path))
            return {key: getattr(sv, key) for key in ("f_bavail", "f_bfree", "f_blocks", "f_bsize", "f_favail",
                                                      "f_ffree", "f_files", "f_flag", "f_frsize", "f_namemax")}

        @oserror
        def unlink(self, path):
            st = os.lstat(full(path))
            with table.lock:
                if st.st_nlink <= 1:
                    table.files.pop(st.st_ino, None)
                os.unlink(full(path))
            return 0

        @oserror
        def rename(self, old, new):
            with table.lock:
                try:
                    replaced = os.lstat(full(new))
                    if replaced.st_nlink <= 1:
                        table.files.pop(replaced.st_ino, None)
                except FileNotFoundError:
                    pass
                moved = table.get(os.lstat(full(old)).st_ino)
                os.rename(full(old), full(new))
                if moved is not None:
                    moved.path = new
            return 0

        # -- contents: through the page table ----------------------------------------------------------------------

        def _opened(self, fd: int, path: str, truncate: bool) -> int:
            ino = os.fstat(fd).st_ino
            self.inodes[fd] = ino
            if truncate:
                with table.lock:
                    table.truncate(table.for_write(ino, fd, path), 0)
            return fd

        @oserror
        def open(self, path, flags):
            # The backing file is only ever written by an fsync: open it for reading and writing when we may.
            mode = os.O_RDONLY if flags & os.O_ACCMODE == os.O_RDONLY else os.O_RDWR
            fd = os.open(full(path), mode | os.O_CLOEXEC)
            return self._opened(fd, path, bool(flags & os.O_TRUNC))

        @oserror
        def create(self, path, mode, fi=None):
            existed = os.path.lexists(full(path))
            fd = os.open(full(path), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, mode)
            if not existed:
                self._as_caller(path)
            return self._opened(fd, path, existed)

        @oserror
        def read(self, path, size, offset, fh):
            with table.lock:
                p = table.get(self.inodes[fh])
                if p is not None:
                    return table.read(fh, p, size, offset)
            return os.pread(fh, size, offset)

        @oserror
        def write(self, path, data, offset, fh):
            with table.lock:
                table.write(fh, table.for_write(self.inodes[fh], fh, path), data, offset)
            return len(data)

        @oserror
        def truncate(self, path, length, fh=None):
            fd = fh if fh is not None else os.open(full(path), os.O_RDONLY | os.O_CLOEXEC)
            try:
                with table.lock:
                    table.truncate(table.for_write(os.fstat(fd).st_ino, fd, path), length)
            finally:
                if fh is None:
                    os.close(fd)
            return 0

        @oserror
        def fsync(self, path, datasync, fh):
            wfd = os.open(f"/proc/self/fd/{fh}", os.O_WRONLY | os.O_CLOEXEC)  # even if it was opened read-only
            try:
                with table.lock:
                    table.flush(self.inodes[fh], wfd)
            finally:
                os.close(wfd)
            return 0

        def fsyncdir(self, path, datasync, fh):
            return 0  # directories are applied at once (see the module's docstring)

        def flush(self, path, fh):
            return 0

        @oserror
        def release(self, path, fh):
            # The pages stay pending, as a closed file's dirty pages stay in a page cache.
            self.inodes.pop(fh, None)
            os.close(fh)
            return 0

        def destroy(self, path):
            sync_all(root, table)  # unmounted cleanly: what was written is kept, as a clean shutdown keeps it

    return PowerFS()


def sync_all(root: str, table: PageTable) -> dict:
    with table.lock:
        files = written = 0
        for ino, p in list(table.files.items()):
            try:
                wfd = os.open(os.path.join(root, p.path.lstrip("/")), os.O_WRONLY | os.O_CLOEXEC)
            except OSError:
                table.files.pop(ino, None)
                continue
            try:
                if os.fstat(wfd).st_ino == ino:
                    written += table.flush(ino, wfd)
                    files += 1
            finally:
                os.close(wfd)
        return {"files": files, "bytes": written}


def serve_control(path: str, root: str, table: PageTable) -> None:
    """Answer `stats`, `drop` and `sync`, one JSON line per connection, on a Unix socket (a thread)."""
    if os.path.exists(path):
        os.unlink(path)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(4)

    def loop() -> None:
        while True:
            conn, _ = server.accept()
            with conn:
                command = conn.makefile().readline().strip()
                with table.lock:
                    if command == "stats":
                        answer = table.stats()
                    elif command == "drop":
                        answer = table.drop()
                    elif command == "sync":
                        answer = sync_all(root, table)
                    else:
                        answer = {"error": f"unknown command {command!r}"}
                conn.sendall((json.dumps(answer) + "\n").encode())

    threading.Thread(target=loop, name="control", daemon=True).start()


def ask(command: str, path: str = CONTROL) -> dict:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.connect(path)
        conn.sendall(command.encode() + b"\n")
        return json.loads(conn.makefile().readline())


def serve(root: str, mountpoint: str, control: str) -> None:
    import mfusepy

    root = os.path.realpath(root)
    table = PageTable()
    serve_control(control, root, table)
    print(f"chaos-powerfs: {root} on {mountpoint}, control {control}", flush=True)
    # allow_other: members run as any user (postgres); attr_timeout/entry_timeout 0: after a drop nobody may see a
    # size the kernel cached from before it.
    mfusepy.FUSE(_operations(root, table), mountpoint, foreground=True, nothreads=False, allow_other=True,
                 default_permissions=True, attr_timeout=0, entry_timeout=0, fsname="chaos-powerfs")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="chaos-powerfs", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=("serve", "stats", "drop", "sync"))
    parser.add_argument("paths", nargs="*", help="serve: BACKING MOUNTPOINT")
    parser.add_argument("--control", default=CONTROL, help="the control socket (default %(default)s)")
    args = parser.parse_args(argv)
    if args.command == "serve":
        if len(args.paths) != 2:
            parser.error("serve needs BACKING and MOUNTPOINT")
        serve(args.paths[0], args.paths[1], args.control)
        return 0
    print(json.dumps(ask(args.command, args.control)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
