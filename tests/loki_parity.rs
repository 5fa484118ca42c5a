//! The Loki double against real Loki: the same crafted pushes (good and bad,
//! both encodings, structured metadata) to the double configured like a
//! real Loki and to that Loki itself (2.9.9 with its defaults, 2.9.9 with
//! schema v13, 2.8.11), then the same status, the same answer where its
//! words are the double's to match, and the same entries stored. So the
//! double the agent's tests rely on cannot drift from what Loki does.
//!
//! Needs `LC_LOKI_DIR` (see `tests/common/real_loki.rs`); skips without it
//! unless `LC_REQUIRE_LOKI=1`.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::real_loki::{http, now_ns, Loki, Variant};
use loki_double as lk;

/// An entry to push: timestamp, line, structured metadata.
struct E {
    ts: i64,
    line: Vec<u8>,
    meta: Vec<(&'static str, &'static str)>,
}

fn e(ts: i64, line: impl Into<Vec<u8>>) -> E {
    E { ts, line: line.into(), meta: vec![] }
}

fn e_sm(ts: i64, line: &str, meta: &[(&'static str, &'static str)]) -> E {
    E { ts, line: line.into(), meta: meta.to_vec() }
}

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn ld(out: &mut Vec<u8>, field: u64, b: &[u8]) {
    varint(out, field << 3 | 2);
    varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

/// A `PushRequest` by field numbers (labels sent as written).
fn protobuf<L: AsRef<str>>(streams: &[(L, Vec<E>)]) -> Vec<u8> {
    let mut req = Vec::new();
    for (labels, entries) in streams {
        let mut s = Vec::new();
        ld(&mut s, 1, labels.as_ref().as_bytes());
        for x in entries {
            let mut ts = Vec::new();
            varint(&mut ts, 1 << 3);
            varint(&mut ts, x.ts.div_euclid(1_000_000_000) as u64);
            varint(&mut ts, 2 << 3);
            varint(&mut ts, x.ts.rem_euclid(1_000_000_000) as u64);
            let mut en = Vec::new();
            ld(&mut en, 1, &ts);
            ld(&mut en, 2, &x.line);
            for (k, v) in &x.meta {
                let mut p = Vec::new();
                ld(&mut p, 1, k.as_bytes());
                ld(&mut p, 2, v.as_bytes());
                ld(&mut en, 3, &p);
            }
            ld(&mut s, 2, &en);
        }
        ld(&mut req, 1, &s);
    }
    req
}

fn snappy(b: &[u8]) -> Vec<u8> {
    snap::raw::Encoder::new().compress_vec(b).unwrap()
}

/// A JSON stream: its labels as pairs, its entries.
type JsonStream = (Vec<(String, String)>, Vec<E>);

/// A JSON push: label maps as pairs (so that duplicates and odd names can
/// be written), entries with a third element when they carry metadata.
fn json(streams: &[JsonStream]) -> Vec<u8> {
    let streams: Vec<serde_json::Value> = streams
        .iter()
        .map(|(labels, entries)| {
            let map: serde_json::Map<String, serde_json::Value> =
                labels.iter().map(|(k, v)| (k.clone(), v.clone().into())).collect();
            let values: Vec<serde_json::Value> = entries
                .iter()
                .map(|x| {
                    let line = String::from_utf8(x.line.clone()).unwrap();
                    if x.meta.is_empty() {
                        serde_json::json!([x.ts.to_string(), line])
                    } else {
                        let m: serde_json::Map<String, serde_json::Value> =
                            x.meta.iter().map(|(k, v)| (k.to_string(), (*v).into())).collect();
                        serde_json::json!([x.ts.to_string(), line, m])
                    }
                })
                .collect();
            serde_json::json!({"stream": map, "values": values})
        })
        .collect();
    serde_json::json!({ "streams": streams }).to_string().into_bytes()
}

fn pairs(kv: &[(&str, &str)]) -> Vec<(String, String)> {
    kv.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

const PB: &str = "application/x-protobuf";
const JSON: &str = "application/json";

/// One crafted push. Every stream that can carry it has `run="<name>"`,
/// by which what was stored is read back.
struct Case {
    name: &'static str,
    content_type: &'static str,
    content_encoding: Option<&'static str>,
    /// A push sent first (answered 204), to set a stream's newest entry.
    setup: Option<Vec<u8>>,
    body: Vec<u8>,
    /// Compare the answer's words too (else status and storage only).
    words: bool,
}

fn cases(t: i64) -> Vec<Case> {
    let big = "x".repeat(300 * 1024);
    let mut v = Vec::new();
    let mut pb = |name: &'static str, streams: Vec<(String, Vec<E>)>| {
        v.push(Case {
            name,
            content_type: PB,
            content_encoding: None,
            setup: None,
            body: snappy(&protobuf(&streams)),
            words: true,
        });
    };
    let run = |name: &str| format!("run=\"{name}\"");
    pb(
        "good_protobuf",
        vec![(format!("{{job=\"p\", {}}}", run("good_protobuf")), vec![e(t, "one"), e(t + 1, "two")])],
    );
    pb(
        "too_long_mixed",
        vec![(
            format!("{{{}}}", run("too_long_mixed")),
            vec![e(t, "fits"), e(t + 1, big.clone()), e(t + 2, "fits too")],
        )],
    );
    pb(
        "bad_syntax_mixed",
        vec![
            (format!("{{s=\"good\", {}}}", run("bad_syntax_mixed")), vec![e(t, "good stream")]),
            (format!("{{s=\"bad\", {}", run("bad_syntax_mixed")), vec![e(t, "unterminated")]),
        ],
    );
    pb(
        "duplicate_names_mixed",
        vec![
            (format!("{{a=\"1\", a=\"2\", {}}}", run("duplicate_names_mixed")), vec![e(t, "dup")]),
            (format!("{{a=\"1\", {}}}", run("duplicate_names_mixed")), vec![e(t, "good stream")]),
        ],
    );
    pb(
        "empty_labels_mixed",
        vec![
            ("{}".to_owned(), vec![e(t, "no labels")]),
            (format!("{{{}}}", run("empty_labels_mixed")), vec![e(t, "good")]),
        ],
    );
    pb(
        "metadata_protobuf",
        vec![
            (
                format!("{{s=\"a\", {}}}", run("metadata_protobuf")),
                vec![e_sm(t, "with", &[("container_id", "c1"), ("image", "bb:1")]), e(t + 1, "without")],
            ),
            (format!("{{s=\"b\", {}}}", run("metadata_protobuf")), vec![e(t + 2, "plain stream")]),
        ],
    );
    v.push(Case {
        name: "empty_body",
        content_type: PB,
        content_encoding: None,
        setup: None,
        body: vec![],
        words: true,
    });
    v.push(Case {
        name: "corrupt_snappy",
        content_type: PB,
        content_encoding: None,
        setup: None,
        body: b"\xff\x00 not snappy at all".to_vec(),
        words: true,
    });
    v.push(Case {
        name: "unknown_field_bad_wire",
        content_type: PB,
        content_encoding: None,
        setup: None,
        body: snappy(&[0x17, 1, 2, 3]),
        words: true,
    });
    let labels = format!("{{{}}}", run("content_encoding_snappy"));
    v.push(Case {
        name: "content_encoding_snappy",
        content_type: PB,
        content_encoding: Some("snappy"),
        setup: None,
        body: snappy(&protobuf(&[(labels.as_str(), vec![e(t, "said snappy")])])),
        words: true,
    });
    let labels = format!("{{{}}}", run("content_encoding_br"));
    v.push(Case {
        name: "content_encoding_br",
        content_type: PB,
        content_encoding: Some("br"),
        setup: None,
        body: snappy(&protobuf(&[(labels.as_str(), vec![e(t, "said br")])])),
        words: true,
    });
    v.push(Case {
        name: "snappy_not_protobuf",
        content_type: PB,
        content_encoding: None,
        setup: None,
        body: snappy(&[0x0f, 1, 2, 3]),
        words: true,
    });
    let mut js = |name: &'static str, streams: Vec<JsonStream>, words: bool| {
        v.push(Case {
            name,
            content_type: JSON,
            content_encoding: None,
            setup: None,
            body: json(&streams),
            words,
        });
    };
    js(
        "good_json",
        vec![(pairs(&[("job", "j"), ("run", "good_json")]), vec![e(t, "one"), e(t + 1, "two")])],
        true,
    );
    js("too_long_alone", vec![(pairs(&[("run", "too_long_alone")]), vec![e(t, big.clone())])], true);
    let mut many = pairs(&[("run", "too_many_labels")]);
    many.extend((0..30).map(|i| (format!("l{i:02}"), "v".to_owned())));
    js(
        "too_many_labels",
        vec![
            (many, vec![e(t, "31 names")]),
            (pairs(&[("run", "too_many_labels"), ("s", "good")]), vec![e(t, "good")]),
        ],
        true,
    );
    let long = "v".repeat(3000);
    js(
        "long_label_value",
        vec![
            (vec![("run".into(), "long_label_value".into()), ("x".into(), long)], vec![e(t, "long value")]),
            (pairs(&[("run", "long_label_value"), ("s", "good")]), vec![e(t, "good")]),
        ],
        true,
    );
    js(
        "bad_name_json_mixed",
        vec![
            (pairs(&[("run", "bad_name_json_mixed"), ("s", "good")]), vec![e(t, "good")]),
            (pairs(&[("run", "bad_name_json_mixed"), ("foo-bar", "x")]), vec![e(t, "bad name")]),
        ],
        true,
    );
    js(
        "too_new_mixed",
        vec![(pairs(&[("run", "too_new_mixed")]), vec![e(t, "now"), e(t + HOUR, "an hour ahead")])],
        true,
    );
    // Several refusals: 2.9 groups them in an order of its own.
    js(
        "several_refusals",
        vec![
            (pairs(&[("run", "several_refusals"), ("s", "a")]), vec![e(t, big.clone()), e(t + 1, "fits")]),
            (
                pairs(&[("run", "several_refusals"), ("s", "b")]),
                vec![e(t, big.clone() + "y"), e(t + 1, "fits")],
            ),
        ],
        false,
    );
    // Loki 2.8's decoder quotes the body around where it stumbled: the
    // double's window is its own, so only the status and storage compare.
    js(
        "metadata_json",
        vec![
            (
                pairs(&[("run", "metadata_json"), ("s", "a")]),
                vec![e_sm(t, "with", &[("container_id", "c1"), ("image", "bb:1")]), e(t + 1, "without")],
            ),
            (pairs(&[("run", "metadata_json"), ("s", "b")]), vec![e(t + 2, "plain stream")]),
        ],
        false,
    );
    // The ingester's window: an hour behind the stream's newest entry.
    let stream = pairs(&[("run", "too_far_behind")]);
    v.push(Case {
        name: "too_far_behind",
        content_type: JSON,
        content_encoding: None,
        setup: Some(json(&[(stream.clone(), vec![e(t, "newest")])])),
        body: json(&[(
            stream,
            vec![e(t - 2 * HOUR, "two hours behind"), e(t - HOUR + 600_000_000_000, "50 min behind")],
        )]),
        words: true,
    });
    v
}

