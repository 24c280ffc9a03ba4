//! `berth`: serve the registry, check a config file, hash a password for it, collect garbage, or
//! copy images between registries.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use berth_core::config::{Config, LogFormat, TlsConfig};
use berth_registry::server;
use clap::{Args, Parser, Subcommand};

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
struct ReplicateArgs {
    /// The source registry, e.g. https://registry.example.
    #[arg(long)]
    from: String,
    /// The destination registry.
    #[arg(long)]
    to: String,
    /// Images: `repository` (its tags, through --tag and --exclude-tag), `repository:tag` or
    /// `repository@digest`.
    #[arg(required_unless_present = "all")]
    images: Vec<String>,
    /// Every repository the source's catalog lists (through --repository globs).
    #[arg(long)]
    all: bool,
    /// With --all, only repositories matching this glob (repeatable; `*` within a path part,
    /// `**` across parts).
    #[arg(long = "repository", requires = "all")]
    repositories: Vec<String>,
    /// Copy only tags matching this glob (repeatable; `*` matches any characters).
    #[arg(long = "tag")]
    tags: Vec<String>,
    /// Leave out tags matching this glob (repeatable).
    #[arg(long = "exclude-tag")]
    exclude_tags: Vec<String>,
    /// Copy only tags this regular expression matches whole (repeatable; with --tag, a tag
    /// either matches is copied).
    #[arg(long = "tag-regex")]
    tag_regexes: Vec<String>,
    /// Leave out tags this regular expression matches whole (repeatable).
    #[arg(long = "exclude-tag-regex")]
    exclude_tag_regexes: Vec<String>,
    /// Copy only tags that are versions in this semver range, e.g. '>=1.2, <2' (`v1.2` is 1.2.0).
    #[arg(long)]
    semver: Option<String>,
    /// Keep a destination tag that names another digest as it is (not with --delete mirror).
    #[arg(long)]
    no_overwrite: bool,
    /// For a repository copied whole: none (the default), tags (tags the source no longer has are
    /// deleted at the destination) or mirror (and their manifests: the destination's tags equal
    /// the source's).
    #[arg(long, default_value = "none", value_parser = ["none", "tags", "mirror"])]
    delete: String,
    #[arg(long, env = "BERTH_FROM_USERNAME")]
    from_username: Option<String>,
    /// File holding the source's password (else BERTH_FROM_PASSWORD).
    #[arg(long)]
    from_password_file: Option<PathBuf>,
    #[arg(long, env = "BERTH_TO_USERNAME")]
    to_username: Option<String>,
    /// File holding the destination's password (else BERTH_TO_PASSWORD).
    #[arg(long)]
    to_password_file: Option<PathBuf>,
    /// CA certificate (PEM) to trust for the source's TLS.
    #[arg(long)]
    from_ca_file: Option<PathBuf>,
    /// CA certificate (PEM) to trust for the destination's TLS.
    #[arg(long)]
    to_ca_file: Option<PathBuf>,
    /// A docker config.json or podman auth.json holding both registries' credentials (its
    /// `auths`, or the credential helpers it names), for a side without a username.
    #[arg(long)]
    authfile: Option<PathBuf>,
    /// As --authfile, for the source only.
    #[arg(long)]
    from_authfile: Option<PathBuf>,
    /// As --authfile, for the destination only.
    #[arg(long)]
    to_authfile: Option<PathBuf>,
    /// Do not verify the source's TLS certificate.
    #[arg(long)]
    from_insecure: bool,
    /// Do not verify the destination's TLS certificate.
    #[arg(long)]
    to_insecure: bool,
    /// List what would be copied; write nothing.
    #[arg(long)]
    dry_run: bool,
    /// Images copied at once.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=256))]
    jobs: u16,
    /// Requests per second to each registry, at most (e.g. 20; spread evenly).
    #[arg(long)]
    rate: Option<f64>,
    /// Blob bytes per second sent, at most, all blobs together (e.g. 10MiB).
    #[arg(long, value_parser = |s: &str| berth_core::config::size::parse(s))]
    bandwidth: Option<u64>,
    /// Copy only an index's children for this platform (repeatable; os/architecture[/variant]),
    /// keeping the index's bytes and digest: the destination must accept sparse indexes.
    #[arg(long = "platform")]
    platforms: Vec<String>,
    /// Replicate only the source's repositories under this path, named without it at the
    /// destination (e.g. `library`: library/nginx goes to nginx).
    #[arg(long, default_value = "")]
    from_prefix: String,
    /// Put this path before each repository's name at the destination (e.g. `mirror`:
    /// team/app goes to mirror/team/app).
    #[arg(long, default_value = "")]
    to_prefix: String,
    /// Leave referrers (signatures, SBOMs, attestations) behind.
    #[arg(long)]
    no_referrers: bool,
    /// Progress on stderr: a line redrawn on a terminal, JSON lines otherwise (auto), or none.
    #[arg(long, default_value = "auto", value_parser = ["auto", "terminal", "json", "none"])]
    progress: String,
    /// Also write a one-line JSON summary of the run (or its error) to this file, e.g. a
    /// container's termination message path, where a controller reads how the run went.
    #[arg(long)]
    report_file: Option<PathBuf>,
    /// Output: text (a summary) or json (the whole report).
    #[arg(long, default_value = "text", value_parser = ["text", "json"])]
    output: String,
}

