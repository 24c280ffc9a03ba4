//! Blobs, images and indexes pushed to any registry, and the bytes they are made of.

use super::*;

/// A request to `url`, where `http://user:password@host` becomes Basic auth.
fn request(method: reqwest::Method, url: &str) -> reqwest::RequestBuilder {
    match url.split_once("://").and_then(|(scheme, rest)| {
        let (userinfo, host) = rest.split_once('@')?;
        let (user, password) = userinfo.split_once(':')?;
        Some((format!("{scheme}://{host}"), user.to_owned(), password.to_owned()))
    }) {
        Some((plain, user, password)) => client().request(method, plain).basic_auth(user, Some(password)),
        None => client().request(method, url),
    }
}

/// Pushes a blob to any registry (POST, then PUT with the bytes, as every registry supports).
pub async fn push_blob_to(base: &str, repo: &str, data: Bytes) -> String {
    let digest = sha256(&data);
    let r = request(reqwest::Method::POST, &format!("{base}/v2/{repo}/blobs/uploads/")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED, "starting an upload at {base}");
    let location = r.headers()["location"].to_str().unwrap().to_owned();
    let location = if location.starts_with("http") {
        // Keep the credentials of `base` for the absolute URL the registry returned.
        match base.split_once('@') {
            Some((creds, _)) => format!("{creds}@{}", location.split_once("://").unwrap().1),
            None => location,
        }
    } else {
        format!("{base}{location}")
    };
    let sep = if location.contains('?') { '&' } else { '?' };
    let r = request(reqwest::Method::PUT, &format!("{location}{sep}digest={digest}"))
        .body(data)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED, "pushing a blob to {base}");
    digest
}

/// An image pushed to an upstream: its manifest bytes and digest, and its layer digests.
#[derive(Debug, Clone)]
pub struct Pushed {
    pub manifest: Vec<u8>,
    pub digest: String,
    pub layers: Vec<String>,
    pub config: String,
}

/// Pushes an image with the given layers and tags it.
pub async fn push_image(base: &str, repo: &str, tag: &str, layers: Vec<Bytes>) -> Pushed {
    let config = Bytes::from(format!("{{\"architecture\":\"amd64\",\"os\":\"linux\",\"tag\":\"{tag}\"}}"));
    let config_size = config.len();
    let config_digest = push_blob_to(base, repo, config).await;
    let mut descriptors = vec![];
    let mut digests = vec![];
    for layer in layers {
        let size = layer.len();
        let d = push_blob_to(base, repo, layer).await;
        descriptors.push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d, "size": size
        }));
        digests.push(d);
    }
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config_size},
        "layers": descriptors,
    }))
    .unwrap();
    let digest = put_manifest_to(base, repo, tag, OCI_MANIFEST, &manifest).await;
    Pushed { manifest, digest, layers: digests, config: config_digest }
}

/// Pushes an index of the given platform images under `tag`; returns its bytes and digest.
pub async fn push_index(
    base: &str,
    repo: &str,
    tag: &str,
    platforms: &[(&str, &Pushed)],
) -> (Vec<u8>, String) {
    let manifests: Vec<serde_json::Value> = platforms
        .iter()
        .map(|(arch, p)| {
            serde_json::json!({
                "mediaType": OCI_MANIFEST, "digest": p.digest, "size": p.manifest.len(),
                "platform": {"architecture": arch, "os": "linux"}
            })
        })
        .collect();
    let index = serde_json::to_vec(
        &serde_json::json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}),
    )
    .unwrap();
    let digest = put_manifest_to(base, repo, tag, OCI_INDEX, &index).await;
    (index, digest)
}

pub async fn put_manifest_to(base: &str, repo: &str, reference: &str, ct: &str, body: &[u8]) -> String {
    let r = request(reqwest::Method::PUT, &format!("{base}/v2/{repo}/manifests/{reference}"))
        .header("content-type", ct)
        .body(body.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED, "pushing a manifest to {base}");
    sha256(body)
}

/// Pushes an artifact of type `artifact_type` that refers to `subject` (as `oras attach` does),
/// annotated with `note`: its descriptor, as a referrers list names it.
pub async fn push_referrer(
    base: &str,
    repo: &str,
    subject: &Pushed,
    artifact_type: &str,
    note: &str,
) -> serde_json::Value {
    let empty = push_blob_to(base, repo, Bytes::from_static(b"{}")).await;
    let blank =
        serde_json::json!({"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty, "size": 2});
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": artifact_type,
        "config": blank, "layers": [blank],
        "subject": {"mediaType": OCI_MANIFEST, "digest": subject.digest, "size": subject.manifest.len()},
        "annotations": {"note": note},
    }))
    .unwrap();
    let digest = put_manifest_to(base, repo, &sha256(&manifest), OCI_MANIFEST, &manifest).await;
    serde_json::json!({
        "mediaType": OCI_MANIFEST, "digest": digest, "size": manifest.len(),
        "artifactType": artifact_type, "annotations": {"note": note},
    })
}

/// Deterministic pseudo-random bytes (so layers never deduplicate by accident).
pub fn noise(seed: u64, len: usize) -> Bytes {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    Bytes::from(out)
}

/// Streams a response body into a sha256 digest without keeping it.
pub async fn body_digest(resp: reqwest::Response) -> Result<String, String> {
    use sha2::Digest as _;
    let mut h = sha2::Sha256::new();
    let mut s = resp.bytes_stream();
    while let Some(chunk) = s.next().await {
        h.update(&chunk.map_err(|e| e.to_string())?);
    }
    Ok(format!("sha256:{}", berth_core::oci::hex(&h.finalize())))
}

pub fn temp_secret(dir: &Path, name: &str, value: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, value).unwrap();
    p
}
