//! A container as a process: which binary runs it, and its supervision (start, wait, restart per
//! policy, stop on request), reported to the pod's worker as events.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use tokio::sync::{mpsc, watch};

use crate::kubelet::context::{now, Context};
use crate::kubelet::sandbox::{self, Mount};

/// What happened to a container's process.
pub(super) enum Event {
    Started { init: bool, idx: usize, pgid: u32, at: Time },
    Exited { init: bool, idx: usize, code: i32, message: String, at: Time },
    Waiting { init: bool, idx: usize, reason: String, message: String },
    Done { init: bool, idx: usize },
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Restart {
    Always,
    OnFailure,
    Never,
}

/// Which local binary runs this container, and with which arguments.
pub(super) fn resolve(
    ctx: &Context,
    c: &Container,
) -> Result<(PathBuf, String, Vec<String>), (String, String)> {
    let image = c.image.clone().unwrap_or_default();
    if !is_berth_image(&image) {
        return Err((
            "UnsupportedImage".into(),
            format!("berth-kubelet runs only Berth images (a repository named `berth`), not {image:?}"),
        ));
    }
    let (name, mut args) = match &c.command {
        Some(cmd) if !cmd.is_empty() => {
            let name = Path::new(&cmd[0]).file_name().and_then(|f| f.to_str()).unwrap_or_default().to_owned();
            (name, cmd[1..].to_vec())
        }
        _ => ("berth".to_owned(), Vec::new()),
    };
    args.extend(c.args.iter().flatten().cloned());
    match ctx.opts.binaries.get(&name) {
        Some(path) => Ok((path.clone(), name, args)),
        None => Err((
            "UnsupportedCommand".into(),
            format!(
                "the Berth image has no binary {name:?} (known: {:?})",
                ctx.opts.binaries.keys().collect::<Vec<_>>()
            ),
        )),
    }
}

/// `registry.example/org/berth:1.0`, `berth@sha256:…` and `berth` are Berth images.
pub fn is_berth_image(image: &str) -> bool {
    let no_digest = image.split('@').next().unwrap_or(image);
    let last = no_digest.rsplit('/').next().unwrap_or(no_digest);
    last.split(':').next() == Some("berth")
}

pub(super) fn user_of(pod: &Pod, c: &Container) -> Option<String> {
    let psc = pod.spec.as_ref().and_then(|s| s.security_context.as_ref());
    let csc = c.security_context.as_ref();
    let uid = csc.and_then(|s| s.run_as_user).or_else(|| psc.and_then(|s| s.run_as_user))?;
    let gid = csc
        .and_then(|s| s.run_as_group)
        .or_else(|| psc.and_then(|s| s.run_as_group))
        .or_else(|| psc.and_then(|s| s.fs_group))
        .unwrap_or(uid);
    Some(format!("{uid}:{gid}"))
}

/// One container's life: start, wait, restart per policy, stop on request.
pub(super) struct Supervised {
    pub(super) ctx: Arc<Context>,
    pub(super) dir: PathBuf,
    pub(super) binary: PathBuf,
    pub(super) name: String,
    pub(super) mounts: Vec<Mount>,
    pub(super) args: Vec<String>,
    pub(super) env: Vec<(String, String)>,
    pub(super) working_dir: String,
    pub(super) user: Option<String>,
    pub(super) init: bool,
    pub(super) idx: usize,
    pub(super) policy: Restart,
    pub(super) grace: Duration,
    pub(super) termination: Termination,
}

/// Where a container leaves its termination message, and whether its log stands in for an
/// empty one after a failure (`FallbackToLogsOnError`).
///
/// The message is read from the file the process wrote under its private root. A path under
/// `/dev` is not kept: the container's `/dev` is the host's (the real kubelet mounts a file
/// there instead), so those containers get only the log fallback.
#[derive(Debug, Clone)]
pub(super) struct Termination {
    pub(super) path: String,
    pub(super) fallback_to_logs: bool,
}

/// Like the kubelet: a message of at most 4 KiB, a log tail of at most 80 lines and 2 KiB.
const MESSAGE_MAX: usize = 4096;
const LOG_TAIL_LINES: usize = 80;
const LOG_TAIL_MAX: usize = 2048;

impl Termination {
    pub(super) fn of(c: &Container) -> Termination {
        Termination {
            path: c.termination_message_path.clone().unwrap_or_else(|| "/dev/termination-log".into()),
            fallback_to_logs: c.termination_message_policy.as_deref() == Some("FallbackToLogsOnError"),
        }
    }

    /// The file in the container's root, when the path is one this kubelet keeps.
    fn file(&self, dir: &Path) -> Option<PathBuf> {
        let rel = self.path.strip_prefix('/')?;
        if rel.starts_with("dev/") || rel.split('/').any(|c| c == ".." || c.is_empty()) {
            return None;
        }
        Some(dir.join("root").join(rel))
    }

    /// An empty file any user may write, as the kubelet makes one (what a previous run of the
    /// container left is gone).
    fn prepare(&self, dir: &Path) {
        use std::os::unix::fs::PermissionsExt;
        let Some(f) = self.file(dir) else { return };
        let made = f.parent().map_or(Ok(()), std::fs::create_dir_all).and_then(|()| std::fs::write(&f, b""));
        if let Err(e) =
            made.and_then(|()| std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o666)))
        {
            tracing::warn!(file = %f.display(), error = %e, "could not prepare the termination message file");
        }
    }

    fn message(&self, dir: &Path, log: &Path, code: i32) -> String {
        let written = self.file(dir).and_then(|f| std::fs::read(f).ok()).unwrap_or_default();
        if !written.is_empty() {
            return cut(&written, MESSAGE_MAX, false);
        }
        if !(self.fallback_to_logs && code != 0) {
            return String::new();
        }
        let text = std::fs::read(log).unwrap_or_default();
        let lines: Vec<&[u8]> = text.split(|b| *b == b'\n').collect();
        let tail = lines[lines.len().saturating_sub(LOG_TAIL_LINES + 1)..].join(&b'\n');
        cut(&tail, LOG_TAIL_MAX, true)
    }
}

