//! The tools the harness runs (etcd, kube-apiserver, helm, …), built once into the cache at the
//! versions `e2e/versions.env` names.

/// The versions in `e2e/versions.env`, the single place they are written.
pub fn version(key: &str) -> Option<&'static str> {
    include_str!("../versions.env")
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .map(str::trim)
}

/// A tool built by `scripts/tools.sh`, at the version `versions.env` names.
pub fn tool(name: &str, version_key: &str) -> anyhow::Result<std::path::PathBuf> {
    let version =
        version(version_key).ok_or_else(|| anyhow::anyhow!("{version_key} missing from versions.env"))?;
    let path = cache_dir().join(format!("{name}-{version}")).join("bin").join(name);
    if !path.is_file() {
        anyhow::bail!("{} is missing: run `bash scripts/tools.sh {name}`", path.display());
    }
    Ok(path)
}

/// Where `e2e/k8s-tools.sh` caches its builds.
pub fn cache_dir() -> std::path::PathBuf {
    if let Ok(dir) = std::env::var("BERTH_CACHE") {
        return dir.into();
    }
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    std::path::Path::new(&home).join(".cache/berth")
}
