"""A folder subject's data operations (`load: {read, write, cas}` in subject.yaml): a mistake in them is one line
naming the file and the field, and the session parses what a server answers into what the checkers need (a value
read, nothing, swapped, certainly not applied, or unknown). Against a tiny Redis-speaking server on 127.0.0.1;
no Docker."""

from __future__ import annotations

import asyncio
import contextlib
import shlex
import shutil

import pytest

from subjects import BadSubjectFile, CompareFailed, NotApplied, Reading
from subjects.base import SubjectInstance
from subjects.declarative import DeclarativeSubject, ProbeFailed, read_subject_file
from tests.conftest import ROOT

EXAMPLE = ROOT / "tests" / "data" / "my-subject"


def folder_with(tmp_path, old: str, new: str):
    """A copy of the guide's Redis folder with one edit of its subject.yaml."""
    folder = tmp_path / "subject"
    shutil.copytree(EXAMPLE, folder)
    f = folder / "subject.yaml"
    assert old in f.read_text()
    f.write_text(f.read_text().replace(old, new, 1))
    return folder


@pytest.mark.parametrize("old, new, message", [
    ('    value: "^\\\\$\\\\d+\\\\r\\\\n(.*)\\\\r\\\\n"  # a bulk string: its length, then the value\n', "",
     "load.read: Value error, a read says where the value is in its answer: `value`, a regular expression"),
    ("SET chaos:{key} {value}", "SET chaos:{key} {valeu}",
     "load.write: Value error, {valeu} is not a placeholder here (these are: {key}, {value}, {service})"),
    ("chaos:{key} {expected} {new}", "chaos:{key} {expected} {new} {seq}",
     "load.cas: Value error, {seq} is not a placeholder here (these are: {key}, {expected}, {new}, {service})"),
    ('KEYS[1]) == ARGV[1]', 'KEYS[1]) == {ARGV[1]',
     "load.cas: Value error, unmatched '{' in format spec (a literal brace is written twice: {{ or }})"),
    ('not_applied: "^-READONLY"', 'nothing: "^-READONLY"',
     "load.write: Value error, `value` and `nothing` are for a read: a write or cas parses no value"),
    ('nothing: "^\\\\$-1"', 'not_applied: "^\\\\$-1"',
     "load.read: Value error, `not_applied` is for write and cas: a read changes nothing"),
    ('nothing: "^\\\\$-1"', 'nothing: "^\\\\$(-1"',
     "load.read.nothing: Value error, '^\\\\$(-1' is not a regular expression: missing ), unterminated subpattern at "
     "position 3"),
    ('nothing: "^\\\\$-1"', 'nothin: "^\\\\$-1"', "load.read.nothin: unknown field"),
    ("  write:\n", "  writes:\n", "load.write: Field required (and 1 more)"),
    ('      reply: resp ', '      reply: redis ',
     "roles.primary.probe.reply: Input should be 'line', 'resp' or 'close'"),
], ids=["read-without-value", "unknown-placeholder", "placeholder-of-another-op", "lone-brace", "nothing-on-write",
        "not-applied-on-read", "bad-regex", "unknown-field", "no-write", "unknown-reply"])
def test_a_mistake_in_the_data_operations_is_one_line_naming_the_file_and_field(tmp_path, old, new, message):
    folder = folder_with(tmp_path, old, new)
    with pytest.raises(BadSubjectFile) as err:
        read_subject_file(folder)
    line = str(err.value)
    assert "\n" not in line and line.startswith(f"{folder / 'subject.yaml'}: "), line
    assert line.split(": ", 1)[1] == message


def test_the_model_is_what_the_load_declares(tmp_path):
    assert read_subject_file(EXAMPLE).load.model == "cas-register"
    no_cas = folder_with(tmp_path, "  cas:  ", "  x-cas:  ")
    text = (no_cas / "subject.yaml").read_text()
    (no_cas / "subject.yaml").write_text(text[:text.index("  x-cas:")] + text[text.index("diagnosis:"):])
    assert read_subject_file(no_cas).load.model == "register"


