"""An upstream in front of a real registry that speaks like Docker Hub about its rate limit.

Usage: ratelimited_upstream.py PORT REGISTRY_URL

Every request is passed on to REGISTRY_URL and its answer sent back, with the header Docker Hub
sends on pulls: `ratelimit-remaining: <n>;w=21600`, one less after each manifest GET (from 100).
A repository whose name has a `broken` part answers 503, as an upstream in trouble does. For
Berth's monitoring test; listens on 127.0.0.1 only.
"""

import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from forwarding import ask, send_head

port, upstream = int(sys.argv[1]), sys.argv[2].rstrip("/")
remaining = [100]
lock = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def forward(self, method):
        if "/broken/" in self.path:
            self.send_response(503)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        resp = ask(upstream, self, method)
        body = resp.read() if method == "GET" else b""
        extra = []
        if "/manifests/" in self.path:
            with lock:
                if method == "GET":
                    remaining[0] = max(remaining[0] - 1, 0)
                extra.append(("ratelimit-remaining", f"{remaining[0]};w=21600"))
        send_head(self, resp, extra)
        self.wfile.write(body)

    def do_GET(self):
        self.forward("GET")

    def do_HEAD(self):
        self.forward("HEAD")


ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
