//! The credentials of a Registry's access control that the operator generates, once: the token
//! signing key every pod shares, and each robot's secret (with its bcrypt hash, which is what
//! berth checks).
//!
//! ```text
//! spec.auth.htpasswdSecret ─► mounted at /etc/berth/auth/htpasswd   (berth re-reads it on change)
//! Secret <name>-robots     ─► <robot>: the secret, <robot>.bcrypt: its hash (mounted; the hash file
//!                              is what berth checks)
//! Secret <name>-token-key  ─► token.key, Ed25519 PKCS#8 PEM
//! ```

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::ByteString;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::ResourceExt;

use crate::controllers::render::auth::{robots_secret_name, token_key_secret_name, Builtin, PULL_ROBOT};
use crate::controllers::secrets::{data, secret};
use crate::crd::registry::AuthSpec;
use crate::crd::Registry;

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
    builtin: Builtin,
) -> Result<Option<String>, AuthError> {
    let ns = reg.namespace().unwrap_or_default();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let key_name = token_key_secret_name(reg);
    if secrets.get_opt(&key_name).await?.is_none() {
        let pem = berth_core::keys::generate_token_key_pem().map_err(AuthError::Generate)?;
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
        .chain(builtin.names().map(|n| -> &str { n }))
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
    Ok(pull_secret.filter(|_| builtin.pull))
}