/// At most `max` bytes of `b` as text: its start, or its end when `end`.
fn cut(b: &[u8], max: usize, end: bool) -> String {
    let part = if b.len() <= max {
        b
    } else if end {
        &b[b.len() - max..]
    } else {
        &b[..max]
    };
    String::from_utf8_lossy(part).into_owned()
}

impl Supervised {
    pub(super) async fn run(self, events: mpsc::UnboundedSender<Event>, mut stop: watch::Receiver<bool>) {
        let (init, idx) = (self.init, self.idx);
        let mut restarts = 0u32;
        let log = self.dir.join("output.log");
        loop {
            if *stop.borrow() {
                break;
            }
            let launch = sandbox::Launch {
                dir: &self.dir,
                binary: &self.binary,
                binary_name: &self.name,
                hosts_file: &self.ctx.opts.hosts_file,
                working_dir: &self.working_dir,
                user: self.user.clone(),
                mounts: &self.mounts,
                args: &self.args,
                env: &self.env,
                log: &log,
            };
            self.termination.prepare(&self.dir);
            let child = sandbox::command(&launch).and_then(|mut c| c.spawn());
            let mut child = match child {
                Ok(c) => c,
                Err(e) => {
                    let _ = events.send(Event::Waiting {
                        init,
                        idx,
                        reason: "RunContainerError".into(),
                        message: e.to_string(),
                    });
                    if !backoff(&mut stop, restarts).await {
                        break;
                    }
                    restarts += 1;
                    continue;
                }
            };
            let pgid = child.id().unwrap_or(0);
            let pid_file = self.ctx.opts.state_dir.join("pids").join(pgid.to_string());
            let _ = std::fs::write(&pid_file, "");
            let _ = events.send(Event::Started { init, idx, pgid, at: now() });
            let status = tokio::select! {
                s = child.wait() => s,
                _ = stop.changed() => {
                    sandbox::signal_group(pgid, "-TERM");
                    match tokio::time::timeout(self.grace, child.wait()).await {
                        Ok(s) => s,
                        Err(_) => {
                            sandbox::signal_group(pgid, "-KILL");
                            child.wait().await
                        }
                    }
                }
            };
            // Whatever the main process left in its group goes with it.
            sandbox::signal_group(pgid, "-KILL");
            let _ = std::fs::remove_file(&pid_file);
            let code = status.map(|s| exit_code(&s)).unwrap_or(128);
            let message = self.termination.message(&self.dir, &log, code);
            let _ = events.send(Event::Exited { init, idx, code, message, at: now() });
            let again = match self.policy {
                Restart::Always => true,
                Restart::OnFailure => code != 0,
                Restart::Never => false,
            };
            if !again || *stop.borrow() {
                break;
            }
            if !backoff(&mut stop, restarts).await {
                break;
            }
            restarts += 1;
        }
        let _ = events.send(Event::Done { init, idx });
    }
}

fn exit_code(s: &std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    s.code().unwrap_or_else(|| 128 + s.signal().unwrap_or(0))
}

/// Waits 1, 2, 4 … 20 s before a restart; false if asked to stop meanwhile.
async fn backoff(stop: &mut watch::Receiver<bool>, restarts: u32) -> bool {
    let wait = Duration::from_secs(1u64 << restarts.min(4)).min(Duration::from_secs(20));
    tokio::select! {
        _ = tokio::time::sleep(wait) => !*stop.borrow(),
        _ = stop.changed() => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn berth_images() {
        for yes in ["berth", "berth:1.0", "ghcr.io/berth-dev/berth:0.1.0", "localhost:5000/berth@sha256:abc"]
        {
            assert!(is_berth_image(yes), "{yes}");
        }
        for no in ["nginx", "library/alpine:3", "berth-operator", "ghcr.io/berth/other:1"] {
            assert!(!is_berth_image(no), "{no}");
        }
    }

    #[test]
    fn termination_messages() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("output.log");
        let lines: Vec<String> = (0..100).map(|i| format!("line {i}")).collect();
        std::fs::write(&log, lines.join("\n") + "\n").unwrap();
        let t = Termination { path: "/run/termination-log".into(), fallback_to_logs: true };
        assert!(t.message(dir.path(), &log, 0).is_empty(), "no message, a success: nothing");
        let tail = t.message(dir.path(), &log, 1);
        assert!(tail.starts_with("line 20\n") && tail.ends_with("line 99\n"), "{tail}");
        std::fs::create_dir_all(dir.path().join("root/run")).unwrap();
        std::fs::write(dir.path().join("root/run/termination-log"), "x".repeat(5000)).unwrap();
        assert_eq!(t.message(dir.path(), &log, 1).len(), MESSAGE_MAX, "what was written, cut");
        t.prepare(dir.path());
        assert_eq!(std::fs::read(dir.path().join("root/run/termination-log")).unwrap(), b"", "emptied");
        for kept_out in ["/dev/termination-log", "relative", "/run/../etc/passwd"] {
            let t = Termination { path: kept_out.into(), fallback_to_logs: false };
            assert_eq!(t.file(dir.path()), None, "{kept_out}");
        }
    }
}
