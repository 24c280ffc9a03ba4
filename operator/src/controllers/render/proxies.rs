//! The `ProxyCache`s of a `Registry`, rendered into berth's `proxy.upstreams` and the volumes
//! that carry their credentials. Pure: the reconciler looks the resources up.
//!
//! Credentials stay in their Secret, which the operator never reads to render them: it is
//! mounted into the pod as a credentials directory (`token`, or `username` and `password`), and
//! berth reads it whenever it logs in, so a rotated Secret needs no restart.

use berth_core::config::{duration, size, ProxyConfig, RevalidateRule, UpstreamConfig};

use super::error::BuildError;
use crate::crd::proxycache::ProxyCacheSpec;

pub const PROXY_SECRETS_DIR: &str = "/etc/berth/proxy";

/// A `ProxyCache` by name.
#[derive(Debug, Clone, PartialEq)]
pub struct ProxySource {
    pub name: String,
    pub spec: ProxyCacheSpec,
}

/// The served prefix: the one given, else the upstream's host name without its port.
pub fn prefix(spec: &ProxyCacheSpec) -> String {
    if let Some(p) = &spec.prefix {
        return p.clone();
    }
    let rest = spec.upstream.url.split_once("://").map_or(spec.upstream.url.as_str(), |(_, r)| r);
    let host = rest.split(['/', '?']).next().unwrap_or(rest);
    let host = host.rsplit_once('@').map_or(host, |(_, h)| h);
    host.split(':').next().unwrap_or(host).to_ascii_lowercase()
}

fn credentials_dir(source: &ProxySource) -> String {
    format!("{PROXY_SECRETS_DIR}/{}/credentials", source.name)
}

fn ca_dir(source: &ProxySource) -> String {
    format!("{PROXY_SECRETS_DIR}/{}/ca", source.name)
}

fn invalid(source: &ProxySource, message: String) -> BuildError {
    BuildError::InvalidProxyCache { name: source.name.clone(), message }
}

/// The caches that are not suspended, by name, so the rendered config (and its hash) does not
/// depend on listing order.
fn active(sources: &[ProxySource]) -> Vec<&ProxySource> {
    let mut sorted: Vec<&ProxySource> = sources.iter().filter(|s| s.spec.suspend != Some(true)).collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    sorted
}

/// The names of the caches berth serves.
pub fn active_names(sources: &[ProxySource]) -> Vec<String> {
    active(sources).iter().map(|s| s.name.clone()).collect()
}

/// berth's upstream list, one entry per active cache.
pub fn upstreams(sources: &[ProxySource]) -> Result<ProxyConfig, BuildError> {
    let sorted = active(sources);
    let mut out = ProxyConfig::default();
    for s in &sorted {
        out.upstreams.push(upstream(s)?);
    }
    if let Err((field, message)) = out.validate() {
        // Name the ProxyCache behind the offending entry.
        let index = field
            .strip_prefix("proxy.upstreams[")
            .and_then(|r| r.split(']').next())
            .and_then(|i| i.parse::<usize>().ok())
            .unwrap_or(0);
        let name = sorted.get(index).map(|s| s.name.clone()).unwrap_or_default();
        let field = field.split_once("].").map_or(field.clone(), |(_, f)| f.to_owned());
        return Err(BuildError::InvalidProxyCache { name, message: format!("{field}: {message}") });
    }
    Ok(out)
}

fn upstream(s: &ProxySource) -> Result<UpstreamConfig, BuildError> {
    let spec = &s.spec;
    let mut u = UpstreamConfig::new(&prefix(spec), &spec.upstream.url);
    u.default = spec.default_upstream == Some(true);
    u.insecure = spec.upstream.insecure_skip_verify == Some(true);
    if spec.upstream.credentials_secret.is_some() {
        u.credentials_dir = Some(credentials_dir(s).into());
    }
    if spec.upstream.ca_secret.is_some() {
        u.ca_file = Some(format!("{}/ca.crt", ca_dir(s)).into());
    }
    if let Some(f) = &spec.repositories {
        u.include = f.include.clone().unwrap_or_default();
        u.exclude = f.exclude.clone().unwrap_or_default();
    }
    let dur = |field: &str, v: &Option<String>| -> Result<Option<std::time::Duration>, BuildError> {
        v.as_deref().map(|v| duration::parse(v).map_err(|e| invalid(s, format!("{field}: {e}")))).transpose()
    };
    if let Some(f) = &spec.freshness {
        if let Some(d) = dur("freshness.revalidateAfter", &f.revalidate_after)? {
            u.revalidate_after = d;
        }
        if let Some(d) = dur("freshness.staleIfError", &f.stale_if_error)? {
            u.stale_if_error = d;
        }
        if let Some(d) = dur("freshness.negativeTTL", &f.negative_ttl)? {
            u.negative_ttl = d;
        }
        for (i, r) in f.rules.iter().flatten().enumerate() {
            let after = duration::parse(&r.after)
                .map_err(|e| invalid(s, format!("freshness.rules[{i}].after: {e}")))?;
            u.revalidate.push(RevalidateRule { repositories: r.repositories.clone(), after });
        }
    }
    u.unpulled_ttl = dur("unusedTTL", &spec.unused_ttl)?;
    u.max_size = spec
        .size_limit
        .as_deref()
        .map(|q| {
            size::parse(q)
                .map_err(|e| invalid(s, format!("sizeLimit: {e} (whole numbers only, e.g. 1536Mi)")))
        })
        .transpose()?;
    Ok(u)
}

