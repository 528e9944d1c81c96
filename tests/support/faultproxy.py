"""An HTTP proxy on 127.0.0.1 in front of a real server, that misbehaves on request.

Tests put it between the downloader and the real registry to see what a flaky network or
an overloaded registry does: an HTTP status instead of the answer, a connection reset part
way through a body, or a stall. Each fault applies to requests whose path contains a given
text, a given number of times; everything else passes through unchanged, streamed.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx2

HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-authorization"}


@dataclass
class Fault:
    match: str  # a text the request path must contain
    kind: str  # "status" | "reset" | "stall"
    times: int = 1  # how many matching requests it hits
    status: int = 503
    after: int = 0  # reset/stall: body bytes sent first
    seconds: float = 30.0  # stall: how long
    method: str = "GET"


@dataclass
class FaultProxy:
    upstream: str  # http://HOST:PORT
    faults: list[Fault] = field(default_factory=list)
    hits: list[tuple[str, str]] = field(default_factory=list)  # (fault kind, path)
    rate_bps: float | None = None  # throttle every response body to this many bytes a second
    _server: ThreadingHTTPServer | None = None

    @property
    def host(self) -> str:
        assert self._server is not None
        return f"127.0.0.1:{self._server.server_address[1]}"

    def take(self, method: str, path: str) -> Fault | None:
        with _LOCK:
            for fault in self.faults:
                if fault.times > 0 and fault.method == method and fault.match in path:
                    fault.times -= 1
                    self.hits.append((fault.kind, path))
                    return fault
        return None

    def start(self) -> FaultProxy:
        proxy = self
        client = httpx2.Client(timeout=60)

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # quiet
                pass

            def _any(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else None
                fault = proxy.take(self.command, self.path)
                if fault is not None and fault.kind == "status":
                    self.send_response(fault.status)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP | {"host"}}
                request = client.build_request(self.command, proxy.upstream + self.path, headers=headers, content=body)
                response = client.send(request, stream=True)
                try:
                    self.send_response(response.status_code)
                    for key, value in response.headers.items():
                        if key.lower() not in HOP:
                            self.send_header(key, value)
                    self.end_headers()
                    sent = 0
                    began = time.monotonic()
                    for chunk in response.iter_raw(64 * 1024):
                        if proxy.rate_bps:
                            ahead = sent / proxy.rate_bps - (time.monotonic() - began)
                            if ahead > 0:
                                time.sleep(ahead)
                        if fault is not None and sent + len(chunk) > fault.after:
                            self.wfile.write(chunk[: max(0, fault.after - sent)])
                            self.wfile.flush()
                            if fault.kind == "stall":
                                time.sleep(fault.seconds)
                            # an RST, not a clean close
                            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                            self.close_connection = True
                            return
                        self.wfile.write(chunk)
                        sent += len(chunk)
                finally:
                    response.close()

            def _quiet(self) -> None:
                try:
                    self._any()
                except (ConnectionError, BrokenPipeError):  # the client went away (killed, or gave up)
                    self.close_connection = True

            do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _quiet

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


_LOCK = threading.Lock()
