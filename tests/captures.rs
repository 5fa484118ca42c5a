//! Decode responses captured from a real dockerd (20.10.24, API 1.41; see
//! tests/data/README.md for how each was made) and check every record.

use std::path::Path;
use std::process::Command;

use log_capturer::docker::frame::StreamId;
use log_capturer::docker::logstream::{Framing, LogEvent, LogStreamConfig};
use log_capturer::record::OwnedRecord;
use log_capturer::response::{ResponseConfig, ResponseDecoder, ResponseError, ResponseErrorKind};

fn capture(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data").join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

struct Decoded {
    records: Vec<OwnedRecord>,
    daemon_errors: Vec<Vec<u8>>,
    result: Result<(), ResponseError>,
}

/// Decode `wire` fed in pieces of `piece` bytes, as the agent's reads would.
fn decode_in_pieces(wire: &[u8], tty: bool, piece: usize) -> Decoded {
    let framing = if tty { Framing::Raw } else { Framing::Multiplexed };
    let mut dec = ResponseDecoder::new(ResponseConfig {
        stream: LogStreamConfig::new(framing, true),
        framing_from_content_type: true,
        detect_timestamps: true,
    });
    let mut records = Vec::new();
    let mut daemon_errors = Vec::new();
    let mut emit = |ev: LogEvent<'_>| match ev {
        LogEvent::Record(r) => records.push(r.to_owned()),
        LogEvent::DaemonError(m) => daemon_errors.push(m.to_vec()),
    };
    let mut result = Ok(());
    for p in wire.chunks(piece.max(1)) {
        result = dec.push(p, &mut emit);
        if result.is_err() {
            break;
        }
    }
    if result.is_ok() {
        result = dec.finish(&mut emit);
    }
    Decoded { records, daemon_errors, result }
}

/// Decode whole, and check that every piece size gives the same records.
fn decode(name: &str, tty: bool) -> Decoded {
    let wire = capture(name);
    let whole = decode_in_pieces(&wire, tty, wire.len());
    for piece in [1, 2, 3, 7, 8, 9, 31, 32, 100, 4096] {
        let d = decode_in_pieces(&wire, tty, piece);
        assert_eq!(d.records, whole.records, "{name} in pieces of {piece}");
        assert_eq!(d.result, whole.result, "{name} in pieces of {piece}");
    }
    whole
}

fn text(r: &OwnedRecord) -> String {
    String::from_utf8(r.message.clone()).unwrap()
}

fn assert_increasing(records: &[OwnedRecord]) {
    let ts: Vec<i64> = records.iter().map(|r| r.timestamp.expect("timestamp")).collect();
    assert!(ts.windows(2).all(|w| w[0] <= w[1]), "timestamps not in order: {ts:?}");
}

#[test]
fn interleaved_stdout_and_stderr() {
    let d = decode("interleaved.http", false);
    d.result.unwrap();
    assert_eq!(d.records.len(), 20);
    for (i, r) in d.records.iter().enumerate() {
        let n = i + 1;
        let (stream, name) =
            if n % 2 == 1 { (StreamId::Stdout, "stdout") } else { (StreamId::Stderr, "stderr") };
        assert_eq!(text(r), format!("line {n:02} {name}"));
        assert_eq!(r.stream, stream);
        assert!(!r.truncated && !r.partial);
    }
    assert_increasing(&d.records);
}

#[test]
fn without_timestamps_they_are_absent() {
    let d = decode("no-timestamps.http", false);
    d.result.unwrap();
    assert_eq!(d.records.len(), 20);
    assert!(d.records.iter().all(|r| r.timestamp.is_none()));
    assert_eq!(text(&d.records[19]), "line 20 stderr");
}

#[test]
fn forty_thousand_byte_line_comes_out_whole() {
    let d = decode("long-line.http", false);
    d.result.unwrap();
    assert_eq!(d.records.len(), 2);
    assert_eq!(text(&d.records[0]), "0123456789".repeat(4000));
    assert_eq!(text(&d.records[1]), "short line after long");
    assert_increasing(&d.records);
}

#[test]
fn tty_container() {
    let d = decode("tty.http", true);
    d.result.unwrap();
    let lines: Vec<String> = d.records.iter().map(text).collect();
    assert_eq!(lines, ["tty line 1", "tty line 2", "tty line 3"]);
    assert!(d.records.iter().all(|r| r.stream == StreamId::Stdout && r.timestamp.is_some()));

    let d = decode("tty-no-timestamps.http", true);
    d.result.unwrap();
    let lines: Vec<String> = d.records.iter().map(text).collect();
    assert_eq!(lines, ["tty line 1", "tty line 2", "tty line 3"]);
}

#[test]
fn tty_long_line_loses_the_repeated_prefixes() {
    let d = decode("tty-long-line.http", true);
    d.result.unwrap();
    assert_eq!(d.records.len(), 2);
    assert_eq!(text(&d.records[0]), "0123456789".repeat(4000));
    assert_eq!(text(&d.records[1]), "short line after long");
}

#[test]
fn exited_container_final_partial_line() {
    let d = decode("exited-no-newline.http", false);
    d.result.unwrap();
    let lines: Vec<String> = d.records.iter().map(text).collect();
    assert_eq!(lines, ["first", "last"]);
    assert!(!d.records[0].partial && d.records[1].partial);
}

