//! `spec.storage.s3`: berth's storage section, and the Secrets it reads mounted into the pod.

use berth_core::config::S3Config;

use crate::crd::registry::S3Storage;

const CREDENTIALS_DIR: &str = "/etc/berth/s3";
const CA_DIR: &str = "/etc/berth/s3-ca";

pub fn config(s3: &S3Storage) -> S3Config {
    S3Config {
        bucket: s3.bucket.clone(),
        prefix: s3.prefix.clone(),
        region: s3.region.clone(),
        endpoint: s3.endpoint.clone(),
        path_style: s3.path_style.unwrap_or(false),
        credentials_dir: s3.credentials_secret.as_ref().map(|_| CREDENTIALS_DIR.into()),
        ca_file: s3.ca_secret.as_ref().map(|_| format!("{CA_DIR}/ca.crt").into()),
        redirect: s3.redirect.unwrap_or(false),
    }
}

/// Volume mounts and volumes for the credentials and CA Secrets. Secret volumes follow the Secret,
/// so a rotated key reaches berth (which re-reads the files) without a restart.
pub fn volumes(s3: &S3Storage) -> (Vec<serde_json::Value>, Vec<serde_json::Value>) {
    let mut mounts = vec![];
    let mut volumes = vec![];
    for (name, secret, dir) in
        [("s3-credentials", &s3.credentials_secret, CREDENTIALS_DIR), ("s3-ca", &s3.ca_secret, CA_DIR)]
    {
        if let Some(secret) = secret {
            mounts.push(serde_json::json!({"name": name, "mountPath": dir, "readOnly": true}));
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

    #[test]
    fn secrets_are_mounted_where_the_config_says() {
        let s3 = S3Storage {
            bucket: "berth".into(),
            endpoint: Some("http://minio.storage:9000".into()),
            path_style: Some(true),
            credentials_secret: Some("minio-keys".into()),
            ca_secret: Some("minio-ca".into()),
            ..S3Storage::default()
        };
        let c = config(&s3);
        let (mounts, volumes) = volumes(&s3);
        assert_eq!(mounts[0]["mountPath"], c.credentials_dir.unwrap().to_str().unwrap());
        assert_eq!(volumes[0]["secret"]["secretName"], "minio-keys");
        assert_eq!(
            format!("{}/ca.crt", mounts[1]["mountPath"].as_str().unwrap()),
            c.ca_file.unwrap().to_str().unwrap()
        );
        assert_eq!(volumes[1]["secret"]["secretName"], "minio-ca");
        assert!(c.path_style && !c.redirect);

        let bare = S3Storage { bucket: "berth".into(), ..S3Storage::default() };
        assert_eq!(config(&bare).credentials_dir, None, "credentials from spec.env");
        assert_eq!(super::volumes(&bare), (vec![], vec![]));
    }
}
