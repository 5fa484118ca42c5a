//! `--config FILE`: the agent's settings in a TOML file, merged under the
//! command line; and `log-capturer config`, which prints the merged result
//! as such a file.
//!
//! No setting is known here by name. The keys are the long flags of the
//! agent's `clap` command (`docker-host`, `loki-label`, …), so every flag,
//! today's and tomorrow's, is a key without code of its own; a value goes
//! through the flag's own value parser, so the file obeys the same rules
//! and gets the same messages as the command line, plus file:line:column.
//!
//! Merging re-parses the command line with the file's values inserted as
//! flags, for each setting given neither on the command line nor by its
//! environment variable. Precedence is therefore command line, then
//! environment, then file, then default, and a repeatable flag given on the
//! command line replaces the file's list rather than adding to it. A file
//! value that conflicts with a flag of the command line (`output` in the
//! file, `--loki` given) is dropped too, with a note: the command line
//! wins. A secret's variable (`LOKI_PASSWORD`) counts as the variable of
//! the key naming the secret's file (`loki-password-file`).
//!
//! Secrets are never written in the file: it names files that hold them
//! (`loki-password-file`), or they come from the environment.

use std::collections::BTreeSet;
use std::ffi::{OsStr, OsString};
use std::fmt::{self, Write as _};
use std::ops::Range;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context};
use clap::builder::Resettable;
use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::parser::ValueSource;
use clap::{Arg, ArgAction, ArgMatches, Command};
use toml::de::{DeTable, DeValue};
use toml::Spanned;

use crate::sink::loki::config::{BEARER_TOKEN_ENV, PASSWORD_ENV};

/// The id of the `--config` argument.
const CONFIG_ID: &str = "config";

/// The config file's longest size: a config file is a page or two; more
/// is the wrong file.
const MAX_FILE_BYTES: u64 = 1 << 20;

/// `--config PATH`, for every command that runs with the agent's settings.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ConfigFileArg {
    /// Read settings from this TOML file. Its keys are the long flags
    /// without `--` (`docker-host = "unix:///run/docker.sock"`, `loki-label
    /// = ["env=prod"]`); the command line and environment variables override
    /// it. `log-capturer config` prints the effective settings as such a
    /// file.
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
}

/// `log-capturer config`: the agent's flags, to print what they make.
#[derive(Debug, Clone, clap::Args)]
pub struct ConfigArgs {
    #[command(flatten)]
    pub agent: crate::cli::AgentArgs,

    #[command(flatten)]
    pub file: ConfigFileArg,
}

/// Secrets the file may only name a file for, and the environment
/// variable that can hold each instead.
const SECRETS: [Secret; 2] = [
    Secret { file_key: "loki-password-file", env: PASSWORD_ENV },
    Secret { file_key: "loki-bearer-token-file", env: BEARER_TOKEN_ENV },
];

struct Secret {
    file_key: &'static str,
    env: &'static str,
}

/// Words in a key that is not a setting but looks like a secret.
const SECRET_WORDS: [&str; 5] = ["password", "token", "secret", "credential", "api-key"];

/// Where a setting's value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Default,
    File,
    Env,
    Flag,
}

/// The command line parsed, with the config file's settings merged in.
pub struct Loaded<P> {
    pub cli: P,
    pub settings: Settings,
    /// File settings dropped for a conflicting flag, for the operator.
    pub notes: Vec<String>,
}

/// Every setting of the command that runs, its values and their source:
/// what `log-capturer config` prints.
pub struct Settings {
    file: Option<PathBuf>,
    rows: Vec<Row>,
}

struct Row {
    key: String,
    heading: Option<String>,
    kind: Kind,
    values: Vec<String>,
    source: Source,
    env: Option<String>,
}

/// How a flag takes values, hence what TOML type its key takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A switch: `true` or `false`.
    Switch { set: bool },
    /// A counted switch (`-vvv`): an integer.
    Count,
    /// One value: a string, integer or boolean.
    One,
    /// A repeatable flag: an array (or one value).
    Many,
}

