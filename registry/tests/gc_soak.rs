//! The garbage collection soak: pushers, pullers, tag movers, deleters and collections with no
//! grace at all, together, for a bounded time (`BERTH_SOAK_SECS`, 20 s by default; `make bench`
//! runs it longer). Afterwards: no pull failed whose tag stood still for the whole pull, every
//! tagged image is whole and digest-valid, and a last collection leaves exactly the live blobs in
//! storage. On the filesystem with SQLite; and (`tests/s3.sh` runs it, given a bucket and a
//! database) over two replicas on S3 and PostgreSQL, each request going to the next replica.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_core::config::Config;
use berth_registry::storage::layout;
use common::{client, sha256, TestServer, OCI_MANIFEST};
use reqwest::StatusCode;
use serde_json::{json, Value};

const REPOS: usize = 3;
const TAGS: usize = 6;
/// Layers shared among images, so pushes keep storing bytes a collection is releasing.
const LAYERS: usize = 10;

/// What the test knows of each tag: a version bumped before and after every change, so a pull
/// that saw the same version on both sides ran while the tag stood still.
#[derive(Default)]
struct Tags {
    versions: Mutex<HashMap<(usize, usize), u64>>,
}

impl Tags {
    fn version(&self, key: (usize, usize)) -> u64 {
        self.versions.lock().unwrap().get(&key).copied().unwrap_or(0)
    }

    fn bump(&self, key: (usize, usize)) {
        *self.versions.lock().unwrap().entry(key).or_default() += 1;
    }
}

#[derive(Default)]
struct Counts {
    pushes: AtomicU64,
    failed_pushes: AtomicU64,
    pulls: AtomicU64,
    /// Pulls that failed although their tag stood still: must stay 0.
    broken_pulls: AtomicU64,
    deletes: AtomicU64,
    collections: AtomicU64,
}

struct Soak {
    /// The replicas, each request to the next.
    urls: Vec<String>,
    next: AtomicU64,
    tags: Tags,
    counts: Counts,
    stop: AtomicBool,
}

fn layer(i: usize) -> Vec<u8> {
    format!("soak layer {i} ").repeat(200 + i * 37).into_bytes()
}

impl Soak {
    fn new(urls: Vec<String>) -> Soak {
        Soak {
            urls,
            next: AtomicU64::new(0),
            tags: Tags::default(),
            counts: Counts::default(),
            stop: AtomicBool::new(false),
        }
    }

    /// The replica the next request goes to.
    fn url(&self) -> &str {
        let i = self.next.fetch_add(1, Ordering::Relaxed) as usize;
        &self.urls[i % self.urls.len()]
    }

    fn repo(r: usize) -> String {
        format!("soak/r{r}")
    }

    async fn push_blob(&self, repo: &str, data: &[u8]) -> bool {
        let url = format!("{}/v2/{repo}/blobs/uploads/?digest={}", self.url(), sha256(data));
        matches!(client().post(url).body(data.to_vec()).send().await, Ok(r) if r.status() == StatusCode::CREATED)
    }