/// What a target stored for one case: (labels with any metadata merged in,
/// as Loki's query returns them; timestamp; line).
type Held = BTreeSet<(BTreeMap<String, String>, i64, String)>;

/// The double set up as `loki-local.yaml` sets Loki up, with the metadata
/// behaviour of `variant`.
fn double_like(variant: Variant) -> lk::Double {
    let limits = lk::Limits {
        max_label_names_per_series: 30,
        reject_old_samples_max_age: None,
        ..lk::Limits::default()
    };
    let structured_metadata = match variant {
        Variant::V2_8_11 => lk::StructuredMetadata::Unknown,
        Variant::V2_9_9 => lk::StructuredMetadata::Disallowed,
        Variant::V2_9_9_V13 => lk::StructuredMetadata::Allowed,
    };
    lk::Double::start(lk::Config { limits, structured_metadata, ..lk::Config::default() }).unwrap()
}

fn held_by_double(d: &lk::Double, run: &str) -> Held {
    d.entries()
        .into_iter()
        .filter(|x| x.label("run").as_deref() == Some(run))
        .map(|x| {
            let mut labels: BTreeMap<String, String> =
                lk::parse_labels(&x.labels).unwrap().into_iter().collect();
            labels.extend(x.metadata.iter().cloned());
            (labels, x.ts_ns, String::from_utf8_lossy(&x.line).into_owned())
        })
        .collect()
}

