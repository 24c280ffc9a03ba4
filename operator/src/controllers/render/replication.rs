//! The `ReplicationPolicy`s that copy a Registry's pushes as they happen (`trigger.onPush`), as
//! berth's `replication.on_push` config (pure), and the Secrets it mounts:
//!
//! ```text
//! destination's credentialsSecret (username and password, or .dockerconfigjson)
//!                                                     ─► /etc/berth/replication/<name>/
//! destination Registry's TLS Secret (ca.crt)            ─► /etc/berth/replication/<name>-ca/ca.crt
//! ```
//! `<name>` is the policy's name with `.` as `_` (berth's names hold letters, digits, `-` and
//! `_`; Kubernetes names never hold `_`, so two policies cannot meet), and `-<i>` after it for
//! each rule of a policy with several.

use berth_core::config::replication::{Deletes, OnPush, ReplicationConfig};

use super::error::BuildError;
use crate::crd::replication::ReplicationRule;

const DIR: &str = "/etc/berth/replication";

/// An on-push policy of the Registry, its destination resolved by the reconciler.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OnPushSource {
    pub policy: String,
    pub url: String,
    /// A Secret with `username` and `password` for the destination.
    pub credentials: Option<String>,
    /// A Secret whose `ca.crt` signs the destination's certificate.
    pub ca_secret: Option<String>,
    /// Repository globs, tag patterns (globs, or regexes after `re:`) and whether referrers
    /// travel, per rule.
    pub rules: Vec<ReplicationRule>,
    pub source_prefix: String,
    pub destination_prefix: String,
    pub overwrite: bool,
    pub deletes: Deletes,
}

impl OnPushSource {
    fn base(&self) -> String {
        self.policy.replace('.', "_")
    }
}

pub fn config(sources: &[OnPushSource]) -> Result<ReplicationConfig, BuildError> {
    let mut on_push = Vec::new();
    for s in sources {
        let base = s.base();
        let rules = if s.rules.is_empty() { vec![Default::default()] } else { s.rules.clone() };
        for (i, rule) in rules.iter().enumerate() {
            let name = if rules.len() == 1 { base.clone() } else { format!("{base}-{i}") };
            on_push.push(OnPush {
                name,
                destination: s.url.clone(),
                credentials_dir: s.credentials.as_ref().map(|_| format!("{DIR}/{base}").into()),
                ca_file: s.ca_secret.as_ref().map(|_| format!("{DIR}/{base}-ca/ca.crt").into()),
                repositories: rule.repositories.clone().unwrap_or_default(),
                tags: rule.tags.clone().unwrap_or_default(),
                referrers: rule.referrers != Some(false),
                source_prefix: s.source_prefix.clone(),
                destination_prefix: s.destination_prefix.clone(),
                overwrite: s.overwrite,
                deletes: s.deletes,
                ..default_policy()
            });
        }
    }
    let config = ReplicationConfig { on_push };
    config.validate().map_err(|(field, m)| {
        BuildError::InvalidReplication(format!(
            "on push: {}: {m}",
            field.strip_prefix("replication.on_push").unwrap_or(&field)
        ))
    })?;
    Ok(config)
}

/// An on-push policy with berth's defaults (from berth's own parser, so the two cannot drift).
fn default_policy() -> OnPush {
    let yaml = "replication:\n  on_push:\n    - {name: d, destination: 'http://d'}\n";
    berth_core::config::Config::from_yaml(yaml, "defaults")
        .ok()
        .and_then(|c| c.replication.on_push.into_iter().next())
        .unwrap_or(OnPush {
            name: String::new(),
            destination: String::new(),
            credentials_dir: None,
            ca_file: None,
            insecure: false,
            repositories: vec![],
            tags: vec![],
            source_prefix: String::new(),
            destination_prefix: String::new(),
            referrers: true,
            overwrite: true,
            deletes: Deletes::None,
            timeout: std::time::Duration::from_secs(600),
            max_attempts: 10,
            backoff: std::time::Duration::from_secs(10),
        })
}

