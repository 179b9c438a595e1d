"""What the corrupt fault does to a file, on real files: bits flipped exactly where its record says, below the data a
preallocated log holds, the same offsets from the same seed, and a cut at a recorded length."""

from __future__ import annotations

import random

import pytest

from durable_chaos.faults.corrupt import CorruptParams, damage, written_extent


def preallocated(tmp_path, data: bytes, size: int):
    path = tmp_path / "0000.wal"
    path.write_bytes(data + bytes(size - len(data)))
    return path


def test_the_written_extent_ends_at_the_last_byte_of_data_in_a_preallocated_file(tmp_path):
    data = bytes(random.Random(1).randrange(1, 256) for _ in range(5000))
    assert written_extent(preallocated(tmp_path, data, 3 << 20), chunk=4096) == 5000
    assert written_extent(preallocated(tmp_path, b"", 4096)) == 4096  # all zeros: the whole file
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    assert written_extent(empty) == 0


@pytest.mark.parametrize("seed", range(5))
def test_bits_are_flipped_exactly_at_the_recorded_offsets_and_only_where_data_is(tmp_path, seed):
    data = bytes(random.Random(seed).randrange(1, 256) for _ in range(10_000))
    path = preallocated(tmp_path, data, 1 << 20)
    before = path.read_bytes()
    changed = damage(path, CorruptParams(bits=16), random.Random(seed))
    after = path.read_bytes()
    differ = [i for i, (a, b) in enumerate(zip(before, after)) if a != b]
    assert len(after) == len(before)
    assert differ == changed["offsets"] and len(differ) == 16  # 16 distinct offsets: no two flips cancel out
    assert max(differ) < 10_000  # never in the preallocated zeros
    assert all(bin(before[i] ^ after[i]).count("1") == 1 for i in differ)  # one bit each
    # The same seed on the same file draws the same offsets: a run can be repeated byte for byte.
    path.write_bytes(before)
    assert damage(path, CorruptParams(bits=16), random.Random(seed)) == changed


def test_a_truncation_cuts_the_file_where_the_record_says(tmp_path):
    path = preallocated(tmp_path, b"x" * 7000, 64 << 10)
    changed = damage(path, CorruptParams(mode="truncate"), random.Random(3))
    assert 0 <= changed["truncated_at"] < 7000
    assert path.stat().st_size == changed["truncated_at"]
