//! `spec.database.postgres`: berth's metadata section, and the URL (and CA) Secrets mounted into
//! the pod.

use berth_core::config::{Contract, MetadataConfig};

use crate::crd::registry::{PostgresDatabase, SchemaContract};

const URL_DIR: &str = "/etc/berth/db";
const CA_DIR: &str = "/etc/berth/db-ca";
/// The file the Secret's key is mounted as, whatever the key is called.
const URL_FILE: &str = "url";
/// Pooled connections per replica: enough for a busy pod, few enough that ten replicas stay well
/// inside PostgreSQL's default of 100 connections.
const MAX_CONNECTIONS: u32 = 8;

pub fn config(pg: &PostgresDatabase) -> MetadataConfig {
    MetadataConfig::Postgres {
        url_file: Some(format!("{URL_DIR}/{URL_FILE}").into()),
        max_connections: MAX_CONNECTIONS,
        ca_file: pg.ca_secret.as_ref().map(|_| format!("{CA_DIR}/ca.crt").into()),
        contract: match pg.contract {
            None | Some(SchemaContract::Auto) => Contract::Auto,
            Some(SchemaContract::Manual) => Contract::Manual,
        },
    }
}

/// The volume mounts and volumes for the URL Secret (only its one key, as the file `url`) and
/// the CA Secret. Secret volumes follow the Secret, so a rotated URL reaches berth (which
/// re-reads the file) without a restart.
pub fn volumes(pg: &PostgresDatabase) -> (Vec<serde_json::Value>, Vec<serde_json::Value>) {
    let mut mounts = vec![serde_json::json!({"name": "database", "mountPath": URL_DIR, "readOnly": true})];
    let mut volumes = vec![serde_json::json!({"name": "database", "secret": {
        "secretName": pg.url_secret.name,
        "defaultMode": 0o440,
        "items": [{"key": pg.url_secret.key, "path": URL_FILE}],
    }})];
    if let Some(ca) = &pg.ca_secret {
        mounts.push(serde_json::json!({"name": "database-ca", "mountPath": CA_DIR, "readOnly": true}));
        volumes.push(
            serde_json::json!({"name": "database-ca", "secret": {"secretName": ca, "defaultMode": 0o440}}),
        );
    }
    (mounts, volumes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::common::SecretKeyRef;

    #[test]
    fn the_url_secret_is_mounted_where_the_config_says() {
        let mut pg = PostgresDatabase {
            url_secret: SecretKeyRef { name: "pg".into(), key: "connection".into() },
            ca_secret: None,
            contract: None,
        };
        let MetadataConfig::Postgres {
            url_file: Some(file), ca_file: None, contract: Contract::Auto, ..
        } = config(&pg)
        else {
            panic!("postgres, without a CA, contracted by itself")
        };
        let (mounts, volumes_) = volumes(&pg);
        assert_eq!(
            std::path::Path::new(mounts[0]["mountPath"].as_str().unwrap())
                .join(volumes_[0]["secret"]["items"][0]["path"].as_str().unwrap()),
            file
        );
        assert_eq!(volumes_[0]["secret"]["secretName"], "pg");
        assert_eq!(volumes_[0]["secret"]["items"][0]["key"], "connection");
        assert_eq!(mounts.len(), 1);

        pg.ca_secret = Some("pg-ca".into());
        let MetadataConfig::Postgres { ca_file: Some(ca), .. } = config(&pg) else { panic!("with a CA") };
        let (mounts, volumes_) = volumes(&pg);
        assert_eq!(std::path::Path::new(mounts[1]["mountPath"].as_str().unwrap()).join("ca.crt"), ca);
        assert_eq!(volumes_[1]["secret"]["secretName"], "pg-ca");

        pg.contract = Some(SchemaContract::Manual);
        assert!(matches!(config(&pg), MetadataConfig::Postgres { contract: Contract::Manual, .. }));
    }
}
