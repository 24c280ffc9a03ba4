//! Puts a plan's files on the node's disk, and takes back only what this owner wrote: a file
//! that is there and does not carry the owner's first line is never changed or removed (it is
//! reported instead). Writes are atomic (a temporary file renamed into place), so containerd
//! never reads half a `hosts.toml`. Blocking file I/O: run it on the blocking pool.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::files::{owned_by, File, CA_FILE, HOSTS_TOML};

/// Files larger than this are nobody's hosts.toml of ours; they are not read.
const MAX_FILE: u64 = 1 << 20;

/// How files are laid out in a target directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// `<host>/hosts.toml` and `<host>/berth-ca.crt` (containers' `certs.d` holds the latter only).
    Containerd,
    /// `*.conf` drop-ins.
    Crio,
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    pub written: Vec<PathBuf>,
    pub removed: Vec<PathBuf>,
    /// What could not be done, in words for a log and the readiness answer.
    pub problems: Vec<String>,
}

fn read_small(path: &Path) -> std::io::Result<Option<String>> {
    match std::fs::metadata(path) {
        Ok(m) if m.len() > MAX_FILE || !m.is_file() => Ok(Some(String::new())),
        Ok(_) => std::fs::read(path).map(|b| Some(String::from_utf8_lossy(&b).into_owned())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// The files under `dir` that `owner` wrote (paths relative to `dir`).
fn owned(dir: &Path, owner: &str, layout: Layout) -> std::io::Result<Vec<PathBuf>> {
    let mut found = vec![];
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(found),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let name = PathBuf::from(entry.file_name());
        let candidates = match layout {
            Layout::Containerd if entry.file_type()?.is_dir() => {
                vec![name.join(HOSTS_TOML), name.join(CA_FILE)]
            }
            Layout::Crio if name.extension().is_some_and(|e| e == "conf") => vec![name],
            _ => vec![],
        };
        for c in candidates {
            if read_small(&dir.join(&c))?.is_some_and(|t| owned_by(&t, owner)) {
                found.push(c);
            }
        }
    }
    Ok(found)
}

fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    let parent = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent)?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = parent.join(format!(".{name}.berth-tmp"));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// Makes `dir` hold `files` for `owner`, and removes the files `owner` wrote there before that
/// are no longer wanted (with their host directory, once empty).
pub fn sync(dir: &Path, owner: &str, files: &[File], layout: Layout) -> Outcome {
    let mut out = Outcome::default();
    for f in files {
        let path = dir.join(&f.path);
        match read_small(&path) {
            Ok(Some(text)) if text == f.text => {}
            Ok(Some(text)) if !owned_by(&text, owner) => out.problems.push(format!(
                "{} is there and was not written by berth for {owner}: left as it is",
                path.display()
            )),
            Ok(_) => match write_atomically(&path, &f.text) {
                Ok(()) => out.written.push(path),
                Err(e) => out.problems.push(format!("cannot write {}: {e}", path.display())),
            },
            Err(e) => out.problems.push(format!("cannot read {}: {e}", path.display())),
        }
    }
    let wanted: BTreeSet<&Path> = files.iter().map(|f| f.path.as_path()).collect();
    let stale = match owned(dir, owner, layout) {
        Ok(o) => o,
        Err(e) => {
            out.problems.push(format!("cannot list {}: {e}", dir.display()));
            return out;
        }
    };
    for rel in stale.into_iter().filter(|p| !wanted.contains(p.as_path())) {
        let path = dir.join(&rel);
        match std::fs::remove_file(&path) {
            Ok(()) => {
                if layout == Layout::Containerd {
                    // Only an empty directory goes: anything else in it is not ours.
                    let _ = path.parent().map(std::fs::remove_dir);
                }
                out.removed.push(path);
            }
            Err(e) => out.problems.push(format!("cannot remove {}: {e}", path.display())),
        }
    }
    out
}

/// Whether containerd, with config file `text`, reads hosts files from `node_dir`: a
/// `config_path` naming it (a `:`-separated list), or, for containerd 2 (`version = 3`) with no
/// `config_path`, its default `/etc/containerd/certs.d:/etc/docker/certs.d`.
pub fn containerd_reads(text: &str, node_dir: &Path) -> bool {
    let values: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter_map(|l| l.strip_prefix("config_path"))
        .filter_map(|rest| rest.trim_start().strip_prefix('='))
        .map(|v| v.trim().trim_matches(['"', '\'']).to_owned())
        .collect();
    let names = |list: &str| list.split(':').any(|p| Path::new(p) == node_dir);
    if values.is_empty() {
        let v3 = text.lines().any(|l| l.split('#').next().is_some_and(|l| l.replace(' ', "") == "version=3"));
        return v3 && names("/etc/containerd/certs.d:/etc/docker/certs.d");
    }
    values.iter().any(|v| names(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, text: &str) -> File {
        File { path: path.into(), text: text.into() }
    }

    const MINE: &str =
        "# Written by berth node-mirror for team/reg; removed when its nodeMirror is turned off.";

    #[test]
    fn writes_rewrites_and_takes_back_only_its_own_files() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir_all(d.join("quay.io")).unwrap();
        std::fs::write(d.join("quay.io/hosts.toml"), "server = \"https://quay.io\"\n").unwrap();
        let hub = file("docker.io/hosts.toml", &format!("{MINE}\nserver = \"a\"\n"));
        let quay = file("quay.io/hosts.toml", &format!("{MINE}\nserver = \"b\"\n"));

        let out = sync(d, "team/reg", &[hub.clone(), quay], Layout::Containerd);
        assert_eq!(out.written, [d.join("docker.io/hosts.toml")]);
        assert_eq!(out.problems.len(), 1, "{out:?}");
        assert!(out.problems[0].contains("quay.io/hosts.toml is there and was not written by berth"));
        assert_eq!(
            std::fs::read_to_string(d.join("quay.io/hosts.toml")).unwrap(),
            "server = \"https://quay.io\"\n"
        );

        // Unchanged: nothing written again.
        assert_eq!(sync(d, "team/reg", &[hub], Layout::Containerd).written, Vec::<PathBuf>::new());
        // Another owner's file of the same name is not ours either.
        let other =
            "# Written by berth node-mirror for team/other; removed when its nodeMirror is turned off.";
        let theirs = sync(d, "team/other", &[file("docker.io/hosts.toml", other)], Layout::Containerd);
        assert!(theirs.written.is_empty() && theirs.problems.len() == 1, "{theirs:?}");

        // Nothing wanted: ours goes with its directory; the foreign file and directory stay.
        let out = sync(d, "team/reg", &[], Layout::Containerd);
        assert_eq!(out.removed, [d.join("docker.io/hosts.toml")]);
        assert!(!d.join("docker.io").exists());
        assert!(d.join("quay.io/hosts.toml").exists());
    }

    #[test]
    fn crio_drop_ins_of_other_owners_stay() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("00-site.conf"), "[[registry]]\n").unwrap();
        let ours = file("50-berth-team-reg.conf", &format!("{MINE}\n[[registry]]\n"));
        assert_eq!(sync(d, "team/reg", &[ours], Layout::Crio).written.len(), 1);
        let out = sync(d, "team/reg", &[], Layout::Crio);
        assert_eq!(out.removed, [d.join("50-berth-team-reg.conf")]);
        assert!(d.join("00-site.conf").exists());
    }

    #[test]
    fn containerd_config_path_is_checked() {
        let dir = Path::new("/etc/containerd/certs.d");
        let v2 = "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".registry]\n";
        assert!(!containerd_reads(v2, dir), "containerd 1.x reads no hosts files by default");
        assert!(containerd_reads(&format!("{v2}  config_path = \"/etc/containerd/certs.d\"\n"), dir));
        assert!(containerd_reads("config_path = '/a:/etc/containerd/certs.d'", dir));
        assert!(!containerd_reads("config_path = \"/elsewhere\"", dir));
        assert!(
            containerd_reads("version = 3\n", dir),
            "containerd 2 reads /etc/containerd/certs.d by default"
        );
        assert!(!containerd_reads("version = 3\n", Path::new("/srv/certs.d")));
    }
}
