//! TLS for registry connections: the system roots plus per-registry CA directories in the
//! containers convention (`CERTS_D/HOST[:PORT]/*.crt` for CAs, `*.cert` + `*.key` for a client
//! certificate), searched in `--cert-dir` directories, then `/etc/containers/certs.d` and
//! `/etc/docker/certs.d`. Certificates directly inside a `--cert-dir` apply to every registry
//! (as skopeo's `--cert-dir`). Verification is turned off only for registries explicitly
//! listed as insecure.
//!
//! A server certificate that is itself one of the CA certificates configured for that registry
//! (the self-signed `openssl req -x509 … -addext subjectAltName=…` certificate most private
//! registries use, `CA:TRUE` and its own `ca.crt`) is accepted as Go's verifier accepts it:
//! webpki refuses a CA certificate as an end entity, so such a certificate is checked here for
//! the host name, its validity period and its extended key usage instead. The system roots are
//! never used that way.
//!
//! Client certificates follow containers/image: `NAME.cert` needs `NAME.key` beside it and
//! `NAME.key` needs `NAME.cert`; the first pair found is presented to registries that ask.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use anyhow::{anyhow, Context, Result};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};

/// Where to look for per-registry certificates.
#[derive(Clone, Debug, Default)]
pub struct TlsSettings {
    /// `--cert-dir` directories, searched first.
    pub cert_dirs: Vec<PathBuf>,
    /// Whether to search the system directories (`/etc/containers/certs.d`, …) too.
    pub system_dirs: bool,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn system_roots() -> &'static [CertificateDer<'static>] {
    static ROOTS: OnceLock<Vec<CertificateDer<'static>>> = OnceLock::new();
    ROOTS.get_or_init(|| rustls_native_certs::load_native_certs().certs)
}

fn files_with(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == ext))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| anyhow!("{}: {e}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow!("{}: not PEM certificates: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(anyhow!("{}: no PEM certificate in it", path.display()));
    }
    Ok(certs)
}

impl TlsSettings {
    /// The directories holding certificates for `registry` (`host[:port]`).
    fn dirs_for(&self, registry: &str) -> Vec<PathBuf> {
        let mut v = Vec::new();
        for d in &self.cert_dirs {
            v.push(d.clone());
            v.push(d.join(registry));
        }
        if self.system_dirs {
            for d in ["/etc/containers/certs.d", "/etc/docker/certs.d"] {
                v.push(Path::new(d).join(registry));
            }
        }
        v.retain(|d| d.is_dir());
        v
    }

    /// The rustls configuration for `registry`; `insecure` turns verification off.
    pub fn client_config(&self, registry: &str, insecure: bool) -> Result<Arc<ClientConfig>> {
        let provider = provider();
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .context("TLS protocol versions")?;
        let dirs = self.dirs_for(registry);
        let builder = if insecure {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoVerify(provider)))
        } else {
            let mut roots = RootCertStore::empty();
            roots.add_parsable_certificates(system_roots().iter().cloned());
            let mut own = Vec::new();
            for d in &dirs {
                for f in files_with(d, "crt") {
                    for c in read_certs(&f)? {
                        roots.add(c.clone()).map_err(|e| {
                            anyhow!("{}: unusable CA certificate: {e}", f.display())
                        })?;
                        own.push(c);
                    }
                }
            }
            let inner = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .context("TLS certificate verifier")?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(RegistryVerifier { inner, own }))
        };
        match client_identity(&dirs)? {
            Some((chain, key, cert)) => Ok(Arc::new(
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| anyhow!("{}: unusable client certificate: {e}", cert.display()))?,
            )),
            None => Ok(Arc::new(builder.with_no_client_auth())),
        }
    }
}

/// The first client certificate (`NAME.cert` + `NAME.key`) of `dirs`, with the certificate's
/// path; a `.cert` without its `.key` or a `.key` without its `.cert` is an error.
#[allow(clippy::type_complexity)]
fn client_identity(
    dirs: &[PathBuf],
) -> Result<
    Option<(
        Vec<CertificateDer<'static>>,
        PrivateKeyDer<'static>,
        PathBuf,
    )>,
