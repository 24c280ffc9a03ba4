//! What a garbage collection holds in memory for one repository: its graph as read from the
//! metadata (manifests, edges, links, tags) and the mark's walk over it, per manifest. Measured
//! in this process, on filesystem + SQLite metadata written straight through the metadata store,
//! by counting what the allocator hands out while the read and the mark run (the count is off,
//! and costs one relaxed load an allocation, the rest of the time).
#![allow(unsafe_code)] // a counting global allocator

use std::alloc::{GlobalAlloc, Layout, System};
use std::fmt::Write as _;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicIsize, Ordering::Relaxed};

use berth_core::oci::{Algorithm, Descriptor, Digest, RepoName};
use berth_registry::gc::mark::{self, Roots};
use berth_registry::meta::gc::Collect;
use berth_registry::meta::sqlite::SqliteMeta;
use berth_registry::meta::{MetaStore, NewManifest, Stored};
use futures_util::StreamExt;

use crate::load::Plan;

const HELD: &str = "garbage collection: memory a repository's graph holds, per manifest";
const PEAK: &str = "garbage collection: peak memory of reading and marking a repository, per manifest";

/// Counts live bytes, and their peak, while switched on.
pub struct Counting;

static ON: AtomicBool = AtomicBool::new(false);
static LIVE: AtomicIsize = AtomicIsize::new(0);
static HIGHEST: AtomicIsize = AtomicIsize::new(0);

fn counted(delta: isize) {
    if ON.load(Relaxed) {
        let now = LIVE.fetch_add(delta, Relaxed) + delta;
        HIGHEST.fetch_max(now, Relaxed);
    }
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        counted(layout.size() as isize);
        System.alloc(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        counted(-(layout.size() as isize));
        System.dealloc(ptr, layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        counted(new_size as isize - layout.size() as isize);
        System.realloc(ptr, layout, new_size)
    }
}

/// Bytes allocated and not freed while `f` ran, and the most live at once (counted from when
/// `from_zero`, else on from the last measure's count).
async fn measured<T, F: std::future::Future<Output = T>>(from_zero: bool, f: F) -> (T, isize, isize) {
    if from_zero {
        LIVE.store(0, Relaxed);
        HIGHEST.store(0, Relaxed);
    }
    ON.store(true, Relaxed);
    let out = f.await;
    ON.store(false, Relaxed);
    (out, LIVE.load(Relaxed), HIGHEST.load(Relaxed))
}

pub fn wanted(plan: &Plan) -> bool {
    [HELD, PEAK].iter().any(|n| plan.wants(n))
}

fn described(name: &str, size: u64) -> Descriptor {
    Descriptor { digest: Digest::of(Algorithm::Sha256, name.as_bytes()), size }
}

/// The scenario over `manifests` image manifests, each with a config and a layer of its own and
/// three layers all share; every tenth tagged.
pub async fn run(scratch: &Path, manifests: usize) -> anyhow::Result<String> {
    let dir = scratch.join("berth-gc-memory");
    std::fs::create_dir_all(&dir)?;
    let meta = SqliteMeta::open(dir.join("meta.db"))?;
    let repo: RepoName = "bench/graph".parse()?;
    let shared: Vec<Descriptor> = (0..3).map(|i| described(&format!("base-{i}"), 1 << 20)).collect();
    for d in &shared {
        meta.link_blob(&repo, &d.digest, d.size, Stored::Written).await?;
    }
    let written: Vec<anyhow::Result<()>> = futures_util::stream::iter(0..manifests)
        .map(|i| {
            let (meta, repo, mut blobs) = (&meta, repo.clone(), shared.clone());
            async move {
                for own in [described(&format!("config-{i}"), 1000), described(&format!("layer-{i}"), 5000)] {
                    meta.link_blob(&repo, &own.digest, own.size, Stored::Written).await?;
                    blobs.push(own);
                }
                meta.put_manifest(NewManifest {
                    repo,
                    digest: described(&format!("manifest-{i}"), 0).digest,
                    media_type: "application/vnd.oci.image.manifest.v1+json".into(),
                    size: 700,
                    artifact_type: None,
                    subject: None,
                    annotations: None,
                    blobs,
                    manifests: vec![],
                    tags: if i % 10 == 0 { vec![format!("t{i}").parse()?] } else { vec![] },
                    verify_references: false,
                    children_optional: false,
                    stored: Stored::Written,
                    events: vec![],
                    condition: None,
                })
                .await?;
                Ok(())
            }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    written.into_iter().collect::<anyhow::Result<Vec<()>>>()?;

    let (contents, held, _) = measured(true, meta.repo_contents(&repo)).await;
    let contents = contents?;
    let (marked, _, peak) = measured(false, async { mark::mark(&contents, &Roots::since(i64::MAX)) }).await;
    if marked.manifests.len() != manifests - manifests.div_ceil(10) {
        anyhow::bail!("the mark found {} manifests to remove", marked.manifests.len());
    }
    let per = |bytes: isize| bytes.max(0) as f64 / manifests as f64;
    let mut s = format!(
        "\n### Garbage collection: memory (filesystem + SQLite)\n\n{manifests} image manifests in one repository \
         (each with a config and a layer of its own and three layers all share; every tenth tagged), read as a \
         collection reads them and marked; bytes counted by this process's allocator. The peak includes the \
         mark's report (what goes: {} manifests, {} links).\n\n| scenario | unit | berth |\n|---|---|---:|\n",
        marked.manifests.len(),
        marked.links.len()
    );
    let _ = writeln!(s, "| {HELD} | bytes | {:.0} |", per(held));
    let _ = writeln!(s, "| {PEAK} | bytes | {:.0} |", per(peak));
    Ok(s)
}