impl Kind {
    fn of(arg: &Arg) -> Option<Self> {
        match arg.get_action() {
            ArgAction::SetTrue => Some(Self::Switch { set: true }),
            ArgAction::SetFalse => Some(Self::Switch { set: false }),
            ArgAction::Count => Some(Self::Count),
            ArgAction::Set => Some(Self::One),
            ArgAction::Append => Some(Self::Many),
            _ => None,
        }
    }

    fn allowed(self) -> &'static str {
        match self {
            Self::Switch { .. } => "true or false",
            Self::Count => "a whole number",
            Self::One => "one value (a string, or a number)",
            Self::Many => "an array of values, e.g. [\"a\", \"b\"] (or one value)",
        }
    }
}

/// Parse `argv` (with the program name first) into `P`, merging in the
/// file named by `--config` if the command that runs has that flag. Help,
/// `--version` and command-line errors without a config file exit here, as
/// `P::parse` would.
pub fn parse<P: clap::Parser>(argv: Vec<OsString>) -> anyhow::Result<Loaded<P>> {
    let root = P::command();
    let first = match root.clone().try_get_matches_from(&argv) {
        Ok(m) => m,
        Err(e) if !e.use_stderr() => e.exit(),
        // A flag may need one that the file gives (`--loki-tenant` on the
        // command line, `loki` in the file): look for --config in what
        // could be parsed, and let the merged parse below judge.
        Err(e) => match root.clone().ignore_errors(true).try_get_matches_from(&argv) {
            Ok(m) if config_path(leaf(&m).1).is_some() => m,
            _ => e.exit(),
        },
    };
    let (path, first_leaf, leaf_cmd) = {
        let (names, m) = leaf(&first);
        let mut cmd = &root;
        for name in &names {
            cmd = cmd.find_subcommand(name).expect("clap matched this subcommand");
        }
        (names, m, cmd)
    };
    let Some(file_path) = config_path(first_leaf) else {
        let cli = P::from_arg_matches(&first).unwrap_or_else(|e| e.exit());
        let settings = Settings::collect(leaf_cmd, first_leaf, first_leaf, None, &BTreeSet::new());
        return Ok(Loaded { cli, settings, notes: Vec::new() });
    };

    let file = FileSettings::read(&file_path, &root)?;
    let given = |id: &str| given_by_flag_or_env(leaf_cmd, first_leaf, id);
    let mut inserted = Vec::new();
    let mut applied = BTreeSet::new();
    let mut notes = Vec::new();
    for entry in &file.entries {
        let Some(arg) = leaf_cmd.get_arguments().find(|a| a.get_id() == entry.id.as_str()) else {
            continue;
        };
        if given(&entry.id) || secret_in_env(arg) {
            continue;
        }
        if let Some(flag) = conflicting_given(leaf_cmd, arg, &given) {
            let key = arg.get_long().unwrap_or_default();
            notes.push(format!(
                "{}: `{key}` is not used: --{flag} is given and cannot be used with it",
                file_path.display()
            ));
            continue;
        }
        // A default restated (as `log-capturer config` prints them) changes
        // nothing, and as a flag would set off its `requires`
        // (`loki-encoding` without `loki`).
        if !entry.is_default(arg) {
            inserted.extend(entry.argv.iter().map(OsString::from));
        }
        applied.insert(entry.id.clone());
    }
    // File values go right after the subcommand's name, where that
    // command's flags start; nothing before it is a flag of it.
    let at = 1 + path.len();
    if argv.len() < at || argv[1..at].iter().zip(&path).any(|(a, n)| a != OsStr::new(n)) {
        bail!("put --config after the subcommand's name, e.g. `log-capturer check --config FILE`");
    }
    let merged: Vec<OsString> =
        argv[..at].iter().cloned().chain(inserted).chain(argv[at..].iter().cloned()).collect();
    let matches = root.clone().try_get_matches_from(merged).map_err(|e| merged_error(&e, &file_path))?;
    let cli = P::from_arg_matches(&matches).map_err(|e| merged_error(&e, &file_path))?;
    let (_, final_leaf) = leaf(&matches);
    let settings = Settings::collect(leaf_cmd, final_leaf, first_leaf, Some(&file_path), &applied);
    Ok(Loaded { cli, settings, notes })
}

