"""A broken or hostile `vxtap server`, for the agent's tests: `python hostile_server.py PORT DIR`.

Listens on 127.0.0.1:PORT. Before each answer it reads DIR/mode, so a test switches
behaviour while the agent runs:

- good: desired state = DIR/state.json with ETag "t-<revision>"; If-None-Match naming
  that tag is held up to 1 s, then 304. Port registration and counters are accepted.
- trickle: 200 with a Content-Length of 1 MB, then one byte every 0.5 s.
- garbage: 200 with a body that is not JSON.
- invalid: 200 with JSON that is not a desired state.
- huge: 200 without a length, 300 MB of a JSON string, then close.

Every desired-state request is appended to DIR/requests (one line each), and the bytes
of body written so far to DIR/sent (huge).
"""

from __future__ import annotations

import json
import socketserver
import sys
import time
from pathlib import Path

DIRECTORY = Path(sys.argv[2]) if len(sys.argv) > 2 else Path(".")
SCRIPT = Path(__file__)


class Handler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        try:
            while self._one_request():
                pass
        except (ConnectionError, BrokenPipeError, TimeoutError):
            pass

    def _one_request(self) -> bool:
        request_line = self.rfile.readline(65536).decode(errors="replace")
        if not request_line:
            return False
        _, path, _ = request_line.split(" ", 2)
        headers: dict[str, str] = {}
        while (line := self.rfile.readline(65536)) not in (b"\r\n", b"\n", b""):
            name, _, value = line.decode(errors="replace").partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0") or 0)
        if length:
            self.rfile.read(length)
        if "/desired-state" not in path:
            if path.endswith("/ports"):
                return self._answer(200, json.dumps({"ports": []}).encode())
            return self._answer(204, b"")
        mode = (DIRECTORY / "mode").read_text().strip()
        with (DIRECTORY / "requests").open("a") as log:
            log.write(f"{time.time():.3f} {mode} {headers.get('if-none-match', '-')}\n")
        if mode == "good":
            state = (DIRECTORY / "state.json").read_bytes()
            tag = '"t-' + json.loads(state)["revision"] + '"'
            if headers.get("if-none-match") == tag:
                time.sleep(1.0)
                return self._answer(304, b"", {"ETag": tag})
            return self._answer(200, state, {"ETag": tag})
        if mode == "garbage":
            return self._answer(200, b"<html>\x00\xff not json at all")
        if mode == "invalid":
            return self._answer(200, b'{"host": 5, "sessions": "many"}')
        if mode == "trickle":
            self._head(200, {"Content-Length": "1000000"})
            for _ in range(1_000_000):
                self.wfile.write(b" ")
                self.wfile.flush()
                time.sleep(0.5)
            return False
        if mode == "huge":
            self._head(200, {"Connection": "close"})
            chunk = b"x" * (1 << 20)
            self.wfile.write(b'{"host": "')
            for megabytes in range(300):
                self.wfile.write(chunk)
                (DIRECTORY / "sent").write_text(str((megabytes + 1) << 20))
            self.wfile.write(b'"}')
            return False
        raise ValueError(f"unknown mode {mode!r}")

    def _head(self, status: int, headers: dict[str, str]) -> None:
        lines = [f"HTTP/1.1 {status} X", "Content-Type: application/json"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        self.wfile.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        self.wfile.flush()

    def _answer(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> bool:
        fields = dict(headers or {})
        if status != 304 and status != 204:
            fields["Content-Length"] = str(len(body))
        self._head(status, fields)
        self.wfile.write(body)
        self.wfile.flush()
        return True


class Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


if __name__ == "__main__":
    with Server(("127.0.0.1", int(sys.argv[1])), Handler) as server:
        print("listening", flush=True)
        server.serve_forever()
