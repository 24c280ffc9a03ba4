//! `metadata`: where Berth keeps what it knows (SQLite by default, PostgreSQL for several
//! replicas).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum MetadataConfig {
    Sqlite {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        path: Option<PathBuf>,
    },
    /// One PostgreSQL database shared by every replica.
    ///
    /// ```yaml
    /// metadata:
    ///   kind: postgres
    ///   url_file: /etc/berth/db/url     # postgres://user:password@host:5432/berth (a mounted Secret);
    ///                                   # default: the BERTH_POSTGRES_URL environment variable
    ///   max_connections: 16             # per replica
    ///   ca_file: /etc/berth/db/ca.crt   # verify the server against this CA (libpq's verify-full);
    ///                                   # without it, TLS (sslmode in the URL) encrypts unverified
    ///   contract: auto                  # or manual: see `Contract`
    /// ```
    Postgres {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        url_file: Option<PathBuf>,
        #[serde(default = "default_max_db_connections")]
        max_connections: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ca_file: Option<PathBuf>,
        #[serde(default, skip_serializing_if = "Contract::is_auto")]
        contract: Contract,
    },
}

/// When a rolling upgrade on PostgreSQL ends: the schema is contracted (older Berths refused
/// from then on) and blobs pushed in pieces stay where their uploads put them, no longer copied
/// to their digests' keys for older replicas.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Contract {
    /// As soon as no older Berth is connected or leased (checked every 30 s).
    #[default]
    Auto,
    /// Only when `berth contract-schema` is run (or a replica with `auto` starts): until then
    /// an older Berth can still be rolled back to.
    Manual,
}

impl Contract {
    fn is_auto(&self) -> bool {
        *self == Contract::Auto
    }
}

fn default_max_db_connections() -> u32 {
    16
}

impl Default for MetadataConfig {
    fn default() -> Self {
        MetadataConfig::Sqlite { path: None }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, Contract, MetadataConfig};

    fn contract(yaml: &str) -> Result<Contract, String> {
        match Config::from_yaml(yaml, "c.yaml").map_err(|e| e.to_string())?.metadata {
            MetadataConfig::Postgres { contract, .. } => Ok(contract),
            other => Err(format!("not postgres: {other:?}")),
        }
    }

    #[test]
    fn the_schema_is_contracted_automatically_unless_told_otherwise() {
        assert_eq!(contract("metadata: {kind: postgres}"), Ok(Contract::Auto));
        assert_eq!(contract("metadata: {kind: postgres, contract: manual}"), Ok(Contract::Manual));
        let e = contract("metadata: {kind: postgres, contract: later}").unwrap_err();
        // A tagged section's error names the section (serde reads it whole before the tag).
        assert!(e.contains("metadata") && e.contains("`later`") && e.contains("`manual`"), "{e}");
        // `auto` is not written out, so configs rendered before the setting existed stay the same.
        let c = Config::from_yaml("metadata: {kind: postgres}", "c.yaml").unwrap();
        assert!(!c.to_yaml().contains("contract"), "{}", c.to_yaml());
        let m = Config::from_yaml("metadata: {kind: postgres, contract: manual}", "c.yaml").unwrap();
        assert_eq!(Config::from_yaml(&m.to_yaml(), "again").unwrap(), m);
    }
}