/// What Loki holds of `run` from `since` (ns ago) to ten minutes ahead.
fn held_by_loki(l: &Loki, run: &str, since: i64) -> Held {
    let now = now_ns();
    l.entries_between(&format!("{{run=\"{run}\"}}"), now - since, now + 600_000_000_000)
        .into_iter()
        .map(|x| (x.labels, x.ts_ns, x.line))
        .collect()
}

/// 2.8 words label parse errors without 2.9's prefix; the double speaks 2.9.
fn words_differ_by_version(variant: Variant, loki_said: &str) -> bool {
    variant == Variant::V2_8_11 && loki_said.contains("parse error")
}

/// A too-old refusal names the oldest time acceptable *now*, to the second:
/// the double and Loki may see different seconds.
fn normalise(msg: &str) -> String {
    const MARK: &str = "has timestamp too old: ";
    const OLDEST: &str = ", oldest acceptable timestamp is: ";
    match (msg.find(MARK), msg.find(OLDEST)) {
        (Some(_), Some(i)) => {
            let rest = &msg[i + OLDEST.len()..];
            let end = rest.find(|c: char| !(c.is_ascii_digit() || "-:TZ".contains(c))).unwrap_or(rest.len());
            format!("{}{OLDEST}<now - max age>{}", &msg[..i], &rest[end..])
        }
        _ => msg.to_owned(),
    }
}

