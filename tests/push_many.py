"""Pushes N small images to a registry, one manifest each, for Berth's event tests.

Usage: push_many.py REGISTRY_URL REPOSITORY FIRST COUNT ACKED_FILE [SUBJECT_DIGEST SUBJECT_SIZE]

Images FIRST..FIRST+COUNT-1 share one config and one layer; each manifest differs by an
annotation and is pushed under the tag `t<i>`. Every push the registry acknowledged (201) is
appended to ACKED_FILE as `<tag> <digest>`. A push that fails for a connection error or a 5xx
(the registry restarting) is tried again, for at most a minute.

With a subject, each manifest is an artifact that refers to it (a referrer, as `oras attach`
pushes one), pushed by its digest instead of a tag.
"""

import hashlib
import json
import sys
import time
import urllib.error
import urllib.request

url, repo, first, count, acked_file = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
subject = sys.argv[6:8]


def request(method, path, body=b"", headers=None):
    req = urllib.request.Request(url + path, data=body, method=method, headers=headers or {})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return resp.status, resp.headers


def retried(what, f):
    deadline = time.time() + 60
    while True:
        try:
            return f()
        except (urllib.error.URLError, ConnectionError, TimeoutError) as e:
            server_error = isinstance(e, urllib.error.HTTPError) and e.code >= 500
            if isinstance(e, urllib.error.HTTPError) and not server_error:
                raise
            if time.time() > deadline:
                raise SystemExit(f"{what}: still failing after a minute: {e}")
            time.sleep(0.2)


def blob(data):
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    retried("blob", lambda: request("POST", f"/v2/{repo}/blobs/uploads/?digest={digest}", data,
                                     {"Content-Type": "application/octet-stream"}))
    return {"mediaType": "application/octet-stream", "digest": digest, "size": len(data)}


config = blob(b'{"architecture":"amd64","os":"linux"}')
config["mediaType"] = "application/vnd.oci.image.config.v1+json"
layer = blob(b"a layer shared by every image")
layer["mediaType"] = "application/vnd.oci.image.layer.v1.tar"
with open(acked_file, "a") as out:
    for i in range(first, first + count):
        doc = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": config,
            "layers": [layer],
            "annotations": {"n": str(i)},
        }
        if subject:
            doc["artifactType"] = "application/vnd.berth.test.note"
            doc["subject"] = {"mediaType": "application/vnd.oci.image.manifest.v1+json",
                              "digest": subject[0], "size": int(subject[1])}
        manifest = json.dumps(doc).encode()
        digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
        reference = digest if subject else f"t{i}"
        retried(reference, lambda: request("PUT", f"/v2/{repo}/manifests/{reference}", manifest,
                                           {"Content-Type": "application/vnd.oci.image.manifest.v1+json"}))
        out.write(f"{reference} {digest}\n")
        out.flush()