#[test]
fn invalid_utf8_from_json_file_and_local_drivers() {
    // json-file stores JSON strings, so dockerd already replaced the bytes.
    let d = decode("invalid-utf8.http", false);
    d.result.unwrap();
    assert_eq!(d.records[0].message, "bad \u{fffd}\u{fffd} euro \u{20ac} end".as_bytes());
    // The local driver keeps the bytes, and so do we.
    let d = decode("invalid-utf8-local.http", false);
    d.result.unwrap();
    assert_eq!(d.records[0].message, b"bad \xff\xfe euro \xe2\x82\xac end");
    assert_eq!(text(&d.records[1]), "next line");
}

#[test]
fn follow_stream_ends_with_the_container() {
    let d = decode("follow.http", false);
    d.result.unwrap();
    let lines: Vec<String> = d.records.iter().map(text).collect();
    assert_eq!(lines, (1..=5).map(|i| format!("follow line {i}")).collect::<Vec<_>>());
}

#[test]
fn tail_and_stdout_only() {
    let d = decode("tail-3.http", false);
    let lines: Vec<String> = d.records.iter().map(text).collect();
    assert_eq!(lines, ["line 18 stderr", "line 19 stdout", "line 20 stderr"]);
    let d = decode("stdout-only.http", false);
    assert_eq!(d.records.len(), 10);
    assert!(d.records.iter().all(|r| r.stream == StreamId::Stdout));
}

#[test]
fn empty_log() {
    let d = decode("empty.http", false);
    d.result.unwrap();
    assert!(d.records.is_empty() && d.daemon_errors.is_empty());
}

#[test]
fn daemon_errors_carry_the_message() {
    let d = decode("not-found.http", false);
    let e = d.result.unwrap_err();
    assert_eq!(
        e.kind,
        ResponseErrorKind::Daemon { status: 404, message: format!("No such container: {}", "0".repeat(64)) }
    );
    let d = decode("no-streams.http", false);
    assert!(matches!(d.result.unwrap_err().kind, ResponseErrorKind::Daemon { status: 400, .. }));
}

#[test]
fn other_endpoints_are_not_logs() {
    for name in ["ping.http", "inspect.http", "events.http", "containers-list.http"] {
        let d = decode(name, false);
        assert!(
            matches!(d.result, Err(ResponseError { kind: ResponseErrorKind::NotLogs(_), .. })),
            "{name}: {:?}",
            d.result
        );
    }
}

#[test]
fn cut_captures_report_where() {
    let wire = capture("interleaved.http");
    // Cut inside the third frame's chunk: two records, then truncation.
    let head_end = wire.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let cut = head_end + 2 * (4 + 54 + 2) + 20;
    let d = decode_in_pieces(&wire[..cut], false, 64);
    assert_eq!(d.records.len(), 2);
    let e = d.result.unwrap_err();
    assert!(matches!(e.kind, ResponseErrorKind::Body(_)), "{e}");
    assert_eq!(e.offset, Some(cut as u64));

    // Corrupt a frame header: the error names the header's last byte, where
    // the header is complete and found wrong.
    let mut bad = wire.clone();
    let first_frame = head_end + 4; // after "2e\r\n"
    bad[first_frame] = 7;
    let d = decode_in_pieces(&bad, false, 4096);
    let e = d.result.unwrap_err();
    assert_eq!(e.offset, Some(first_frame as u64 + 7), "{e}");
    assert!(e.to_string().contains("unknown stream 7"), "{e}");
}

// The command line, as an operator runs it.

fn decode_cmd(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_log-capturer"))
        .arg("decode")
        .args(args)
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data"))
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn cli_prints_json_lines() {
    let (code, out, err) = decode_cmd(&["interleaved.http"]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 20);
    assert_eq!(lines[1]["stream"], "stderr");
    assert_eq!(lines[1]["message"], "line 02 stderr");
    let ts = lines[0]["timestamp"].as_str().unwrap();
    assert!(ts.len() == 30 && ts.ends_with('Z'), "{ts}");
    assert_eq!(lines[0].as_object().unwrap().len(), 3);
}

#[test]
fn cli_reads_stdin_and_tty() {
    let out = Command::new(env!("CARGO_BIN_EXE_log-capturer"))
        .args(["decode", "--tty"])
        .stdin(
            std::fs::File::open(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/tty.http")).unwrap(),
        )
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8(out.stdout).unwrap().lines().count(), 3);
}

#[test]
fn cli_daemon_error_and_malformed_input() {
    let (code, out, err) = decode_cmd(&["not-found.http"]);
    assert_eq!(code, 1);
    assert!(out.is_empty());
    assert!(err.contains("Docker answered 404: No such container"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");

    // A TTY capture read as multiplexed: the first "header" is text.
    let (code, _, err) = decode_cmd(&["tty.http"]);
    assert_eq!(code, 1);
    assert!(err.contains("at byte ") && err.contains("unknown stream"), "{err}");

    let (code, _, err) = decode_cmd(&["no-such-file.http"]);
    assert_eq!(code, 2);
    assert!(err.contains("cannot open no-such-file.http"), "{err}");
}

#[test]
fn cli_truncation_flag() {
    let (code, out, _) = decode_cmd(&["--max-line-bytes", "100", "long-line.http"]);
    assert_eq!(code, 0);
    let first: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(first["truncated"], true);
    assert_eq!(first["message"].as_str().unwrap().len(), 100);
}

#[test]
fn cli_keeps_invalid_utf8_bytes() {
    let (code, out, _) = decode_cmd(&["invalid-utf8-local.http"]);
    assert_eq!(code, 0);
    let first: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(first["message_base64"], "YmFkIP/+IGV1cm8g4oKsIGVuZA==");
}
