//! Loki label sets for container streams: which labels, how they are named,
//! checked and written.
//!
//! Labels index Loki's streams, so they must stay few and stable. By default
//! a stream is labelled `host`, `container` (the container's name),
//! `compose_project` and `compose_service` (when the container carries
//! Compose's labels) and `stream` (`stdout` or `stderr`). What changes with
//! every container, its id and its image, goes as structured metadata on
//! each entry instead. Operators add static labels (`name=value`) and pick
//! container labels to copy (`DOCKER_LABEL[=LOKI_NAME]`); both are checked
//! once, when the configuration is read, so a label Loki would refuse never
//! reaches a request (Loki answers 400 for the whole stream, for good).
//!
//! Values that come from containers (names, Compose labels, chosen labels)
//! cannot be refused, so they are made acceptable instead: cut to Loki's
//! length limit, and left out when empty (Loki, like Prometheus, treats an
//! empty label as an absent one).

use std::collections::BTreeMap;
use std::fmt;

use crate::docker::frame::StreamId;

/// Loki's `max_label_names_per_series` default.
pub const MAX_LABEL_NAMES: usize = 15;
/// Loki's `max_label_name_length` default.
pub const MAX_NAME_LEN: usize = 1024;
/// Loki's `max_label_value_length` default.
pub const MAX_VALUE_LEN: usize = 2048;

pub const HOST: &str = "host";
pub const CONTAINER: &str = "container";
pub const COMPOSE_PROJECT: &str = "compose_project";
pub const COMPOSE_SERVICE: &str = "compose_service";
pub const STREAM: &str = "stream";
/// The labels the agent sets itself, each present when it has a value.
pub const DEFAULT_NAMES: [&str; 5] = [HOST, CONTAINER, COMPOSE_PROJECT, COMPOSE_SERVICE, STREAM];

/// The container labels Docker Compose sets, read for `compose_project` and
/// `compose_service`.
pub const COMPOSE_PROJECT_LABEL: &str = "com.docker.compose.project";
pub const COMPOSE_SERVICE_LABEL: &str = "com.docker.compose.service";

/// Structured metadata names.
pub const CONTAINER_ID: &str = "container_id";
pub const IMAGE: &str = "image";

/// Why a label setting was refused. The messages name the offending text
/// and say what would be accepted; the caller adds which flag or file key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LabelError {
    /// A static label without `=`.
    NoEquals {
        arg: String,
    },
    EmptyName {
        arg: String,
    },
    InvalidName {
        name: String,
        suggestion: String,
    },
    /// Names starting with `__` are Loki's own.
    ReservedName {
        name: String,
    },
    NameTooLong {
        name: String,
    },
    EmptyValue {
        name: String,
    },
    ValueTooLong {
        name: String,
        len: usize,
    },
    /// A container label whose name, made valid for Loki, is reserved:
    /// it needs an explicit Loki name.
    ReservedSanitized {
        docker: String,
        sanitized: String,
    },
    /// A static label named like one the agent sets per container.
    SetByAgent {
        name: String,
    },
    Duplicate {
        name: String,
    },
    TooMany {
        names: Vec<String>,
    },
}