    /// Pushes a new image (its config names `n`, so every push is a new manifest) under the tag.
    async fn push(&self, r: usize, t: usize, n: u64) -> bool {
        let repo = Self::repo(r);
        let config = format!("{{\"soak\":{n}}}").into_bytes();
        let layers = [layer((n as usize) % LAYERS), layer((n as usize * 7 + 3) % LAYERS)];
        for data in std::iter::once(&config).chain(&layers) {
            if !self.push_blob(&repo, data).await {
                return false;
            }
        }
        let desc = |mt: &str, d: &[u8]| json!({"mediaType": mt, "digest": sha256(d), "size": d.len()});
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": desc("application/vnd.oci.image.config.v1+json", &config),
            "layers": layers.iter().map(|l| desc("application/vnd.oci.image.layer.v1.tar", l)).collect::<Vec<_>>(),
        });
        self.put_manifest(&repo, &format!("t{t}"), &serde_json::to_vec(&manifest).unwrap()).await
    }

    async fn put_manifest(&self, repo: &str, tag: &str, body: &[u8]) -> bool {
        let url = format!("{}/v2/{repo}/manifests/{tag}", self.url());
        let sent = client().put(url).header("content-type", OCI_MANIFEST).body(body.to_vec()).send().await;
        matches!(sent, Ok(r) if r.status() == StatusCode::CREATED)
    }

    async fn manifest(&self, repo: &str, reference: &str) -> Option<Vec<u8>> {
        let url = format!("{}/v2/{repo}/manifests/{reference}", self.url());
        let r = client().get(url).header("accept", OCI_MANIFEST).send().await.ok()?;
        if r.status() != StatusCode::OK {
            return None;
        }
        Some(r.bytes().await.ok()?.to_vec())
    }

    /// Pulls the tagged image whole, checking every digest; `Err` says what failed.
    async fn pull(&self, repo: &str, tag: &str) -> Result<(), String> {
        let body = self.manifest(repo, tag).await.ok_or("no manifest")?;
        let m: Value = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
        let mut digests = vec![m["config"]["digest"].as_str().unwrap_or_default().to_owned()];
        for l in m["layers"].as_array().into_iter().flatten() {
            digests.push(l["digest"].as_str().unwrap_or_default().to_owned());
        }
        for d in digests {
            let r = client()
                .get(format!("{}/v2/{repo}/blobs/{d}", self.url()))
                .send()
                .await
                .map_err(|e| format!("blob {d}: {e}"))?;
            if r.status() != StatusCode::OK {
                return Err(format!("blob {d}: {}", r.status()));
            }
            let bytes = r.bytes().await.map_err(|e| format!("blob {d}: {e}"))?;
            if sha256(&bytes) != d {
                return Err(format!("blob {d}: the bytes do not match"));
            }
        }
        Ok(())
    }

    async fn pusher(self: Arc<Self>, seed: u64) {
        let mut n = seed * 1_000_000;
        while !self.stop.load(Ordering::Relaxed) {
            n += 1;
            let key = ((n as usize) % REPOS, (n as usize / 3) % TAGS);
            self.tags.bump(key);
            let pushed = self.push(key.0, key.1, n).await;
            self.tags.bump(key);
            let c = if pushed { &self.counts.pushes } else { &self.counts.failed_pushes };
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Moves a tag to the manifest another tag names, or deletes it.
    async fn mover(self: Arc<Self>) {
        let mut n = 0usize;
        while !self.stop.load(Ordering::Relaxed) {
            n += 1;
            let (r, t) = (n % REPOS, (n * 5) % TAGS);
            let repo = Self::repo(r);
            self.tags.bump((r, t));
            if n % 3 == 0 {
                let url = format!("{}/v2/{repo}/manifests/t{t}", self.url());
                let _ = client().delete(url).send().await;
                self.counts.deletes.fetch_add(1, Ordering::Relaxed);
            } else if let Some(body) = self.manifest(&repo, &format!("t{}", (t + 1) % TAGS)).await {
                let _ = self.put_manifest(&repo, &format!("t{t}"), &body).await;
            }
            self.tags.bump((r, t));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn puller(self: Arc<Self>, seed: usize) {
        let mut n = seed;
        while !self.stop.load(Ordering::Relaxed) {
            n += 1;
            let key = (n % REPOS, (n / 2) % TAGS);
            let before = self.tags.version(key);
            let pulled = self.pull(&Self::repo(key.0), &format!("t{}", key.1)).await;
            let still = before % 2 == 0 && self.tags.version(key) == before;
            self.counts.pulls.fetch_add(1, Ordering::Relaxed);
            if let Err(e) = pulled {
                // A tag that was deleted (or never pushed) is simply not there.
                if still && e != "no manifest" {
                    eprintln!("a pull of {key:?} failed while its tag stood still: {e}");
                    self.counts.broken_pulls.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    async fn collect(&self, dry_run: bool) -> Value {
        let admin = berth_registry::gc::client::Admin::new(client(), self.url(), None);
        admin.collect(&json!({"grace": "0s", "dryRun": dry_run})).await.expect("a collection runs")
    }

    async fn collector(self: Arc<Self>) {
        while !self.stop.load(Ordering::Relaxed) {
            self.collect(false).await;
            self.counts.collections.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Every tagged image's digests: the live set.
    async fn live(&self) -> BTreeSet<String> {
        let mut live = BTreeSet::new();
        for r in 0..REPOS {
            let repo = Self::repo(r);
            let url = format!("{}/v2/{repo}/tags/list", self.url());
            let tags: Value = match client().get(url).send().await {
                Ok(resp) if resp.status() == StatusCode::OK => resp.json().await.unwrap(),
                _ => continue,
            };
            for tag in tags["tags"].as_array().into_iter().flatten().filter_map(Value::as_str) {
                self.pull(&repo, tag).await.unwrap_or_else(|e| panic!("{repo}:{tag} is not whole: {e}"));
                let body = self.manifest(&repo, tag).await.unwrap();
                let m: Value = serde_json::from_slice(&body).unwrap();
                live.insert(sha256(&body));
                live.insert(m["config"]["digest"].as_str().unwrap().to_owned());
                for l in m["layers"].as_array().unwrap() {
                    live.insert(l["digest"].as_str().unwrap().to_owned());
                }
            }
        }
        live
    }
}

fn soak_time() -> Duration {
    let secs = std::env::var("BERTH_SOAK_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(20);
    Duration::from_secs(secs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn collections_beside_pushes_pulls_and_deletes_lose_nothing_live() {
    soak(vec![TestServer::with_config(Config::default()).await]).await;
}

/// The same over two replicas sharing a bucket and a database: `BERTH_TEST_S3_ENDPOINT`,
/// `_BUCKET`, `_ACCESS_KEY`, `_SECRET_KEY` and `BERTH_POSTGRES_URL` (an empty database).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs an S3 server and PostgreSQL: tests/s3.sh runs it"]
async fn collections_over_two_replicas_on_s3_and_postgres_lose_nothing_live() {
    let credentials = tempfile::tempdir().unwrap();
    let yaml = common::s3_postgres_yaml("soak", credentials.path());
    let config = Config::from_yaml(&yaml, "soak").unwrap();
    let a = TestServer::with_config(config.clone()).await;
    let b = TestServer::with_config(config).await;
    soak(vec![a, b]).await;
}

async fn soak(servers: Vec<TestServer>) {
    let soak = Arc::new(Soak::new(servers.iter().map(|s| s.url.clone()).collect()));
    let mut tasks = Vec::new();
    for seed in 1..=2 {
        tasks.push(tokio::spawn(soak.clone().pusher(seed)));
        tasks.push(tokio::spawn(soak.clone().puller(seed as usize * 7)));
    }
    tasks.push(tokio::spawn(soak.clone().mover()));
    tasks.push(tokio::spawn(soak.clone().collector()));
    tokio::time::sleep(soak_time()).await;
    soak.stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    let c = &soak.counts;
    let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
    eprintln!(
        "soak: {} pushes ({} failed), {} pulls, {} deletes, {} collections",
        load(&c.pushes),
        load(&c.failed_pushes),
        load(&c.pulls),
        load(&c.deletes),
        load(&c.collections)
    );
    assert!(load(&c.pushes) > 10 && load(&c.pulls) > 10 && load(&c.collections) > 1, "the soak did work");
    assert_eq!(load(&c.broken_pulls), 0, "no pull failed while its tag stood still");

    // A last collection leaves exactly what the tags reach, every byte of it intact.
    let dry = soak.collect(true).await;
    let real = soak.collect(false).await;
    assert_eq!(dry["blobs"].as_array().map(Vec::len), real["blobs"].as_array().map(Vec::len));
    let live = soak.live().await;
    let stored = servers[0].state.registry.storage().list(&layout::blobs_root()).await.unwrap();
    let stored: BTreeSet<String> = stored
        .iter()
        .filter_map(|l| Some(format!("sha256:{}", l.key.as_str().rsplit('/').next()?)))
        .collect();
    assert_eq!(stored, live, "storage holds exactly the live set");
    for s in servers {
        s.stop().await;
    }
}
