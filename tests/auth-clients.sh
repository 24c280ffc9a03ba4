#!/usr/bin/env bash
# Real clients against a `berth` with access control: skopeo, crane, oras, podman and containerd
# log in (Basic at the token endpoint, then Bearer tokens scoped per repository), push and pull
# what their user may, and are refused what they may not.
source "$(dirname "$0")/lib.sh"
source "$ROOT/scripts/tools.sh"

CRANE=$(tool_path crane)
ORAS=$(tool_path oras)
require_tools "$CRANE" "$ORAS"
require_commands skopeo podman containerd ctr

client_workspace

# alice may do everything; bob may pull team/**; anyone may pull public/**.
htpasswd_users alice bob
cat >"$WORK/berth.yml" <<EOF
auth:
  htpasswd: $WORK/htpasswd
  anonymous:
    - { repositories: ["public/**"], actions: [pull] }
  rules:
    - { users: [alice], repositories: ["**"], actions: [pull, push, delete] }
    - { users: [bob], repositories: ["team/**"], actions: [pull] }
EOF
start_berth --config "$WORK/berth.yml"
R=$BERTH_ADDR
SK=(skopeo --insecure-policy)

echo "== the challenge"
check "/v2/ asks for a Bearer token from this server's /token" bash -c "
  curl -s -o /dev/null -D - $BERTH_URL/v2/ | grep -i '^www-authenticate: Bearer realm=\"http://$R/token\",service=\"berth\"'"

echo "== skopeo"
check "skopeo pushes as alice" "${SK[@]}" copy --dest-tls-verify=false --dest-creds alice:alice-pw \
  "oci:$WORK/layout:multi" "docker://$R/team/app:v1"
check "skopeo publishes a public image as alice" "${SK[@]}" copy --dest-tls-verify=false --dest-creds alice:alice-pw \
  "oci:$WORK/layout:multi" "docker://$R/public/base:v1"
check "skopeo pulls as bob" "${SK[@]}" copy --src-tls-verify=false --src-creds bob:bob-pw \
  "docker://$R/team/app:v1" "oci:$WORK/bob:v1"
check "skopeo may not push as bob" bash -c "! ${SK[*]} copy --dest-tls-verify=false --dest-creds bob:bob-pw \
  oci:$WORK/layout:multi docker://$R/team/app:bob 2>&1"
check "skopeo pulls a public image anonymously" "${SK[@]}" copy --src-tls-verify=false \
  "docker://$R/public/base:v1" "oci:$WORK/anon:v1"
check "skopeo may not pull a team image anonymously" bash -c "! ${SK[*]} inspect --tls-verify=false docker://$R/team/app:v1 2>&1"
check "skopeo is refused with a wrong password" bash -c "
  ${SK[*]} inspect --tls-verify=false --creds bob:wrong docker://$R/team/app:v1 2>&1 | grep -qi 'unauthorized\|authentication required'"

echo "== crane"
check "crane logs in as alice" "$CRANE" auth login "$R" -u alice -p alice-pw
check "crane copies with alice's stored login (a cross-repository mount)" "$CRANE" --insecure copy "$R/team/app:v1" "$R/team/copy:v1"
check "crane lists the catalog alice may see" bash -c "'$CRANE' --insecure catalog $R | sort | tr '\n' ' ' | grep -q 'public/base team/app team/copy'"
check "crane logs in as bob" "$CRANE" auth login "$R" -u bob -p bob-pw
check "crane pulls as bob" "$CRANE" --insecure manifest "$R/team/copy:v1"
check "crane may not delete as bob" bash -c "! '$CRANE' --insecure delete $R/team/copy:v1 2>&1"
"$CRANE" auth logout "$R" >/dev/null 2>&1

echo "== oras"
printf 'signed and sealed\n' >"$WORK/note.txt"
check "oras logs in as alice" "$ORAS" login --plain-http -u alice -p alice-pw "$R"
check "oras pushes an artifact" bash -c "cd $WORK && '$ORAS' push --plain-http $R/team/notes:v1 note.txt:text/plain"
check "oras pulls it back intact" bash -c "mkdir -p $WORK/oras && cd $WORK/oras && '$ORAS' pull --plain-http $R/team/notes:v1 && cmp note.txt $WORK/note.txt"
"$ORAS" logout "$R" >/dev/null 2>&1

echo "== podman"
PODMAN=(podman --root "$WORK/podman/root" --runroot "$WORK/podman/run" --storage-driver vfs)
export REGISTRY_AUTH_FILE=$WORK/podman-auth.json
check "podman logs in as bob (credentials checked by the token endpoint)" "${PODMAN[@]}" login --tls-verify=false -u bob -p bob-pw "$R"
check "podman refuses a wrong password at login" bash -c "! ${PODMAN[*]} login --tls-verify=false -u bob -p wrong $R 2>&1"
check "podman's stored login pulls as bob" "${PODMAN[@]}" pull --tls-verify=false "$R/team/app:v1"
check "skopeo uses podman's stored login" "${SK[@]}" inspect --tls-verify=false --authfile "$REGISTRY_AUTH_FILE" "docker://$R/team/app:v1"
unset REGISTRY_AUTH_FILE

echo "== containerd"
start_containerd "$WORK/containerd"
check "containerd pulls as bob through the token flow" "${CTR[@]}" content fetch --plain-http --user bob:bob-pw "$R/team/app:v1"
check "containerd pulls a public image anonymously" "${CTR[@]}" content fetch --plain-http "$R/public/base:v1"
check "containerd may not pull a team image anonymously" bash -c "! ${CTR[*]} content fetch --plain-http $R/team/app:v1 2>&1"
check "containerd pushes as alice" bash -c "
  ${CTR[*]} images tag $R/team/app:v1 $R/team/pushed:v1 >/dev/null &&
  ${CTR[*]} images push --plain-http --user alice:alice-pw $R/team/pushed:v1"

finish