impl fmt::Display for LabelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoEquals { arg } => write!(f, "`{arg}` is not a label: write it as name=value"),
            Self::EmptyName { arg } => write!(f, "`{arg}`: the label name is empty"),
            Self::InvalidName { name, suggestion } => write!(
                f,
                "`{name}` is not a valid Loki label name: use only ASCII letters, digits and `_`, \
                 not starting with a digit (e.g. `{suggestion}`)"
            ),
            Self::ReservedName { name } => {
                write!(f, "`{name}`: label names starting with `__` are reserved for Loki's own use")
            }
            Self::NameTooLong { name } => write!(
                f,
                "label name `{}…` is longer than Loki accepts ({MAX_NAME_LEN} bytes)",
                cut_at_char(name, 40)
            ),
            Self::EmptyValue { name } => write!(
                f,
                "label `{name}` has an empty value, which Loki treats as no label: give it a value \
                 or leave it out"
            ),
            Self::ValueTooLong { name, len } => write!(
                f,
                "the value of label `{name}` is {len} bytes, longer than Loki accepts \
                 ({MAX_VALUE_LEN} bytes)"
            ),
            Self::ReservedSanitized { docker, sanitized } => write!(
                f,
                "container label `{docker}` would become the Loki label `{sanitized}`, and names \
                 starting with `__` are reserved for Loki: give it a name, as `{docker}=NAME`"
            ),
            Self::SetByAgent { name } => write!(
                f,
                "`{name}` is a label the agent sets for each container; choose another name (of \
                 the agent's labels only `host` can be replaced)"
            ),
            Self::Duplicate { name } => write!(f, "label `{name}` is given more than once"),
            Self::TooMany { names } => write!(
                f,
                "{} label names per stream ({}), but Loki accepts at most {MAX_LABEL_NAMES} \
                 (`max_label_names_per_series`): drop some",
                names.len(),
                names.join(", ")
            ),
        }
    }
}

impl std::error::Error for LabelError {}

/// Whether Loki accepts `name` as a label name: `[a-zA-Z_][a-zA-Z0-9_]*`.
pub fn is_valid_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b'a'..=b'z' | b'A'..=b'Z' | b'_'))
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// `name` made into a valid label name: every other character becomes `_`,
/// and a leading digit gets a `_` before it (`com.example/tier` →
/// `com_example_tier`, `9lives` → `_9lives`). Several names can map to
/// one; [`LabelConfig::new`] refuses the clash.
pub fn sanitize_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 1);
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        out.push('_');
    }
    out.extend(name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }));
    out
}

fn check_name(name: &str, arg: &str) -> Result<(), LabelError> {
    if name.is_empty() {
        return Err(LabelError::EmptyName { arg: arg.to_owned() });
    }
    if name.len() > MAX_NAME_LEN {
        return Err(LabelError::NameTooLong { name: name.to_owned() });
    }
    if !is_valid_name(name) {
        return Err(LabelError::InvalidName { name: name.to_owned(), suggestion: sanitize_name(name) });
    }
    if name.starts_with("__") {
        return Err(LabelError::ReservedName { name: name.to_owned() });
    }
    Ok(())
}

/// A label every stream carries, from `name=value` (`--loki-label`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticLabel {
    pub name: String,
    pub value: String,
}

/// Parse `name=value`. The value is taken as is (it may hold `=`, spaces,
/// quotes: it is escaped when written); it must not be empty or longer than
/// Loki accepts.
pub fn parse_static_label(arg: &str) -> Result<StaticLabel, LabelError> {
    let (name, value) = arg.split_once('=').ok_or_else(|| LabelError::NoEquals { arg: arg.to_owned() })?;
    check_name(name, arg)?;
    if value.is_empty() {
        return Err(LabelError::EmptyValue { name: name.to_owned() });
    }
    if value.len() > MAX_VALUE_LEN {
        return Err(LabelError::ValueTooLong { name: name.to_owned(), len: value.len() });
    }
    Ok(StaticLabel { name: name.to_owned(), value: value.to_owned() })
}

/// A container label copied into a Loki label (`--loki-container-label`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerLabel {
    /// The container label's name, as Docker has it.
    pub docker: String,
    /// The Loki label it becomes.
    pub loki: String,
}

/// Parse `DOCKER_LABEL[=LOKI_NAME]`. Without a Loki name, the Docker name
/// is made valid with [`sanitize_name`]; a Loki name that is given must be
/// valid as it is (it was chosen, so it is not silently changed).
pub fn parse_container_label(arg: &str) -> Result<ContainerLabel, LabelError> {
    let (docker, loki) = match arg.split_once('=') {
        Some((docker, loki)) => {
            check_name(loki, arg)?;
            (docker, loki.to_owned())
        }
        None => {
            let loki = sanitize_name(arg);
            if loki.starts_with("__") {
                return Err(LabelError::ReservedSanitized { docker: arg.to_owned(), sanitized: loki });
            }
            if loki.len() > MAX_NAME_LEN {
                return Err(LabelError::NameTooLong { name: loki });
            }
            (arg, loki)
        }
    };
    if docker.is_empty() {
        return Err(LabelError::EmptyName { arg: arg.to_owned() });
    }
    Ok(ContainerLabel { docker: docker.to_owned(), loki })
}