impl ReplicateArgs {
    fn request(self) -> anyhow::Result<berth_registry::replicate::Request> {
        use berth_registry::replicate::{Deletes, Progress, Request, Side};
        let deletes: Deletes = self.delete.parse().map_err(anyhow::Error::msg)?;
        if deletes == Deletes::Mirror && self.no_overwrite {
            anyhow::bail!("--delete mirror makes the destination's tags equal the source's: it overwrites, so --no-overwrite cannot go with it");
        }
        let side = |url, username, file: Option<PathBuf>, env: &str, ca_file, insecure, authfile| {
            anyhow::Ok(Side {
                url,
                username,
                password: secret(file.as_ref(), env)?,
                ca_file,
                insecure,
                authfile,
            })
        };
        Ok(Request {
            from: side(
                self.from,
                self.from_username,
                self.from_password_file,
                "BERTH_FROM_PASSWORD",
                self.from_ca_file,
                self.from_insecure,
                self.from_authfile.or_else(|| self.authfile.clone()),
            )?,
            to: side(
                self.to,
                self.to_username,
                self.to_password_file,
                "BERTH_TO_PASSWORD",
                self.to_ca_file,
                self.to_insecure,
                self.to_authfile.or(self.authfile),
            )?,
            images: self.images,
            all: self.all,
            repositories: self.repositories,
            tags: berth_registry::replicate::TagRules {
                globs: self.tags,
                regexes: self.tag_regexes,
                exclude_globs: self.exclude_tags,
                exclude_regexes: self.exclude_tag_regexes,
                semver: self.semver,
            },
            no_overwrite: self.no_overwrite,
            deletes,
            dry_run: self.dry_run,
            jobs: usize::from(self.jobs),
            rate: self.rate,
            bandwidth: self.bandwidth,
            platforms: self.platforms,
            from_prefix: self.from_prefix,
            to_prefix: self.to_prefix,
            no_referrers: self.no_referrers,
            progress: match self.progress.as_str() {
                "terminal" => Progress::Terminal,
                "json" => Progress::JsonLines,
                "none" => Progress::None,
                _ if std::io::IsTerminal::is_terminal(&std::io::stderr()) => Progress::Terminal,
                _ => Progress::JsonLines,
            },
        })
    }
}

