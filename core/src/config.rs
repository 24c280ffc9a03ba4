//! `berth`'s configuration: parsed once into validated types.
//!
//! `berth-operator` renders configs from these very types, and a test proves `berth` parses
//! whatever the operator writes.
//!
//! ```yaml
//! listen: 127.0.0.1:5000
//! data_dir: ./berth-data
//! log: { level: info, format: text }        # format: text | json
//! tls: { cert: tls.crt, key: tls.key }      # reloaded when the files change
//! storage: { kind: filesystem }             # path defaults to <data_dir>/storage; or memory, or s3 (S3Config)
//! metadata: { kind: sqlite }                # path defaults to <data_dir>/meta.db; or postgres
//! limits: { max_manifest_bytes: 4194304, upload_ttl: 24h, max_connections: 4096 }   # see LimitsConfig
//! external_url: https://registry.example.com   # token realm; default: each request's own host
//! trusted_proxies: [10.0.0.0/8]                 # whose X-Forwarded-* headers count
//! metrics: { listen: 0.0.0.0:9090 }             # /metrics on its own port, not the registry's
//! retention: { policies: [...] }                # which tags GC removes (see `retention`)
//! notifications: { endpoints: [...] }           # events and webhooks (see `notifications`)
//! replication: { on_push: [...] }               # copies made as pushes happen (see `replication`)
//! ```
//! Precedence: command-line flags, then `BERTH_*` environment variables, then the file, then the
//! defaults above.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub mod auth;
mod limits;
mod metadata;
pub mod notifications;
pub mod proxy;
pub mod replication;
pub mod retention;
mod s3;
mod units;

pub use limits::LimitsConfig;
pub use metadata::{Contract, MetadataConfig};
pub use notifications::NotificationsConfig;
pub use proxy::{ProxyConfig, RevalidateRule, UpstreamConfig};
pub use replication::ReplicationConfig;
pub use retention::RetentionConfig;
pub use s3::S3Config;
pub use units::{duration, size};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default = "default_listen")]
    pub listen: String,
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    #[serde(default)]
    pub log: LogConfig,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsConfig>,
    #[serde(default)]
    pub storage: StorageConfig,
    #[serde(default)]
    pub metadata: MetadataConfig,
    #[serde(default)]
    pub limits: LimitsConfig,
    #[serde(default, skip_serializing_if = "ProxyConfig::is_empty")]
    pub proxy: ProxyConfig,
    /// Who may do what; without it the registry is open.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<auth::AuthConfig>,
    /// How clients reach this registry (`https://registry.example.com`): the token service's
    /// realm in challenges. Without it, each challenge names the host the request was sent to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_url: Option<String>,
    /// Proxies (addresses or CIDR ranges) whose `X-Forwarded-For`, `-Proto` and `-Host` headers
    /// are believed; from anyone else they are ignored.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trusted_proxies: Vec<String>,
    #[serde(default, skip_serializing_if = "MetricsConfig::is_default")]
    pub metrics: MetricsConfig,
    /// Which tags garbage collection removes (see [`retention`]).
    #[serde(default, skip_serializing_if = "RetentionConfig::is_empty")]
    pub retention: RetentionConfig,
    /// Accept an image index whose child manifests are not all in the repository: a platform
    /// subset replicated with the index's original bytes (so its digest stays). Off by default:
    /// every child must be pushed before its index.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub sparse_indexes: bool,
    /// Events of changes (kept as an audit log) and the webhooks they go to.
    #[serde(default, skip_serializing_if = "NotificationsConfig::is_empty")]
    pub notifications: NotificationsConfig,
    /// Copies of pushes made as they happen (see [`replication`]).
    #[serde(default, skip_serializing_if = "ReplicationConfig::is_empty")]
    pub replication: ReplicationConfig,
    /// The web UI at `/ui/` (on by default).
    #[serde(default, skip_serializing_if = "UiConfig::is_default")]
    pub ui: UiConfig,
}

/// The web UI: browse what the caller may pull, delete what they may delete.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UiConfig {
    #[serde(default = "yes")]
    pub enabled: bool,
    /// How long a login lasts.
    #[serde(default = "default_session", with = "units::duration")]
    pub session: Duration,
}

