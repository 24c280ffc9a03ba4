//! A Registry's access control as berth's `auth` config and the volumes that carry its files:
//! the htpasswd Secret the user provides, robot accounts whose secrets the operator generates once
//! (`registry::credentials`), and one token signing key shared by every pod (so a token one pod
//! issued is good at all of them).
//!
//! ```text
//! spec.auth.htpasswdSecret ─► mounted at /etc/berth/auth/htpasswd   (berth re-reads it on change)
//! Secret <name>-robots     ─► <robot>: the secret, <robot>.bcrypt: its hash (mounted; the hash file
//!                              is what berth checks)
//! Secret <name>-token-key  ─► token.key, Ed25519 PKCS#8 PEM
//! ```

use berth_core::config::auth::{Action as BerthAction, AuthConfig, Grant, Robot, Rule, TokenConfig};
use kube::ResourceExt;

use super::error::BuildError;
use crate::crd::registry::{AccessAction, AuthSpec};
use crate::crd::Registry;

pub const AUTH_DIR: &str = "/etc/berth/auth";
/// The robot whose secret goes into the pull Secrets of `spec.pullSecrets`.
pub const PULL_ROBOT: &str = "pull-secrets";
/// The robot, granted `admin`, that the GC CronJob of `spec.gc` runs `berth gc` as.
pub const GC_ROBOT: &str = "garbage-collector";

/// The robots the operator adds for its own features, beside those of `spec.auth.robots`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Builtin {
    pub pull: bool,
    pub gc: bool,
}

impl Builtin {
    pub fn of(reg: &Registry) -> Builtin {
        Builtin { pull: reg.spec.pull_secrets.is_some(), gc: reg.spec.gc.is_some() }
    }

    /// Their names.
    pub fn names(self) -> impl Iterator<Item = &'static str> {
        [(self.pull, PULL_ROBOT), (self.gc, GC_ROBOT)].into_iter().filter(|(on, _)| *on).map(|(_, n)| n)
    }

    pub fn any(self) -> bool {
        self.pull || self.gc
    }
}

fn builtin_robot(name: &str, action: BerthAction) -> Robot {
    Robot {
        name: name.into(),
        secret_hash: None,
        secret_hash_file: Some(format!("{AUTH_DIR}/robots/{name}.bcrypt").into()),
        expires: None,
        grants: vec![Grant { repositories: vec!["**".into()], actions: vec![action] }],
    }
}

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
pub fn render(spec: &AuthSpec, builtin: Builtin) -> Result<AuthConfig, BuildError> {
    for (name, of) in [(PULL_ROBOT, "spec.pullSecrets"), (GC_ROBOT, "spec.gc")] {
        if spec.robots.iter().flatten().any(|r| r.name == name) {
            return Err(BuildError::InvalidAuth(format!(
                "spec.auth.robots: {name} is the robot of {of}; choose another name"
            )));
        }
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
            .chain(builtin.pull.then(|| builtin_robot(PULL_ROBOT, BerthAction::Pull)))
            .chain(builtin.gc.then(|| builtin_robot(GC_ROBOT, BerthAction::Admin)))
            .collect(),
        failed_logins: Default::default(),
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
    builtin: Builtin,
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
    if builtin.any() || spec.robots.as_ref().is_some_and(|r| !r.is_empty()) {
        add("auth-robots", robots_secret_name(reg), "robots");
    }
    (mounts, volumes)
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
        let c = render(&spec, Builtin { pull: true, gc: true }).unwrap();
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
        assert_eq!(c.robots[2].name, GC_ROBOT, "the GC CronJob's robot");
        assert_eq!(c.robots[2].grants[0].actions, [BerthAction::Admin]);
        assert_eq!(c.robots[2].grants[0].repositories, ["**"]);
        let taken = AuthSpec {
            robots: Some(vec![RobotSpec { name: GC_ROBOT.into(), ..RobotSpec::default() }]),
            ..AuthSpec::default()
        };
        match render(&taken, Builtin::default()) {
            Err(BuildError::InvalidAuth(m)) => assert!(m.contains("robot of spec.gc"), "{m}"),
            other => panic!("{other:?}"),
        }

        let bad = AuthSpec {
            rules: Some(vec![AccessRule {
                users: vec![],
                repositories: vec!["**".into()],
                actions: vec![AccessAction::Pull],
            }]),
            ..AuthSpec::default()
        };
        match render(&bad, Builtin::default()) {
            Err(BuildError::InvalidAuth(m)) => assert!(m.starts_with("spec.auth.rules[0].users"), "{m}"),
            other => panic!("{other:?}"),
        }
    }
}
