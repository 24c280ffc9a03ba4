//! `berth`: serve the registry, check a config file, hash a password for it, collect garbage, or
//! copy images between registries.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use berth_core::config::{Config, LogFormat, TlsConfig};
use berth_registry::server;
use clap::{Args, Parser, Subcommand};

mod cli;

use cli::gc::GcArgs;
use cli::replicate::ReplicateArgs;

#[derive(Parser)]
#[command(name = "berth", version, about = "Berth: an OCI container registry and pull-through cache")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the registry (with no configuration: 127.0.0.1:5000, data in ./berth-data).
    Serve(ServeArgs),
    /// Validate a config file and explain what is wrong with it.
    CheckConfig {
        /// The YAML config file.
        file: PathBuf,
    },
    /// Read a password from stdin and print its bcrypt hash, for an htpasswd file
    /// (`user:<hash>`) or a robot's `secret_hash`.
    HashPassword {
        /// bcrypt cost (4..=31); each step doubles the work of every login.
        #[arg(long, default_value_t = 10)]
        cost: u32,
    },
    /// Run a garbage collection on a running registry, through its admin API (a user or robot
    /// granted `admin`); prints what was removed, and exits non-zero if the run failed.
    Gc(GcArgs),
    /// Copy images between two registries (any that speak the distribution API), keeping their
    /// digests, with their index children and referrers (signatures, SBOMs); what is there
    /// already is skipped. Prints a summary (or the report), and exits non-zero if an image failed.
    Replicate(Box<ReplicateArgs>),
    /// Once every replica on a PostgreSQL database runs this Berth (a rolling upgrade is over):
    /// rule older Berths out of the database, so that blobs pushed in pieces to object storage
    /// stay where their uploads wrote them instead of being copied (older code would look for
    /// them at their digests' keys). Replicas do it by themselves once nothing older is
    /// connected; this does it at once. Takes the same config as `serve`.
    ContractSchema(ServeArgs),
    /// Before running a Berth older than this one on a filesystem store (a rollback), with berth
    /// stopped: write every small object it keeps as a row (`storage.small_objects`) out as a
    /// file, and remove the row. Takes the same config as `serve`.
    UnpackSmallObjects(ServeArgs),
    /// Point this node's containerd (and CRI-O) at a Registry: writes the hosts files a plan
    /// (rendered by berth-operator) asks for, keeps them in step with it, and removes them on
    /// SIGTERM. Runs in a Registry's `spec.nodeMirror` DaemonSet.
    NodeMirror(NodeMirrorArgs),
}

#[derive(Args)]
struct NodeMirrorArgs {
    /// The plan (JSON), re-read every few seconds.
    #[arg(long)]
    plan: PathBuf,
    /// Serve /readyz here (200 when the node is configured as planned, else 503 and why), e.g.
    /// `$(POD_IP):9103`.
    #[arg(long)]
    listen: Option<String>,
    /// Log filter.
    #[arg(long, default_value = "info", env = "BERTH_LOG_LEVEL")]
    log_level: String,
}

#[derive(Args)]
struct ServeArgs {
    /// YAML config file; flags and BERTH_* variables override what it says.
    #[arg(long, short, env = "BERTH_CONFIG")]
    config: Option<PathBuf>,
    /// Address to listen on, e.g. 0.0.0.0:5000. In a pod that shares its network with others
    /// (hostNetwork), bind the pod's own IP: `$(POD_IP):5000`, with POD_IP from the downward API.
    #[arg(long, env = "BERTH_LISTEN")]
    listen: Option<String>,
    /// Address of a listener of its own for /metrics and /readyz (plain HTTP), e.g.
    /// 0.0.0.0:9102; with a shared network, `$(POD_IP):9102` as for --listen.
    #[arg(long, env = "BERTH_METRICS_LISTEN")]
    metrics_listen: Option<String>,
    /// Directory for content and metadata.
    #[arg(long, env = "BERTH_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Log filter, e.g. info, debug, berth_registry=debug.
    #[arg(long, env = "BERTH_LOG_LEVEL")]
    log_level: Option<String>,
    /// Log format: text or json.
    #[arg(long, env = "BERTH_LOG_FORMAT", value_parser = ["text", "json"])]
    log_format: Option<String>,
    /// TLS certificate (PEM); with --tls-key, serves HTTPS.
    #[arg(long, env = "BERTH_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long, env = "BERTH_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
}

