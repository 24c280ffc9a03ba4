//! Defaults, resolved in code (never in the CRD schema) and reported in `status.effective`.

use crate::crd::registry::{RetainPolicy, TlsMode};
use crate::crd::{registry::EffectiveRegistry, Registry};

pub const DEFAULT_SIZE: &str = "10Gi";
pub const CONTAINER_PORT: i32 = 5000;
/// berth's metrics listener (`/metrics`, `/readyz`): plain HTTP, inside the cluster only.
pub const METRICS_PORT: i32 = 9102;
/// The non-root user of the Berth image.
pub const UID: i64 = 65532;

#[derive(Debug, Clone, PartialEq)]
pub struct Effective {
    pub image: String,
    pub replicas: i32,
    pub tls: TlsMode,
    pub port: i32,
    pub service_type: String,
    pub retain: RetainPolicy,
    pub log_level: String,
    pub log_json: bool,
}

pub fn resolve(reg: &Registry, default_image: &str) -> Effective {
    let s = &reg.spec;
    let tls = s.tls.as_ref().and_then(|t| t.mode).unwrap_or(TlsMode::None);
    let default_port = if tls == TlsMode::None { CONTAINER_PORT } else { 443 };
    Effective {
        image: s.image.clone().unwrap_or_else(|| default_image.to_owned()),
        replicas: s.replicas.unwrap_or(1),
        tls,
        port: s.service.as_ref().and_then(|x| x.port).unwrap_or(default_port),
        service_type: s.service.as_ref().and_then(|x| x.type_.clone()).unwrap_or_else(|| "ClusterIP".into()),
        retain: s.retain_policy.unwrap_or(RetainPolicy::Retain),
        log_level: s.log.as_ref().and_then(|l| l.level.clone()).unwrap_or_else(|| "info".into()),
        log_json: s.log.as_ref().and_then(|l| l.format.as_deref()).is_none_or(|f| f != "text"),
    }
}

impl Effective {
    pub fn report(&self, reg: &Registry) -> EffectiveRegistry {
        let storage = reg.spec.storage.clone().unwrap_or_default();
        let (kind, size) = if storage.existing_claim.is_some() {
            ("existingClaim", None)
        } else if storage.s3.is_some() {
            ("s3", None)
        } else {
            let size = storage.filesystem.and_then(|f| f.size).unwrap_or_else(|| DEFAULT_SIZE.into());
            ("filesystem", Some(size))
        };
        let database = if reg.spec.database.as_ref().is_some_and(|d| d.postgres.is_some()) {
            "postgres"
        } else {
            "embedded"
        };
        EffectiveRegistry {
            image: self.image.clone(),
            replicas: self.replicas,
            storage: kind.into(),
            storage_size: size,
            database: database.into(),
            tls_mode: format!("{:?}", self.tls),
            service_type: self.service_type.clone(),
            port: self.port,
            retain_policy: format!("{:?}", self.retain),
        }
    }
}
