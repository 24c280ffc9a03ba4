//! Pod volumes as directories on the host, bind-mounted into each container by the sandbox.
//!
//! Secret, ConfigMap, downward API and projected volumes are written key by key, each file replaced
//! atomically, and refreshed while the pod runs — so a rotated certificate in a Secret reaches the
//! running process as it does with a real kubelet. emptyDir is a fresh directory; a PVC is the
//! directory of the PersistentVolume bound to it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{
    ConfigMap, DownwardAPIVolumeFile, KeyToPath, PersistentVolume, PersistentVolumeClaim, Pod, Secret,
    ServiceAccount, Volume,
};
use kube::api::{Api, PostParams};

use super::context::Context;

pub struct PodVolumes {
    pub dir: PathBuf,
    /// Volume name → host directory.
    pub paths: BTreeMap<String, PathBuf>,
}

/// Creates every volume of `pod` under `dir`, writing current contents.
pub async fn prepare(ctx: &Context, pod: &Pod, dir: &Path, pod_ip: &str) -> anyhow::Result<PodVolumes> {
    let mut paths = BTreeMap::new();
    let spec = pod.spec.as_ref().context("pod has no spec")?;
    for v in spec.volumes.iter().flatten() {
        let path = match &v.persistent_volume_claim {
            Some(pvc) => claim_dir(ctx, pod, &pvc.claim_name).await?,
            None => match &v.host_path {
                Some(hp) => PathBuf::from(&hp.path),
                None => dir.join(&v.name),
            },
        };
        std::fs::create_dir_all(&path)?;
        paths.insert(v.name.clone(), path);
    }
    let vols = PodVolumes { dir: dir.to_path_buf(), paths };
    refresh(ctx, pod, &vols, pod_ip).await?;
    own_writable(pod, &vols)?;
    Ok(vols)
}

/// Rewrites the contents of Secret, ConfigMap, downward API and projected volumes.
pub async fn refresh(ctx: &Context, pod: &Pod, vols: &PodVolumes, pod_ip: &str) -> anyhow::Result<()> {
    let Some(spec) = pod.spec.as_ref() else { return Ok(()) };
    for v in spec.volumes.iter().flatten() {
        let Some(dir) = vols.paths.get(&v.name) else { continue };
        let files = contents(ctx, pod, v, pod_ip).await.with_context(|| format!("volume {:?}", v.name))?;
        if let Some(files) = files {
            sync_dir(dir, &files, fs_group(pod))?;
        }
    }
    Ok(())
}

type Files = BTreeMap<String, (Vec<u8>, u32)>;

async fn contents(ctx: &Context, pod: &Pod, v: &Volume, pod_ip: &str) -> anyhow::Result<Option<Files>> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let mut files = Files::new();
    if let Some(s) = &v.secret {
        let name = s.secret_name.as_deref().unwrap_or_default();
        let mode = s.default_mode.unwrap_or(0o644) as u32;
        add_secret(ctx, ns, name, s.items.as_deref(), mode, s.optional.unwrap_or(false), &mut files).await?;
    } else if let Some(c) = &v.config_map {
        let mode = c.default_mode.unwrap_or(0o644) as u32;
        add_config_map(ctx, ns, &c.name, c.items.as_deref(), mode, c.optional.unwrap_or(false), &mut files)
            .await?;
    } else if let Some(d) = &v.downward_api {
        add_downward(
            pod,
            pod_ip,
            d.items.as_deref().unwrap_or_default(),
            d.default_mode.unwrap_or(0o644) as u32,
            &mut files,
        )?;
    } else if let Some(p) = &v.projected {
        let mode = p.default_mode.unwrap_or(0o644) as u32;
        for src in p.sources.iter().flatten() {
            if let Some(s) = &src.secret {
                add_secret(
                    ctx,
                    ns,
                    &s.name,
                    s.items.as_deref(),
                    mode,
                    s.optional.unwrap_or(false),
                    &mut files,
                )
                .await?;
            }
            if let Some(c) = &src.config_map {
                add_config_map(
                    ctx,
                    ns,
                    &c.name,
                    c.items.as_deref(),
                    mode,
                    c.optional.unwrap_or(false),
                    &mut files,
                )
                .await?;
            }
            if let Some(d) = &src.downward_api {
                add_downward(pod, pod_ip, d.items.as_deref().unwrap_or_default(), mode, &mut files)?;
            }
            if let Some(t) = &src.service_account_token {
                let token =
                    service_account_token(ctx, pod, t.audience.as_deref(), t.expiration_seconds).await?;
                files.insert(t.path.clone(), (token.into_bytes(), mode));
            }
        }
    } else {
        return Ok(None);
    }
    Ok(Some(files))
}