/// The subcommand path that matched and its matches.
fn leaf(m: &ArgMatches) -> (Vec<String>, &ArgMatches) {
    let mut names = Vec::new();
    let mut m = m;
    while let Some((name, sub)) = m.subcommand() {
        names.push(name.to_owned());
        m = sub;
    }
    (names, m)
}

fn config_path(m: &ArgMatches) -> Option<PathBuf> {
    m.try_get_one::<PathBuf>(CONFIG_ID).ok().flatten().cloned()
}

/// Whether the command line or a (non-empty) environment variable set
/// `id`: then the file's value for it is not used. An empty variable counts
/// as unset, as `DOCKER_HOST=` does for the docker CLI.
fn given_by_flag_or_env(cmd: &Command, m: &ArgMatches, id: &str) -> bool {
    match m.value_source(id) {
        Some(ValueSource::CommandLine) => true,
        Some(ValueSource::EnvVariable) => env_of(cmd, id).is_some_and(|v| !v.is_empty()),
        _ => false,
    }
}

/// Whether `arg` names a secret's file and the secret's own environment
/// variable is set: the variable then beats the file's setting, as any
/// variable does (the command line's `--loki-password-file` beats both).
fn secret_in_env(arg: &Arg) -> bool {
    SECRETS
        .iter()
        .any(|s| arg.get_long() == Some(s.file_key) && std::env::var_os(s.env).is_some_and(|v| !v.is_empty()))
}

/// The value of `id`'s environment variable, if it has one and it is set.
fn env_of(cmd: &Command, id: &str) -> Option<OsString> {
    let arg = cmd.get_arguments().find(|a| a.get_id() == id)?;
    std::env::var_os(arg.get_env()?)
}

/// The long name of a given argument that `arg` conflicts with (either
/// way round), if any.
fn conflicting_given<'c>(cmd: &'c Command, arg: &Arg, given: &dyn Fn(&str) -> bool) -> Option<&'c str> {
    let theirs = cmd
        .get_arguments()
        .filter(|other| cmd.get_arg_conflicts_with(other).iter().any(|c| c.get_id() == arg.get_id()));
    cmd.get_arg_conflicts_with(arg)
        .into_iter()
        .chain(theirs)
        .find(|c| given(c.get_id().as_str()))
        .map(|c| c.get_long().unwrap_or(c.get_id().as_str()))
}

/// A clap error of the merged parse, on one line, saying the file took part.
fn merged_error(e: &clap::Error, file: &Path) -> anyhow::Error {
    let text = e.render().to_string();
    let what: Vec<&str> = text
        .lines()
        .take_while(|l| !l.trim().is_empty())
        .map(|l| l.trim().trim_start_matches("error: "))
        .collect();
    anyhow!("{} (the command line with the settings of {})", what.join(" "), file.display())
}

// ---- Reading the file ---------------------------------------------------

/// The settings a config file holds, checked.
#[derive(Debug)]
pub struct FileSettings {
    entries: Vec<Entry>,
}

/// One key of the file, as the flags it stands for.
#[derive(Debug)]
struct Entry {
    id: String,
    /// The values as written (switches: none).
    values: Vec<String>,
    argv: Vec<String>,
}

impl Entry {
    fn is_default(&self, arg: &Arg) -> bool {
        let defaults = arg.get_default_values();
        !defaults.is_empty()
            && self.values.iter().map(OsStr::new).eq(defaults.iter().map(|d| -> &OsStr { d.as_ref() }))
    }
}

impl FileSettings {
    /// Read and check `path` against the flags of `cmd`.
    pub fn read(path: &Path, cmd: &Command) -> anyhow::Result<Self> {
        use std::io::Read as _;
        let context = || format!("config file {}", path.display());
        let mut text = String::new();
        std::fs::File::open(path)
            .and_then(|f| f.take(MAX_FILE_BYTES + 1).read_to_string(&mut text))
            .with_context(context)?;
        if text.len() as u64 > MAX_FILE_BYTES {
            bail!("{}: too big for a config file (at most 1 MiB)", context());
        }
        Ok(Self::parse(path, &text, cmd)?)
    }