> {
    let mut found = None;
    for d in dirs {
        for key in files_with(d, "key") {
            let cert = key.with_extension("cert");
            if !cert.is_file() {
                return Err(anyhow!(
                    "{}: client key without its certificate {}",
                    key.display(),
                    cert.display()
                ));
            }
        }
        for cert in files_with(d, "cert") {
            let key = cert.with_extension("key");
            if !key.is_file() {
                return Err(anyhow!(
                    "{}: client certificate without its key {} (CA certificates end in .crt)",
                    cert.display(),
                    key.display()
                ));
            }
            if found.is_none() {
                let chain = read_certs(&cert)?;
                // The parser's message could quote key material: only the file is named.
                let k = PrivateKeyDer::from_pem_file(&key)
                    .map_err(|_| anyhow!("{}: not a PEM private key", key.display()))?;
                found = Some((chain, k, cert));
            }
        }
    }
    Ok(found)
}

/// The WebPKI verifier (system roots and the registry's CA files), plus Go's rule for a server
/// certificate that is itself one of the registry's configured CA certificates.
#[derive(Debug)]
struct RegistryVerifier {
    inner: Arc<WebPkiServerVerifier>,
    /// The certificates of the registry's own CA files (not the system roots).
    own: Vec<CertificateDer<'static>>,
}

/// `extendedKeyUsage`, `serverAuth` and `anyExtendedKeyUsage`.
const EKU: &str = "2.5.29.37";
const SERVER_AUTH: &str = "1.3.6.1.5.5.7.3.1";
const ANY_EKU: &str = "2.5.29.37.0";

/// Checks a server certificate that the user configured as trusted itself: its host names
/// (subjectAltName, as webpki matches them), its validity period at `now` and, when it has an
/// extended key usage, that server authentication is among them.
fn check_pinned(
    cert: &CertificateDer<'_>,
    server_name: &ServerName<'_>,
    now: UnixTime,
) -> Result<(), rustls::Error> {
    use x509_cert::der::Decode;
    let parsed = x509_cert::Certificate::from_der(cert.as_ref())
        .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::BadEncoding))?;
    let tbs = &parsed.tbs_certificate;
    let now_s = now.as_secs();
    let not_before = tbs.validity.not_before.to_unix_duration().as_secs();
    let not_after = tbs.validity.not_after.to_unix_duration().as_secs();
    if now_s < not_before {
        return Err(rustls::Error::InvalidCertificate(
            CertificateError::NotValidYet,
        ));
    }
    if now_s > not_after {
        return Err(rustls::Error::InvalidCertificate(CertificateError::Expired));
    }
    for ext in tbs.extensions.iter().flatten() {
        if ext.extn_id.to_string() != EKU {
            continue;
        }
        let usages = x509_cert::ext::pkix::ExtendedKeyUsage::from_der(ext.extn_value.as_bytes())
            .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::BadEncoding))?;
        if !usages
            .0
            .iter()
            .any(|o| o.to_string() == SERVER_AUTH || o.to_string() == ANY_EKU)
        {
            return Err(rustls::Error::InvalidCertificate(
                CertificateError::InvalidPurpose,
            ));
        }
    }
    let ee = ParsedCertificate::try_from(cert)?;
    rustls::client::verify_server_name(&ee, server_name)
}

