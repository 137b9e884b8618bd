//! TLS to PostgreSQL with rustls, as libpq's `sslmode` and `sslrootcert` ask for it:
//!
//! - `disable`: never;
//! - `prefer` (libpq's default, and so the gateway's): when the server offers it, without
//!   checking its certificate;
//! - `require`: always, without checking the certificate, unless `sslrootcert` is given,
//!   when it is checked as `verify-ca` checks it (libpq does the same);
//! - `verify-ca`: always, with a certificate that chains to `sslrootcert` (else the
//!   system's roots), for any host name;
//! - `verify-full`: as `verify-ca`, and the certificate must name the host connected to:
//!   what a managed database (Cloud SQL, RDS, Azure Database) should be reached with.
//!
//! tokio-postgres reads only the first three modes and no `sslrootcert`, so both are taken
//! out of the connection string here and the rest is left to it.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, Error, RootCertStore, SignatureScheme};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::conninfo::ConnInfo;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

/// How the gateway's connections to PostgreSQL use TLS.
#[derive(Debug, Clone, PartialEq)]
pub struct Tls {
    pub mode: SslMode,
    /// The CA certificates (PEM) the server's certificate must chain to.
    pub root: Option<PathBuf>,
}

impl Tls {
    /// Takes `sslmode` and `sslrootcert` out of `conn`, leaving the `sslmode`
    /// tokio-postgres reads in their place.
    pub fn take_from(conn: &mut ConnInfo) -> Result<Tls, String> {
        let mode = match conn.take("sslmode").as_deref() {
            None | Some("prefer") => SslMode::Prefer,
            Some("disable") => SslMode::Disable,
            Some("require") => SslMode::Require,
            Some("verify-ca") => SslMode::VerifyCa,
            Some("verify-full") => SslMode::VerifyFull,
            Some(other) => {
                return Err(format!(
                    "sslmode {other:?} is not one of disable, prefer, require, verify-ca, verify-full"
                ))
            }
        };
        let root = conn.take("sslrootcert").map(PathBuf::from);
        conn.set(
            "sslmode",
            match mode {
                SslMode::Disable => "disable",
                SslMode::Prefer => "prefer",
                _ => "require",
            },
        );
        Ok(Tls { mode, root })
    }

    /// The connector tokio-postgres makes its TLS sessions with.
    pub fn connector(&self) -> Result<MakeRustlsConnect, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS: {e}"))?;
        let checked = match (self.mode, &self.root) {
            (SslMode::VerifyCa | SslMode::VerifyFull, _) | (SslMode::Require, Some(_)) => true,
            _ => false,
        };
        let verifier: Arc<dyn ServerCertVerifier> = match checked {
            false => Arc::new(Unchecked(provider)),
            true => {
                let webpki = WebPkiServerVerifier::builder_with_provider(
                    Arc::new(self.roots()?),
                    provider,
                )
                .build()
                .map_err(|e| format!("TLS: {e}"))?;
                match self.mode {
                    SslMode::VerifyFull => webpki,
                    _ => Arc::new(AnyName(webpki)),
                }
            }
        };
        let config = builder
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        Ok(MakeRustlsConnect::new(config))
    }

    /// `sslrootcert`'s certificates, else the system's.
    fn roots(&self) -> Result<RootCertStore, String> {
        let mut roots = RootCertStore::empty();
        match &self.root {
            Some(path) => {
                let pem = std::fs::read(path)
                    .map_err(|e| format!("sslrootcert {}: {e}", path.display()))?;
                let certs: Vec<CertificateDer> = rustls_pemfile::certs(&mut pem.as_slice())
                    .collect::<Result<_, _>>()
                    .map_err(|e| format!("sslrootcert {}: {e}", path.display()))?;
                if certs.is_empty() {
                    return Err(format!("sslrootcert {}: no certificate in it", path.display()));
                }
                for cert in certs {
                    roots
                        .add(cert)
                        .map_err(|e| format!("sslrootcert {}: {e}", path.display()))?;
                }
            }
            None => {
                let found = rustls_native_certs::load_native_certs();
                roots.add_parsable_certificates(found.certs);
                if roots.is_empty() {
                    return Err("no system CA certificates found: give sslrootcert".into());
                }
            }
        }
        Ok(roots)
    }
}

/// Takes any certificate, as libpq's `prefer` and `require` do: the session is encrypted,
/// the server not authenticated. Handshake signatures are still checked.
#[derive(Debug)]
struct Unchecked(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for Unchecked {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        let algorithms = &self.0.signature_verification_algorithms;
        rustls::crypto::verify_tls12_signature(message, cert, dss, algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        let algorithms = &self.0.signature_verification_algorithms;
        rustls::crypto::verify_tls13_signature(message, cert, dss, algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `verify-ca`: the chain is checked, the host name is not.
#[derive(Debug)]
struct AnyName(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for AnyName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_are_read_and_left_as_tokio_postgres_reads_them() {
        let read = |url: &str| {
            let mut conn = ConnInfo::parse(url);
            Tls::take_from(&mut conn).map(|tls| (tls, conn.to_string()))
        };
        let (tls, left) = read("postgres://db/x?sslmode=verify-full&sslrootcert=/ca.pem").unwrap();
        assert_eq!(tls, Tls { mode: SslMode::VerifyFull, root: Some("/ca.pem".into()) });
        assert_eq!(left, "postgres://db/x?sslmode=require");
        let (tls, left) = read("host=db dbname=x").unwrap();
        assert_eq!((tls.mode, left.as_str()), (SslMode::Prefer, "host=db dbname=x sslmode=prefer"));
        assert!(read("postgres://db/x?sslmode=allow-maybe").unwrap_err().contains("allow-maybe"));
    }
}
