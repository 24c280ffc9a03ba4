"""A webhook receiver for Berth's event tests: records every delivery it is sent.

Usage: webhook_receiver.py PORT SECRET_FILE OUT_FILE

Each POST is answered 200 and appended to OUT_FILE as one JSON line: the path, the content
type, whether its Berth-Signature verifies with the secret in SECRET_FILE, and the body.
"""

import hashlib
import hmac
import http.server
import json
import sys
import threading

port, secret_file, out_file = int(sys.argv[1]), sys.argv[2], sys.argv[3]
with open(secret_file, "rb") as f:
    SECRET = f.read().strip()
LOCK = threading.Lock()


def verified(header, body):
    """Whether `t=<unix>,v1=<hex>` is the HMAC-SHA256 of `<t>.<body>` under the secret."""
    parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    if "t" not in parts or "v1" not in parts:
        return False
    mac = hmac.new(SECRET, parts["t"].encode() + b"." + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(mac, parts["v1"])


class Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        line = {
            "path": self.path,
            "contentType": self.headers.get("Content-Type", ""),
            "signed": verified(self.headers.get("Berth-Signature", ""), body),
            "body": json.loads(body),
        }
        with LOCK, open(out_file, "a") as f:
            f.write(json.dumps(line) + "\n")
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
