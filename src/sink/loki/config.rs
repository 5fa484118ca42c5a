//! The Loki sink's flags, and the checked configuration they make: the
//! URL, labels, credentials (read from files or the environment, never
//! taken on the command line), TLS files, batching and the queue.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;

use super::batch::Limits;
use super::encoding::Encoding;
use super::labels::{self, ContainerLabel, LabelConfig, StaticLabel};
use crate::cli::{parse_size, parse_timeout};
use crate::sink::url::SinkUrl;

/// Loki's push path, used when the URL gives none.
pub const DEFAULT_PATH: &str = "/loki/api/v1/push";
/// The queue of batches waiting for Loki's acknowledgement.
pub const DEFAULT_QUEUE_BYTES: usize = 16 << 20;
/// Environment variables that may hold the secrets.
pub const PASSWORD_ENV: &str = "LOKI_PASSWORD";
pub const BEARER_TOKEN_ENV: &str = "LOKI_BEARER_TOKEN";

#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Shipping to Grafana Loki (instead of --output)")]
pub struct LokiArgs {
    /// Send every record to Loki's push API at this URL instead of writing
    /// --output: http://HOST[:PORT][/PATH] or https://… (the path defaults
    /// to /loki/api/v1/push). One destination per agent. A container's
    /// checkpoint moves only over lines Loki acknowledged; while Loki is
    /// down, reading pauses and dockerd's own log files hold the lines.
    #[arg(long, value_name = "URL", conflicts_with = "output")]
    pub loki: Option<String>,

    /// `protobuf` (Snappy-compressed, Loki's native push format) or `json`
    /// (gzip-compressed).
    #[arg(long, value_name = "ENCODING", default_value = "protobuf", requires = "loki")]
    pub loki_encoding: Encoding,

    /// Container id and image as Loki structured metadata: `auto` sends
    /// them while Loki takes them, and when a Loki refuses them (2.9's
    /// default limits, 3.x on a schema older than v13, 2.8's JSON decoder)
    /// sends the same lines again without them and from then on, saying so
    /// once; `always` keeps them (a refusing Loki then holds every push: the
    /// lines wait until it allows them); `never` sends none.
    #[arg(long, value_name = "WHEN", default_value = "auto", requires = "loki")]
    pub loki_structured_metadata: MetadataMode,

    /// Add a static label to every stream, e.g. `env=prod`. Repeat for
    /// several. `host=NAME` replaces the host name. Each stream already has
    /// host, container, compose_project, compose_service (when set) and
    /// stream; container id and image go as structured metadata.
    #[arg(long, value_name = "NAME=VALUE", value_parser = parse_static_label, requires = "loki")]
    pub loki_label: Vec<StaticLabel>,

    /// Copy a container label into a Loki label, e.g. `com.example.team`
    /// (becomes `com_example_team`) or `com.example.team=team`. Repeat for
    /// several; keep them few and of few values (each value makes streams).
    #[arg(long, value_name = "DOCKER_LABEL[=NAME]", value_parser = parse_container_label, requires = "loki")]
    pub loki_container_label: Vec<ContainerLabel>,

    /// Tenant (sent as X-Scope-OrgID), for a multi-tenant Loki.
    #[arg(long, value_name = "ID", requires = "loki")]
    pub loki_tenant: Option<String>,

    /// Basic-auth user name; the password comes from --loki-password-file
    /// or the LOKI_PASSWORD environment variable.
    #[arg(long, value_name = "USER", requires = "loki")]
    pub loki_username: Option<String>,

    /// File holding the basic-auth password (one line; a final newline is
    /// ignored).
    #[arg(long, value_name = "PATH", requires = "loki_username")]
    pub loki_password_file: Option<PathBuf>,

    /// File holding a bearer token (sent as `Authorization: Bearer …`), or
    /// set LOKI_BEARER_TOKEN.
    #[arg(long, value_name = "PATH", requires = "loki", conflicts_with = "loki_username")]
    pub loki_bearer_token_file: Option<PathBuf>,

    /// Add a header to every push, e.g. `X-Team: infra`. Repeat for several.
    #[arg(long, value_name = "NAME: VALUE", requires = "loki")]
    pub loki_header: Vec<String>,

    /// Send a batch once it holds this much (lines and metadata).
    #[arg(long, value_name = "BYTES", default_value = "1MiB", value_parser = parse_size, requires = "loki")]
    pub loki_batch_bytes: usize,

    /// A backlog of batches (after an outage, behind a slow Loki) goes in
    /// pushes of up to this size (encoded, before compression; never below
    /// --loki-batch-bytes), so it drains in few round trips. Loki refuses a
    /// push above its gRPC message limit (grpc_server_max_recv_msg_size,
    /// 4 MB by default) with 500 "larger than max": the push is then cut
    /// in two and this limit halved.
    #[arg(long, value_name = "BYTES", default_value = "3MiB", value_parser = parse_size, requires = "loki")]
    pub loki_max_push_bytes: usize,