    /// Check `text` (the contents of `path`) against the flags of `cmd`.
    pub fn parse(path: &Path, text: &str, cmd: &Command) -> Result<Self, FileError> {
        let err = |span: Range<usize>, key: &str, message: String| FileError {
            at: Location::of(path, text, span.start),
            key: key.to_owned(),
            message,
        };
        let table = DeTable::parse(text).map_err(|e| {
            let at = e.span().map_or(0, |s| s.start);
            err(at..at, "", format!("not valid TOML: {}", e.message()))
        })?;
        let mut keys: Vec<(&Spanned<_>, &Spanned<DeValue>)> = table.get_ref().iter().collect();
        keys.sort_by_key(|(k, _)| k.span().start);
        let mut entries = Vec::new();
        for (k, v) in keys {
            let key: &str = k.get_ref();
            let Some(arg) = settable(cmd).find(|a| a.get_long() == Some(key)) else {
                return Err(err(k.span(), key, unknown_key(cmd, key)));
            };
            let kind = Kind::of(arg).expect("settable args have a kind");
            let argv = flag_values(arg, kind, v).map_err(|(span, m)| err(span, key, m))?;
            if let Kind::One | Kind::Many = kind {
                for (value, span) in argv.iter().zip(value_spans(v)) {
                    if secret_header(arg, value) {
                        return Err(err(span, key, SECRET_HEADER.to_owned()));
                    }
                    check_value(arg, value).map_err(|m| err(span, key, m))?;
                }
            }
            let long = arg.get_long().expect("settable args are long flags");
            let (values, argv) = match kind {
                Kind::One | Kind::Many => {
                    (argv.clone(), argv.iter().map(|v| format!("--{long}={v}")).collect())
                }
                _ => (Vec::new(), argv),
            };
            entries.push(Entry { id: arg.get_id().to_string(), values, argv });
        }
        Ok(Self { entries })
    }
}

/// A config file error: where, which key, what is wrong and what is allowed.
#[derive(Debug)]
pub struct FileError {
    at: Location,
    key: String,
    message: String,
}

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}: {}", self.at, self.message)
        } else {
            write!(f, "{}: `{}`: {}", self.at, self.key, self.message)
        }
    }
}

impl std::error::Error for FileError {}

#[derive(Debug)]
struct Location {
    path: PathBuf,
    line: usize,
    column: usize,
}

impl Location {
    fn of(path: &Path, text: &str, offset: usize) -> Self {
        let before = &text[..offset.min(text.len())];
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
        Self { path: path.to_owned(), line, column }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.path.display(), self.line, self.column)
    }
}

/// The arguments a config file may set: every long flag but `--config`,
/// `--help` and `--version`.
fn settable(cmd: &Command) -> impl Iterator<Item = &Arg> {
    cmd.get_arguments().filter(|a| a.get_long().is_some() && a.get_id() != CONFIG_ID && Kind::of(a).is_some())
}

