"""The render window for Resolve Free 19.1 and later: a small page the menu script itself serves on loopback.

Free 19.1+ shows no UIManager window for third-party scripts (the calls that read and change the timeline
still work from Workspace › Scripts), so the script opens this page in the browser instead. It has every
field, the progress and Cancel of the Studio dialog and runs the same :class:`.controller.Controller`.

Thread rule, as in the dialog: one loop on the script's thread answers the page's requests and polls the
render, so every Resolve call happens there; the render runs on the bridge's thread and touches no Resolve
object. The result is placed even if the browser is closed meanwhile. The loop ends on Close, or after
``idle_s`` without a request while nothing renders.

Only this machine's browser can drive it: the server listens on 127.0.0.1 only, every path carries a
random key printed once, the Host (and any Origin) header must name this address (no DNS rebinding), and
changes are JSON POSTs that a cross-site form cannot send.
"""

from __future__ import annotations

import json
import secrets
import sys
import time
import webbrowser
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

from kvlock_wire import DEFAULT_ADDRESS, default_token_file

from . import host
from .controller import FINAL, Controller, explain
from .form import Form
from .page_html import page_html

MAX_BODY = 64 * 1024


class Page:
    """The page's state and its answers; ``serve`` runs the loop."""

    def __init__(self, controller: Controller, idle_s: float = 1800.0) -> None:
        self.controller, self.idle_s = controller, idle_s
        self.key, self.nonce = secrets.token_urlsafe(18), secrets.token_urlsafe(12)
        self.server_line, self.status, self.progress, self.fraction = "not checked", "", "", 0.0
        self.closed = False
        self.last_request = time.monotonic()
        self.httpd = HTTPServer(("127.0.0.1", 0), _handler(self))
        self.httpd.timeout = 0.2

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    @property
    def url(self) -> str:
        return f"{self.origin}/{self.key}/"

    def report(self, text: str, fraction: float) -> None:
        if text.startswith(FINAL):
            self.status = text
        else:
            self.progress, self.fraction = text, fraction

    def state(self) -> dict[str, Any]:
        return {
            "product": self.controller.product.label,
            "server": self.server_line,
            "models": self.controller.models,
            "status": self.status,
            "progress": self.progress,
            "fraction": self.fraction,
            "running": self.controller.running,
            "closed": self.closed,
        }

    def _connection(self, body: dict[str, Any]) -> None:
        address, token = body.get("address", self.controller.address), body.get("token", "")
        if not isinstance(address, str) or not isinstance(token, str) or len(address) + len(token) > 4096:
            raise host.HostError("the server address and token must be text")
        self.controller.address, self.controller.token = address.strip() or DEFAULT_ADDRESS, token.strip()

    def answer(self, method: str, action: str, body: dict[str, Any]) -> tuple[int, str, bytes]:
        """(status, content type, body) for one request under the key; every failure becomes a message."""
        if method == "GET" and action == "":
            return 200, "text/html; charset=utf-8", page_html(self.controller.product.label, self.nonce).encode()
        if method == "GET" and action == "state":
            return self._json(self.state())
        if method != "POST" or action not in {"check", "render", "render_markers", "cancel", "close"}:
            return 404, "text/plain; charset=utf-8", b"not found"
        try:
            if action == "check":
                self._connection(body)
                self.server_line = self.controller.server_status()
            elif action in ("render", "render_markers"):
                self._render(action, body)
            elif action == "cancel":
                if self.controller.cancel():
                    self.progress = "cancelling…"
            else:
                self.controller.cancel()
                self.closed = True
        except Exception as exc:  # the page must keep answering whatever Resolve does
            self.status = f"Error: {explain(f'handling {action}', exc)}"
        return self._json(self.state())

    def _render(self, action: str, body: dict[str, Any]) -> None:
        """Render the marked range, or every KV-Lock marker, with the page's form."""
        self._connection(body)
        values = body.get("form")
        if not isinstance(values, dict):
            raise host.HostError("the request has no form")
        form = Form.from_values(values)
        if action == "render":
            job = self.controller.prepare(form)
            self.status, self.progress, self.fraction = job.describe(), "starting…", 0.0
            self.controller.start(job)
        else:
            batch = self.controller.prepare_markers(form)
            self.status, self.progress, self.fraction = batch.describe(), "starting…", 0.0
            self.controller.start_markers(batch)

    def _json(self, value: dict[str, Any]) -> tuple[int, str, bytes]:
        return 200, "application/json", json.dumps(value).encode()

    def tick(self) -> None:
        try:
            self.controller.poll(self.report)
        except Exception as exc:  # the loop must go on, so the editor hears about it
            self.status = f"Error: {explain('following the render', exc)}"

    def serve(self) -> None:
        """Answer requests and follow the render until Close, or ``idle_s`` of silence with nothing running."""
        try:
            while not self.closed:
                self.httpd.handle_request()
                self.tick()
                idle = time.monotonic() - self.last_request > self.idle_s
                if idle and not self.controller.running:
                    print(f"KV-Lock: no request for {self.idle_s:.0f} s, the page is closed", file=sys.stderr)
                    break
            while self.controller.running:  # closed mid-render: the cancel still has to land
                self.tick()
                time.sleep(0.1)
        finally:
            self.httpd.server_close()


