"""A queue counterexample as a person opens it, in headless Chromium; the screenshot is kept
(artifacts/counterexample-queue.png). Neither Docker nor Temporal: a small history of a stream whose leader was
killed, where one acknowledged message is gone while later ones survived, checked and drawn as `starter.py check
--html` draws it."""

from __future__ import annotations

from datetime import datetime, timezone

from durable_chaos.cli.reports import check_html
from durable_chaos.safety import checkers
from durable_chaos.safety.history import Op
from tests.conftest import ARTIFACTS
from tests.integration.test_operations import browser_page, isolated_chromium  # noqa: F401 (a fixture)

T0 = datetime(2026, 12, 4, 21, 0, tzinfo=timezone.utc)
MS = 1_000_000


def at(ms: float) -> int:
    return int(T0.timestamp() * 1e9) + int(ms * MS)


def lost_in_the_middle() -> list[Op]:
    """Two publishers; the stream's leader is killed at 100 ms. Publisher 1's m3 was acknowledged with sequence 3
    just before, and is on no replica at the end, though m4 and m5 (sequences 4 and 5) are."""
    def pub(mid, publisher, n, start, end, seq=None, outcome="ok"):
        return Op("publish", outcome, at(start), at(end), value={"id": mid, "publisher": publisher, "n": n},
                  process=publisher, token=seq)

    stream = [["m1", 1], ["m2", 2], ["m4", 4], ["m5", 5]]
    return [pub("m1", 1, 1, 0, 4, 1), pub("m2", 2, 1, 10, 13, 2), pub("m3", 1, 2, 90, 96, 3),
            Op("fetch", "ok", at(60), at(63), value=[["m1", 1], ["m2", 2]], process=3),
            pub("m6", 2, 2, 120, 2120, outcome="info"),
            pub("m4", 2, 3, 4000, 4006, 4), pub("m5", 1, 3, 4100, 4104, 5)] + [
        Op("drain", "ok", at(9000), at(9040), value={"replica": r, "messages": stream}, process=i, final=True)
        for i, r in enumerate(("nats1", "nats2", "nats3"))]


async def test_a_message_lost_in_the_middle_drawn_as_a_timeline(isolated_chromium):  # noqa: F811
    report = checkers.check(lost_in_the_middle(), model="queue", token_name="stream sequence", gapless=True,
                            fault_start_ns=at(100), fault_end_ns=at(3500))
    assert report.verdict == "violated" and report.counterexample.checker == "lost messages"
    assert report.counterexample.ops[report.counterexample.stuck].value["id"] == "m3"
    ARTIFACTS.mkdir(exist_ok=True)
    page = ARTIFACTS / "counterexample-queue.html"
    page.write_text(check_html("nats history", report, [(datetime.fromtimestamp(at(100) / 1e9, timezone.utc),
                                                         datetime.fromtimestamp(at(3500) / 1e9, timezone.utc),
                                                         "kill the stream leader")]))
    async with browser_page(isolated_chromium, ARTIFACTS / "counterexample-queue.png") as browser:
        await browser.goto(page.as_uri())
        await browser.locator("#counterexample").wait_for()
        stuck = await browser.locator("#counterexample-stuck").count()
        shaded = await browser.locator("#counterexample-fault-1").count()
    assert (stuck, shaded) == (1, 1)
