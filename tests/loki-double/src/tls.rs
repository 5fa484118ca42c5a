//! Certificates made for one test run (rcgen) and the rustls server
//! configuration built from them.
//!
//! [`Pki::generate`] makes a CA, a server certificate for `localhost` and
//! `127.0.0.1` signed by it, a client certificate (for mTLS) signed by it,
//! and a second, unrelated CA with its own `localhost` server certificate:
//! serving that one is the "wrong CA" case. Everything is written as PEM
//! files in a directory so the agent can be pointed at them with flags.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};

/// One issued certificate with its key, in DER and in the PEM files written.
#[derive(Clone, Debug)]
pub struct Issued {
    pub cert_der: Vec<u8>,
    pub key_der: Vec<u8>,
    pub cert_pem: String,
    pub key_pem: String,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

/// The test's public key infrastructure.
#[derive(Clone, Debug)]
pub struct Pki {
    pub dir: PathBuf,
    /// The CA the agent should trust: `ca.pem`.
    pub ca_der: Vec<u8>,
    pub ca_pem: String,
    pub ca_file: PathBuf,
    /// `server.pem`, `server-key.pem`: for `localhost` and `127.0.0.1`.
    pub server: Issued,
    /// `client.pem`, `client-key.pem`: the agent's certificate for mTLS.
    pub client: Issued,
    /// `other-ca.pem`: an unrelated CA.
    pub other_ca_der: Vec<u8>,
    pub other_ca_file: PathBuf,
    /// `wrong-server.pem`: a `localhost` certificate from the other CA.
    pub wrong_server: Issued,
    /// `wrong-client.pem`: a client certificate from the other CA.
    pub wrong_client: Issued,
}

fn err(e: rcgen::Error) -> io::Error {
    io::Error::other(format!("rcgen: {e}"))
}

fn ca(name: &str) -> io::Result<(rcgen::Certificate, KeyPair)> {
    let key = KeyPair::generate().map_err(err)?;
    let mut p = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
    p.distinguished_name.push(DnType::CommonName, name);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages =
        vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    let cert = p.self_signed(&key).map_err(err)?;
    Ok((cert, key))
}

fn issue(
    dir: &Path,
    stem: &str,
    sans: &[&str],
    usage: ExtendedKeyUsagePurpose,
    ca: &(rcgen::Certificate, KeyPair),
) -> io::Result<Issued> {
    let key = KeyPair::generate().map_err(err)?;
    let mut p =
        CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).map_err(err)?;
    p.distinguished_name.push(DnType::CommonName, stem);
    p.extended_key_usages = vec![usage];
    let cert = p.signed_by(&key, &ca.0, &ca.1).map_err(err)?;
    let cert_file = dir.join(format!("{stem}.pem"));
    let key_file = dir.join(format!("{stem}-key.pem"));
    let (cert_pem, key_pem) = (cert.pem(), key.serialize_pem());
    std::fs::write(&cert_file, &cert_pem)?;
    std::fs::write(&key_file, &key_pem)?;
    Ok(Issued {
        cert_der: cert.der().to_vec(),
        key_der: key.serialize_der(),
        cert_pem,
        key_pem,
        cert_file,
        key_file,
    })
}

impl Pki {
    /// Make everything and write it under `dir` (created if missing).
    pub fn generate(dir: &Path) -> io::Result<Pki> {
        std::fs::create_dir_all(dir)?;
        let good = ca("loki-double test CA")?;
        let other = ca("loki-double other CA")?;
        let ca_pem = good.0.pem();
        let ca_file = dir.join("ca.pem");
        std::fs::write(&ca_file, &ca_pem)?;
        let other_ca_file = dir.join("other-ca.pem");
        std::fs::write(&other_ca_file, other.0.pem())?;
        let sans = ["localhost", "127.0.0.1"];
        Ok(Pki {
            dir: dir.to_owned(),
            ca_der: good.0.der().to_vec(),
            ca_pem,
            ca_file,
            server: issue(dir, "server", &sans, ExtendedKeyUsagePurpose::ServerAuth, &good)?,
            client: issue(dir, "client", &[], ExtendedKeyUsagePurpose::ClientAuth, &good)?,
            other_ca_der: other.0.der().to_vec(),
            other_ca_file,
            wrong_server: issue(dir, "wrong-server", &sans, ExtendedKeyUsagePurpose::ServerAuth, &other)?,
            wrong_client: issue(dir, "wrong-client", &[], ExtendedKeyUsagePurpose::ClientAuth, &other)?,
        })
    }
}

pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The server side: our CA's certificate, or the other CA's when
/// `wrong_ca`; client certificates from our CA required when `mtls`.
pub fn server_config(pki: &Pki, wrong_ca: bool, mtls: bool) -> io::Result<Arc<ServerConfig>> {
    let tls_err = |e: rustls::Error| io::Error::other(format!("rustls: {e}"));
    let issued = if wrong_ca { &pki.wrong_server } else { &pki.server };
    let chain = vec![CertificateDer::from(issued.cert_der.clone())];
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(issued.key_der.clone()));
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(tls_err)?;
    let mut cfg = if mtls {
        let mut roots = RootCertStore::empty();
        roots.add(CertificateDer::from(pki.ca_der.clone())).map_err(tls_err)?;
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .map_err(|e| io::Error::other(format!("client verifier: {e}")))?;
        builder.with_client_cert_verifier(verifier).with_single_cert(chain, key).map_err(tls_err)?
    } else {
        builder.with_no_client_auth().with_single_cert(chain, key).map_err(tls_err)?
    };
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}
