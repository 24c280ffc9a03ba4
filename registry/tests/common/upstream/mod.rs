//! Real upstreams for the pull-through cache tests: CNCF Distribution run as a process, and a
//! counting proxy in front of it that records every request and can corrupt or hold back bodies
//! ([`counting`]), a token service for upstreams that ask for Bearer tokens ([`token`]), and
//! pushes to any registry ([`images`]).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use bytes::Bytes;
use futures_util::StreamExt;
use reqwest::StatusCode;
use tokio::sync::Notify;

use super::{client, sha256, OCI_INDEX, OCI_MANIFEST};

mod counting;
mod images;
mod token;

// Each test binary uses a part of these.
#[allow(unused_imports)]
pub use {counting::*, images::*, token::*};

/// The Distribution binary `scripts/tools.sh registry` builds, at the pinned version.
pub fn distribution_binary() -> PathBuf {
    if let Ok(p) = std::env::var("BERTH_DISTRIBUTION") {
        return p.into();
    }
    let version = include_str!("../../../../e2e/versions.env")
        .lines()
        .find_map(|l| l.strip_prefix("DISTRIBUTION_VERSION="))
        .expect("DISTRIBUTION_VERSION in e2e/versions.env")
        .trim();
    let cache = std::env::var("BERTH_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(&std::env::var("HOME").unwrap()).join(".cache/berth"));
    let bin = cache.join(format!("registry-{version}/bin/registry"));
    assert!(bin.is_file(), "{} is missing: run `bash scripts/tools.sh registry`", bin.display());
    bin
}

/// CNCF Distribution serving on a loopback port, stopped on drop.
pub struct Distribution {
    pub url: String,
    child: Option<Child>,
    _dir: tempfile::TempDir,
}

pub enum Auth {
    None,
    /// Basic auth with one user (bcrypt htpasswd).
    Htpasswd {
        user: &'static str,
        password: &'static str,
    },
    /// Bearer tokens from a token service Distribution trusts (see [`TokenService`]).
    Token {
        realm: String,
        cert_pem: String,
    },
}

impl Distribution {
    pub async fn start(auth: Auth) -> Distribution {
        let dir = tempfile::tempdir().unwrap();
        let child = Distribution::spawn(dir.path(), None, auth).await;
        Distribution { url: child.0, child: Some(child.1), _dir: dir }
    }

    /// Stops and starts again over the same content and port, with other auth.
    pub async fn restart(&mut self, auth: Auth) {
        self.stop();
        let port = self.url.rsplit(':').next().unwrap().parse().unwrap();
        self.child = Some(Distribution::spawn(self._dir.path(), Some(port), auth).await.1);
    }

    /// Starts Distribution on `port`, or on a free one.
    async fn spawn(dir: &Path, port: Option<u16>, auth: Auth) -> (String, Child) {
        let auth_yaml = match auth {
            Auth::None => String::new(),
            Auth::Htpasswd { user, password } => {
                let hash = bcrypt::hash(password, 4).unwrap();
                let file = dir.join("htpasswd");
                std::fs::write(&file, format!("{user}:{hash}\n")).unwrap();
                format!("auth:\n  htpasswd:\n    realm: upstream\n    path: {}\n", file.display())
            }
            Auth::Token { realm, cert_pem } => {
                let file = dir.join("token-ca.pem");
                std::fs::write(&file, cert_pem).unwrap();
                format!(
                    "auth:\n  token:\n    realm: {realm}\n    service: {TOKEN_SERVICE}\n    \
                     issuer: {TOKEN_ISSUER}\n    rootcertbundle: {}\n",
                    file.display()
                )
            }
        };
        // The port was free when picked (and outside the range clients take theirs from), but
        // another test's server may take it before Distribution binds: then Distribution exits,
        // and whatever holds the port must not pass for it. Start again until it is ours.
        for _ in 0..20 {
            let port = port.unwrap_or_else(free_port);
            let url = format!("http://127.0.0.1:{port}");
            let config = format!(
                "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\n\
                 storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
                 http:\n  addr: 127.0.0.1:{port}\n{auth_yaml}",
                dir.join("data").display()
            );
            let config_path = dir.join("config.yml");
            std::fs::write(&config_path, config).unwrap();
            let mut child = Command::new(distribution_binary())
                .arg("serve")
                .arg(&config_path)
                .env("OTEL_TRACES_EXPORTER", "none")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            if Distribution::serving(&url, &mut child).await {
                return (url, child);
            }
            let _ = child.kill();
            let _ = child.wait();
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!("Distribution did not start");
    }

    /// Whether `child` answers on `url`: a Distribution response there while the child lives.
    async fn serving(url: &str, child: &mut Child) -> bool {
        let probe = format!("{url}/v2/");
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while std::time::Instant::now() < deadline {
            if !matches!(child.try_wait(), Ok(None)) {
                return false;
            }
            if let Ok(r) = client().get(&probe).send().await {
                if r.headers().contains_key("docker-distribution-api-version") {
                    return matches!(child.try_wait(), Ok(None));
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    /// Stops the upstream for good (as if its host went away).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Distribution {
    fn drop(&mut self) {
        self.stop();
    }
}

fn free_port() -> u16 {
    berth_core::ports::free_port().unwrap()
}
