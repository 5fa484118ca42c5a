//! The TLS client configuration for `https://` sinks, built once at
//! start-up from the `--sink-*` flags: which CAs to trust, the client
//! certificate for mutual TLS, and the name to verify.
//!
//! Every file is read and checked here, so a missing file, a PEM holding the
//! wrong thing or a key that is not the certificate's stops the agent with a
//! message naming the flag and the file, instead of surfacing later as a
//! failed handshake that looks like the server's fault.

use std::path::Path;
use std::sync::Arc;

use anyhow::{anyhow, bail, Context};
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};

use crate::sink::loki::config::TlsFiles;
use crate::sink::url::Host;

/// The client configuration: the system's CAs, or only `--sink-ca-file`'s;
/// a client certificate when `--sink-client-cert`/`--sink-client-key` are
/// given.
pub fn client_config(files: &TlsFiles) -> anyhow::Result<Arc<ClientConfig>> {
    let roots = match &files.ca_file {
        Some(path) => ca_file_roots(path)?,
        None => system_roots()?,
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("the TLS provider offers no protocol version")?
        .with_root_certificates(roots);
    let mut cfg = match (&files.client_cert, &files.client_key) {
        (Some(cert), Some(key)) => {
            let chain = cert_chain(cert)?;
            let key = private_key(key)?;
            builder.with_client_auth_cert(chain, key).map_err(|e| {
                anyhow!(
                    "--sink-client-cert {} with --sink-client-key {}: {e} (is the key the one the \
                     certificate was made for?)",
                    cert.display(),
                    files.client_key.as_deref().unwrap_or(Path::new("")).display()
                )
            })?
        }
        (None, None) => builder.with_no_client_auth(),
        _ => bail!("--sink-client-cert and --sink-client-key go together: give both or neither"),
    };
    // We speak HTTP/1.1 only; saying so keeps an ALPN-aware proxy from
    // picking h2 for us.
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// The name sent in SNI and checked against the server's certificate:
/// `--sink-server-name` if given, else the URL's host (a name or an IP
/// address, which the certificate must then list as an IP SAN).
pub fn server_name(host: &Host, files: &TlsFiles) -> anyhow::Result<ServerName<'static>> {
    if let Some(name) = &files.server_name {
        return ServerName::try_from(name.trim().to_owned())
            .map_err(|_| anyhow!("--sink-server-name `{name}` is neither a DNS name nor an IP address"));
    }
    match host {
        Host::Ip(ip) => Ok(ServerName::IpAddress((*ip).into())),
        Host::Name(name) => ServerName::try_from(name.clone()).map_err(|_| {
            anyhow!(
                "the sink host `{name}` cannot be checked against a certificate; give the name the \
                 certificate holds with --sink-server-name"
            )
        }),
    }
}

fn ca_file_roots(path: &Path) -> anyhow::Result<RootCertStore> {
    let what = || format!("--sink-ca-file {}", path.display());
    let certs = read_certs(path).with_context(what)?;
    if certs.is_empty() {
        bail!("{}: no certificate in it (expected PEM `-----BEGIN CERTIFICATE-----` blocks)", what());
    }
    let mut roots = RootCertStore::empty();
    for (i, cert) in certs.into_iter().enumerate() {
        roots
            .add(cert)
            .map_err(|e| anyhow!("{}: certificate #{} cannot be a trust anchor: {e}", what(), i + 1))?;
    }
    Ok(roots)
}

fn system_roots() -> anyhow::Result<RootCertStore> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _unusable) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        let why = match found.errors.first() {
            Some(e) => format!(" ({e})"),
            None => String::new(),
        };
        bail!(
            "no system CA certificates found{why}: install the ca-certificates package, point \
             SSL_CERT_FILE at a CA bundle, or pass --sink-ca-file with the CA that signed the sink's \
             certificate"
        );
    }
    Ok(roots)
}

fn cert_chain(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let what = || format!("--sink-client-cert {}", path.display());
    let chain = read_certs(path).with_context(what)?;
    if chain.is_empty() {
        bail!("{}: no certificate in it (expected PEM `-----BEGIN CERTIFICATE-----` blocks)", what());
    }
    Ok(chain)
}

