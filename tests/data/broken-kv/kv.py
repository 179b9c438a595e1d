"""A deliberately broken key-value server for the safety checker's tests (standard library only).

It acknowledges every write with a revision, but silently drops the writes to keys ending in DROP_SUFFIX: it never
stores them, as a system with a broken shard or an asynchronous replica that lost its tail would. What it dropped is
listed at GET /dropped, so a test can tell whether the checker blamed the right write. Stored data survives a kill
(a file in the container), so only the drops lose data.
"""

import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

STORE = "/tmp/kv.json"
DROP_SUFFIX = os.environ.get("DROP_SUFFIX", "3")
lock = threading.Lock()
try:
    with open(STORE) as f:
        state = json.load(f)
except (OSError, ValueError):
    state = {"rev": 0, "data": {}, "dropped": []}


def save():
    with open(STORE + ".tmp", "w") as f:
        json.dump(state, f)
    os.replace(STORE + ".tmp", STORE)


class Handler(BaseHTTPRequestHandler):
    def answer(self, code, body):
        raw = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def do_GET(self):
        if self.path == "/health":
            return self.answer(200, {"health": "ok"})
        if self.path == "/dropped":
            with lock:
                return self.answer(200, state["dropped"])
        key = self.path.removeprefix("/kv/")
        with lock:
            found = state["data"].get(key)
        return self.answer(200, found) if found else self.answer(404, {"error": "not found"})

    def do_PUT(self):
        key = self.path.removeprefix("/kv/")
        value = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
        with lock:
            state["rev"] += 1
            rev = state["rev"]
            if key.endswith(DROP_SUFFIX):
                state["dropped"].append({"key": key, "value": value, "rev": rev})
            else:
                state["data"][key] = {"value": value, "rev": rev}
            save()
        return self.answer(200, {"rev": rev})

    def log_message(self, *args):
        pass


ThreadingHTTPServer(("0.0.0.0", 8080), Handler).serve_forever()
