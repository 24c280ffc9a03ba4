//! Access control of a Registry: the htpasswd Secret the user provides, robot accounts whose
//! secrets the operator generates once, and one token signing key shared by every pod (so a token
//! one pod issued is good at all of them).
//!
//! ```text
//! spec.auth.htpasswdSecret ─► mounted at /etc/berth/auth/htpasswd   (berth re-reads it on change)
//! Secret <name>-robots     ─► <robot>: the secret, <robot>.bcrypt: its hash (mounted; the hash file
//!                              is what berth checks)
//! Secret <name>-token-key  ─► token.key, Ed25519 PKCS#8 PEM
//! ```

use std::collections::BTreeMap;

use berth_registry::config::auth::{Action as BerthAction, AuthConfig, Grant, Robot, Rule, TokenConfig};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::ByteString;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::ResourceExt;

use super::desired::BuildError;
use super::pullsecrets::PULL_ROBOT;
use super::tls::{data, secret};
use crate::crd::registry::{AccessAction, AuthSpec};
use crate::crd::Registry;

pub const AUTH_DIR: &str = "/etc/berth/auth";

pub fn robots_secret_name(reg: &Registry) -> String {
    format!("{}-robots", reg.name_any())
}

pub fn token_key_secret_name(reg: &Registry) -> String {
    format!("{}-token-key", reg.name_any())
}

fn actions(list: &[AccessAction]) -> Vec<BerthAction> {
    list.iter()
        .map(|a| match a {
            AccessAction::Pull => BerthAction::Pull,
            AccessAction::Push => BerthAction::Push,
            AccessAction::Delete => BerthAction::Delete,
        })
        .collect()
}

/// berth's `auth` section for this spec (pure).
pub fn render(spec: &AuthSpec, pull_robot: bool) -> Result<AuthConfig, BuildError> {
    if spec.robots.iter().flatten().any(|r| r.name == PULL_ROBOT) {
        return Err(BuildError::InvalidAuth(format!(
            "spec.auth.robots: {PULL_ROBOT} is the robot of spec.pullSecrets; choose another name"
        )));
    }
    let config = AuthConfig {
        htpasswd: spec.htpasswd_secret.as_ref().map(|_| format!("{AUTH_DIR}/htpasswd/htpasswd").into()),
        token: TokenConfig {
            key_file: Some(format!("{AUTH_DIR}/token/token.key").into()),
            ..TokenConfig::default()
        },
        anonymous: spec
            .anonymous_pull
            .as_ref()
            .filter(|r| !r.is_empty())
            .map(|r| vec![Grant { repositories: r.clone(), actions: vec![BerthAction::Pull] }])
            .unwrap_or_default(),
        rules: spec
            .rules
            .iter()
            .flatten()
            .map(|r| Rule {
                users: r.users.clone(),
                repositories: r.repositories.clone(),
                actions: actions(&r.actions),
            })
            .collect(),
        robots: spec
            .robots
            .iter()
            .flatten()
            .map(|r| Robot {
                name: r.name.clone(),
                secret_hash: None,
                secret_hash_file: Some(format!("{AUTH_DIR}/robots/{}.bcrypt", r.name).into()),
                expires: r.expires.clone(),
                grants: vec![Grant { repositories: r.repositories.clone(), actions: actions(&r.actions) }],
            })
            .chain(pull_robot.then(|| Robot {
                name: PULL_ROBOT.into(),
                secret_hash: None,
                secret_hash_file: Some(format!("{AUTH_DIR}/robots/{PULL_ROBOT}.bcrypt").into()),
                expires: None,
                grants: vec![Grant { repositories: vec!["**".into()], actions: vec![BerthAction::Pull] }],
            }))
            .collect(),
    };
    config.validate().map_err(|(field, message)| {
        BuildError::InvalidAuth(format!("{}: {message}", field.replacen("auth.", "spec.auth.", 1)))
    })?;
    Ok(config)
}

/// Mounts and volumes for the htpasswd, robots and token key Secrets (pure).
pub fn volumes(
    reg: &Registry,
    spec: &AuthSpec,
    pull_robot: bool,
) -> (Vec<serde_json::Value>, Vec<serde_json::Value>) {
    let mut mounts = vec![];
    let mut volumes = vec![];
    let mut add = |name: &str, secret: String, dir: &str| {
        mounts.push(
            serde_json::json!({"name": name, "mountPath": format!("{AUTH_DIR}/{dir}"), "readOnly": true}),
        );
        volumes
            .push(serde_json::json!({"name": name, "secret": {"secretName": secret, "defaultMode": 0o440}}));
    };
    if let Some(h) = &spec.htpasswd_secret {
        add("auth-htpasswd", h.clone(), "htpasswd");
    }
    add("auth-token-key", token_key_secret_name(reg), "token");
    if pull_robot || spec.robots.as_ref().is_some_and(|r| !r.is_empty()) {
        add("auth-robots", robots_secret_name(reg), "robots");
    }
    (mounts, volumes)
}

/// A random secret: 32 bytes, URL-safe base64.
fn random_secret() -> Result<String, String> {
    use base64::Engine as _;
    let mut bytes = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
        .map_err(|_| "no randomness".to_owned())?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("{0}")]
    Generate(String),
}

