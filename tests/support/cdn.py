"""A stand-in for Microsoft's CDN on 127.0.0.1: files, Range, counters and faults."""

import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

Fault = Callable[["CDNHandler", bytes], bool]


@dataclass
class CDNState:
    """What the server serves and what it has seen."""

    files: dict[str, bytes] = field(default_factory=dict)
    faults: dict[str, list[Fault]] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    bytes_sent: int = 0
    etags: dict[str, str] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


class CDNHandler(BaseHTTPRequestHandler):
    """Serves GET with optional ``Range``; a queued fault may take over a request."""

    state: CDNState
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # small answers go out at once, not after 40 ms

    def log_message(self, format: str, *args: object) -> None:  # stdlib's name
        """Stay quiet."""

    def do_GET(self) -> None:  # stdlib's name
        """Answer one GET."""
        path = self.path.split("?", 1)[0]
        with self.state.lock:
            self.state.requests.append(path)
            self.state.headers.append(dict(self.headers.items()))
            faults = self.state.faults.get(path, [])
            fault = faults.pop(0) if faults else None
        body = self.state.files.get(path)
        if fault is not None and fault(self, body or b""):
            return
        if body is None:
            self.send_error_body(404)
            return
        self.send_file(path, body)

    def send_error_body(self, status: int, extra: dict[str, str] | None = None) -> None:
        """Send a status with a tiny body."""
        payload = f"status {status}".encode()
        self.send_response(status)
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def send_file(
        self,
        path: str,
        body: bytes,
        *,
        limit: int | None = None,
        declared: int | None = None,
        validators: bool = True,
        sized: bool = True,
    ) -> None:
        """Send ``body`` (or the requested range), optionally cut after ``limit`` bytes.

        ``validators=False`` leaves out the ETag; ``sized=False`` leaves out
        Content-Length and ends the body by closing the connection.
        """
        start, status = 0, 200
        match = re.match(r"bytes=(\d+)-$", self.headers.get("Range", ""))
        if_range = self.headers.get("If-Range")
        etag = self.state.etags.get(path, '"v1"')
        if match and (if_range is None or if_range == etag):
            start, status = int(match.group(1)), 206
        part = body[start:]
        self.send_response(status)
        if validators:
            self.send_header("ETag", etag)
        self.send_header("Content-Type", "application/octet-stream")
        if sized:
            self.send_header(
                "Content-Length", str(declared if declared is not None else len(part))
            )
        else:
            self.send_header("Connection", "close")
            self.close_connection = True
        if status == 206:
            self.send_header(
                "Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}"
            )
        self.end_headers()
        out = part if limit is None else part[:limit]
        self._write(out)
        if limit is not None:
            self.close_connection = True

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        step = 1024 * 1024
        for offset in range(0, len(view), step):
            chunk = view[offset : offset + step]
            try:
                self.wfile.write(chunk)
            except (BrokenPipeError, ConnectionResetError):
                return
            with self.state.lock:
                self.state.bytes_sent += len(chunk)


class CDN:
    """The running server: ``url(path)`` gives its address."""

    def __init__(self) -> None:
        self.state = CDNState()
        handler = type("Handler", (CDNHandler,), {"state": self.state})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(
            target=self.server.serve_forever,
            kwargs={"poll_interval": 0.05},
            daemon=True,
        )
        self.thread.start()

    @property
    def base(self) -> str:
        """Return ``http://127.0.0.1:PORT``."""
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def url(self, path: str) -> str:
        """Return the full URL of a path on this server."""
        return self.base + path

    def add(self, path: str, body: bytes) -> None:
        """Serve ``body`` at ``path``."""
        self.state.files[path] = body

    def fault(self, path: str, *faults: Fault) -> None:
        """Queue faults for the next requests of ``path``, one per request."""
        self.state.faults.setdefault(path, []).extend(faults)

    def reset_counters(self) -> None:
        """Forget the requests seen so far."""
        with self.state.lock:
            self.state.requests.clear()
            self.state.headers.clear()
            self.state.bytes_sent = 0

    def close(self) -> None:
        """Stop the server."""
        self.server.shutdown()
        self.server.server_close()


def status(code: int) -> Fault:
    """A fault answering with an HTTP status."""

    def fault(handler: CDNHandler, body: bytes) -> bool:
        handler.send_error_body(code)
        return True

    return fault


def cut_after(limit: int) -> Fault:
    """A fault that sends the headers of the whole file and closes after ``limit`` bytes."""

    def fault(handler: CDNHandler, body: bytes) -> bool:
        handler.send_file(handler.path, body, limit=limit)
        return True

    return fault


def serve(other: bytes, etag: str | None = None) -> Fault:
    """A fault that serves different bytes (another file behind the same URL)."""

    def fault(handler: CDNHandler, body: bytes) -> bool:
        if etag is not None:
            handler.state.etags[handler.path] = etag
        handler.send_file(handler.path, other)
        return True

    return fault


def declare(length: int) -> Fault:
    """A fault that declares ``length`` in Content-Length but sends the real body."""

    def fault(handler: CDNHandler, body: bytes) -> bool:
        handler.send_file(handler.path, body, declared=length, limit=len(body))
        return True

    return fault


def redirect(location: str) -> Fault:
    """A fault that redirects elsewhere."""

    def fault(handler: CDNHandler, body: bytes) -> bool:
        handler.send_error_body(302, {"Location": location})
        return True

    return fault


def delay(seconds: float) -> Fault:
    """A fault that waits, then serves the file as usual: a slow download."""

    def fault(handler: CDNHandler, body: bytes) -> bool:
        time.sleep(seconds)
        handler.send_file(handler.path, body)
        return True

    return fault


def anonymous(other: bytes | None = None, *, limit: int | None = None) -> Fault:
    """A fault that serves the file (or ``other``) without ETag, maybe cut short.

    Without a validator a client cannot tell whether a resumed range belongs to
    the file it started: this is the splice a resume must never make.
    """

    def fault(handler: CDNHandler, body: bytes) -> bool:
        content = body if other is None else other
        handler.send_file(handler.path, content, limit=limit, validators=False)
        return True

    return fault


def unsized() -> Fault:
    """A fault that sends the file with no Content-Length, ending at the close."""

    def fault(handler: CDNHandler, body: bytes) -> bool:
        handler.send_file(handler.path, body, sized=False)
        return True

    return fault
