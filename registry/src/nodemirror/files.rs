//! The files a plan asks for, rendered as text (no disk here): per mirrored host, containerd's
//! `<host>/hosts.toml` (and the Registry's CA beside it), and one CRI-O drop-in with a
//! `[[registry]]` per host (and the CA in containers' `certs.d/<host:port>/`). Every file's first line names its owner, so a pod only ever changes or
//! removes files it wrote.

use std::path::{Path, PathBuf};

use berth_core::nodemirror::{MirroredHost, NodeMirrorPlan};

/// containerd's hosts file, in each host's directory.
pub const HOSTS_TOML: &str = "hosts.toml";
/// The Registry's CA, beside the hosts file that names it.
pub const CA_FILE: &str = "berth-ca.crt";

/// The first line of every file written for `owner`.
pub fn marker(owner: &str) -> String {
    format!("# Written by berth node-mirror for {owner}; removed when its nodeMirror is turned off.")
}

/// Whether `text` is a file written for `owner`.
pub fn owned_by(text: &str, owner: &str) -> bool {
    text.lines().next() == Some(marker(owner).as_str())
}

/// A file to write: its path under the target directory, and its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct File {
    pub path: PathBuf,
    pub text: String,
}

/// Whether `host` can name a directory: a host name or address, with an optional port.
pub fn valid_host(host: &str) -> bool {
    !host.is_empty()
        && host != "."
        && host != ".."
        && host.len() <= 253
        && host.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '_' | '[' | ']'))
}

/// A TOML basic string.
fn quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// containerd's files for every valid host, under `node_dir` (the path the files name), with
/// the CA's text when the Registry's TLS is its own.
pub fn containerd(plan: &NodeMirrorPlan, node_dir: &Path, ca: Option<&str>) -> Vec<File> {
    let mut files = vec![];
    for h in plan.hosts.iter().filter(|h| valid_host(&h.host)) {
        let dir = PathBuf::from(&h.host);
        let mut text = format!(
            "{}\nserver = {}\n\n[host.{}]\n  capabilities = [\"pull\", \"resolve\"]\n",
            marker(&plan.owner),
            quoted(&h.server),
            quoted(&h.mirror)
        );
        if let Some(ca) = ca.filter(|_| h.mirror.starts_with("https://")) {
            let path = node_dir.join(&h.host).join(CA_FILE);
            text.push_str(&format!("  ca = {}\n", quoted(&path.to_string_lossy())));
            files.push(File { path: dir.join(CA_FILE), text: format!("{}\n{ca}", marker(&plan.owner)) });
        }
        files.push(File { path: dir.join(HOSTS_TOML), text });
    }
    files
}

/// `url` without its scheme and path: the `host:port` a client connects to.
fn authority(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.split('/').next().unwrap_or(rest)
}

/// containers' `certs.d` files: the CA in a directory per `host:port` CRI-O reaches the Registry
/// by over TLS — every mirror, and the Registry's own names (hosts with no prefix), which CRI-O
/// also reaches directly. None without a CA.
pub fn crio_certs(plan: &NodeMirrorPlan, ca: Option<&str>) -> Vec<File> {
    let Some(ca) = ca else { return vec![] };
    let mut dirs = std::collections::BTreeSet::new();
    for h in plan.hosts.iter().filter(|h| valid_host(&h.host)) {
        if h.mirror.starts_with("https://") {
            dirs.insert(authority(&h.mirror));
        }
        if h.prefix.is_none() && h.server.starts_with("https://") {
            dirs.insert(authority(&h.server));
        }
    }
    dirs.into_iter()
        .filter(|d| valid_host(d))
        .map(|d| File {
            path: PathBuf::from(d).join(CA_FILE),
            text: format!("{}\n{ca}", marker(&plan.owner)),
        })
        .collect()
}

/// The CRI-O drop-in's file name for `owner` (`<namespace>/<registry>`).
pub fn crio_name(owner: &str) -> String {
    format!("50-berth-{}.conf", owner.replace('/', "-"))
}