fn yes() -> bool {
    true
}

fn default_session() -> Duration {
    Duration::from_secs(12 * 3600)
}

impl Default for UiConfig {
    fn default() -> Self {
        UiConfig { enabled: true, session: default_session() }
    }
}

impl UiConfig {
    fn is_default(&self) -> bool {
        self == &UiConfig::default()
    }
}

/// Where `/metrics` is served: on the registry's own port (the default), or on a listener of its
/// own, which keeps the numbers off the port clients reach.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
}

impl MetricsConfig {
    fn is_default(&self) -> bool {
        self == &MetricsConfig::default()
    }
}

fn default_listen() -> String {
    "127.0.0.1:5000".into()
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("./berth-data")
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: default_listen(),
            data_dir: default_data_dir(),
            log: LogConfig::default(),
            tls: None,
            storage: StorageConfig::default(),
            metadata: MetadataConfig::default(),
            limits: LimitsConfig::default(),
            proxy: ProxyConfig::default(),
            auth: None,
            external_url: None,
            trusted_proxies: Vec::new(),
            metrics: MetricsConfig::default(),
            retention: RetentionConfig::default(),
            sparse_indexes: false,
            notifications: NotificationsConfig::default(),
            replication: ReplicationConfig::default(),
            ui: UiConfig::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    #[serde(default = "default_level")]
    pub level: String,
    #[serde(default)]
    pub format: LogFormat,
}

fn default_level() -> String {
    "info".into()
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig { level: default_level(), format: LogFormat::Text }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// How often the files are checked for changes.
    #[serde(default = "default_reload", with = "duration")]
    pub reload_interval: Duration,
}

fn default_reload() -> Duration {
    Duration::from_secs(10)
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum StorageConfig {
    Filesystem {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        path: Option<PathBuf>,
        /// Objects up to this size (manifests, configs, small layers) are kept as rows of the
        /// SQLite metadata database rather than files: durable with the log sync of the commit
        /// that records them instead of a file's and its directory's. Only beside SQLite
        /// metadata (one process's store);
        /// `0` makes every new object a file (rows kept before are still read; `berth
        /// unpack-small-objects` writes them out). Default 16Ki, at most 1Mi.
        #[serde(default, skip_serializing_if = "Option::is_none", with = "size::option")]
        small_objects: Option<u64>,
    },
    Memory,
    S3(S3Config),
}

/// The largest `storage.small_objects`: rows are read whole into memory.
pub const MAX_SMALL_OBJECTS: u64 = 1 << 20;

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig::Filesystem { path: None, small_objects: None }
    }
}