    /// Send a batch at the latest this long after its first line.
    #[arg(
        long,
        value_name = "DURATION",
        default_value = "1s",
        value_parser = parse_timeout,
        allow_hyphen_values = true,
        requires = "loki"
    )]
    pub loki_batch_wait: Duration,

    /// Cut lines longer than this (Loki refuses longer lines for good; its
    /// default max_line_size is 256KB); the entry ends with "…[truncated]"
    /// and carries truncated="true".
    #[arg(long, value_name = "BYTES", default_value = "256KiB", value_parser = parse_size, requires = "loki")]
    pub loki_max_line_bytes: usize,

    /// Batches waiting for Loki's acknowledgement may hold this much memory;
    /// when full, log streams pause (their lines wait in dockerd's files).
    #[arg(long, value_name = "BYTES", default_value = "16MiB", value_parser = parse_size, requires = "loki")]
    pub sink_queue_bytes: usize,

    /// Give up on a push whose answer has not come after this (it is sent
    /// again).
    #[arg(
        long,
        value_name = "DURATION",
        default_value = "30s",
        value_parser = parse_timeout,
        allow_hyphen_values = true,
        requires = "loki"
    )]
    pub sink_timeout: Duration,

    /// A push that has been sent whole and has had no byte of an answer
    /// after this goes again on a second connection (the first one keeps
    /// waiting; whichever answers first counts, Loki drops the copy). A
    /// receiver that holds a request without answering then costs this,
    /// not --sink-timeout. `0s` turns it off, as does a value not below
    /// --sink-timeout.
    #[arg(
        long,
        value_name = "DURATION",
        default_value = "5s",
        value_parser = crate::cli::parse_duration,
        requires = "loki"
    )]
    pub sink_hedge_after: Duration,

    /// PEM file of the certificate authorities to trust for https:// sinks,
    /// instead of the system's.
    #[arg(long, value_name = "PATH", requires = "loki")]
    pub sink_ca_file: Option<PathBuf>,

    /// PEM client certificate (chain) for mutual TLS; needs --sink-client-key.
    #[arg(long, value_name = "PATH", requires = "sink_client_key")]
    pub sink_client_cert: Option<PathBuf>,

    /// PEM private key of --sink-client-cert.
    #[arg(long, value_name = "PATH", requires = "sink_client_cert")]
    pub sink_client_key: Option<PathBuf>,

    /// Name to send in TLS SNI and to verify the certificate against,
    /// instead of the URL's host.
    #[arg(long, value_name = "NAME", requires = "loki")]
    pub sink_server_name: Option<String>,
}

fn parse_static_label(s: &str) -> Result<StaticLabel, String> {
    labels::parse_static_label(s).map_err(|e| e.to_string())
}

fn parse_container_label(s: &str) -> Result<ContainerLabel, String> {
    labels::parse_container_label(s).map_err(|e| e.to_string())
}

/// Credentials, once read.
#[derive(Clone, PartialEq, Eq)]
pub enum Auth {
    None,
    Basic { user: String, password: String },
    Bearer(String),
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Auth::None => f.write_str("None"),
            Auth::Basic { user, .. } => write!(f, "Basic {{ user: {user:?}, password: *** }}"),
            Auth::Bearer(_) => f.write_str("Bearer(***)"),
        }
    }
}

/// TLS files, as given.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFiles {
    pub ca_file: Option<PathBuf>,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    pub server_name: Option<String>,
}

/// The Loki sink's configuration, checked.
#[derive(Debug, Clone)]
pub struct LokiConfig {
    pub url: SinkUrl,
    pub encoding: Encoding,
    pub labels: LabelConfig,
    pub tenant: Option<String>,
    pub auth: Auth,
    /// Extra headers, (name, value), checked.
    pub headers: Vec<(String, String)>,
    pub limits: Limits,
    /// The largest push a backlog is merged into (at least
    /// `limits.max_bytes`).
    pub max_push: usize,
    pub queue_bytes: usize,
    pub timeout: Duration,
    /// `None`: no hedged pushes.
    pub hedge_after: Option<Duration>,
    pub tls: TlsFiles,
    pub metadata: MetadataMode,
}

/// `--loki-structured-metadata`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum MetadataMode {
    #[default]
    Auto,
    Always,
    Never,
}

impl MetadataMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Always => "always",
            Self::Never => "never",
        }
    }
}

