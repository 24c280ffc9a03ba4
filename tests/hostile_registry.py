"""A hostile source registry for `berth replicate`'s tests: it speaks just enough of the
distribution API to be asked for an image, then misbehaves.

Usage: hostile_registry.py PORT

- endless/app:v1 is a manifest whose body never ends (it stops at 64 MiB, so a test ends).
- loop/app has 1,000 tags on every page, whatever `last` asks: a listing that never advances.
"""

import http.server
import json
import sys

MANIFEST = "application/vnd.oci.image.manifest.v1+json"
ENDLESS_BYTES = 64 << 20
LOOP_TAGS = [f"t{i:04d}" for i in range(1000)]


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"

    def send_json(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def do_HEAD(self):
        self.do_GET()

    def do_GET(self):
        path = self.path.split("?")[0]
        if path == "/v2/":
            return self.send_json(200, {})
        if path == "/v2/endless/app/tags/list":
            return self.send_json(200, {"name": "endless/app", "tags": ["v1"]})
        if path == "/v2/loop/app/tags/list":
            return self.send_json(200, {"name": "loop/app", "tags": LOOP_TAGS})
        if path == "/v2/endless/app/manifests/v1" and self.command == "GET":
            # No Content-Length: the body lasts until the connection closes.
            self.send_response(200)
            self.send_header("Content-Type", MANIFEST)
            self.end_headers()
            chunk = b" " * 65536
            sent = 0
            try:
                while sent < ENDLESS_BYTES:
                    self.wfile.write(chunk)
                    sent += len(chunk)
            except (BrokenPipeError, ConnectionResetError):
                pass
            return
        self.send_json(404, {"errors": [{"code": "MANIFEST_UNKNOWN", "message": "unknown"}]})

    def log_message(self, *args):
        pass


http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