/// What a container contributes to its streams' labels and metadata.
#[derive(Debug, Clone, Copy)]
pub struct Container<'a> {
    /// The full 64-hex-digit id.
    pub id: &'a str,
    /// With or without Docker's leading `/`.
    pub name: &'a str,
    pub image: &'a str,
    pub labels: &'a BTreeMap<String, String>,
}

/// The label settings, checked as a whole: no name twice, at most
/// [`MAX_LABEL_NAMES`] names on any stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelConfig {
    host: String,
    statics: Vec<StaticLabel>,
    container_labels: Vec<ContainerLabel>,
}

impl LabelConfig {
    /// The most label names a stream gets (each of the agent's own, every
    /// static one, every container label copied).
    pub fn max_names(&self) -> usize {
        DEFAULT_NAMES.len() + self.statics.len() + self.container_labels.len()
    }

    /// `host` is the value of the `host` label (the machine's name, not a
    /// container's); a static `host=…` replaces it.
    pub fn new(
        host: &str,
        statics: Vec<StaticLabel>,
        container_labels: Vec<ContainerLabel>,
    ) -> Result<Self, LabelError> {
        let mut names: Vec<&str> = DEFAULT_NAMES.to_vec();
        for s in &statics {
            if s.name == HOST {
                if statics.iter().filter(|t| t.name == HOST).count() > 1 {
                    return Err(LabelError::Duplicate { name: s.name.clone() });
                }
                continue;
            }
            if DEFAULT_NAMES.contains(&s.name.as_str()) {
                return Err(LabelError::SetByAgent { name: s.name.clone() });
            }
            if names.contains(&s.name.as_str()) {
                return Err(LabelError::Duplicate { name: s.name.clone() });
            }
            names.push(&s.name);
        }
        for c in &container_labels {
            if names.contains(&c.loki.as_str()) {
                return Err(LabelError::Duplicate { name: c.loki.clone() });
            }
            names.push(&c.loki);
        }
        if names.len() > MAX_LABEL_NAMES {
            return Err(LabelError::TooMany { names: names.iter().map(|&n| n.to_owned()).collect() });
        }
        let mut host = cut_at_char(host, MAX_VALUE_LEN).to_owned();
        if let Some(s) = statics.iter().find(|s| s.name == HOST) {
            host.clone_from(&s.value);
        }
        let statics = statics.into_iter().filter(|s| s.name != HOST).collect();
        Ok(Self { host, statics, container_labels })
    }

    /// The Loki stream of one container's `stream` (its labels and the
    /// metadata of its entries). Built once per container and stream, not
    /// per line.
    pub fn stream(&self, container: &Container<'_>, stream: StreamId) -> LokiStream {
        let mut labels: Vec<(String, String)> = Vec::with_capacity(DEFAULT_NAMES.len() + 4);
        let mut add = |name: &str, value: &str| {
            if !value.is_empty() {
                labels.push((name.to_owned(), cut_at_char(value, MAX_VALUE_LEN).to_owned()));
            }
        };
        add(HOST, &self.host);
        add(CONTAINER, container.name.strip_prefix('/').unwrap_or(container.name));
        let label = |key: &str| container.labels.get(key).map_or("", String::as_str);
        add(COMPOSE_PROJECT, label(COMPOSE_PROJECT_LABEL));
        add(COMPOSE_SERVICE, label(COMPOSE_SERVICE_LABEL));
        add(STREAM, stream.as_str());
        for s in &self.statics {
            add(&s.name, &s.value);
        }
        for c in &self.container_labels {
            add(&c.loki, label(&c.docker));
        }
        let mut metadata = Vec::with_capacity(2);
        if !container.id.is_empty() {
            metadata.push((CONTAINER_ID.to_owned(), container.id.to_owned()));
        }
        if !container.image.is_empty() {
            metadata.push((IMAGE.to_owned(), container.image.to_owned()));
        }
        LokiStream::new(labels, metadata)
    }
}

