//! `storage: {kind: s3, ...}` — content in an S3-compatible bucket (AWS, MinIO, SeaweedFS, Ceph
//! RGW).
//!
//! ```yaml
//! storage:
//!   kind: s3
//!   bucket: berth
//!   prefix: registry-a                # optional: object names start with registry-a/
//!   region: us-east-1                 # default us-east-1
//!   endpoint: https://minio.example:9000   # default: AWS
//!   path_style: true                  # endpoint/bucket/key (MinIO, most self-hosted stores)
//!   credentials_dir: /etc/berth/s3    # files accessKeyId and secretAccessKey (a mounted Secret);
//!                                     # default: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY
//!   ca_file: /etc/berth/s3-ca.crt     # PEM, trusted besides the system's roots
//!   redirect: false                   # true: blob GETs answer 307 to a presigned URL
//! ```

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    pub bucket: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    #[serde(default)]
    pub path_style: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_dir: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// Blob GETs answer 307 with a short-lived presigned URL of the object, so the bytes flow
    /// from the store rather than through berth (clients must reach the endpoint).
    #[serde(default)]
    pub redirect: bool,
}

impl S3Config {
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        // S3's own rules for bucket names (3-63 of a-z, 0-9, '.', '-').
        let b = &self.bucket;
        let name_ok = (3..=63).contains(&b.len())
            && b.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'.' || c == b'-')
            && b.as_bytes()[0].is_ascii_alphanumeric();
        if !name_ok {
            return Err((
                "storage.bucket",
                format!("{b:?} is not a bucket name (3-63 of a-z, 0-9, '.', '-')"),
            ));
        }
        if let Some(e) = &self.endpoint {
            let rest = e.strip_prefix("https://").or_else(|| e.strip_prefix("http://"));
            if !rest.is_some_and(|r| crate::net::is_authority(r.trim_end_matches('/'))) {
                return Err((
                    "storage.endpoint",
                    format!("{e:?} is not a URL like https://s3.example.com:9000"),
                ));
            }
        }
        if let Some(p) = &self.prefix {
            if p.split('/').any(|s| s == ".." || s == ".") || p.contains(['\\', '\0']) {
                return Err(("storage.prefix", format!("{p:?} is not a plain key prefix")));
            }
        }
        Ok(())
    }
}
