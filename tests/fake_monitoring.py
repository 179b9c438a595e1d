"""A user's monitoring, faked on 127.0.0.1 for the guardrail tests: the test decides what it says and when.

One server answers as everything a run can ask: a health endpoint (`/health`, for --abort-probe and --detect-http),
Alertmanager's `/api/v2/alerts` (for --detect-alert), Prometheus's `/api/v1/query` (for --abort-query), and a webhook
receiver (any POST, for --notify).
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FakeMonitoring:
    def __init__(self) -> None:
        self.health_status = 200
        self.firing: set[str] = set()  # alert names firing now
        self.query_value = 0.0  # what every instant query returns (a one-sample vector)
        self.asked: list[str] = []  # paths asked, in order
        self.posted: list[bytes] = []  # bodies POSTed (a webhook receiver too)
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's name
                fake.asked.append(self.path)
                if self.path.startswith("/health"):
                    self._send(fake.health_status, {"status": "ok" if fake.health_status < 300 else "failing"})
                elif self.path.startswith("/api/v2/alerts"):
                    self._send(200, [{"labels": {"alertname": name, "severity": "page"},
                                      "status": {"state": "active"}} for name in sorted(fake.firing)])
                elif self.path.startswith("/api/v1/query"):
                    self._send(200, {"status": "success", "data": {"resultType": "vector", "result": [
                        {"metric": {"job": "etcd"}, "value": [0, f"{fake.query_value:g}"]}]}})
                else:
                    self._send(404, {"error": "not found"})

            def do_POST(self):  # noqa: N802
                fake.posted.append(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
                self._send(200, {"ok": True})

            def _send(self, status: int, body) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "FakeMonitoring":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