fn select(
    data: BTreeMap<String, Vec<u8>>,
    items: Option<&[KeyToPath]>,
    mode: u32,
    files: &mut Files,
) -> anyhow::Result<()> {
    match items {
        None => {
            for (k, v) in data {
                files.insert(k, (v, mode));
            }
        }
        Some(items) => {
            for item in items {
                let v = data.get(&item.key).with_context(|| format!("key {:?} not found", item.key))?;
                files.insert(item.path.clone(), (v.clone(), item.mode.map_or(mode, |m| m as u32)));
            }
        }
    }
    Ok(())
}

/// Looks up a Secret or ConfigMap a volume names; an `optional` one may be missing.
async fn lookup<K>(ctx: &Context, ns: &str, name: &str, optional: bool) -> anyhow::Result<Option<K>>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    let api: Api<K> = Api::namespaced(ctx.client.clone(), ns);
    match api.get_opt(name).await? {
        Some(o) => Ok(Some(o)),
        None if optional => Ok(None),
        None => bail!("{} {ns}/{name} not found", K::kind(&K::DynamicType::default()).to_lowercase()),
    }
}

async fn add_secret(
    ctx: &Context,
    ns: &str,
    name: &str,
    items: Option<&[KeyToPath]>,
    mode: u32,
    optional: bool,
    files: &mut Files,
) -> anyhow::Result<()> {
    let Some(secret) = lookup::<Secret>(ctx, ns, name, optional).await? else { return Ok(()) };
    let data = secret.data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.0)).collect();
    select(data, items, mode, files)
}

async fn add_config_map(
    ctx: &Context,
    ns: &str,
    name: &str,
    items: Option<&[KeyToPath]>,
    mode: u32,
    optional: bool,
    files: &mut Files,
) -> anyhow::Result<()> {
    let Some(cm) = lookup::<ConfigMap>(ctx, ns, name, optional).await? else { return Ok(()) };
    let mut data: BTreeMap<String, Vec<u8>> =
        cm.data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.into_bytes())).collect();
    data.extend(cm.binary_data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.0)));
    select(data, items, mode, files)
}

fn add_downward(
    pod: &Pod,
    pod_ip: &str,
    items: &[DownwardAPIVolumeFile],
    mode: u32,
    files: &mut Files,
) -> anyhow::Result<()> {
    for item in items {
        let Some(f) = &item.field_ref else { continue };
        let value = super::env::field_value(pod, pod_ip, &f.field_path)?;
        files.insert(item.path.clone(), (value.into_bytes(), item.mode.map_or(mode, |m| m as u32)));
    }
    Ok(())
}

async fn service_account_token(
    ctx: &Context,
    pod: &Pod,
    audience: Option<&str>,
    expiration: Option<i64>,
) -> anyhow::Result<String> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let sa =
        pod.spec.as_ref().and_then(|s| s.service_account_name.clone()).unwrap_or_else(|| "default".into());
    let api: Api<ServiceAccount> = Api::namespaced(ctx.client.clone(), ns);
    let req: TokenRequest = serde_json::from_value(serde_json::json!({
        "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
        "spec": {
            "audiences": audience.map(|a| vec![a.to_owned()]).unwrap_or_default(),
            "expirationSeconds": expiration.unwrap_or(3607).max(600),
            "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": pod.metadata.name, "uid": pod.metadata.uid},
        }
    }))?;
    let created: TokenRequest = api
        .create_subresource("token", &sa, &PostParams::default(), &req)
        .await
        .with_context(|| format!("token for service account {ns}/{sa}"))?;
    Ok(created.status.and_then(|s| s.token).unwrap_or_default())
}