/// One CRI-O `registries.conf.d` drop-in for every valid host: the mirror is tried first, under
/// the path that names the upstream (CRI-O sends no `ns`). None when there is no host.
pub fn crio(plan: &NodeMirrorPlan) -> Option<File> {
    let hosts: Vec<&MirroredHost> = plan.hosts.iter().filter(|h| valid_host(&h.host)).collect();
    if hosts.is_empty() {
        return None;
    }
    let mut text = marker(&plan.owner);
    text.push('\n');
    for h in hosts {
        let without_scheme = |url: &str| {
            let rest = url.split_once("://").map_or(url, |(_, r)| r);
            rest.trim_end_matches('/').to_owned()
        };
        let insecure = h.mirror.starts_with("http://");
        let mirror = match &h.prefix {
            Some(p) => format!("{}/{p}", without_scheme(&h.mirror)),
            None => without_scheme(&h.mirror),
        };
        text.push_str(&format!(
            "\n[[registry]]\nprefix = {}\nlocation = {}\n",
            quoted(&h.host),
            quoted(&without_scheme(&h.server))
        ));
        if h.server.starts_with("http://") {
            text.push_str("insecure = true\n");
        }
        text.push_str(&format!(
            "\n[[registry.mirror]]\nlocation = {}\ninsecure = {insecure}\n",
            quoted(&mirror)
        ));
    }
    Some(File { path: PathBuf::from(crio_name(&plan.owner)), text })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> NodeMirrorPlan {
        NodeMirrorPlan {
            owner: "team/registry".into(),
            hosts: vec![
                MirroredHost {
                    host: "docker.io".into(),
                    server: "https://registry-1.docker.io".into(),
                    mirror: "http://10.96.3.7:5000".into(),
                    prefix: Some("docker.io".into()),
                },
                MirroredHost {
                    host: "registry.team.svc.cluster.local:5000".into(),
                    server: "http://registry.team.svc.cluster.local:5000".into(),
                    mirror: "http://10.96.3.7:5000".into(),
                    prefix: None,
                },
                MirroredHost {
                    host: "../etc".into(),
                    server: "https://x".into(),
                    mirror: "http://y".into(),
                    prefix: None,
                },
            ],
            ..Default::default()
        }
    }

    #[test]
    fn containerd_gets_a_hosts_toml_per_host_marked_with_its_owner() {
        let files = containerd(&plan(), Path::new("/etc/containerd/certs.d"), None);
        let paths: Vec<_> = files.iter().map(|f| f.path.display().to_string()).collect();
        assert_eq!(paths, ["docker.io/hosts.toml", "registry.team.svc.cluster.local:5000/hosts.toml"]);
        let hub = &files[0].text;
        assert!(owned_by(hub, "team/registry") && !owned_by(hub, "team/other"), "{hub}");
        assert!(hub.contains("server = \"https://registry-1.docker.io\""), "{hub}");
        assert!(
            hub.contains("[host.\"http://10.96.3.7:5000\"]\n  capabilities = [\"pull\", \"resolve\"]"),
            "{hub}"
        );
        assert!(!hub.contains("ca ="), "a plain-HTTP mirror names no CA: {hub}");
    }

    #[test]
    fn crio_gets_the_ca_for_each_tls_address_it_reaches_the_registry_by() {
        let mut p = plan();
        assert!(crio_certs(&p, Some("PEM\n")).is_empty(), "plain HTTP needs no CA");
        p.hosts[0].mirror = "https://10.96.3.7:443".into();
        p.hosts[1].mirror = "https://10.96.3.7:443".into();
        p.hosts[1].server = "https://registry.team.svc.cluster.local:443".into();
        assert!(crio_certs(&p, None).is_empty(), "no CA, nothing to write");
        let files = crio_certs(&p, Some("PEM\n"));
        let paths: Vec<_> = files.iter().map(|f| f.path.display().to_string()).collect();
        // Each address once: the mirror (for docker.io and the own name) and the own name itself;
        // docker.io's own server is the upstream's, whose CA is the system's.
        assert_eq!(paths, ["10.96.3.7:443/berth-ca.crt", "registry.team.svc.cluster.local:443/berth-ca.crt"]);
        assert!(owned_by(&files[0].text, "team/registry") && files[0].text.ends_with("PEM\n"));
    }

    #[test]
    fn a_tls_mirror_names_the_ca_written_beside_it_by_its_node_path() {
        let mut p = plan();
        p.hosts.truncate(1);
        p.hosts[0].mirror = "https://10.96.3.7:443".into();
        let files =
            containerd(&p, Path::new("/etc/containerd/certs.d"), Some("-----BEGIN CERTIFICATE-----\n"));
        assert_eq!(files[0].path, Path::new("docker.io/berth-ca.crt"));
        assert!(files[0].text.ends_with("-----BEGIN CERTIFICATE-----\n"));
        assert!(
            files[1].text.contains("ca = \"/etc/containerd/certs.d/docker.io/berth-ca.crt\""),
            "{}",
            files[1].text
        );
    }

    #[test]
    fn crio_gets_one_drop_in_with_the_upstream_under_its_prefix() {
        let f = crio(&plan()).unwrap();
        assert_eq!(f.path, Path::new("50-berth-team-registry.conf"));
        let t = &f.text;
        assert!(t.contains("prefix = \"docker.io\"\nlocation = \"registry-1.docker.io\"\n"), "{t}");
        assert!(t.contains("location = \"10.96.3.7:5000/docker.io\"\ninsecure = true"), "{t}");
        assert!(t.contains("location = \"registry.team.svc.cluster.local:5000\"\ninsecure = true"), "{t}");
        assert!(!t.contains("../etc"), "a host that cannot name a directory is left out: {t}");
        assert_eq!(crio(&NodeMirrorPlan::default()), None);
    }

    #[test]
    fn strings_are_quoted_for_toml() {
        assert_eq!(quoted("a\"b\\c\n"), "\"a\\\"b\\\\c\\u000A\"");
    }
}