impl ServerCertVerifier for RegistryVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Ok(v) => Ok(v),
            Err(e) => {
                if self.own.iter().any(|c| c.as_ref() == end_entity.as_ref()) {
                    check_pinned(end_entity, server_name, now)?;
                    Ok(ServerCertVerified::assertion())
                } else {
                    Err(e)
                }
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Accepts any server certificate (signatures are still checked): only for registries the user
/// listed as insecure.
#[derive(Debug)]
struct NoVerify(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// `openssl req -x509 -newkey ec … -days 36500 -subj /CN=registry.test -addext
    /// subjectAltName=DNS:registry.test,IP:127.0.0.1`: CA:TRUE, valid from 1796165589 to
    /// 4949765589 (Unix seconds).
    const PINNED: &str = "-----BEGIN CERTIFICATE-----
MIIBpjCCAU2gAwIBAgIUD+ejU95QIp7DJOYt5V9b5/0eWbgwCgYIKoZIzj0EAwIw
GDEWMBQGA1UEAwwNcmVnaXN0cnkudGVzdDAgFw0yNjEyMDEyMjUzMDlaGA8yMTI2
MTEwNzIyNTMwOVowGDEWMBQGA1UEAwwNcmVnaXN0cnkudGVzdDBZMBMGByqGSM49
AgEGCCqGSM49AwEHA0IABDbHCY90bvD8Na7zM9sT8bMOgRYqZvX9VqhJI6lfHxKF
vhsO/GNYPNSrUfBi3TKZ1Zr4qKMkJQR+c1vJNhP61h2jczBxMB0GA1UdDgQWBBRL
XMfoWQ6hzkzckXtxBuenEesivjAfBgNVHSMEGDAWgBRLXMfoWQ6hzkzckXtxBuen
EesivjAPBgNVHRMBAf8EBTADAQH/MB4GA1UdEQQXMBWCDXJlZ2lzdHJ5LnRlc3SH
BH8AAAEwCgYIKoZIzj0EAwIDRwAwRAIgMccdeW5Mio+xxrOzl30BY5TNpNWSMuzB
WYwCs4DpNHoCIA5NIVHJsoOZQ5oVTlnMS7GOplcK5emvBd7tJU5sRnuD
-----END CERTIFICATE-----
";

    fn at(secs: u64) -> UnixTime {
        UnixTime::since_unix_epoch(Duration::from_secs(secs))
    }

    fn verifier(own: bool) -> (RegistryVerifier, CertificateDer<'static>) {
        let cert = CertificateDer::from_pem_slice(PINNED.as_bytes()).unwrap();
        let mut roots = RootCertStore::empty();
        roots.add(cert.clone()).unwrap();
        let inner = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .unwrap();
        let own = if own { vec![cert.clone()] } else { vec![] };
        (RegistryVerifier { inner, own }, cert)
    }

    #[test]
    fn a_self_signed_ca_certificate_that_is_its_own_root() {
        let name = |n: &str| ServerName::try_from(n.to_string()).unwrap();
        let (v, cert) = verifier(true);
        let ok = |n: &str, t: u64| v.verify_server_cert(&cert, &[], &name(n), &[], at(t));
        ok("registry.test", 1796165589 + 86400).expect("accepted by host name");
        ok("127.0.0.1", 1796165589 + 86400).expect("accepted by IP address");
        let e = ok("other.test", 1796165589 + 86400).unwrap_err();
        assert!(
            matches!(
                e,
                rustls::Error::InvalidCertificate(
                    CertificateError::NotValidForName
                        | CertificateError::NotValidForNameContext { .. }
                )
            ),
            "{e:?}"
        );
        let e = ok("registry.test", 1796165589 - 86400).unwrap_err();
        assert!(
            matches!(
                e,
                rustls::Error::InvalidCertificate(CertificateError::NotValidYet)
            ),
            "{e:?}"
        );
        let e = ok("registry.test", 4949765589 + 86400).unwrap_err();
        assert!(
            matches!(
                e,
                rustls::Error::InvalidCertificate(CertificateError::Expired)
            ),
            "{e:?}"
        );
        // The same certificate trusted only as a root (the system store's case): webpki's
        // answer stands.
        let (v, cert) = verifier(false);
        let e = v
            .verify_server_cert(
                &cert,
                &[],
                &name("registry.test"),
                &[],
                at(1796165589 + 86400),
            )
            .unwrap_err()
            .to_string();
        assert!(e.contains("CaUsedAsEndEntity"), "{e}");
    }
}