fn short(s: &str) -> String {
    if s.len() > 300 {
        format!("{}… ({} bytes)", &s[..300], s.len())
    } else {
        s.to_owned()
    }
}

fn parity(test: &str, variant: Variant) -> Option<Loki> {
    let loki = Loki::start(test, variant, &[])?;
    let double = double_like(variant);
    compare(test, variant, &loki, &double, cases(now_ns()), 2 * HOUR);
    Some(loki)
}

const HOUR: i64 = 3_600_000_000_000;

/// Each case to both; every difference in status, answer or what was
/// stored (read back from `since` ago) fails, all of them listed.
fn compare(test: &str, variant: Variant, loki: &Loki, double: &lk::Double, cases: Vec<Case>, since: i64) {
    let mut report = Vec::new();
    let mut mismatches = 0;
    for c in cases {
        let mut headers = vec![("Content-Type", c.content_type)];
        headers.extend(c.content_encoding.map(|e| ("Content-Encoding", e)));
        if let Some(b) = &c.setup {
            let (ls, lm) = loki.push(&headers, b);
            let (ds, dm) =
                http(&double.addr().to_string(), "POST", "/loki/api/v1/push", &headers, b).unwrap();
            assert_eq!((ls, ds), (204, 204), "{}: the setup push: Loki {lm:?}, double {dm:?}", c.name);
        }
        let (ls, lm) = loki.push(&headers, &c.body);
        let (ds, dm) =
            http(&double.addr().to_string(), "POST", "/loki/api/v1/push", &headers, &c.body).unwrap();
        let (lm, dm) = (normalise(lm.trim_end()), normalise(dm.trim_end()));
        let (lh, dh) = (held_by_loki(loki, c.name, since), held_by_double(double, c.name));
        let mut wrong = Vec::new();
        if ls != ds {
            wrong.push(format!("status: Loki {ls}, double {ds}"));
        }
        if c.words && lm != dm && !words_differ_by_version(variant, &lm) {
            wrong.push(format!("answer: Loki {:?}, double {:?}", short(&lm), short(&dm)));
        }
        if lh != dh {
            wrong.push(format!(
                "stored: Loki {:?}, double {:?}",
                lh.iter().map(|(l, ts, x)| (l, ts, short(x))).collect::<Vec<_>>(),
                dh.iter().map(|(l, ts, x)| (l, ts, short(x))).collect::<Vec<_>>()
            ));
        }
        report.push(format!(
            "  {:<24} {ls} stored {}{}",
            c.name,
            lh.len(),
            if wrong.is_empty() { String::new() } else { format!("  MISMATCH: {}", wrong.join("; ")) }
        ));
        mismatches += usize::from(!wrong.is_empty());
    }
    let text = report.join("\n");
    common::real_loki::say(&format!("{test} ({variant}):\n{text}"));
    assert_eq!(mismatches, 0, "{test}: the double and {variant} disagree:\n{text}");
}

