//! TLS with the CA made for the test, the wrong CA, and mTLS.

mod common;

use common::*;
use loki_double::{Config, Double, TlsConfig};

fn tls_double(wrong_ca: bool, mtls: bool) -> Double {
    let cfg = Config {
        tls: Some(TlsConfig { dir: None, wrong_ca, require_client_cert: mtls }),
        ..Config::default()
    };
    Double::start(cfg).expect("start the double")
}

fn batch(line: &str) -> Vec<(&'static str, Vec<E>)> {
    vec![(r#"{a="b"}"#, vec![e(now_ns(), line)])]
}

#[test]
fn push_over_tls_with_the_test_ca() {
    let d = tls_double(false, false);
    let pki = d.pki().unwrap().clone();
    assert!(d.url().starts_with("https://localhost:"));
    // The PEM files the agent would be pointed at exist and hold the CA.
    assert_eq!(std::fs::read_to_string(&pki.ca_file).unwrap(), pki.ca_pem);
    assert!(pki.ca_pem.starts_with("-----BEGIN CERTIFICATE-----"));
    assert!(pki.client.key_file.exists() && pki.server.cert_file.exists());

    let mut c = Client::tls(d.addr(), client_config(&pki.ca_der, None)).expect("handshake");
    // Keep-alive over TLS too.
    for i in 0..3 {
        assert_eq!(c.push_pb(&batch(&format!("over tls {i}"))).status, 204);
    }
    let s = d.stats();
    assert_eq!((s.entries_stored, s.connections_total, s.tls_handshake_failures), (3, 1, 0));
    // The temporary directory goes with the double.
    drop(c);
    drop(d);
    assert!(!pki.dir.exists());
}

#[test]
fn a_certificate_from_another_ca_is_refused_by_the_client() {
    let d = tls_double(true, false);
    let pki = d.pki().unwrap();
    let err = Client::tls(d.addr(), client_config(&pki.ca_der, None)).err().expect("handshake must fail");
    assert!(
        matches!(err, rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer)),
        "{err:?}"
    );
    assert!(d.wait_until(WAIT, |s| s.tls_handshake_failures == 1 && s.connections_open == 0));
    assert_eq!(d.stats().requests_total, 0);
    // Trusting the other CA works: the server really serves its certificate.
    let mut c = Client::tls(d.addr(), client_config(&pki.other_ca_der, None)).expect("handshake");
    assert_eq!(c.push_pb(&batch("x")).status, 204);
}

#[test]
fn plain_http_to_a_tls_port_fails() {
    let d = tls_double(false, false);
    let mut c = Client::plain(d.addr());
    let _ = c.post(&snappy(&protobuf(&batch("x"))), &[]);
    let (bytes, _) = c.rest();
    assert!(!bytes.starts_with(b"HTTP/"));
    assert!(d.wait_until(WAIT, |s| s.tls_handshake_failures == 1));
    assert_eq!(d.stats().entries_stored, 0);
}

#[test]
fn mtls_requires_a_client_certificate_from_the_ca() {
    let d = tls_double(false, true);
    let pki = d.pki().unwrap().clone();

    // No certificate: with TLS 1.3 the client's handshake ends before the
    // server has judged it, so the refusal arrives on the first read.
    let refused = match Client::tls(d.addr(), client_config(&pki.ca_der, None)) {
        Err(_) => true,
        Ok(mut c) => c.post(&snappy(&protobuf(&batch("x"))), &[]).is_err() || c.response().is_err(),
    };
    assert!(refused);
    assert!(d.wait_until(WAIT, |s| s.tls_handshake_failures == 1));

    // A certificate from another CA.
    let refused = match Client::tls(d.addr(), client_config(&pki.ca_der, Some(&pki.wrong_client))) {
        Err(_) => true,
        Ok(mut c) => c.post(&snappy(&protobuf(&batch("x"))), &[]).is_err() || c.response().is_err(),
    };
    assert!(refused);
    assert!(d.wait_until(WAIT, |s| s.tls_handshake_failures == 2));
    assert_eq!(d.stats().entries_stored, 0);

    let mut c = Client::tls(d.addr(), client_config(&pki.ca_der, Some(&pki.client))).expect("handshake");
    assert_eq!(c.push_pb(&batch("with a client certificate")).status, 204);
    assert_eq!(d.stats().entries_stored, 1);
}

#[test]
fn pem_files_go_where_asked() {
    let dir = std::env::temp_dir().join(format!("loki-double-test-pki-{}", std::process::id()));
    let cfg = Config {
        tls: Some(TlsConfig { dir: Some(dir.clone()), ..TlsConfig::default() }),
        ..Config::default()
    };
    let d = Double::start(cfg).unwrap();
    for f in ["ca.pem", "server.pem", "server-key.pem", "client.pem", "client-key.pem", "other-ca.pem"] {
        assert!(dir.join(f).exists(), "{f}");
    }
    assert_eq!(d.pki().unwrap().ca_file, dir.join("ca.pem"));
    drop(d);
    // A directory the caller chose is the caller's to remove.
    assert!(dir.exists());
    std::fs::remove_dir_all(&dir).unwrap();
}