/// Why `key` is not a setting, and what to write instead.
fn unknown_key(cmd: &Command, key: &str) -> String {
    let lower = key.to_ascii_lowercase();
    let dashed = lower.replace(['_', '.'], "-");
    let secret = SECRETS.iter().find(|s| {
        let base = s.file_key.trim_end_matches("-file");
        dashed == base || base.ends_with(&format!("-{dashed}"))
    });
    if let Some(s) = secret {
        return format!(
            "secrets are not written in the config file: put it in a file only the agent can read and \
             set `{} = \"/etc/log-capturer/…\"`, or set the environment variable {}",
            s.file_key, s.env
        );
    }
    if SECRET_WORDS.iter().any(|w| dashed.contains(w)) {
        let files: Vec<String> = SECRETS.iter().map(|s| format!("`{}` (or {})", s.file_key, s.env)).collect();
        return format!(
            "not a setting, and secrets are not written in the config file: name a file that holds it \
             with {}",
            files.join(" or ")
        );
    }
    let keys: Vec<&str> = settable(cmd).filter_map(Arg::get_long).collect();
    if let Some(k) = keys.iter().find(|k| **k == dashed) {
        return format!("unknown key; did you mean `{k}`? (keys are the long flags, with dashes)");
    }
    if key == CONFIG_ID {
        return "a config file cannot name another one".to_owned();
    }
    let close = keys.iter().map(|k| (edit_distance(k, &dashed), *k)).min();
    match close {
        Some((d, k)) if d <= 2 || k.contains(dashed.as_str()) && dashed.len() >= 4 => {
            format!("unknown key; did you mean `{k}`?")
        }
        _ => {
            format!("unknown key; the keys are the long flags of `log-capturer --help`: {}", keys.join(", "))
        }
    }
}

/// Levenshtein distance, for "did you mean".
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            let next = (row[j + 1] + 1).min(row[j] + 1).min(prev + cost);
            prev = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}

/// The TOML value of a key as the flag's values (switches: as the flags
/// themselves), or the span and message of what is wrong with it.
fn flag_values(arg: &Arg, kind: Kind, v: &Spanned<DeValue>) -> Result<Vec<String>, (Range<usize>, String)> {
    let long = arg.get_long().unwrap_or_default();
    let wrong =
        |span: Range<usize>, got: &str| (span, format!("takes {}, not {got}{}", kind.allowed(), takes(arg)));
    match (kind, v.get_ref()) {
        (Kind::Switch { set }, DeValue::Boolean(b)) => {
            Ok(if *b == set { vec![format!("--{long}")] } else { Vec::new() })
        }
        (Kind::Count, DeValue::Integer(i)) => match u8::from_str_radix(i.as_str(), i.radix()) {
            Ok(n) => Ok(vec![format!("--{long}"); n.into()]),
            Err(_) => Err(wrong(v.span(), "that number")),
        },
        (Kind::One | Kind::Many, value) if scalar(value).is_some() => {
            Ok(vec![scalar(value).unwrap_or_default()])
        }
        (Kind::Many, DeValue::Array(items)) => items
            .iter()
            .map(|item| scalar(item.get_ref()).ok_or_else(|| wrong(item.span(), type_name(item.get_ref()))))
            .collect(),
        (_, value) => Err(wrong(v.span(), type_name(value))),
    }
}

/// Each value's span, in the order of [`flag_values`].
fn value_spans(v: &Spanned<DeValue>) -> Vec<Range<usize>> {
    match v.get_ref() {
        DeValue::Array(items) => items.iter().map(Spanned::span).collect(),
        _ => vec![v.span()],
    }
}

/// A TOML scalar as a flag's value: strings as they are, numbers and
/// booleans as written in decimal.
fn scalar(v: &DeValue) -> Option<String> {
    match v {
        DeValue::String(s) => Some(s.to_string()),
        DeValue::Integer(i) => i128::from_str_radix(i.as_str(), i.radix()).ok().map(|n| n.to_string()),
        DeValue::Float(f) => Some(f.as_str().to_owned()),
        DeValue::Boolean(b) => Some(b.to_string()),
        DeValue::Datetime(_) | DeValue::Array(_) | DeValue::Table(_) => None,
    }
}

fn type_name(v: &DeValue) -> &'static str {
    match v {
        DeValue::String(_) => "a string",
        DeValue::Integer(_) => "a number",
        DeValue::Float(_) => "a number",
        DeValue::Boolean(_) => "a boolean",
        DeValue::Datetime(_) => "a date",
        DeValue::Array(_) => "an array",
        DeValue::Table(_) => {
            "a table (keys are not grouped in sections: write `loki-tenant`, not [loki] tenant)"
        }
    }
}

/// ` (--flag VALUE)`: the flag a key stands for, for an error message.
fn takes(arg: &Arg) -> String {
    let long = arg.get_long().unwrap_or_default();
    let name = arg.get_value_names().and_then(|n| n.first()).map(|n| format!(" {n}")).unwrap_or_default();
    format!(" (--{long}{name})")
}