fn fs_group(pod: &Pod) -> Option<u32> {
    pod.spec.as_ref()?.security_context.as_ref()?.fs_group.and_then(|g| u32::try_from(g).ok())
}

/// Makes the directory hold exactly `files`, each written atomically (temp file, rename). With an
/// `fsGroup`, files belong to that group, as a kubelet does, so non-root pods can read them.
fn sync_dir(dir: &Path, files: &Files, group: Option<u32>) -> anyhow::Result<()> {
    if let Some(g) = group {
        std::os::unix::fs::chown(dir, None, Some(g))?;
    }
    use std::os::unix::fs::PermissionsExt;
    for (rel, (bytes, mode)) in files {
        if rel.split('/').any(|c| c == ".." || c.is_empty()) {
            bail!("refusing volume path {rel:?}");
        }
        let path = dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        if std::fs::read(&path).ok().as_deref() == Some(bytes.as_slice()) {
            continue;
        }
        let tmp =
            path.with_file_name(format!(".{}.tmp", path.file_name().and_then(|f| f.to_str()).unwrap_or("f")));
        std::fs::write(&tmp, bytes)?;
        if let Some(g) = group {
            std::os::unix::fs::chown(&tmp, None, Some(g))?;
        }
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(*mode))?;
        std::fs::rename(&tmp, &path)?;
    }
    // Keys that went away.
    for entry in std::fs::read_dir(dir)?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let top_level_kept = files.keys().any(|k| k == &name || k.starts_with(&format!("{name}/")));
        if !top_level_kept && !name.starts_with('.') {
            let p = entry.path();
            if p.is_dir() {
                std::fs::remove_dir_all(p)?
            } else {
                std::fs::remove_file(p)?
            }
        }
    }
    Ok(())
}

/// emptyDir and PVC directories belong to the user the pod runs as (or its fsGroup).
fn own_writable(pod: &Pod, vols: &PodVolumes) -> anyhow::Result<()> {
    let Some(spec) = pod.spec.as_ref() else { return Ok(()) };
    let sc = spec.security_context.as_ref();
    let uid = sc.and_then(|s| s.run_as_user).or_else(|| {
        spec.containers.iter().find_map(|c| c.security_context.as_ref().and_then(|s| s.run_as_user))
    });
    let gid = sc.and_then(|s| s.fs_group.or(s.run_as_group));
    if uid.is_none() && gid.is_none() {
        return Ok(());
    }
    for v in spec.volumes.iter().flatten() {
        if v.empty_dir.is_none() && v.persistent_volume_claim.is_none() {
            continue;
        }
        if let Some(dir) = vols.paths.get(&v.name) {
            let owner = format!(
                "{}:{}",
                uid.map(|u| u.to_string()).unwrap_or_default(),
                gid.map(|g| g.to_string()).unwrap_or_default()
            );
            let owner = owner.trim_end_matches(':').to_owned();
            let ok = std::process::Command::new("chown").arg("-R").arg(&owner).arg(dir).status()?.success();
            if !ok {
                bail!("chown {owner} {} failed", dir.display());
            }
        }
    }
    Ok(())
}

/// The directory behind a claim: the hostPath of the PV bound to it.
async fn claim_dir(ctx: &Context, pod: &Pod, claim: &str) -> anyhow::Result<PathBuf> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), ns);
    let pvc = claims.get(claim).await.with_context(|| format!("claim {ns}/{claim}"))?;
    let volume = pvc.spec.and_then(|s| s.volume_name).filter(|v| !v.is_empty());
    let Some(volume) = volume else { bail!("claim {ns}/{claim} is not bound yet") };
    let pvs: Api<PersistentVolume> = Api::all(ctx.client.clone());
    let pv = pvs.get(&volume).await?;
    let path = pv.spec.and_then(|s| s.host_path).map(|h| h.path);
    path.map(PathBuf::from).with_context(|| format!("volume {volume} has no hostPath"))
}
