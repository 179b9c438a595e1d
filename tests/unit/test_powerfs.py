"""The power-loss layer's page table (faults/powerfs/powerfs.py), on real files, without FUSE: what a program reads
is what it wrote, and a power loss leaves exactly what was fsynced."""

from __future__ import annotations

import os
import random

import pytest

from durable_chaos.faults.powerfs.powerfs import PAGE, PageTable


class File:
    """One file through the page table, beside a model: the bytes a program should read now, and the bytes that
    should survive a power loss (the state at the last fsync)."""

    def __init__(self, path, table: PageTable, initial: bytes) -> None:
        path.write_bytes(initial)
        self.path, self.table = path, table
        self.fd = os.open(path, os.O_RDWR)
        self.ino = os.fstat(self.fd).st_ino
        self.now = bytearray(initial)
        self.synced = bytes(initial)

    def write(self, data: bytes, offset: int) -> None:
        self.table.write(self.fd, self.table.for_write(self.ino, self.fd, "f"), data, offset)
        if offset > len(self.now):
            self.now += bytes(offset - len(self.now))
        self.now[offset:offset + len(data)] = data

    def truncate(self, length: int) -> None:
        self.table.truncate(self.table.for_write(self.ino, self.fd, "f"), length)
        self.now = self.now[:length] + bytes(max(0, length - len(self.now)))

    def fsync(self) -> None:
        self.table.flush(self.ino, self.fd)
        self.synced = bytes(self.now)

    def read(self, size: int, offset: int) -> bytes:
        p = self.table.get(self.ino)
        return self.table.read(self.fd, p, size, offset) if p else os.pread(self.fd, size, offset)


@pytest.mark.parametrize("seed", range(8))
def test_reads_see_every_write_and_a_power_loss_keeps_exactly_what_was_fsynced(tmp_path, seed):
    rng = random.Random(seed)
    table = PageTable()
    f = File(tmp_path / "f", table, rng.randbytes(rng.randrange(0, 3 * PAGE)))
    for step in range(300):
        op = rng.random()
        if op < 0.6:  # writes across page edges, past the end (a hole), over earlier writes
            offset = rng.randrange(0, len(f.now) + 2 * PAGE)
            f.write(rng.randbytes(rng.randrange(1, 2 * PAGE)), offset)
        elif op < 0.75:
            f.truncate(rng.randrange(0, len(f.now) + PAGE))
        elif op < 0.85:
            f.fsync()
        else:
            offset = rng.randrange(0, len(f.now) + PAGE)
            size = rng.randrange(1, 3 * PAGE)
            assert f.read(size, offset) == bytes(f.now[offset:offset + size]), f"seed {seed} step {step}"
        p = table.get(f.ino)
        assert (p.size if p else os.fstat(f.fd).st_size) == len(f.now)
    assert f.read(len(f.now) + PAGE, 0) == bytes(f.now)
    assert f.path.read_bytes() == f.synced  # the backing file holds the last fsync, whatever came after
    lost = table.drop()
    assert f.read(len(f.synced) + PAGE, 0) == f.synced
    assert table.stats()["dropped_bytes_total"] == lost["bytes"]


def test_the_drop_counts_the_bytes_written_since_each_files_last_fsync(tmp_path):
    table = PageTable()
    a = File(tmp_path / "a", table, b"")
    b = File(tmp_path / "b", table, b"")
    a.write(b"x" * 5000, 0)
    a.fsync()
    a.write(b"y" * 800, 5000)  # 800 bytes after the fsync
    b.write(b"z" * 100, 0)
    b.write(b"z" * 100, 50)  # written twice: counted twice
    assert table.stats()["files"] == 2
    assert table.drop() == {"files": 2, "bytes": 1000, "pages": 2}
    assert (tmp_path / "a").read_bytes() == b"x" * 5000
    assert (tmp_path / "b").read_bytes() == b""
    assert table.stats() == {"files": 0, "bytes": 0, "pages": 0, "dropped_bytes_total": 1000,
                             "synced_bytes_total": 5000}