# -- the session, against a tiny Redis ------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def tiny_redis(readonly: bool = False):
    """Inline commands GET, SET and the example's compare-and-set EVAL, each answered in two parts (as a slow
    network may deliver them); a replica (`readonly`) refuses writes as Redis does."""
    data: dict[str, str] = {}

    def answer(argv: list[str]) -> bytes:
        cmd = argv[0].upper()
        if cmd == "GET":
            value = data.get(argv[1])
            return b"$-1\r\n" if value is None else f"${len(value)}\r\n{value}\r\n".encode()
        if readonly:
            return b"-READONLY You can't write against a read only replica.\r\n"
        if cmd == "SET":
            data[argv[1]] = argv[2]
            return b"+OK\r\n"
        if cmd == "EVAL":
            key, expected, new = argv[3:6]
            swapped = data.get(key) == expected
            if swapped:
                data[key] = new
            return b":1\r\n" if swapped else b":0\r\n"
        return b"-ERR unknown command\r\n"

    async def handle(reader, writer):
        with contextlib.suppress(ConnectionError):
            while line := await reader.readline():
                reply = answer(shlex.split(line.decode()))
                writer.write(reply[:3])
                await writer.drain()
                await asyncio.sleep(0.01)
                writer.write(reply[3:])
                await writer.drain()

    srv = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield srv.sockets[0].getsockname()[1], data
    finally:
        srv.close()


def session_on(port: int, spec=None):
    """The example's session with redis1's client port at `port`, and the load sent to it alone (no role lookup)."""
    spec = (spec or read_subject_file(EXAMPLE)).model_copy(update={"load_on": None, "services": ["redis1"]})
    subject = DeclarativeSubject(spec, EXAMPLE)
    return subject.session(SubjectInstance(subject, "t-unit", port - 1), members=None)


async def test_the_session_parses_reads_writes_and_compare_and_sets():
    async with tiny_redis() as (port, data):
        session = session_on(port)
        assert session.model == "cas-register"
        assert await session.read(0, "k1", 1.0) == Reading(None)
        assert await session.write(0, "k1", "100-1", 1.0) is None
        assert data == {"chaos:k1": "100-1"}
        assert await session.read(0, "k1", 1.0) == Reading("100-1")
        await session.cas(0, "k1", "100-1", "100-2", 1.0)
        assert data == {"chaos:k1": "100-2"}
        with pytest.raises(CompareFailed):  # the key no longer holds 100-1: an answer, not an error
            await session.cas(0, "k1", "100-1", "100-3", 1.0)
        assert data == {"chaos:k1": "100-2"}
        await session.aclose()


async def test_a_write_a_replica_refuses_is_not_applied():
    async with tiny_redis(readonly=True) as (port, _):
        session = session_on(port)
        with pytest.raises(NotApplied, match="READONLY"):
            await session.write(0, "k1", "100-1", 1.0)
        with pytest.raises(NotApplied, match="READONLY") as refused:
            await session.cas(0, "k1", "100-1", "100-2", 1.0)
        assert not isinstance(refused.value, CompareFailed)  # a refusal is an error; a mismatch is not
        await session.aclose()


async def test_a_refused_connection_is_not_applied_and_an_unexpected_answer_may_have_been(tmp_path):
    async with tiny_redis() as (port, _):
        pass  # closed: nothing listens on the port any more
    session = session_on(port)
    with pytest.raises(NotApplied):
        await session.write(0, "k1", "100-1", 1.0)
    await session.aclose()
    # A write whose answer is neither the acknowledgement nor a refusal may have taken effect: not NotApplied.
    spec = read_subject_file(folder_with(tmp_path, "SET chaos:{key} {value}", "SETX chaos:{key} {value}"))
    async with tiny_redis() as (port, _):
        session = session_on(port, spec)
        with pytest.raises(ProbeFailed, match="write: answer b'-ERR unknown command\\\\r\\\\n' does not match"):
            await session.write(0, "k1", "100-1", 1.0)
        await session.aclose()