impl std::fmt::Display for MetadataMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for MetadataMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "always" => Ok(Self::Always),
            "never" => Ok(Self::Never),
            _ => Err(format!("`{s}` is not one of auto (send while Loki takes it), always, never")),
        }
    }
}

impl LokiConfig {
    /// `None` without `--loki`. `host` is this machine's name (the `host`
    /// label); `env` reads an environment variable.
    pub fn from_args(
        a: &LokiArgs,
        host: &str,
        env: impl Fn(&str) -> Option<String>,
    ) -> anyhow::Result<Option<Self>> {
        let Some(url) = &a.loki else { return Ok(None) };
        let url = SinkUrl::parse(url, DEFAULT_PATH).map_err(|e| anyhow::anyhow!("--loki {e}"))?;
        let labels = LabelConfig::new(host, a.loki_label.clone(), a.loki_container_label.clone())
            .map_err(|e| anyhow::anyhow!("--loki-label/--loki-container-label: {e}"))?;
        let limits = Limits {
            max_bytes: a.loki_batch_bytes,
            max_age: a.loki_batch_wait,
            max_line: a.loki_max_line_bytes,
        };
        limits.check().map_err(|e| anyhow::anyhow!("--loki-batch-bytes/--loki-max-line-bytes: {e}"))?;
        if a.sink_queue_bytes < limits.max_bytes * 2 {
            bail!(
                "--sink-queue-bytes {} must hold at least two batches of --loki-batch-bytes {} (one \
                 in flight, one filling)",
                a.sink_queue_bytes,
                limits.max_bytes
            );
        }
        if a.sink_queue_bytes > 4 << 30 {
            bail!(
                "--sink-queue-bytes {} is more than 4 GiB; dockerd's log files are the buffer",
                a.sink_queue_bytes
            );
        }
        let auth = if let Some(user) = &a.loki_username {
            if user.contains(':') {
                bail!("--loki-username `{user}` cannot contain `:` (basic auth separates user and password with it)");
            }
            let password = match &a.loki_password_file {
                Some(p) => read_secret(p, "--loki-password-file")?,
                None => env(PASSWORD_ENV).filter(|s| !s.is_empty()).with_context(|| {
                    format!("--loki-username needs a password: --loki-password-file PATH or {PASSWORD_ENV}")
                })?,
            };
            Auth::Basic { user: user.clone(), password }
        } else if let Some(p) = &a.loki_bearer_token_file {
            Auth::Bearer(read_secret(p, "--loki-bearer-token-file")?)
        } else if let Some(t) = env(BEARER_TOKEN_ENV).filter(|s| !s.is_empty()) {
            Auth::Bearer(t)
        } else {
            Auth::None
        };
        if let Some(t) = &a.loki_tenant {
            check_header_value(t).map_err(|e| anyhow::anyhow!("--loki-tenant: {e}"))?;
        }
        let headers = a
            .loki_header
            .iter()
            .map(|h| parse_header(h).map_err(|e| anyhow::anyhow!("--loki-header `{h}`: {e}")))
            .collect::<anyhow::Result<Vec<_>>>()?;
        if !url.tls
            && (a.sink_ca_file.is_some() || a.sink_client_cert.is_some() || a.sink_server_name.is_some())
        {
            bail!("--sink-ca-file, --sink-client-cert and --sink-server-name need an https:// --loki URL");
        }
        if !url.tls && auth != Auth::None {
            crate::message!(
                "warning: --loki {url} is plain http: the credentials travel unencrypted; use https://"
            );
        }
        Ok(Some(LokiConfig {
            url,
            encoding: a.loki_encoding,
            labels,
            tenant: a.loki_tenant.clone(),
            auth,
            headers,
            max_push: a.loki_max_push_bytes.clamp(limits.max_bytes, crate::sink::loki::batch::MAX_LIMIT),
            limits,
            queue_bytes: a.sink_queue_bytes,
            timeout: a.sink_timeout,
            // Past the push's own deadline a second try is just the retry.
            hedge_after: (!a.sink_hedge_after.is_zero() && a.sink_hedge_after < a.sink_timeout)
                .then_some(a.sink_hedge_after),
            metadata: a.loki_structured_metadata,
            tls: TlsFiles {
                ca_file: a.sink_ca_file.clone(),
                client_cert: a.sink_client_cert.clone(),
                client_key: a.sink_client_key.clone(),
                server_name: a.sink_server_name.clone(),
            },
        }))
    }
}

/// Headers the agent sets itself and that `--loki-header` cannot replace.
const OWN_HEADERS: [&str; 7] = [
    "host",
    "content-length",
    "content-type",
    "content-encoding",
    "transfer-encoding",
    "connection",
    "x-scope-orgid",
];