/// Volume mounts and volumes for every cache's credentials and CA Secrets.
pub fn volumes(sources: &[ProxySource]) -> (Vec<serde_json::Value>, Vec<serde_json::Value>) {
    let mut mounts = vec![];
    let mut volumes = vec![];
    for (i, s) in active(sources).iter().enumerate() {
        if let Some(secret) = &s.spec.upstream.credentials_secret {
            let name = format!("proxy-{i}-credentials");
            mounts.push(serde_json::json!({"name": name, "mountPath": credentials_dir(s), "readOnly": true}));
            volumes.push(
                serde_json::json!({"name": name, "secret": {"secretName": secret, "defaultMode": 0o440}}),
            );
        }
        if let Some(secret) = &s.spec.upstream.ca_secret {
            let name = format!("proxy-{i}-ca");
            mounts.push(serde_json::json!({"name": name, "mountPath": ca_dir(s), "readOnly": true}));
            volumes.push(
                serde_json::json!({"name": name, "secret": {"secretName": secret, "defaultMode": 0o440}}),
            );
        }
    }
    (mounts, volumes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::proxycache::{Freshness, LocalRef, RepositoryFilter, Upstream};

    fn source(name: &str, url: &str) -> ProxySource {
        ProxySource {
            name: name.into(),
            spec: ProxyCacheSpec {
                registry_ref: LocalRef { name: "hub".into() },
                upstream: Upstream { url: url.into(), ..Upstream::default() },
                ..ProxyCacheSpec::default()
            },
        }
    }

    #[test]
    fn prefixes_default_to_the_upstream_host() {
        assert_eq!(prefix(&source("a", "https://ghcr.io").spec), "ghcr.io");
        assert_eq!(prefix(&source("a", "http://Registry.local:5000/v2/").spec), "registry.local");
        let mut s = source("a", "https://registry-1.docker.io");
        s.spec.prefix = Some("docker.io".into());
        assert_eq!(prefix(&s.spec), "docker.io");
    }

    #[test]
    fn caches_render_sorted_with_credentials_as_files() {
        let mut hub = source("hub", "https://registry-1.docker.io");
        hub.spec.prefix = Some("docker.io".into());
        hub.spec.default_upstream = Some(true);
        hub.spec.upstream.credentials_secret = Some("hub-creds".into());
        hub.spec.repositories =
            Some(RepositoryFilter { include: Some(vec!["library/**".into()]), exclude: None });
        hub.spec.freshness = Some(Freshness {
            revalidate_after: Some("10m".into()),
            stale_if_error: None,
            negative_ttl: None,
            rules: Some(vec![crate::crd::proxycache::RevalidateRule {
                repositories: "library/*-nightly".into(),
                after: "0s".into(),
            }]),
        });
        hub.spec.size_limit = Some("50Gi".into());
        let mut ghcr = source("ghcr", "https://ghcr.io");
        ghcr.spec.upstream.credentials_secret = Some("ghcr-token".into());
        let mut off = source("off", "https://quay.io");
        off.spec.suspend = Some(true);

        let p = upstreams(&[hub.clone(), off, ghcr.clone()]).unwrap();
        let names: Vec<&str> = p.upstreams.iter().map(|u| u.name.as_str()).collect();
        assert_eq!(names, ["ghcr.io", "docker.io"], "sorted by ProxyCache name, suspended left out");
        let d = &p.upstreams[1];
        assert!(d.default && d.library_rule());
        assert_eq!(
            d.credentials_dir.as_deref(),
            Some(std::path::Path::new("/etc/berth/proxy/hub/credentials")),
            "the Secret's files, read by berth: the operator copies nothing out of it"
        );
        assert_eq!(d.username, None);
        assert_eq!(d.revalidate_after.as_secs(), 600);
        assert_eq!(d.revalidate[0].repositories, "library/*-nightly");
        assert!(d.revalidate[0].after.is_zero());
        assert_eq!(d.max_size, Some(50 << 30));
        assert_eq!(
            p.upstreams[0].credentials_dir.as_deref(),
            Some(std::path::Path::new("/etc/berth/proxy/ghcr/credentials"))
        );

        let (mounts, volumes) = volumes(&[hub, ghcr]);
        assert_eq!(mounts.len(), 2);
        assert_eq!(volumes[0]["secret"]["secretName"], "ghcr-token");
        assert_eq!(mounts[1]["mountPath"], "/etc/berth/proxy/hub/credentials");
    }

    #[test]
    fn mistakes_name_the_proxy_cache() {
        let mut a = source("first", "https://a.example");
        a.spec.freshness = Some(Freshness { revalidate_after: Some("soon".into()), ..Freshness::default() });
        let e = upstreams(&[a]).unwrap_err();
        assert!(
            matches!(&e, BuildError::InvalidProxyCache { name, message } if name == "first" && message.contains("revalidateAfter")),
            "{e}"
        );

        let (a, mut b) = (source("a", "https://x.example"), source("b", "https://x.example"));
        b.spec.prefix = None;
        let e = upstreams(&[a, b]).unwrap_err();
        assert!(
            matches!(&e, BuildError::InvalidProxyCache { name, message } if name == "b" && message.contains("two upstreams")),
            "{e}"
        );
    }
}