/// What to do instead of writing a credential header in the file.
const SECRET_HEADER: &str = "this header carries a credential, and secrets are not written in the config \
     file: use `loki-password-file` or `loki-bearer-token-file` (or LOKI_PASSWORD, LOKI_BEARER_TOKEN)";

/// Whether `value` of `arg` is a header (`Name: value`) whose name says it
/// carries a credential.
fn secret_header(arg: &Arg, value: &str) -> bool {
    if !arg.get_long().is_some_and(|l| l.ends_with("header")) {
        return false;
    }
    secret_header_name(value.split(':').next().unwrap_or(""))
}

fn secret_header_name(name: &str) -> bool {
    let name = name.trim().to_ascii_lowercase();
    ["authorization", "cookie", "token", "key", "secret", "password"].iter().any(|w| name.contains(w))
}

/// Run `value` through the flag's own value parser, alone: the same rules
/// and words as on the command line.
fn check_value(arg: &Arg, value: &str) -> Result<(), String> {
    let probe = arg
        .clone()
        .requires(Resettable::Reset)
        .conflicts_with(Resettable::Reset)
        .overrides_with(Resettable::Reset)
        .group(Resettable::Reset)
        .required_unless_present(Resettable::Reset)
        .env(Resettable::Reset)
        .default_value(Resettable::Reset)
        .required(false)
        .action(ArgAction::Set);
    let long = arg.get_long().unwrap_or_default();
    let result = Command::new("log-capturer")
        .no_binary_name(true)
        .disable_help_flag(true)
        .color(clap::ColorChoice::Never)
        .arg(probe)
        .try_get_matches_from([format!("--{long}={value}")]);
    let Err(e) = result else { return Ok(()) };
    let reason = match (e.kind(), e.get(ContextKind::ValidValue)) {
        (ErrorKind::InvalidValue, Some(ContextValue::Strings(valid))) => {
            format!("not one of {}", valid.join(", "))
        }
        _ => match std::error::Error::source(&e) {
            Some(source) => source.to_string(),
            None => {
                e.render().to_string().lines().next().unwrap_or("").trim_start_matches("error: ").to_owned()
            }
        },
    };
    Err(format!("{}: {reason}", toml_string(value)))
}

// ---- Printing the effective configuration -------------------------------

impl Row {
    /// `value` as shown: a credential header's value hidden.
    fn masked(&self, value: &str) -> String {
        let is_header = self.key.ends_with("header");
        match value.split_once(':') {
            Some((name, _)) if is_header && secret_header_name(name) => format!("{name}: ***"),
            _ => value.to_owned(),
        }
    }
}

impl Settings {
    /// `first` is the command line alone (for where values came from);
    /// `last` the matches the command runs with; `applied` the file's keys
    /// that were used.
    fn collect(
        cmd: &Command,
        last: &ArgMatches,
        first: &ArgMatches,
        file: Option<&Path>,
        applied: &BTreeSet<String>,
    ) -> Self {
        let mut rows = Vec::new();
        for arg in settable(cmd) {
            let id = arg.get_id().as_str();
            let kind = Kind::of(arg).expect("settable args have a kind");
            let values: Vec<String> = match kind {
                Kind::Count => vec![last.get_count(id).to_string()],
                _ => last
                    .get_raw(id)
                    .map(|vs| vs.map(|v| v.to_string_lossy().into_owned()).collect())
                    .unwrap_or_default(),
            };
            let env = arg.get_env().map(|e| e.to_string_lossy().into_owned());
            // An empty variable loses to the file, but is still where the
            // value came from when the file says nothing.
            let source = match first.value_source(id) {
                Some(ValueSource::CommandLine) => Source::Flag,
                _ if applied.contains(id) => Source::File,
                Some(ValueSource::EnvVariable) => Source::Env,
                _ => Source::Default,
            };
            rows.push(Row {
                key: arg.get_long().unwrap_or_default().to_owned(),
                heading: arg.get_help_heading().map(str::to_owned),
                kind,
                values,
                source,
                env,
            });
        }
        Self { file: file.map(Path::to_owned), rows }
    }