/// Creates the token key once, and gives every robot a secret once (removing those of robots no
/// longer declared). Never regenerates anything that exists. Returns the pull robot's secret
/// when there is one.
pub async fn ensure(
    client: &kube::Client,
    reg: &Registry,
    spec: &AuthSpec,
    pull_robot: bool,
) -> Result<Option<String>, AuthError> {
    let ns = reg.namespace().unwrap_or_default();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let key_name = token_key_secret_name(reg);
    if secrets.get_opt(&key_name).await?.is_none() {
        let pem = berth_registry::auth::token::generate_pem().map_err(AuthError::Generate)?;
        let s = secret(
            reg,
            key_name,
            "Opaque",
            "auth",
            BTreeMap::from([("token.key".into(), pem)]),
            BTreeMap::new(),
        );
        match secrets.create(&PostParams::default(), &s).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => return Err(e.into()),
        }
    }
    let robots: Vec<&str> = spec
        .robots
        .iter()
        .flatten()
        .map(|r| r.name.as_str())
        .chain(pull_robot.then_some(PULL_ROBOT))
        .collect();
    let name = robots_secret_name(reg);
    let current = secrets.get_opt(&name).await?;
    if current.is_none() && robots.is_empty() {
        return Ok(None);
    }
    let mut entries: BTreeMap<String, Option<String>> = BTreeMap::new();
    for robot in &robots {
        let has = current
            .as_ref()
            .is_some_and(|s| data(s, robot).is_some() && data(s, &format!("{robot}.bcrypt")).is_some());
        if !has {
            let plain = random_secret().map_err(AuthError::Generate)?;
            let hash =
                bcrypt::hash(&plain, bcrypt::DEFAULT_COST).map_err(|e| AuthError::Generate(e.to_string()))?;
            entries.insert(robot.to_string(), Some(plain));
            entries.insert(format!("{robot}.bcrypt"), Some(hash));
        }
    }
    if let Some(s) = &current {
        for key in s.data.iter().flat_map(|d| d.keys()) {
            let robot = key.strip_suffix(".bcrypt").unwrap_or(key);
            if !robots.contains(&robot) {
                entries.insert(key.clone(), None);
            }
        }
    }
    // The pull robot's secret as it will stand, without reading the Secret back.
    let mut pull_secret = entries
        .get(PULL_ROBOT)
        .cloned()
        .flatten()
        .or_else(|| current.as_ref().and_then(|s| data(s, PULL_ROBOT)));
    match current {
        None => {
            let all = entries.into_iter().filter_map(|(k, v)| Some((k, v?))).collect();
            let s = secret(reg, name.clone(), "Opaque", "auth", all, BTreeMap::new());
            match secrets.create(&PostParams::default(), &s).await {
                Ok(_) => {}
                // Another reconcile created it first: its secrets are the ones that count.
                Err(kube::Error::Api(e)) if e.code == 409 => {
                    pull_secret = secrets.get_opt(&name).await?.and_then(|s| data(&s, PULL_ROBOT));
                }
                Err(e) => return Err(e.into()),
            }
        }
        Some(_) if entries.is_empty() => {}
        Some(_) => {
            // Only the keys that change; a merge patch leaves the other robots' secrets alone.
            let data: BTreeMap<String, Option<ByteString>> =
                entries.into_iter().map(|(k, v)| (k, v.map(|v| ByteString(v.into_bytes())))).collect();
            let patch = serde_json::json!({"data": data});
            secrets.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await?;
        }
    }
    Ok(pull_secret.filter(|_| pull_robot))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::registry::{AccessRule, RobotSpec};

    #[test]
    fn auth_renders_files_the_pod_mounts() {
        let spec = AuthSpec {
            htpasswd_secret: Some("users".into()),
            anonymous_pull: Some(vec!["public/**".into()]),
            rules: Some(vec![AccessRule {
                users: vec!["alice".into()],
                repositories: vec!["**".into()],
                actions: vec![AccessAction::Pull, AccessAction::Push],
            }]),
            robots: Some(vec![RobotSpec {
                name: "ci".into(),
                repositories: vec!["team/**".into()],
                actions: vec![AccessAction::Push, AccessAction::Pull],
                expires: Some("2030-01-01T00:00:00Z".into()),
            }]),
        };
        let c = render(&spec, true).unwrap();
        assert_eq!(c.htpasswd.as_deref(), Some(std::path::Path::new("/etc/berth/auth/htpasswd/htpasswd")));
        assert_eq!(
            c.token.key_file.as_deref(),
            Some(std::path::Path::new("/etc/berth/auth/token/token.key"))
        );
        assert_eq!(c.anonymous[0].repositories, ["public/**"]);
        assert_eq!(c.rules[0].actions, [BerthAction::Pull, BerthAction::Push]);
        assert_eq!(
            c.robots[0].secret_hash_file.as_deref(),
            Some(std::path::Path::new("/etc/berth/auth/robots/ci.bcrypt"))
        );
        assert_eq!(c.robots[0].expires.as_deref(), Some("2030-01-01T00:00:00Z"));
        assert_eq!(c.robots[1].name, PULL_ROBOT, "the pull Secrets' robot");
        assert_eq!(c.robots[1].grants[0].actions, [BerthAction::Pull]);

        let bad = AuthSpec {
            rules: Some(vec![AccessRule {
                users: vec![],
                repositories: vec!["**".into()],
                actions: vec![AccessAction::Pull],
            }]),
            ..AuthSpec::default()
        };
        match render(&bad, false) {
            Err(BuildError::InvalidAuth(m)) => assert!(m.starts_with("spec.auth.rules[0].users"), "{m}"),
            other => panic!("{other:?}"),
        }
    }
}
