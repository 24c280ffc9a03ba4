#!/usr/bin/env bash
# What a power loss or a full disk could take from an acknowledged push, checked against a real
# `berth`:
#   - in what it asks of the kernel (strace): a blob's bytes are fsynced before its name appears,
#     every directory its commit creates is fsynced in its parent, and the metadata commit that
#     acknowledges the push syncs SQLite's write-ahead log before the answer; a small blob, kept
#     as a row of that database, is made durable by the same sync, and nothing else is synced;
#   - on a small filesystem of its own (tmpfs; needs root): a push that does not fit fails with 507
#     and a code, nothing of it is visible, and pushes work again once there is room.
source "$(dirname "$0")/lib.sh"
require_commands strace curl python3 sha256sum mount umount
WORK=$(mktemp -d)
on_exit "rm -rf $WORK"

# push_blob URL REPO FILE: POST a session, PATCH the file, PUT the digest (the flow docker and
# containerd use); prints the first status that is not what that step should answer.
push_blob() {
  local url=$1 repo=$2 file=$3 digest loc status
  digest=sha256:$(sha256sum <"$file" | cut -d' ' -f1)
  loc=$(curl -s -o "$WORK/put.json" -D - -X POST "$url/v2/$repo/blobs/uploads/" | tr -d '\r' |
    awk 'tolower($1) == "location:" {print $2}')
  [[ -n $loc ]] || { curl -s -o "$WORK/put.json" -w '%{http_code}' -X POST "$url/v2/$repo/blobs/uploads/"; return; }
  status=$(curl -s -o "$WORK/put.json" -w '%{http_code}' -X PATCH -H 'Content-Type: application/octet-stream' \
    --data-binary "@$file" "$url$loc")
  [[ $status == 202 ]] || { echo "$status"; return; }
  curl -s -o "$WORK/put.json" -w '%{http_code}' -X PUT "$url$loc?digest=$digest"
}

echo "== what berth asks of the kernel"
PORT=$(free_port)
head -c 300000 /dev/urandom >"$WORK/blob"
strace -f -y -qq -e trace=mkdir,mkdirat,openat,fsync,fdatasync,rename,renameat,renameat2 -o "$WORK/trace" \
  "$BERTH_BIN" serve --listen "127.0.0.1:$PORT" --data-dir "$WORK/data" >"$WORK/log" 2>&1 &
# berth first: strace, killed alone, lets go of it and leaves it running.
on_exit "pkill -P $!; kill $!"
wait_for "http://127.0.0.1:$PORT/v2/" 30 || { cat "$WORK/log"; exit 1; }
# strace writes the trace at its own offset: mark where the push begins by line, not by appending.
sleep 1
START=$(wc -l <"$WORK/trace")
STATUS=$(push_blob "http://127.0.0.1:$PORT" durable/app "$WORK/blob")
check "the push is acknowledged (201)" equal "$STATUS" 201

# Everything traced from the push on.
cat >"$WORK/check.py" <<'EOF'
import os, re, sys
lines = open(sys.argv[1]).read().splitlines()[int(sys.argv[3]):]
what = sys.argv[2]
mkdirs, synced, problems = [], [], []
for i, l in enumerate(lines):
    m = re.search(r'mkdir(?:at)?\((?:AT_FDCWD(?:<[^>]*>)?, )?"([^"]+)".*= 0', l)
    # Directories that hold acknowledged content (upload chunks are not, until the upload ends).
    if m and "/storage/blobs/" in m.group(1):
        mkdirs.append((i, m.group(1)))
    m = re.search(r'f(?:data)?sync\(\d+<([^>]+)>\) = 0', l)
    if m:
        synced.append((i, m.group(1)))
    m = re.search(r'rename(?:at2?)?\((?:AT_FDCWD(?:<[^>]*>)?, )?"([^"]+)", (?:AT_FDCWD(?:<[^>]*>)?, )?"([^"]+)"', l)
    if m and "/blobs/sha256/" in m.group(2) and what == "blob":
        src = m.group(1)
        if not any(p == src and j < i for j, p in synced):
            problems.append(f"{m.group(2)} named before its bytes were synced")
if what == "dirs":
    for i, d in mkdirs:
        parent = os.path.dirname(d.rstrip("/"))
        if not any(p == parent and j > i for j, p in synced):
            problems.append(f"{d} created, its parent never fsynced after")
    if not mkdirs:
        problems.append("the push created no directory under blobs/ (nothing was checked)")