/// A config error, naming the file and the field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    pub field: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.field.as_str() {
            "" | "." => write!(f, "{}: {}", self.file, self.message),
            field => write!(f, "{}: {}: {}", self.file, field, self.message),
        }
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Parses and validates YAML; `file` names the source in errors.
    pub fn from_yaml(text: &str, file: &str) -> Result<Config, ConfigError> {
        let err = |field: String, message: String| ConfigError { file: file.to_owned(), field, message };
        let config: Config = if text.trim().is_empty() {
            Config::default()
        } else {
            let de = serde_yaml::Deserializer::from_str(text);
            serde_path_to_error::deserialize(de).map_err(|e| {
                let field = e.path().to_string();
                let message = e.into_inner().to_string();
                // serde_yaml may already start its message with the path; say it once.
                let message =
                    message.strip_prefix(&format!("{field}: ")).map_or(message.clone(), str::to_owned);
                err(field, message)
            })?
        };
        config.validate().map_err(|(field, message)| err(field, message))?;
        Ok(config)
    }

    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.display().to_string(),
            field: String::new(),
            message: format!("cannot read: {e}"),
        })?;
        Config::from_yaml(&text, &path.display().to_string())
    }

    pub fn to_yaml(&self) -> String {
        serde_yaml::to_string(self).unwrap_or_default()
    }

    /// Cross-field checks; returns the offending field and why.
    pub fn validate(&self) -> Result<(), (String, String)> {
        self.validate_core().map_err(|(field, m)| (field.to_owned(), m))?;
        if let Some(auth) = &self.auth {
            auth.validate()?;
        }
        self.retention.validate()?;
        self.notifications.validate()?;
        self.replication.validate()?;
        self.proxy.validate()
    }

    fn validate_core(&self) -> Result<(), (&'static str, String)> {
        self.listen_addr().map_err(|m| ("listen", m))?;
        if self.data_dir.as_os_str().is_empty() {
            return Err(("data_dir", "must not be empty".into()));
        }
        if !matches!(self.log.format, LogFormat::Text | LogFormat::Json) {
            return Err(("log.format", "must be text or json".into()));
        }
        if self.log.level.trim().is_empty() {
            return Err(("log.level", "must not be empty (e.g. info, debug, berth=debug)".into()));
        }
        self.limits.validate()?;
        if let Some(url) = &self.external_url {
            crate::net::ExternalUrl::parse(url).map_err(|m| ("external_url", m))?;
        }
        for p in &self.trusted_proxies {
            p.parse::<crate::net::Cidr>().map_err(|m| ("trusted_proxies", m))?;
        }
        if let Some(addr) = &self.metrics.listen {
            parse_listen(addr).map_err(|m| ("metrics.listen", m))?;
        }
        if let StorageConfig::S3(s3) = &self.storage {
            s3.validate()?;
        }
        if let StorageConfig::Filesystem { small_objects: Some(n), .. } = &self.storage {
            if *n > MAX_SMALL_OBJECTS {
                return Err(("storage.small_objects", "must be at most 1Mi".into()));
            }
        }
        match (&self.storage, &self.metadata) {
            (StorageConfig::Memory, MetadataConfig::Sqlite { path: Some(_) }) => {
                return Err((
                    "metadata.path",
                    "memory storage keeps its metadata in memory too: a database file would outlive \
                     the blobs"
                        .into(),
                ));
            }
            (StorageConfig::Memory, MetadataConfig::Postgres { .. }) => {
                return Err((
                    "metadata.kind",
                    "memory storage keeps its metadata in memory too: a database would outlive the blobs"
                        .into(),
                ));
            }
            (_, MetadataConfig::Postgres { max_connections, .. })
                if !(1..=1024).contains(max_connections) =>
            {
                return Err(("metadata.max_connections", "must be between 1 and 1024".into()));
            }
            _ => {}
        }
        if let Some(tls) = &self.tls {
            if tls.cert.as_os_str().is_empty() || tls.key.as_os_str().is_empty() {
                return Err(("tls", "cert and key are both required".into()));
            }
        }
        Ok(())
    }

    pub fn listen_addr(&self) -> Result<SocketAddr, String> {
        parse_listen(&self.listen)
    }

    pub fn storage_path(&self) -> Option<PathBuf> {
        match &self.storage {
            StorageConfig::Filesystem { path, .. } => {
                Some(path.clone().unwrap_or_else(|| self.data_dir.join("storage")))
            }
            StorageConfig::Memory | StorageConfig::S3(_) => None,
        }
    }

    /// Where the SQLite database lives; `None` with memory storage, whose metadata must not
    /// outlive its blobs (a database kept across a restart would report gone blobs present).
    pub fn sqlite_path(&self) -> Option<PathBuf> {
        match (&self.metadata, &self.storage) {
            (MetadataConfig::Sqlite { path: None }, StorageConfig::Memory) => None,
            (MetadataConfig::Sqlite { path }, _) => {
                Some(path.clone().unwrap_or_else(|| self.data_dir.join("meta.db")))
            }
            (MetadataConfig::Postgres { .. }, _) => None,
        }
    }
}

/// A listen address: `IP:PORT`, `[IPv6]:PORT`, or an IPv6 address without brackets followed by
/// `:PORT` (the port is what follows the last colon). The last form lets a pod spec write
/// `$(POD_IP):5000` with the IP from the downward API, whichever family the cluster uses.
pub fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    let bad = || format!("{s:?} is not an address like 127.0.0.1:5000 or [::]:5000");
    if let Ok(addr) = s.parse() {
        return Ok(addr);
    }
    let (ip, port) = s.rsplit_once(':').ok_or_else(bad)?;
    match (ip.parse::<std::net::Ipv6Addr>(), port.parse::<u16>()) {
        (Ok(ip), Ok(port)) => Ok(SocketAddr::new(ip.into(), port)),
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests;