    /// Where `key`'s value came from (`None` for no such setting).
    pub fn source(&self, key: &str) -> Option<Source> {
        self.rows.iter().find(|r| r.key == key).map(|r| r.source)
    }

    /// The settings as a config file: every key, with its source as a
    /// comment; unset ones commented out. Secrets appear as the files or
    /// environment variables that hold them, never their contents.
    pub fn to_toml(&self, env: impl Fn(&str) -> Option<String>) -> String {
        let mut out = String::from(
            "# The effective configuration of log-capturer (`log-capturer config`), a valid --config\n\
             # file. After each value, where it came from: flag, env (variable), file or default.\n",
        );
        if let Some(f) = &self.file {
            let _ = writeln!(out, "# Config file: {}", f.display());
        }
        let mut heading = None;
        for r in &self.rows {
            if r.heading != heading {
                heading.clone_from(&r.heading);
                let _ = writeln!(out, "\n# ---- {} ----", r.heading.as_deref().unwrap_or(""));
            }
            let source = match (r.source, &r.env) {
                (Source::Env, Some(var)) => format!("env {var}"),
                (Source::Env, None) => "env".to_owned(),
                (Source::Flag, _) => "flag".to_owned(),
                (Source::File, _) => "file".to_owned(),
                (Source::Default, _) => "default".to_owned(),
            };
            let value = match r.kind {
                Kind::Switch { .. } | Kind::Count => r.values.first().map(|v| v.to_owned()),
                Kind::One => r.values.first().map(|v| toml_value(&r.masked(v))),
                Kind::Many => Some(format!(
                    "[{}]",
                    r.values.iter().map(|v| toml_value(&r.masked(v))).collect::<Vec<_>>().join(", ")
                )),
            };
            match value {
                Some(v) => {
                    let _ = writeln!(out, "{} = {v}  # {source}", r.key);
                }
                None => {
                    let _ = writeln!(out, "# {} =   (not set)", r.key);
                }
            }
            if let Some(s) = SECRETS.iter().find(|s| s.file_key == r.key) {
                if r.values.is_empty() && env(s.env).is_some_and(|v| !v.is_empty()) {
                    let what = s.file_key.trim_end_matches("-file");
                    let _ = writeln!(out, "# {what}: (from {})", s.env);
                }
            }
        }
        out
    }
}

/// A value as TOML: a decimal number as a number, anything else a string.
fn toml_value(v: &str) -> String {
    match v.parse::<i64>() {
        Ok(n) if n.to_string() == v => v.to_owned(),
        _ => toml_string(v),
    }
}

