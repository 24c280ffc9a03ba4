"""What the test upstreams in front of a real registry share: passing a request on, unredirected,
and sending back the head of its answer. Imported by ratelimited_upstream.py and
held_upstream.py (which Python finds beside them)."""

import urllib.error
import urllib.request

# The response headers passed back to the client.
PASSED = ("Content-Type", "Content-Length", "Content-Range", "Accept-Ranges", "Docker-Content-Digest",
          "Docker-Distribution-API-Version", "Location", "WWW-Authenticate")


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args):
        return None


opener = urllib.request.build_opener(NoRedirect)


def ask(upstream, handler, method):
    """Passes the request `handler` received on to `upstream`; its answer, errors included."""
    headers = {k: v for k, v in handler.headers.items() if k in ("Accept", "Authorization", "Range")}
    req = urllib.request.Request(upstream + handler.path, method=method, headers=headers)
    try:
        return opener.open(req, timeout=30)
    except urllib.error.HTTPError as e:
        return e


def send_head(handler, resp, extra=()):
    """Sends the status and passed headers of `resp` (and `extra` name-value pairs) to the client."""
    handler.send_response(resp.status)
    for name in PASSED:
        if resp.headers.get(name) is not None:
            handler.send_header(name, resp.headers[name])
    for name, value in extra:
        handler.send_header(name, value)
    handler.end_headers()