/// A password from its file (its last line break dropped), else from the variable `env`.
fn secret(file: Option<&PathBuf>, env: &str) -> anyhow::Result<Option<String>> {
    match file {
        Some(f) => Ok(Some(
            std::fs::read_to_string(f)
                .with_context(|| format!("reading {}", f.display()))?
                .trim_end_matches(['\n', '\r'])
                .to_owned(),
        )),
        None => Ok(std::env::var(env).ok()),
    }
}

async fn replicate(args: ReplicateArgs) -> anyhow::Result<()> {
    let json = args.output == "json";
    let report_file = args.report_file.clone();
    let outcome = match args.request() {
        Ok(request) => berth_registry::replicate::run(&request).await,
        Err(e) => Err(e),
    };
    if let Some(path) = &report_file {
        let line = match &outcome {
            Ok(report) => report.brief(),
            Err(e) => serde_json::json!({"error": format!("{e:#}")}),
        };
        if let Err(e) = std::fs::write(path, line.to_string()) {
            eprintln!("berth replicate: could not write the summary to {}: {e}", path.display());
        }
    }
    let report = outcome?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        for f in &report.failed {
            eprintln!("failed: {}: {}", f.image, f.error);
        }
        println!("{}", report.summary());
    }
    if !report.failed.is_empty() {
        anyhow::bail!("{} of the images failed", report.failed.len());
    }
    Ok(())
}

#[derive(Args)]
struct GcArgs {
    /// The registry, e.g. https://berth.example:5000.
    #[arg(long, env = "BERTH_URL")]
    url: String,
    /// User or robot name.
    #[arg(long, env = "BERTH_USERNAME")]
    username: Option<String>,
    /// File holding the password or robot secret (else BERTH_PASSWORD).
    #[arg(long, env = "BERTH_PASSWORD_FILE")]
    password_file: Option<PathBuf>,
    /// Report what would be removed; remove nothing.
    #[arg(long)]
    dry_run: bool,
    /// Keep anything younger than this (e.g. 30m, 2h, 0s); one hour by default.
    #[arg(long)]
    grace: Option<String>,
    /// Keep manifests no tag reaches; collect only blobs nothing needs.
    #[arg(long)]
    keep_untagged: bool,
    /// Also release stored objects no metadata knows (older than a day) and remove the objects of
    /// upload sessions gone.
    #[arg(long)]
    scrub: bool,
    /// Scrub, and read every live blob to check it against its digest (reads all stored bytes).
    #[arg(long)]
    verify: bool,
    /// Look only at the repositories changed since a collection last looked at them (the review
    /// queue), not at every repository.
    #[arg(long)]
    queued: bool,
    /// CA certificate (PEM) to trust for the registry's TLS.
    #[arg(long)]
    ca_file: Option<PathBuf>,
    /// Do not verify the registry's TLS certificate.
    #[arg(long)]
    insecure: bool,
    /// Output: text (a summary) or json (the whole report).
    #[arg(long, default_value = "text", value_parser = ["text", "json"])]
    output: String,
    /// Also write a one-line JSON summary of the run (or its error) to this file, e.g. a
    /// container's termination message path, where a controller reads how the run went.
    #[arg(long)]
    report_file: Option<PathBuf>,
}

impl GcArgs {
    fn request(self) -> anyhow::Result<berth_registry::gc::client::Request> {
        let password = secret(self.password_file.as_ref(), "BERTH_PASSWORD")?;
        Ok(berth_registry::gc::client::Request {
            url: self.url,
            username: self.username,
            password,
            dry_run: self.dry_run,
            grace: self.grace,
            keep_untagged: self.keep_untagged,
            scrub: self.scrub,
            verify: self.verify,
            queued: self.queued,
            ca_file: self.ca_file,
            insecure: self.insecure,
            json: self.output == "json",
            report_file: self.report_file,
        })
    }
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
        Command::Replicate(args) => run(replicate(*args)),
        Command::NodeMirror(args) => run(node_mirror(args)),
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
