//! `spec.database.postgres`: berth's metadata section, and the URL Secret mounted into the pod.

use berth_core::config::MetadataConfig;

use crate::crd::registry::PostgresDatabase;

const URL_DIR: &str = "/etc/berth/db";
/// The file the Secret's key is mounted as, whatever the key is called.
const URL_FILE: &str = "url";
/// Pooled connections per replica: enough for a busy pod, few enough that ten replicas stay well
/// inside PostgreSQL's default of 100 connections.
const MAX_CONNECTIONS: u32 = 8;

pub fn config(_pg: &PostgresDatabase) -> MetadataConfig {
    MetadataConfig::Postgres {
        url_file: Some(format!("{URL_DIR}/{URL_FILE}").into()),
        max_connections: MAX_CONNECTIONS,
        ca_file: None,
    }
}

/// The volume mount and volume for the URL Secret (only its one key, as the file `url`).
pub fn volumes(pg: &PostgresDatabase) -> (serde_json::Value, serde_json::Value) {
    (
        serde_json::json!({"name": "database", "mountPath": URL_DIR, "readOnly": true}),
        serde_json::json!({"name": "database", "secret": {
            "secretName": pg.url_secret.name,
            "defaultMode": 0o440,
            "items": [{"key": pg.url_secret.key, "path": URL_FILE}],
        }}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::common::SecretKeyRef;

    #[test]
    fn the_url_secret_is_mounted_where_the_config_says() {
        let pg =
            PostgresDatabase { url_secret: SecretKeyRef { name: "pg".into(), key: "connection".into() } };
        let MetadataConfig::Postgres { url_file: Some(file), .. } = config(&pg) else { panic!("postgres") };
        let (mount, volume) = volumes(&pg);
        assert_eq!(
            std::path::Path::new(mount["mountPath"].as_str().unwrap())
                .join(volume["secret"]["items"][0]["path"].as_str().unwrap()),
            file
        );
        assert_eq!(volume["secret"]["secretName"], "pg");
        assert_eq!(volume["secret"]["items"][0]["key"], "connection");
    }
}
