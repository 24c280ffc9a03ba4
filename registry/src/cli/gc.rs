//! `berth gc`: its arguments, turned into a request to a running registry's admin API.

use std::path::PathBuf;

use clap::Args;

use super::secret;

#[derive(Args)]
pub struct GcArgs {
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
    pub fn request(self) -> anyhow::Result<berth_registry::gc::client::Request> {
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