class _Handler(BaseHTTPRequestHandler):
    """The page's requests: the Host and Origin checked, the key in every path, JSON bodies only."""

    page: Page
    timeout = 5  # a browser's idle pre-connection must not hold the loop
    server_version = "KV-Lock"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(self, status: int, kind: str, data: bytes) -> None:
        nonce = self.page.nonce
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Frame-Options", "DENY")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("Content-Security-Policy", f"default-src 'none'; script-src 'nonce-{nonce}'; "
                         f"style-src 'nonce-{nonce}'; connect-src 'self'; form-action 'none'; "
                         "frame-ancestors 'none'")  # fmt: skip
        self.end_headers()
        self.wfile.write(data)

    def _refusal(self) -> tuple[int, bytes] | None:
        """Why this request is not the page's own (wrong host, origin or key), or None."""
        port = self.page.httpd.server_address[1]
        if self.headers.get("Host") not in {f"127.0.0.1:{port}", f"localhost:{port}"}:
            return 421, b"wrong host"
        if self.headers.get("Origin") not in (None, self.page.origin, f"http://localhost:{port}"):
            return 403, b"wrong origin"
        if not self.path.startswith(f"/{self.page.key}/"):
            return 404, b"not found"
        return None

    def _body(self) -> dict[str, Any] | tuple[int, bytes]:
        """The POSTed JSON object, or the status and reason that refuse it."""
        length = int(self.headers.get("Content-Length") or 0)
        if self.headers.get_content_type() != "application/json" or not 0 <= length <= MAX_BODY:
            return 415, b"send JSON, at most 64 KiB"
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
        except ValueError:
            return 400, b"not JSON"
        return body if isinstance(body, dict) else (400, b"send a JSON object")

    def _route(self, method: str) -> None:
        self.page.last_request = time.monotonic()
        body = self._refusal() or (self._body() if method == "POST" else {})
        if isinstance(body, tuple):  # refused, with its status and reason
            return self._send(body[0], "text/plain; charset=utf-8", body[1])
        prefix = f"/{self.page.key}/"
        self._send(*self.page.answer(method, self.path[len(prefix) :].split("?")[0], body))

    def do_GET(self) -> None:
        self._route("GET")

    def do_POST(self) -> None:
        self._route("POST")


def _handler(page: Page) -> type[BaseHTTPRequestHandler]:
    return type("Handler", (_Handler,), {"page": page})


def run(resolve: Any, open_browser: Callable[[str], Any] = webbrowser.open, idle_s: float = 1800.0) -> Page:
    """Serve the page, open it in the browser, and run until it is closed."""
    controller = Controller(resolve, DEFAULT_ADDRESS, token_file=str(default_token_file()))
    page = Page(controller, idle_s)
    print(f"KV-Lock: {page.url} (the page stays open until you press Close)", file=sys.stderr)
    page.server_line = controller.server_status()
    if not open_browser(page.url):
        print("KV-Lock: no browser opened by itself; open the address above", file=sys.stderr)
    page.serve()
    return page
