#!/usr/bin/env python3
"""Writes an OCI image layout with test images, so client tests need no base image from anywhere.

    make_oci_layout.py DIR

DIR gets two references in its index.json:
  multi   a single-platform image with three gzip layers of random content
  multiarch  an image index over two platform images (linux/amd64, linux/arm64)
"""
import gzip
import hashlib
import io
import json
import os
import sys
import tarfile

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"


def put_blob(root, data):
    digest = hashlib.sha256(data).hexdigest()
    path = os.path.join(root, "blobs", "sha256", digest)
    with open(path, "wb") as f:
        f.write(data)
    return "sha256:" + digest, len(data)


def layer(seed, size):
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        payload = os.urandom(size)
        info = tarfile.TarInfo(name=f"data/file-{seed}.bin")
        info.size = len(payload)
        info.mtime = 0
        tar.addfile(info, io.BytesIO(payload))
    tar_bytes = raw.getvalue()
    return gzip.compress(tar_bytes, mtime=0), hashlib.sha256(tar_bytes).hexdigest()


def image(root, arch, layer_sizes):
    layers, diff_ids = [], []
    for i, size in enumerate(layer_sizes):
        blob, diff = layer(f"{arch}-{i}", size)
        digest, length = put_blob(root, blob)
        layers.append({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": digest, "size": length})
        diff_ids.append("sha256:" + diff)
    config = {
        "architecture": arch,
        "os": "linux",
        "config": {"Cmd": ["/data"]},
        "created": "2026-01-01T00:00:00Z",
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created": "2026-01-01T00:00:00Z", "created_by": f"COPY data-{i} /data"}
                    for i in range(len(layer_sizes))]
        + [{"created": "2026-01-01T00:00:00Z", "created_by": 'CMD ["/data"]', "empty_layer": True}],
    }
    cdigest, clen = put_blob(root, json.dumps(config, sort_keys=True).encode())
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cdigest, "size": clen},
        "layers": layers,
    }
    mdigest, mlen = put_blob(root, json.dumps(manifest, sort_keys=True).encode())
    return {"mediaType": OCI_MANIFEST, "digest": mdigest, "size": mlen,
            "platform": {"architecture": arch, "os": "linux"}}


def main(root):
    os.makedirs(os.path.join(root, "blobs", "sha256"), exist_ok=True)
    with open(os.path.join(root, "oci-layout"), "w") as f:
        json.dump({"imageLayoutVersion": "1.0.0"}, f)
    single = image(root, "amd64", [300_000, 1_200_000, 40_000])
    single.pop("platform")
    single["annotations"] = {"org.opencontainers.image.ref.name": "multi"}
    children = [image(root, arch, [200_000, 50_000]) for arch in ("amd64", "arm64")]
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": children}
    idigest, ilen = put_blob(root, json.dumps(index, sort_keys=True).encode())
    refs = [single, {"mediaType": OCI_INDEX, "digest": idigest, "size": ilen,
                     "annotations": {"org.opencontainers.image.ref.name": "multiarch"}}]
    with open(os.path.join(root, "index.json"), "w") as f:
        json.dump({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": refs}, f)


if __name__ == "__main__":
    main(sys.argv[1])
