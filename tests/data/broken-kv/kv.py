"""A deliberately broken key-value server for the safety checker's tests (standard library only).

It acknowledges every write with a revision, but silently drops the writes to keys ending in DROP_SUFFIX: it never
stores them, as a system with a broken shard or an asynchronous replica that lost its tail would. What it dropped is
listed at GET /dropped, so a test can tell whether the checker blamed the right write. Stored data survives a kill
(a file in the container), so only the drops lose data.

It also has a replica one write behind: GET /kv/KEY?stale=1 answers with the value before the latest, as a client
reading from a lagging follower would. POST /cas/KEY {"expected", "new"} is a correct compare-and-set.
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
    state = {"rev": 0, "data": {}, "previous": {}, "dropped": []}


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
        key, _, query = self.path.removeprefix("/kv/").partition("?")
        with lock:
            found = state["data"].get(key)
            if query == "stale=1" and key in state["previous"]:
                found = state["previous"][key]
        return self.answer(200, found) if found else self.answer(404, {"error": "not found"})

    def store(self, key, value):
        state["rev"] += 1
        rev = state["rev"]
        if key.endswith(DROP_SUFFIX):
            state["dropped"].append({"key": key, "value": value, "rev": rev})
        else:
            if key in state["data"]:
                state["previous"][key] = state["data"][key]
            state["data"][key] = {"value": value, "rev": rev}
        save()
        return rev

    def do_POST(self):
        key = self.path.removeprefix("/cas/")
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
        with lock:
            held = state["data"].get(key, {}).get("value")
            if held != body["expected"]:
                return self.answer(409, {"error": "value changed", "value": held})
            rev = self.store(key, body["new"])
        return self.answer(200, {"rev": rev})

    def do_PUT(self):
        key = self.path.removeprefix("/kv/")
        value = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
        with lock:
            rev = self.store(key, value)
        return self.answer(200, {"rev": rev})

    def log_message(self, *args):
        pass


ThreadingHTTPServer(("0.0.0.0", 8080), Handler).serve_forever()