/// A TOML basic string.
fn toml_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[derive(Debug, clap::Parser)]
    struct Agent {
        #[command(flatten)]
        agent: crate::cli::AgentArgs,
        #[command(flatten)]
        file: ConfigFileArg,
    }

    fn check(text: &str) -> Result<FileSettings, String> {
        FileSettings::parse(Path::new("c.toml"), text, &Agent::command()).map_err(|e| e.to_string())
    }

    #[test]
    fn values_become_flags() {
        let s = check(
            "docker-host = \"tcp://10.0.0.1:2375\"\nfrom-beginning = true\ninclude-label = [\"a\", \"b=c\"]\n\
             max-streams = 0x10\nloki-batch-bytes = 2097152\n",
        )
        .unwrap();
        let argv: Vec<&str> = s.entries.iter().flat_map(|e| e.argv.iter().map(String::as_str)).collect();
        assert_eq!(
            argv,
            [
                "--docker-host=tcp://10.0.0.1:2375",
                "--from-beginning",
                "--include-label=a",
                "--include-label=b=c",
                "--max-streams=16",
                "--loki-batch-bytes=2097152"
            ]
        );
        assert!(check("from-beginning = false\n").unwrap().entries[0].argv.is_empty());
    }

    #[test]
    fn errors_say_where_which_key_and_what_is_allowed() {
        let cases = [
            (
                "output = \"-\"\ndocker_host = \"x\"\n",
                "c.toml:2:1: `docker_host`: unknown key; did you mean `docker-host`?",
            ),
            (
                "\n  rotate-afer = \"1m\"",
                "c.toml:2:3: `rotate-afer`: unknown key; did you mean `rotate-after`?",
            ),
            ("zzz = 1", "keys are the long flags"),
            ("rotate-after = \"0s\"", "c.toml:1:16: `rotate-after`: \"0s\": `0s` is too short"),
            ("loki-encoding = \"xml\"", "unknown Loki encoding `xml`: use `protobuf`"),
            ("max-streams = 0", "c.toml:1:15: `max-streams`: \"0\": 0 is not in 1..="),
            ("include-label = [\"a\", \"=x\"]", "c.toml:1:23: `include-label`: \"=x\""),
            ("from-beginning = \"yes\"", "`from-beginning`: takes true or false, not a string"),
            ("output = [\"a\"]", "takes one value (a string, or a number), not an array (--output PATH)"),
            ("[loki]\ntenant = \"a\"", "`loki`: takes one value"),
            ("output = ", "c.toml:1:10: not valid TOML"),
            ("config = \"x\"", "cannot name another one"),
        ];
        for (text, says) in cases {
            let err = check(text).unwrap_err();
            assert!(err.contains(says), "{text:?}: {err}");
        }
    }

    #[test]
    fn secrets_are_refused_with_where_to_put_them() {
        for key in ["password", "loki-password", "loki_password"] {
            let err = check(&format!("{key} = \"hunter2\"")).unwrap_err();
            assert!(err.contains("loki-password-file") && err.contains("LOKI_PASSWORD"), "{err}");
            assert!(!err.contains("hunter2"), "{err}");
        }
        for key in ["bearer-token", "loki-bearer-token"] {
            let err = check(&format!("{key} = \"t\"")).unwrap_err();
            assert!(err.contains("loki-bearer-token-file") && err.contains("LOKI_BEARER_TOKEN"), "{err}");
        }
        let err = check("loki-header = [\"X-Team: a\", \"X-Api-Key: k\"]").unwrap_err();
        assert!(err.starts_with("c.toml:1:29: `loki-header`: this header carries a credential"), "{err}");
        let err = check("api-token = \"t\"").unwrap_err();
        assert!(err.contains("secrets are not written"), "{err}");
        check("loki-password-file = \"/etc/log-capturer/loki-password\"").unwrap();
    }

    #[test]
    fn toml_strings_escape() {
        assert_eq!(toml_string("a\"b\\c\nd\u{1}"), "\"a\\\"b\\\\c\\nd\\u0001\"");
        assert_eq!(toml_value("42"), "42");
        assert_eq!(toml_value("042"), "\"042\"");
        assert_eq!(toml_value("1MiB"), "\"1MiB\"");
    }

    /// The example file names every setting, and each of its commented
    /// values is valid.
    #[test]
    fn example_file_covers_every_flag() {
        let example = include_str!("../deploy/log-capturer.toml");
        let uncommented: String = example
            .lines()
            .filter_map(|l| l.strip_prefix("# ").filter(|l| l.contains(" = ") && !l.starts_with(' ')))
            .filter(|l| {
                l.split(" = ").next().is_some_and(|k| k.bytes().all(|b| b.is_ascii_lowercase() || b == b'-'))
            })
            .map(|l| format!("{l}\n"))
            .collect();
        check(&uncommented).unwrap_or_else(|e| panic!("{e}\n{uncommented}"));
        let cmd = Agent::command();
        for key in settable(&cmd).filter_map(Arg::get_long) {
            assert!(
                uncommented.contains(&format!("\n{key} = ")) || uncommented.starts_with(&format!("{key} = ")),
                "{key} is not in deploy/log-capturer.toml"
            );
        }
        // As it ships, everything is commented out: the defaults.
        check(example).unwrap();
        assert!(check(example).unwrap().entries.is_empty());
    }
}
