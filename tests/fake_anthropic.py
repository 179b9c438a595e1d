"""A local fake of Anthropic's Messages API (POST /v1/messages) on 127.0.0.1, for the real `anthropic` SDK.

It answers from a script - a list of replies, one per request, the last one repeating - and records every request
it receives, so tests can assert on what would have reached Claude. It runs in a thread with its own sockets, so it
keeps answering while the test's event loop runs a worker.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass(frozen=True)
class Reply:
    status: int = 200
    body: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: str

    @property
    def json(self) -> dict:
        return json.loads(self.body)


def answer(findings: dict) -> Reply:
    """A successful Messages API response whose text block is `findings` as JSON (a structured-output answer)."""
    return text(json.dumps(findings))


def text(raw: str) -> Reply:
    return Reply(body=json.dumps({
        "id": "msg_fake", "type": "message", "role": "assistant", "model": "fake-claude",
        "content": [{"type": "text", "text": raw}], "stop_reason": "end_turn", "stop_sequence": None,
        "usage": {"input_tokens": 100, "output_tokens": 50},
    }))


def error(status: int, kind: str, message: str = "fake failure", headers: dict[str, str] | None = None) -> Reply:
    return Reply(status=status, body=json.dumps({"type": "error", "error": {"type": kind, "message": message}}),
                 headers=headers or {})


def slow(seconds: float, then: Reply) -> Reply:
    return Reply(then.status, then.body, then.headers, delay_s=seconds)


def findings(affected: list[str], **overrides) -> dict:
    base = {
        "summary": f"{', '.join(affected)} went down; the cluster keeps quorum.",
        "root_cause": f"{', '.join(affected)} was killed with SIGKILL (exit code 137).",
        "affected_nodes": affected,
        "evidence": ["exit code 137", "peers lost their streams to it"],
        "suggested_actions": ["start it again"],
        "confidence": 0.9,
    }
    return base | overrides


class FakeAnthropic:
    def __init__(self, *script: Reply):
        self.script = list(script) or [error(500, "api_error")]
        self.received: list[Received] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                body = self.rfile.read(int(self.headers.get("content-length", 0))).decode()
                with fake._lock:
                    fake.received.append(Received(self.path, dict(self.headers), body))
                    reply = fake.script[min(len(fake.received), len(fake.script)) - 1]
                if reply.delay_s and fake._stopping.wait(reply.delay_s):
                    return
                payload = reply.body.encode()
                try:
                    self.send_response(reply.status)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(payload)))
                    for k, v in reply.headers.items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(payload)
                except OSError:  # the client gave up (its deadline): nothing to answer
                    pass

            def log_message(self, *args) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def bodies(self) -> str:
        """Everything the fake received, headers excluded: what would have reached Claude."""
        return "\n".join(r.body for r in self.received)

    def __enter__(self) -> FakeAnthropic:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
