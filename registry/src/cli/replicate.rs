//! `berth replicate`: its arguments, and the run with its report.

use std::path::PathBuf;

use clap::Args;

use super::secret;

#[derive(Args)]
pub struct ReplicateArgs {
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
    pub fn request(self) -> anyhow::Result<berth_registry::replicate::Request> {
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

pub async fn run(args: ReplicateArgs) -> anyhow::Result<()> {
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