fn private_key(path: &Path) -> anyhow::Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| {
        let why = match e {
            pem::Error::NoItemsFound => {
                "no private key in it (expected a PEM `PRIVATE KEY`, `RSA PRIVATE KEY` or `EC PRIVATE \
                 KEY` block; encrypted keys are not supported)"
                    .to_owned()
            }
            pem::Error::Io(e) => format!("cannot read it: {e}"),
            e => format!("not a valid PEM file: {e}"),
        };
        anyhow!("--sink-client-key {}: {why}", path.display())
    })
}

/// Every certificate in a PEM file (other blocks, such as a key kept in the
/// same file, are skipped).
fn read_certs(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let iter = CertificateDer::pem_file_iter(path).map_err(|e| match e {
        pem::Error::Io(e) => anyhow!("cannot read it: {e}"),
        e => anyhow!("not a valid PEM file: {e}"),
    })?;
    iter.collect::<Result<Vec<_>, _>>().map_err(|e| match e {
        pem::Error::Io(e) => anyhow!("cannot read it: {e}"),
        e => anyhow!("not a valid PEM file: {e}"),
    })
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;
    use std::path::PathBuf;

    use super::*;

    /// A directory of PEM files for one test, removed when it ends.
    struct Dir(PathBuf);

    impl Dir {
        fn new(test: &str) -> Dir {
            let dir = std::env::temp_dir().join(format!("log-capturer-tls-{test}-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            Dir(dir)
        }

        fn file(&self, name: &str, contents: &str) -> PathBuf {
            let p = self.0.join(name);
            std::fs::write(&p, contents).unwrap();
            p
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn files(ca: Option<PathBuf>) -> TlsFiles {
        TlsFiles { ca_file: ca, client_cert: None, client_key: None, server_name: None }
    }

    #[test]
    fn bad_ca_files_name_the_flag_the_file_and_the_problem() {
        let dir = Dir::new("ca");
        let missing = PathBuf::from("/nonexistent/ca.pem");
        let e = format!("{:#}", client_config(&files(Some(missing))).unwrap_err());
        assert!(e.contains("--sink-ca-file /nonexistent/ca.pem") && e.contains("cannot read"), "{e}");
        let empty = dir.file("empty.pem", "just text\n");
        let e = format!("{:#}", client_config(&files(Some(empty))).unwrap_err());
        assert!(e.contains("--sink-ca-file") && e.contains("no certificate"), "{e}");
        let broken = dir.file("broken.pem", "-----BEGIN CERTIFICATE-----\nAAAA\n");
        let e = format!("{:#}", client_config(&files(Some(broken))).unwrap_err());
        assert!(e.contains("--sink-ca-file") && e.contains("not a valid PEM"), "{e}");
        let junk = dir.file("junk.pem", "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n");
        let e = format!("{:#}", client_config(&files(Some(junk))).unwrap_err());
        assert!(e.contains("certificate #1 cannot be a trust anchor"), "{e}");
    }

    #[test]
    fn client_cert_and_key_go_together_and_must_hold_what_they_say() {
        let dir = Dir::new("client");
        let cert = dir.file("c.pem", "no pem here\n");
        let mut f = files(None);
        f.client_cert = Some(cert.clone());
        let e = client_config(&f).unwrap_err().to_string();
        assert!(e.contains("give both or neither"), "{e}");
        f.client_key = Some(dir.file("k.pem", "no key\n"));
        let e = format!("{:#}", client_config(&f).unwrap_err());
        assert!(e.contains("--sink-client-cert") && e.contains("no certificate"), "{e}");
    }

    #[test]
    fn server_names() {
        let f = files(None);
        let n = server_name(&Host::Name("loki.example".into()), &f).unwrap();
        assert_eq!(n, ServerName::try_from("loki.example").unwrap());
        let ip: IpAddr = "10.0.0.7".parse().unwrap();
        assert_eq!(server_name(&Host::Ip(ip), &f).unwrap(), ServerName::IpAddress(ip.into()));
        let f = TlsFiles { server_name: Some("loki.internal".into()), ..f };
        let n = server_name(&Host::Ip(ip), &f).unwrap();
        assert_eq!(n, ServerName::try_from("loki.internal").unwrap());
        let f = TlsFiles { server_name: Some("not a name!".into()), ..f };
        let e = server_name(&Host::Ip(ip), &f).unwrap_err().to_string();
        assert!(e.contains("--sink-server-name `not a name!`"), "{e}");
    }
}