fn parse_header(h: &str) -> Result<(String, String), String> {
    let (name, value) = h.split_once(':').ok_or("write it as `Name: value`")?;
    let (name, value) = (name.trim(), value.trim());
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
    {
        return Err(format!("`{name}` is not a header name"));
    }
    if OWN_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
        return Err(format!("the agent sets {name} itself (the tenant: --loki-tenant)"));
    }
    if name.eq_ignore_ascii_case("authorization") {
        return Err("credentials do not go on the command line: use --loki-password-file or \
                    --loki-bearer-token-file"
            .into());
    }
    check_header_value(value)?;
    Ok((name.to_owned(), value.to_owned()))
}

fn check_header_value(v: &str) -> Result<(), String> {
    if v.is_empty() {
        return Err("the value is empty".into());
    }
    if v.bytes().any(|b| (b < b' ' && b != b'\t') || b == 0x7f) {
        return Err("the value has control characters (a newline would end the header)".into());
    }
    Ok(())
}

/// A secret from a file: its first line, without the line end. Refused if
/// empty, so a missing secret is not sent as "".
fn read_secret(path: &Path, flag: &str) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path).with_context(|| format!("{flag} {}", path.display()))?;
    let line = text.lines().next().unwrap_or("").trim_end_matches('\r');
    if line.is_empty() {
        bail!("{flag} {}: the file is empty", path.display());
    }
    check_header_value(line).map_err(|e| anyhow::anyhow!("{flag} {}: {e}", path.display()))?;
    Ok(line.to_owned())
}

/// `16 MiB`, `512 KiB`, `100 B`: sizes in messages.
pub fn human_bytes(n: usize) -> String {
    if n >= 1 << 20 && n % (1 << 20) == 0 {
        format!("{} MiB", n >> 20)
    } else if n >= 1 << 10 && n % (1 << 10) == 0 {
        format!("{} KiB", n >> 10)
    } else {
        format!("{n} B")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[arg(long, default_value = "-")]
        output: String,
        #[command(flatten)]
        loki: LokiArgs,
    }

    fn cfg(args: &[&str]) -> anyhow::Result<Option<LokiConfig>> {
        let t = T::try_parse_from(std::iter::once("t").chain(args.iter().copied()))?;
        LokiConfig::from_args(&t.loki, "node1", |_| None)
    }

    #[test]
    fn defaults() {
        assert!(cfg(&[]).unwrap().is_none());
        let c = cfg(&["--loki", "http://127.0.0.1:3100"]).unwrap().unwrap();
        assert_eq!(c.url.path, DEFAULT_PATH);
        assert_eq!(c.encoding, Encoding::Protobuf);
        assert_eq!(c.limits, Limits::default());
        assert_eq!(c.queue_bytes, DEFAULT_QUEUE_BYTES);
        assert_eq!(c.auth, Auth::None);
    }

    #[test]
    fn refusals() {
        for (args, says) in [
            (&["--loki", "http://l", "--output", "x"][..], "cannot be used with"),
            (&["--loki-tenant", "t"][..], "--loki"),
            (&["--loki", "http://l", "--loki-header", "Authorization: x"][..], "credentials"),
            (&["--loki", "http://l", "--loki-header", "X-A"][..], "Name: value"),
            (&["--loki", "http://l", "--loki-username", "u"][..], "needs a password"),
            (&["--loki", "http://l", "--sink-ca-file", "/x"][..], "https://"),
            (&["--loki", "http://l", "--sink-queue-bytes", "1MiB"][..], "two batches"),
            (&["--loki", "http://l", "--loki-label", "stream=x"][..], "stream"),
        ] {
            let e = format!("{:#}", cfg(args).unwrap_err());
            assert!(e.contains(says), "{args:?}: {e}");
        }
    }

    #[test]
    fn secrets_come_from_files_or_env() {
        let dir = std::env::temp_dir().join(format!("lc-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let pw = dir.join("pw");
        std::fs::write(&pw, "s3cret\n").unwrap();
        let t = T::try_parse_from([
            "t",
            "--loki",
            "https://l",
            "--loki-username",
            "u",
            "--loki-password-file",
            pw.to_str().unwrap(),
        ])
        .unwrap();
        let c = LokiConfig::from_args(&t.loki, "h", |_| None).unwrap().unwrap();
        assert_eq!(c.auth, Auth::Basic { user: "u".into(), password: "s3cret".into() });
        assert!(!format!("{c:?}").contains("s3cret"));
        let t = T::try_parse_from(["t", "--loki", "https://l"]).unwrap();
        let c = LokiConfig::from_args(&t.loki, "h", |k| (k == BEARER_TOKEN_ENV).then(|| "tok".into()))
            .unwrap()
            .unwrap();
        assert_eq!(c.auth, Auth::Bearer("tok".into()));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