/// Volume mounts and volumes for every destination's credentials and CA.
pub fn volumes(sources: &[OnPushSource]) -> (Vec<serde_json::Value>, Vec<serde_json::Value>) {
    let (mut mounts, mut volumes) = (vec![], vec![]);
    for (i, s) in sources.iter().enumerate() {
        let base = s.base();
        if let Some(secret) = &s.credentials {
            let name = format!("replication-{i}");
            mounts.push(
                serde_json::json!({"name": name, "mountPath": format!("{DIR}/{base}"), "readOnly": true}),
            );
            // Whole: berth reads `username` and `password`, or a docker config's entry.
            volumes.push(
                serde_json::json!({"name": name, "secret": {"secretName": secret, "defaultMode": 0o440}}),
            );
        }
        if let Some(ca) = &s.ca_secret {
            let name = format!("replication-{i}-ca");
            mounts.push(
                serde_json::json!({"name": name, "mountPath": format!("{DIR}/{base}-ca"), "readOnly": true}),
            );
            volumes.push(serde_json::json!({"name": name, "secret": {"secretName": ca, "defaultMode": 0o440,
                "items": [{"key": "ca.crt", "path": "ca.crt"}]}}));
        }
    }
    (mounts, volumes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_policy_renders_per_rule_with_its_secrets_mounted() {
        let s = OnPushSource {
            policy: "to.edge".into(),
            url: "https://edge.ns.svc:5000".into(),
            credentials: Some("edge-login".into()),
            ca_secret: Some("edge-tls".into()),
            rules: vec![
                ReplicationRule {
                    repositories: Some(vec!["team/**".into()]),
                    tags: Some(vec!["v*".into()]),
                    referrers: None,
                },
                ReplicationRule {
                    repositories: Some(vec!["base/*".into()]),
                    tags: None,
                    referrers: Some(false),
                },
            ],
            source_prefix: "team".into(),
            destination_prefix: "mirror/".into(),
            overwrite: false,
            deletes: Deletes::Tags,
        };
        let c = config(std::slice::from_ref(&s)).unwrap();
        let names: Vec<_> = c.on_push.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["to_edge-0", "to_edge-1"]);
        let p = &c.on_push[0];
        assert_eq!(
            (p.repositories.as_slice(), p.tags.as_slice(), p.overwrite),
            (&["team/**".to_owned()][..], &["v*".to_owned()][..], false)
        );
        assert_eq!((c.on_push[0].referrers, c.on_push[1].referrers), (true, false));
        assert_eq!((p.source_prefix.as_str(), p.destination_prefix.as_str()), ("team", "mirror/"));
        assert_eq!(p.deletes, Deletes::Tags);
        let (mounts, vols) = volumes(&[s]);
        let creds = std::path::Path::new(mounts[0]["mountPath"].as_str().unwrap());
        assert_eq!(p.credentials_dir.as_deref(), Some(creds), "the config names the mounted directory");
        let ca = std::path::Path::new(mounts[1]["mountPath"].as_str().unwrap()).join("ca.crt");
        assert_eq!(p.ca_file.as_deref(), Some(ca.as_path()));
        assert_eq!(vols[0]["secret"]["secretName"], "edge-login");
        let yaml = berth_core::config::Config { replication: c, ..Default::default() }.to_yaml();
        assert!(berth_core::config::Config::from_yaml(&yaml, "rendered").is_ok(), "berth reads it: {yaml}");
    }

    #[test]
    fn a_name_berth_cannot_take_is_refused() {
        let s = OnPushSource { policy: "x".repeat(70), url: "http://e".into(), ..Default::default() };
        let e = config(&[s]).unwrap_err();
        assert_eq!(e.reason(), "InvalidSpec");
        assert!(e.to_string().contains("name"), "{e}");
    }
}
