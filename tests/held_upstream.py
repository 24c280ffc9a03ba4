"""An upstream in front of a real registry that stops sending a blob part-way until told to go on.

Usage: held_upstream.py PORT REGISTRY_URL DIR HOLD_AFTER

Every request is passed on to REGISTRY_URL and its answer streamed back. A blob GET sends its
first HOLD_AFTER bytes, creates DIR/holding and then sends nothing more until DIR/release exists
(at most 120 s); once it does, nothing is held. For Berth's test of a replica that dies in the
middle of a pull-through fetch another replica streams; listens on 127.0.0.1 only.
"""

import os
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from forwarding import ask, send_head

port, upstream, state, hold_after = int(sys.argv[1]), sys.argv[2].rstrip("/"), sys.argv[3], int(sys.argv[4])


def released():
    return os.path.exists(os.path.join(state, "release"))


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def forward(self, method):
        resp = ask(upstream, self, method)
        send_head(self, resp)
        if method != "GET":
            return
        hold = "/blobs/" in self.path and not released()
        sent = 0
        while chunk := resp.read(65536):
            if hold and sent + len(chunk) > hold_after:
                self.wfile.write(chunk[: hold_after - sent])
                self.wfile.flush()
                chunk, sent = chunk[hold_after - sent :], hold_after
                open(os.path.join(state, "holding"), "w").close()
                deadline = time.monotonic() + 120
                while not released() and time.monotonic() < deadline:
                    time.sleep(0.05)
                hold = False
            self.wfile.write(chunk)
            sent += len(chunk)

    def do_GET(self):
        self.forward("GET")

    def do_HEAD(self):
        self.forward("HEAD")


ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