impl ServeArgs {
    fn config(self) -> anyhow::Result<Config> {
        let mut c = match &self.config {
            Some(path) => Config::from_file(path)?,
            None => Config::default(),
        };
        if let Some(v) = self.listen {
            c.listen = v;
        }
        if let Some(v) = self.metrics_listen {
            c.metrics.listen = Some(v);
        }
        if let Some(v) = self.data_dir {
            c.data_dir = v;
        }
        if let Some(v) = self.log_level {
            c.log.level = v;
        }
        if let Some(v) = self.log_format {
            c.log.format = if v == "json" { LogFormat::Json } else { LogFormat::Text };
        }
        if let (Some(cert), Some(key)) = (self.tls_cert, self.tls_key) {
            let reload_interval =
                c.tls.as_ref().map_or(std::time::Duration::from_secs(10), |t| t.reload_interval);
            c.tls = Some(TlsConfig { cert, key, reload_interval });
        }
        c.validate().map_err(|(field, msg)| anyhow::anyhow!("{field}: {msg}"))?;
        Ok(c)
    }
}

fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log.level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match config.log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let config = args.config()?;
    init_logging(&config);
    raise_open_files(config.limits.max_connections);
    let addr = config.listen_addr().map_err(anyhow::Error::msg)?;
    let state = server::build_state(&config).await?;
    let listener =
        tokio::net::TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr}"))?;
    let scheme = if config.tls.is_some() { "https" } else { "http" };
    tracing::info!(
        address = %listener.local_addr()?,
        data_dir = %config.data_dir.display(),
        "berth {} listening on {scheme}://{}",
        env!("CARGO_PKG_VERSION"),
        listener.local_addr()?
    );
    server::serve(&config, state, listener, server::shutdown_signal()).await?;
    Ok(())
}

async fn node_mirror(args: NodeMirrorArgs) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(&args.log_level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).json().init();
    let listener = match &args.listen {
        Some(a) => {
            let addr = berth_core::config::parse_listen(a).map_err(anyhow::Error::msg)?;
            Some(
                tokio::net::TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("cannot listen on {addr}"))?,
            )
        }
        None => None,
    };
    berth_registry::nodemirror::run(args.plan, listener, server::shutdown_signal()).await
}

/// Lifts the soft limit on open files to the hard one: every connection is a descriptor, and
/// `limits.max_connections` (4,096 by default) is above the usual soft limit of 1,024.
#[allow(unsafe_code)]
fn raise_open_files(connections: usize) {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: plain system calls on a local struct.
    let ok = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0;
    if ok && lim.rlim_cur < lim.rlim_max {
        lim.rlim_cur = lim.rlim_max;
        // SAFETY: as above.
        unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) };
    }
    // Leave room for storage, the database and the metrics listener beside the connections.
    let wanted = connections as u64 + 256;
    if ok && lim.rlim_cur < wanted {
        tracing::warn!(
            open_files = lim.rlim_cur,
            max_connections = connections,
            "the open-files limit is below what limits.max_connections needs; raise it (ulimit -n)"
        );
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig { file } => match Config::from_file(&file) {
            Ok(c) => {
                println!("{}: ok (listen {}, data in {})", file.display(), c.listen, c.data_dir.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        },
        Command::HashPassword { cost } => {
            let mut password = String::new();
            if let Err(e) = std::io::stdin().read_line(&mut password) {
                eprintln!("berth: reading the password: {e}");
                return ExitCode::FAILURE;
            }
            let password = password.trim_end_matches(['\n', '\r']);
            if password.is_empty() {
                eprintln!(
                    "berth: give the password on stdin, e.g. `printf %s \"$PASSWORD\" | berth hash-password`"
                );
                return ExitCode::FAILURE;
            }
            match bcrypt::hash(password, cost) {
                Ok(h) => {
                    println!("{h}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("berth: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Serve(args) => run(serve(args)),
        Command::Gc(args) => run(async move { berth_registry::gc::client::run(&args.request()?).await }),
        Command::Replicate(args) => run(cli::replicate::run(*args)),
        Command::NodeMirror(args) => run(node_mirror(args)),
        Command::UnpackSmallObjects(args) => run(async move {
            let n = server::unpack_small_objects(&args.config()?).await?;
            println!("{n} small objects written out as files; an older berth finds them");
            Ok(())
        }),
        Command::ContractSchema(args) => {
            run(async move {
                let (before, now) = server::contract_schema(&args.config()?).await?;
                if before == now {
                    println!("the database needs berth schema {now} or newer already; nothing to do");
                } else {
                    println!("berths older than schema {now} may no longer start on the database (before: {before})");
                }
                Ok(())
            })
        }
    }
}

/// Runs `f` on a runtime of its own; its error, if any, is printed and fails the process.
fn run(f: impl std::future::Future<Output = anyhow::Result<()>>) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("berth: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(f) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("berth: {e:#}");
            ExitCode::FAILURE
        }
    }
}
