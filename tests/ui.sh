#!/usr/bin/env bash
# The web UI. A real headless Chromium (tests/ui_browser.py) logs in, browses to an image skopeo
# pushed, sees its cosign signature, deletes a tag after its preview, and a user without rights
# sees neither the repository nor a delete button; an admin reads storage per repository and starts
# a garbage collection dry run, and reads its report. With curl: the headers that keep the pages
# self-contained (Content-Security-Policy), forms refused without this site's CSRF value or from
# another origin, a delete confirmed after its tag moved, a UI session that is no Bearer token,
# the first page's weight, and `ui.enabled: false`. UI_SCREENSHOTS=DIR keeps the main pages'
# screenshots (docs/ has them).
source "$(dirname "$0")/lib.sh"
source "$ROOT/scripts/tools.sh"

COSIGN=$(tool_path cosign)
require_tools "$COSIGN"
require_commands skopeo chromium chromedriver
# Debian's python3-selenium belongs to Debian's python3, whatever else is first on the PATH.
DEBIAN_PY=/usr/bin/python3
"$DEBIAN_PY" -c 'import selenium' || { echo "python3-selenium is not installed" >&2; exit 1; }
client_workspace
# An upstream for the pull-through cache, behind a proxy that reports Docker Hub's rate limit,
# and a webhook receiver: Operate shows what the cache and the deliveries did.
start_limited_upstream || exit 1
RECEIVER_PORT=$(free_port)
printf 'a-webhook-secret\n' >"$WORK/hook-secret"
python3 "$ROOT/tests/webhook_receiver.py" "$RECEIVER_PORT" "$WORK/hook-secret" "$WORK/received.jsonl" \
  >"$WORK/receiver.log" 2>&1 &
on_exit "kill $!"
htpasswd_users alice bob
cat >"$WORK/berth.yml" <<YAML
auth:
  htpasswd: $WORK/htpasswd
  rules:
    - { users: [alice], repositories: ["**"], actions: [pull, push, delete, admin] }
    - { users: [bob], repositories: ["public/**"], actions: [pull] }
proxy:
  upstreams:
    - { name: docker.io, url: "http://$LIMITED", include: ["library/**"] }
notifications:
  endpoints:
    - { name: scanner, url: "http://127.0.0.1:$RECEIVER_PORT/", secret_file: $WORK/hook-secret }
retention:
  policies:
    - repositories: ["team/**"]
      tags: [{ match: { glob: "*" }, keep: { most_recently_pushed: 1 } }]
YAML
start_berth --config "$WORK/berth.yml" || exit 1
R=$BERTH_ADDR
export COSIGN_PASSWORD= COSIGN_EXPERIMENTAL=1

pushed() {
  local sk=(skopeo --insecure-policy copy -q --preserve-digests --dest-tls-verify=false --dest-creds alice:alice-pw)
  # v2 a second after v1 (push times are whole seconds): the UI lists v2 first by last push.
  "${sk[@]}" "oci:$WORK/layout:multi" "docker://$R/team/app:v1" && sleep 1 &&
    "${sk[@]}" "oci:$WORK/layout:multiarch" "docker://$R/team/app:v2" --all &&
    "${sk[@]}" "oci:$WORK/layout:multi" "docker://$R/public/app:v1" &&
    (cd "$WORK" && "$COSIGN" generate-key-pair >/dev/null 2>&1) &&
    printf '{"auths":{"%s":{"auth":"%s"}}}' "$R" "$(printf alice:alice-pw | base64)" >"$DOCKER_CONFIG/config.json" &&
    "$COSIGN" sign --yes --key "$WORK/cosign.key" --tlog-upload=false --registry-referrers-mode=oci-1-1 \
      --allow-insecure-registry --allow-http-registry "$R/team/app@$MULTI" >/dev/null 2>&1
}
check "skopeo pushes team/app and public/app, cosign signs team/app:v1" pushed
through_cache() {
  skopeo --insecure-policy copy -q --dest-tls-verify=false "oci:$WORK/layout:multi" "docker://$UP/library/alpine:3" &&
    for _ in 1 2; do
      skopeo --insecure-policy copy -q --src-tls-verify=false --src-creds alice:alice-pw \
        "docker://$R/docker.io/library/alpine:3" "oci:$WORK/pulled:alpine" || return 1
    done
}
check "alpine is pulled twice through the cache (a miss, then hits)" through_cache

