//! What a `Registry` keeps its content and state in: `spec.storage` and `spec.database`.

use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::crd::common::SecretKeyRef;

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum RetainPolicy {
    Retain,
    Delete,
}

/// Exactly one kind of storage; the kind cannot change after creation.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("[has(self.filesystem), has(self.existingClaim), has(self.s3)].filter(x, x).size() == 1").message("set exactly one of filesystem, existingClaim, s3"))]
#[x_kube(validation = Rule::new("has(self.filesystem) == has(oldSelf.filesystem) && has(self.existingClaim) == has(oldSelf.existingClaim) && has(self.s3) == has(oldSelf.s3)").message("the storage kind cannot be changed"))]
pub struct StorageSpec {
    /// A PersistentVolumeClaim per pod, created from this template.
    pub filesystem: Option<FilesystemStorage>,
    /// A claim that already exists (one replica only).
    pub existing_claim: Option<ExistingClaim>,
    /// S3-compatible object storage shared by all replicas.
    pub s3: Option<S3Storage>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(oldSelf.size) || (has(self.size) && quantity(self.size).compareTo(quantity(oldSelf.size)) >= 0)").message("the volume size cannot shrink"))]
pub struct FilesystemStorage {
    /// Requested size, e.g. 50Gi. Default 10Gi.
    #[x_kube(validation = Rule::new("isQuantity(self)").message("size must be a quantity like 10Gi"))]
    pub size: Option<String>,
    /// StorageClass of the claims. Default: the cluster's default class.
    pub storage_class_name: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExistingClaim {
    pub name: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct S3Storage {
    pub bucket: String,
    /// Object names start with `prefix/` (several registries may share a bucket).
    pub prefix: Option<String>,
    /// Endpoint for S3-compatible stores (MinIO, SeaweedFS, Ceph RGW). Default: AWS.
    pub endpoint: Option<String>,
    pub region: Option<String>,
    /// `endpoint/bucket/key` addressing, as MinIO and most self-hosted stores want. Default false.
    pub path_style: Option<bool>,
    /// A Secret with `accessKeyId` and `secretAccessKey`, mounted into berth (never read by the
    /// operator) and re-read when it changes. Without it berth takes `AWS_ACCESS_KEY_ID` and
    /// `AWS_SECRET_ACCESS_KEY` from `spec.env`.
    pub credentials_secret: Option<String>,
    /// A Secret whose `ca.crt` holds extra CA certificates (PEM) for the endpoint.
    pub ca_secret: Option<String>,
    /// Blob GETs answer 307 with a short-lived presigned URL, so bytes flow from the store
    /// (clients must reach the endpoint). Default false.
    pub redirect: Option<bool>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!(has(self.embedded) && has(self.postgres))").message("choose embedded or postgres, not both"))]
pub struct DatabaseSpec {
    /// SQLite in the data volume (the default).
    pub embedded: Option<EmbeddedDatabase>,
    /// PostgreSQL, for several replicas: the connection URL in a Secret.
    pub postgres: Option<PostgresDatabase>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct EmbeddedDatabase {}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PostgresDatabase {
    pub url_secret: SecretKeyRef,
    /// A Secret whose `ca.crt` holds the CA (PEM) the database's certificate must chain to: berth
    /// then verifies the server and its host name (libpq's `verify-full`). Without it, TLS as
    /// the URL's `sslmode` says (`prefer` by default) encrypts without checking the certificate.
    pub ca_secret: Option<String>,
    /// When an upgrade of berth ends on this database. `Auto` (the default): once no older berth
    /// is connected, the replicas contract the schema, and an older berth refuses it from then on.
    /// `Manual`: an older berth can be rolled back to until this is set to `Auto` (or `berth
    /// contract-schema` runs); meanwhile blobs pushed in pieces are also copied for older replicas.
    pub contract: Option<SchemaContract>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum SchemaContract {
    Auto,
    Manual,
}