if what in ("wal", "small"):
    if not any(p.endswith("meta.db-wal") for _, p in synced):
        problems.append("no fsync of meta.db-wal while the push was acknowledged")
if what == "small":
    # One log: the row and its link are made durable by one sync, not one each.
    others = sorted({p for _, p in synced if not p.endswith("meta.db-wal")})
    if others:
        problems.append(f"a small push synced more than the metadata log: {others}")
for p in problems:
    print(p)
sys.exit(1 if problems else 0)
EOF
check "a blob's bytes are synced before its name appears" python3 "$WORK/check.py" "$WORK/trace" blob "$START"
check "every directory the push created is fsynced in its parent" python3 "$WORK/check.py" "$WORK/trace" dirs "$START"
check "the metadata commit that acknowledges it syncs SQLite's log" python3 "$WORK/check.py" "$WORK/trace" wal "$START"
head -c 4096 /dev/urandom >"$WORK/small-blob"
sleep 1
START=$(wc -l <"$WORK/trace")
check "a small push is acknowledged (201)" equal "$(push_blob "http://127.0.0.1:$PORT" durable/app "$WORK/small-blob")" 201
check "a small blob is a row of the metadata log, made durable by its sync alone" python3 "$WORK/check.py" "$WORK/trace" small "$START"

echo "== a full disk"
DISK=$WORK/disk
mkdir -p "$DISK"
if ! mount -t tmpfs -o size=24m tmpfs "$DISK"; then
  echo "cannot mount a small filesystem for the disk-full test (it needs root)" >&2
  exit 1
fi
on_exit "umount -l $DISK"
PORT=$(free_port)
URL=http://127.0.0.1:$PORT
"$BERTH_BIN" serve --listen "127.0.0.1:$PORT" --data-dir "$DISK/data" >"$WORK/full.log" 2>&1 &
on_exit "kill $!"
wait_for "$URL/v2/" 30 || { cat "$WORK/full.log"; exit 1; }
head -c 100000 /dev/urandom >"$WORK/small"
check "a small push fits" equal "$(push_blob "$URL" full/app "$WORK/small")" 201
touch "$WORK/mark"
head -c 4000000 /dev/urandom >"$WORK/big"
BIG_DIGEST=sha256:$(sha256sum <"$WORK/big" | cut -d' ' -f1)
# A push's steps hit a full disk at two depths: its bytes (storage), and its session row (SQLite).
# fill LEAVE: fills the disk to all but LEAVE bytes.
fill() {
  rm -f "$DISK/filler"
  local avail
  avail=$(df --output=avail -B1 "$DISK" | tail -1)
  head -c "$((avail - $1))" /dev/zero >"$DISK/filler" 2>/dev/null
  true
}
fill 1000000
STATUS=$(push_blob "$URL" full/app "$WORK/big")
check "bytes that do not fit fail with 507" equal "$STATUS" 507
check "and say why, with a code" bash -c "grep -q '\"code\":\"UNAVAILABLE\"' '$WORK/put.json' && grep -q 'storage is full' '$WORK/put.json'"
fill 0
STATUS=$(push_blob "$URL" full/app "$WORK/big")
check "a session the database cannot record fails with 507" equal "$STATUS" 507
check "and says why, with a code" bash -c "grep -q '\"code\":\"UNAVAILABLE\"' '$WORK/put.json' && grep -q 'storage is full' '$WORK/put.json'"
check "nothing of it is visible" equal "$(curl -s -o /dev/null -w '%{http_code}' -I "$URL/v2/full/app/blobs/$BIG_DIGEST")" 404
check "no half-written file is left behind" bash -c "[[ -z \$(find '$DISK/data/storage' -newer '$WORK/mark' -type f 2>/dev/null) ]]"
check "berth still answers" equal "$(curl -s -o /dev/null -w '%{http_code}' "$URL/v2/")" 200
rm -f "$DISK/filler"
check "once there is room, the same push works" equal "$(push_blob "$URL" full/app "$WORK/big")" 201
check "and the blob reads back whole" bash -c "curl -s '$URL/v2/full/app/blobs/$BIG_DIGEST' | sha256sum | grep -q '${BIG_DIGEST#sha256:}'"
finish