#[test]
fn the_double_answers_as_loki_2_9_9_with_default_limits() {
    let Some(loki) = parity("parity_2_9_9", Variant::V2_9_9) else { return };
    // The read-back's paging, on this instance: three streams whose
    // entries share timestamps two by two, read in pages of 7, which cut
    // through a shared timestamp: each entry once.
    let t = now_ns() - 1_000_000_000;
    let streams: Vec<(String, Vec<E>)> = (0..3)
        .map(|s| {
            (
                format!("{{run=\"paging\", s=\"{s}\"}}"),
                (0..10).map(|i| e(t + i / 2, format!("{s} {i}"))).collect(),
            )
        })
        .collect();
    let body = snappy(&protobuf(&streams));
    assert_eq!(loki.push(&[("Content-Type", PB)], &body).0, 204);
    let got = loki.entries_paged("{run=\"paging\"}", t, t + 10, 7);
    let distinct: BTreeSet<(i64, &str)> = got.iter().map(|x| (x.ts_ns, x.line.as_str())).collect();
    assert_eq!((got.len(), distinct.len()), (30, 30), "paged read-back: {got:?}");
    let whole = loki.entries_paged("{run=\"paging\"}", t, t + 10, 5000);
    assert_eq!(got, whole, "pages of 7 and one page disagree");
}

#[test]
fn the_double_answers_as_loki_2_9_9_with_structured_metadata_allowed() {
    parity("parity_2_9_9_v13", Variant::V2_9_9_V13);
}

#[test]
fn the_double_answers_as_loki_2_8_11() {
    parity("parity_2_8_11", Variant::V2_8_11);
}

/// Loki's strict setting, a flag on its command line: entries older than
/// `reject_old_samples_max_age` (168 h) refused, the rest of the push
/// stored. The double's default limits are Loki's defaults.
#[test]
fn the_double_answers_as_loki_2_9_9_rejecting_old_samples() {
    let test = "parity_2_9_9_old_samples";
    let Some(loki) = Loki::start(test, Variant::V2_9_9, &["-validation.reject-old-samples=true"]) else {
        return;
    };
    let limits = lk::Limits { max_label_names_per_series: 30, ..lk::Limits::default() };
    let double = lk::Double::start(lk::Config {
        limits,
        structured_metadata: lk::StructuredMetadata::Disallowed,
        ..lk::Config::default()
    })
    .unwrap();
    let t = now_ns();
    let week = 168 * HOUR;
    let old = |name: &'static str, content_type, body| Case {
        name,
        content_type,
        content_encoding: None,
        setup: None,
        body,
        words: true,
    };
    let cases = vec![
        old(
            "too_old_alone",
            JSON,
            json(&[(pairs(&[("run", "too_old_alone")]), vec![e(t - week - HOUR, "8 days")])]),
        ),
        old(
            "too_old_mixed",
            PB,
            snappy(&protobuf(&[(
                "{run=\"too_old_mixed\"}",
                vec![e(t - week - HOUR, "8 days"), e(t - week + HOUR, "6 days 23 h"), e(t, "now")],
            )])),
        ),
    ];
    compare(test, Variant::V2_9_9, &loki, &double, cases, week + 2 * HOUR);
}
