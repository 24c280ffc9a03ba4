#!/usr/bin/env bash
# Builds the Berth image: one image holding `berth` and `berth-operator`, non-root, FROM scratch.
#   scripts/image.sh [TAG]      (default TAG: localhost/berth:dev)
# The binaries are a release build, or those already in $BERTH_BIN_DIR (the test suite packs the
# very binaries it tested, instead of compiling everything again); either way stripped.
#
# No base image can be pulled here, so the image's root filesystem is assembled from the release
# binaries and exactly the shared libraries they link (plus CA certificates, a passwd entry for
# the non-root user 65532, /tmp; and the data directory, copied owned by that user), then `podman
# build` copies it into an
# empty image with the Dockerfile at the repository's top.
set -euo pipefail
cd "$(dirname "$0")/.."
TAG=${1:-localhost/berth:dev}
BIN_DIR=${BERTH_BIN_DIR:-}
if [[ -z $BIN_DIR ]]; then
  cargo build --release -p berth-registry -p berth-operator
  BIN_DIR=target/release
fi
CTX=target/image
rm -rf "$CTX" && mkdir -p "$CTX/rootfs/usr/local/bin" "$CTX/rootfs/etc/ssl/certs" "$CTX/rootfs/tmp" "$CTX/data"
# The data directory's content: a marker, so the COPY that creates it has something to copy.
printf 'berth data directory\n' >"$CTX/data/.berth"
for bin in berth berth-operator; do
  strip -o "$CTX/rootfs/usr/local/bin/$bin" "$BIN_DIR/$bin"
  # Every library the binary loads, at the path the dynamic loader looks for it.
  ldd "$BIN_DIR/$bin" | awk '/=>/ {print $3} /^\t\/.*ld-linux/ {print $1}' | while read -r lib; do
    [[ -n $lib && -f $lib ]] || continue
    mkdir -p "$CTX/rootfs$(dirname "$lib")"
    cp -L "$lib" "$CTX/rootfs$lib"
  done
done
cp -L /etc/ssl/certs/ca-certificates.crt "$CTX/rootfs/etc/ssl/certs/"
printf 'root:x:0:0:root:/root:/sbin/nologin\nberth:x:65532:65532:berth:/var/lib/berth:/sbin/nologin\n' >"$CTX/rootfs/etc/passwd"
printf 'root:x:0:\nberth:x:65532:\n' >"$CTX/rootfs/etc/group"
printf 'hosts: files dns\n' >"$CTX/rootfs/etc/nsswitch.conf"
chmod 1777 "$CTX/rootfs/tmp"
cp Dockerfile "$CTX/Dockerfile"
podman build --quiet -t "$TAG" "$CTX" >/dev/null
echo "$TAG"