echo "== headers and forms"
csp() {
  curl -fsS -D - -o /dev/null "$BERTH_URL/ui/" | tr -d '\r' |
    grep -qx "content-security-policy: default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
}
check "pages allow only their own stylesheet: no script, no other origin" csp
light() {
  local bytes
  bytes=$(($(curl -fsS "$BERTH_URL/ui/" | wc -c) + $(curl -fsS "$BERTH_URL/ui/assets/berth.css" | wc -c)))
  echo "first page: $bytes bytes"
  ((bytes < 150000))
}
check "the first page weighs under 150 KB" light
# session: logs alice in through the form, leaving cookies in $WORK/jar; prints the form's csrf.
session() {
  local csrf
  rm -f "$WORK/jar"
  csrf=$(curl -fsS -c "$WORK/jar" "$BERTH_URL/ui/login" | grep -o 'name="csrf" value="[^"]*"' | head -1 | cut -d'"' -f4) &&
    curl -fsS -b "$WORK/jar" -c "$WORK/jar" -o /dev/null --data-urlencode "csrf=$csrf" \
      --data-urlencode user=alice --data-urlencode password=alice-pw "$BERTH_URL/ui/login" &&
    grep -q berth_session "$WORK/jar" && echo "$csrf"
}
delete_status() { # delete_status CSRF [curl args...]: the status of a UI delete of team/app:v2
  local csrf=$1
  shift
  curl -s -o /dev/null -w '%{http_code}' -b "$WORK/jar" --data-urlencode "csrf=$csrf" \
    --data-urlencode name=team/app --data-urlencode ref=v2 "$@" "$BERTH_URL/ui/delete"
}
v2_there() { equal "$(curl -s -o /dev/null -w '%{http_code}' -u alice:alice-pw "$BERTH_URL/v2/team/app/manifests/v2")" 200; }
forged() {
  local csrf
  csrf=$(session) &&
    equal "$(delete_status wrong-value)" 403 &&
    equal "$(delete_status "$csrf" -H "Origin: http://evil.example")" 403 &&
    equal "$(delete_status "$csrf" -H "Sec-Fetch-Site: cross-site")" 403 &&
    v2_there
}
check "a delete without this site's CSRF value, or sent from another site, is refused" forged
# The preview shows the manifest a tag names; if the tag moves before the confirmation, the
# confirmed delete removes nothing (409) rather than the manifest nobody looked at.
stale_delete() {
  local csrf seen sk=(skopeo --insecure-policy copy -q --dest-tls-verify=false --dest-creds alice:alice-pw)
  csrf=$(session) && "${sk[@]}" "oci:$WORK/layout:multi" "docker://$R/moves/app:t" &&
    seen=$(curl -fsS -b "$WORK/jar" "$BERTH_URL/ui/delete?name=moves/app&ref=t" |
      grep -o 'name="seen" value="[^"]*"' | cut -d'"' -f4) && [[ -n $seen ]] &&
    "${sk[@]}" "oci:$WORK/layout:multiarch" "docker://$R/moves/app:t" --all &&
    equal "$(curl -s -o "$WORK/stale.html" -w '%{http_code}' -b "$WORK/jar" --data-urlencode "csrf=$csrf" \
      --data-urlencode name=moves/app --data-urlencode ref=t --data-urlencode "seen=$seen" \
      "$BERTH_URL/ui/delete")" 409 &&
    grep -q "nothing was deleted" "$WORK/stale.html" &&
    equal "$(curl -s -o /dev/null -w '%{http_code}' -u alice:alice-pw "$BERTH_URL/v2/moves/app/manifests/t")" 200
}
check "a delete confirmed after the tag moved deletes nothing" stale_delete
not_a_token() {
  local token
  session >/dev/null && token=$(awk '$6 == "berth_session" {print $7}' "$WORK/jar") && [[ -n $token ]] &&
    equal "$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $token" "$BERTH_URL/v2/team/app/tags/list")" 401
}
check "a UI session is no Bearer token for the API" not_a_token
cookie_flags() {
  local csrf
  csrf=$(session) &&
    curl -s -D - -o /dev/null -b "$WORK/jar" --data-urlencode "csrf=$csrf" --data-urlencode user=alice \
      --data-urlencode password=alice-pw "$BERTH_URL/ui/login" | tr -d '\r' |
    grep -i '^set-cookie: berth_session=' | grep -q 'HttpOnly; SameSite=Strict'
}
check "the session cookie is HttpOnly and SameSite=Strict" cookie_flags
wrong_password() {
  local csrf
  csrf=$(curl -fsS -c "$WORK/jar2" "$BERTH_URL/ui/login" | grep -o 'name="csrf" value="[^"]*"' | cut -d'"' -f4) &&
    curl -s -b "$WORK/jar2" --data-urlencode "csrf=$csrf" --data-urlencode user=alice \
      --data-urlencode password=wrong "$BERTH_URL/ui/login" | grep -q "invalid username or password"
}
check "a wrong password is refused with the API's words" wrong_password

echo "== a real Chromium"
# A pull of v1 a second after the last pull of v2 (by the checks above): the UI lists it first by last pull.
pulled() { sleep 1 && curl -fsS -o /dev/null -u alice:alice-pw -H "Accept: application/vnd.oci.image.manifest.v1+json" "$BERTH_URL/v2/team/app/manifests/v1"; }
check "team/app:v1 is pulled" pulled
mkdir -p "$WORK/shots"
timeout 300 "$DEBIAN_PY" "$ROOT/tests/ui_browser.py" "$BERTH_URL" "$MULTI" "$WORK/browser.txt" \
  "${UI_SCREENSHOTS:-$WORK/shots}" >"$WORK/browser.log" 2>&1 || true
if [[ ! -s $WORK/browser.txt ]]; then
  cat "$WORK/browser.log"
  check "the browser ran" false
fi
while IFS=$'\t' read -r status what detail; do
  [[ -n $detail ]] && echo "        | $detail"
  check "browser: $what" test "$status" = ok
done <"$WORK/browser.txt"

echo "== a user removed"
sees_team() { curl -fsS -b "$WORK/jar" "$BERTH_URL/ui/" | grep -q 'team/app'; }
removed() {
  session >/dev/null && sees_team &&
    grep -v '^alice:' "$WORK/htpasswd" >"$WORK/htpasswd.new" && mv "$WORK/htpasswd.new" "$WORK/htpasswd" &&
    eventually 20 bash -c "! curl -fsS -b '$WORK/jar' '$BERTH_URL/ui/' | grep -q 'team/app'"
}
check "a session stops working once its user is removed from htpasswd" removed

echo "== turned off"
cat >"$WORK/off.yml" <<YAML
ui: {enabled: false}
YAML
start_berth --config "$WORK/off.yml" || exit 1
off() { equal "$(curl -s -o /dev/null -w '%{http_code}' "$BERTH_URL/ui/")" 404; }
check "ui.enabled: false serves no UI" off

finish
