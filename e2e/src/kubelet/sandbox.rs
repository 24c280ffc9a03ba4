//! Running one container as a process.
//!
//! All pods share the host's network (each listens on its own loopback address), but every container
//! gets its own mount namespace and root: the host's /usr, /lib… read-only, a private /etc with the
//! cluster's hosts file, /dev, /proc, the container's binary at /berth/bin/<name>, and its volumes at
//! their mount paths. So a pod sees `/etc/berth/config.yaml` where its spec mounts it, as in a real
//! container, without images or a container runtime.
//!
//! The process is started by `unshare --mount` running the setup script below, which ends in
//! `exec chroot`; the container process keeps the PID (and process group) the kubelet spawned, so
//! signals reach it directly.

use std::path::{Path, PathBuf};
use std::process::Stdio;

const SETUP: &str = r#"
set -e
R="$1"; BIN="$2"; NAME="$3"; HOSTS="$4"; WORKDIR="$5"; USERSPEC="$6"; MOUNTS="$7"; LOG="$8"
shift 8
exec >>"$LOG" 2>&1
mkdir -p "$R"
for d in bin sbin lib lib32 lib64 libx32 usr; do
  if [ -L "/$d" ]; then ln -sfn "$(readlink "/$d")" "$R/$d"
  elif [ -d "/$d" ]; then mkdir -p "$R/$d"; mount --bind "/$d" "$R/$d"; mount -o remount,bind,ro "$R/$d"; fi
done
mkdir -p "$R/etc" "$R/tmp" "$R/proc" "$R/dev" "$R/run" "$R/var/tmp" "$R/berth/bin" "$R/root"
chmod 1777 "$R/tmp" "$R/var/tmp"
for f in passwd group nsswitch.conf resolv.conf; do [ -e "/etc/$f" ] && cp -L "/etc/$f" "$R/etc/$f"; done
[ -d /etc/ssl ] && cp -a /etc/ssl "$R/etc/"
[ -e "$R/etc/hosts" ] || : > "$R/etc/hosts"
mount --bind "$HOSTS" "$R/etc/hosts"
mount --rbind /dev "$R/dev"
mount -t proc proc "$R/proc"
: > "$R/berth/bin/$NAME"
mount --bind "$BIN" "$R/berth/bin/$NAME"
TAB="$(printf '\t')"
while IFS="$TAB" read -r src dst mode; do
  [ -n "$src" ] || continue
  if [ -d "$src" ]; then mkdir -p "$R$dst"; else mkdir -p "$(dirname "$R$dst")"; [ -e "$R$dst" ] || : > "$R$dst"; fi
  mount --bind "$src" "$R$dst"
  if [ "$mode" = ro ]; then mount -o remount,bind,ro "$R$dst"; fi
done < "$MOUNTS"
if [ -n "$USERSPEC" ]; then
  exec chroot --userspec="$USERSPEC" "$R" /bin/sh -c 'cd "$0" 2>/dev/null || cd /; exec "$@"' "$WORKDIR" "$@"
fi
exec chroot "$R" /bin/sh -c 'cd "$0" 2>/dev/null || cd /; exec "$@"' "$WORKDIR" "$@"
"#;

/// A bind mount into the container: host path, path in the container, read-only.
#[derive(Debug, Clone)]
pub struct Mount {
    pub source: PathBuf,
    pub target: String,
    pub read_only: bool,
}

pub struct Launch<'a> {
    /// Per-container directory; the root and the mount list live in it.
    pub dir: &'a Path,
    pub binary: &'a Path,
    pub binary_name: &'a str,
    pub hosts_file: &'a Path,
    pub working_dir: &'a str,
    /// `uid[:gid]` for chroot --userspec, when the pod asks not to run as root.
    pub user: Option<String>,
    pub mounts: &'a [Mount],
    pub args: &'a [String],
    pub env: &'a [(String, String)],
    pub log: &'a Path,
}

pub fn command(l: &Launch<'_>) -> std::io::Result<tokio::process::Command> {
    std::fs::create_dir_all(l.dir)?;
    let mounts_file = l.dir.join("mounts.tsv");
    let mut lines = String::new();
    for m in l.mounts {
        lines.push_str(&format!(
            "{}\t{}\t{}\n",
            m.source.display(),
            m.target,
            if m.read_only { "ro" } else { "rw" }
        ));
    }
    std::fs::write(&mounts_file, lines)?;
    let mut cmd = tokio::process::Command::new("unshare");
    cmd.args(["--mount", "--propagation", "private", "--", "/bin/sh", "-c", SETUP, "berth-sandbox"])
        .arg(l.dir.join("root"))
        .arg(l.binary)
        .arg(l.binary_name)
        .arg(l.hosts_file)
        .arg(l.working_dir)
        .arg(l.user.clone().unwrap_or_default())
        .arg(&mounts_file)
        .arg(l.log)
        .arg(format!("/berth/bin/{}", l.binary_name))
        .args(l.args)
        .env_clear()
        .envs(l.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .kill_on_drop(true);
    Ok(cmd)
}

/// Sends `signal` (`-TERM`, `-KILL`) to the whole process group.
pub fn signal_group(pgid: u32, signal: &str) {
    let _ = std::process::Command::new("kill")
        .args([signal, "--", &format!("-{pgid}")])
        .stderr(std::process::Stdio::null())
        .status();
}