/// One Loki stream as the agent addresses it: its label set, and the
/// structured metadata every entry pushed through it carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LokiStream {
    /// Sorted by name, names unique and valid, values non-empty.
    labels: Vec<(String, String)>,
    /// `{name="value", …}`, the form the protobuf encoding sends.
    rendered: String,
    metadata: Vec<(String, String)>,
    /// Sum of the metadata's name and value lengths.
    metadata_bytes: usize,
}

impl LokiStream {
    /// The caller guarantees names valid and unique ([`LabelConfig`] does);
    /// values are escaped here.
    pub fn new(mut labels: Vec<(String, String)>, metadata: Vec<(String, String)>) -> Self {
        debug_assert!(labels.iter().all(|(n, _)| is_valid_name(n)));
        labels.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let mut rendered = String::with_capacity(64);
        render(&mut rendered, &labels);
        let metadata_bytes = metadata.iter().map(|(n, v)| n.len() + v.len()).sum();
        Self { labels, rendered, metadata, metadata_bytes }
    }

    pub fn labels(&self) -> &[(String, String)] {
        &self.labels
    }

    pub fn rendered(&self) -> &str {
        &self.rendered
    }

    pub fn metadata(&self) -> &[(String, String)] {
        &self.metadata
    }

    pub fn metadata_bytes(&self) -> usize {
        self.metadata_bytes
    }
}

/// Write `{a="x", b="y"}` (Prometheus' notation, which Loki parses).
pub fn render(out: &mut String, labels: &[(String, String)]) {
    out.push('{');
    for (i, (name, value)) in labels.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        out.push_str(name);
        out.push_str("=\"");
        escape_value(out, value);
        out.push('"');
    }
    out.push('}');
}

/// Escape a label value for a Go double-quoted string, which is what
/// Loki's label parser reads: `\` and `"` escaped, and every control
/// character too (a raw newline would end the string).
pub fn escape_value(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\0'..='\x1f' | '\x7f' => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                let b = c as u8;
                out.push_str("\\x");
                out.push(char::from(HEX[usize::from(b >> 4)]));
                out.push(char::from(HEX[usize::from(b & 15)]));
            }
            c => out.push(c),
        }
    }
}

/// The longest prefix of `s` of at most `max` bytes that ends on a
/// character boundary.
pub fn cut_at_char(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|&(k, v)| (k.to_owned(), v.to_owned())).collect()
    }

    const ID: &str = "4f9c1b8e2d7a6c5b3e1f0a9d8c7b6a5f4e3d2c1b0a9f8e7d6c5b4a3f2e1d0c9b";

    #[test]
    fn names_loki_accepts() {
        for ok in ["a", "_", "A_b9", "__name__", "host"] {
            assert!(is_valid_name(ok), "{ok}");
        }
        for bad in ["", "9a", "a-b", "a.b", "é", "a b", "a=b"] {
            assert!(!is_valid_name(bad), "{bad}");
        }
    }

    #[test]
    fn sanitising_makes_every_name_valid() {
        assert_eq!(sanitize_name("com.docker.compose.project"), "com_docker_compose_project");
        assert_eq!(sanitize_name("9lives"), "_9lives");
        assert_eq!(sanitize_name("app/tier-1"), "app_tier_1");
        assert_eq!(sanitize_name("größe"), "gr__e");
        assert_eq!(sanitize_name(""), "_");
        for s in ["", "9", "-", "é", "a.b.c", "x y"] {
            assert!(is_valid_name(&sanitize_name(s)), "{s}");
        }
    }

    #[test]
    fn static_labels_parse_and_are_checked() {
        assert_eq!(
            parse_static_label("env=prod=eu \"1\"").unwrap(),
            StaticLabel { name: "env".into(), value: "prod=eu \"1\"".into() }
        );
        assert_eq!(parse_static_label("env").unwrap_err(), LabelError::NoEquals { arg: "env".into() });
        assert_eq!(parse_static_label("=x").unwrap_err(), LabelError::EmptyName { arg: "=x".into() });
        assert_eq!(
            parse_static_label("my-env=x").unwrap_err(),
            LabelError::InvalidName { name: "my-env".into(), suggestion: "my_env".into() }
        );
        assert_eq!(
            parse_static_label("__tenant=x").unwrap_err(),
            LabelError::ReservedName { name: "__tenant".into() }
        );
        assert_eq!(parse_static_label("env=").unwrap_err(), LabelError::EmptyValue { name: "env".into() });
        let long = format!("env={}", "v".repeat(MAX_VALUE_LEN + 1));
        assert_eq!(
            parse_static_label(&long).unwrap_err(),
            LabelError::ValueTooLong { name: "env".into(), len: MAX_VALUE_LEN + 1 }
        );
        let long = format!("{}=x", "n".repeat(MAX_NAME_LEN + 1));
        assert!(matches!(parse_static_label(&long), Err(LabelError::NameTooLong { .. })));
        // The messages say what to write instead.
        let msg = parse_static_label("my-env=x").unwrap_err().to_string();
        assert!(msg.contains("`my_env`"), "{msg}");
    }

    #[test]
    fn container_labels_parse_and_are_checked() {
        assert_eq!(
            parse_container_label("com.example.team").unwrap(),
            ContainerLabel { docker: "com.example.team".into(), loki: "com_example_team".into() }
        );
        assert_eq!(
            parse_container_label("com.example.team=team").unwrap(),
            ContainerLabel { docker: "com.example.team".into(), loki: "team".into() }
        );
        // A chosen name is checked, not rewritten.
        assert!(matches!(parse_container_label("a=b.c"), Err(LabelError::InvalidName { .. })));
        assert!(matches!(parse_container_label("=team"), Err(LabelError::EmptyName { .. })));
        assert!(matches!(parse_container_label("a="), Err(LabelError::EmptyName { .. })));
        assert!(matches!(parse_container_label("__x"), Err(LabelError::ReservedSanitized { .. })));
        assert!(matches!(parse_container_label("..x"), Err(LabelError::ReservedSanitized { .. })));
        assert_eq!(
            parse_container_label("..x=x").unwrap(),
            ContainerLabel { docker: "..x".into(), loki: "x".into() }
        );
    }

    fn stat(s: &str) -> StaticLabel {
        parse_static_label(s).unwrap()
    }

    fn cont(s: &str) -> ContainerLabel {
        parse_container_label(s).unwrap()
    }

    #[test]
    fn configuration_is_checked_as_a_whole() {
        let err = LabelConfig::new("h", vec![stat("env=a"), stat("env=b")], vec![]).unwrap_err();
        assert_eq!(err, LabelError::Duplicate { name: "env".into() });
        let err = LabelConfig::new("h", vec![stat("container=x")], vec![]).unwrap_err();
        assert_eq!(err, LabelError::SetByAgent { name: "container".into() });
        let err = LabelConfig::new("h", vec![stat("host=a"), stat("host=b")], vec![]).unwrap_err();
        assert_eq!(err, LabelError::Duplicate { name: "host".into() });
        let err = LabelConfig::new("h", vec![stat("team=a")], vec![cont("team")]).unwrap_err();
        assert_eq!(err, LabelError::Duplicate { name: "team".into() });
        let err = LabelConfig::new("h", vec![], vec![cont("a.b"), cont("a-b")]).unwrap_err();
        assert_eq!(err, LabelError::Duplicate { name: "a_b".into() });
        let err = LabelConfig::new("h", vec![], vec![cont("x=stream")]).unwrap_err();
        assert_eq!(err, LabelError::Duplicate { name: "stream".into() });

        // 5 defaults + 10 = 15 is the limit; `host=` replaces, not adds.
        let ten: Vec<_> = (0..10).map(|i| stat(&format!("l{i}=v"))).collect();
        let mut with_host = ten.clone();
        with_host.push(stat("host=edge-7"));
        LabelConfig::new("h", with_host, vec![]).unwrap();
        let err = LabelConfig::new("h", ten, vec![cont("one.more")]).unwrap_err();
        match &err {
            LabelError::TooMany { names } => assert_eq!(names.len(), 16),
            e => panic!("{e:?}"),
        }
        assert!(err.to_string().starts_with("16 label names per stream (host, container,"), "{err}");
    }

    #[test]
    fn default_labels_and_metadata() {
        let cfg = LabelConfig::new("node-1", vec![], vec![]).unwrap();
        let l = labels(&[(COMPOSE_PROJECT_LABEL, "shop"), (COMPOSE_SERVICE_LABEL, "web"), ("other", "x")]);
        let c = Container { id: ID, name: "/shop-web-1", image: "nginx:1.27", labels: &l };
        let s = cfg.stream(&c, StreamId::Stderr);
        assert_eq!(
            s.rendered(),
            r#"{compose_project="shop", compose_service="web", container="shop-web-1", host="node-1", stream="stderr"}"#
        );
        assert_eq!(
            s.metadata(),
            &[("container_id".to_owned(), ID.to_owned()), ("image".to_owned(), "nginx:1.27".to_owned())]
        );
        assert_eq!(s.metadata_bytes(), "container_id".len() + 64 + "image".len() + 10);

        // No Compose labels, no host name: those labels are left out.
        let cfg = LabelConfig::new("", vec![], vec![]).unwrap();
        let none = BTreeMap::new();
        let c = Container { id: ID, name: "solo", image: "", labels: &none };
        let s = cfg.stream(&c, StreamId::Stdout);
        assert_eq!(s.rendered(), r#"{container="solo", stream="stdout"}"#);
        assert_eq!(s.metadata().len(), 1);
    }

    #[test]
    fn static_and_container_labels_and_host_override() {
        let cfg = LabelConfig::new(
            "node-1",
            vec![stat("env=prod"), stat("host=edge-7")],
            vec![cont("com.example.team"), cont("tier=level"), cont("absent")],
        )
        .unwrap();
        let l = labels(&[("com.example.team", "pay"), ("tier", "back"), ("absent", "")]);
        let c = Container { id: ID, name: "/api", image: "api:3", labels: &l };
        assert_eq!(
            cfg.stream(&c, StreamId::Stdout).rendered(),
            r#"{com_example_team="pay", container="api", env="prod", host="edge-7", level="back", stream="stdout"}"#
        );
    }

    #[test]
    fn values_are_escaped_and_cut() {
        let mut out = String::new();
        escape_value(&mut out, "a\"b\\c\nd\te\x01\x7fé✓");
        assert_eq!(out, r#"a\"b\\c\nd\te\x01\x7fé✓"#);

        let cfg = LabelConfig::new("h", vec![], vec![cont("note")]).unwrap();
        // A 2049-byte value whose byte 2048 is inside a 2-byte character.
        let long = format!("{}é", "x".repeat(MAX_VALUE_LEN - 1));
        let l = labels(&[("note", &long)]);
        let c = Container { id: ID, name: "n", image: "i", labels: &l };
        let s = cfg.stream(&c, StreamId::Stdout);
        let note = &s.labels().iter().find(|(n, _)| n == "note").unwrap().1;
        assert_eq!(note.len(), MAX_VALUE_LEN - 1);
        assert!(note.bytes().all(|b| b == b'x'));
    }

    #[test]
    fn cut_at_char_boundaries() {
        assert_eq!(cut_at_char("abc", 3), "abc");
        assert_eq!(cut_at_char("abc", 2), "ab");
        assert_eq!(cut_at_char("a✓", 3), "a");
        assert_eq!(cut_at_char("a✓", 4), "a✓");
        assert_eq!(cut_at_char("✓", 0), "");
    }
}
