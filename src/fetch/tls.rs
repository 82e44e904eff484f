//! TLS for registry connections: the system roots plus per-registry CA directories in the
//! containers convention (`CERTS_D/HOST[:PORT]/*.crt` for CAs, `*.cert` + `*.key` for a client
//! certificate), searched in `--cert-dir` directories, then `/etc/containers/certs.d` and
//! `/etc/docker/certs.d`. Certificates directly inside a `--cert-dir` apply to every registry
//! (as skopeo's `--cert-dir`). Verification is turned off only for registries explicitly
//! listed as insecure.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use anyhow::{anyhow, Context, Result};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

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
            for d in &dirs {
                for f in files_with(d, "crt") {
                    for c in read_certs(&f)? {
                        roots.add(c).map_err(|e| {
                            anyhow!("{}: unusable CA certificate: {e}", f.display())
                        })?;
                    }
                }
            }
            builder.with_root_certificates(roots)
        };
        // A client certificate: NAME.cert with NAME.key beside it.
        for d in &dirs {
            if let Some(cert) = files_with(d, "cert").into_iter().next() {
                let key = cert.with_extension("key");
                if !key.is_file() {
                    return Err(anyhow!(
                        "{}: client certificate without {}",
                        cert.display(),
                        key.display()
                    ));
                }
                let chain = read_certs(&cert)?;
                let k = PrivateKeyDer::from_pem_file(&key)
                    .map_err(|_| anyhow!("{}: not a PEM private key", key.display()))?;
                let cfg = builder
                    .with_client_auth_cert(chain, k)
                    .map_err(|e| anyhow!("{}: unusable client certificate: {e}", cert.display()))?;
                return Ok(Arc::new(cfg));
            }
        }
        Ok(Arc::new(builder.with_no_client_auth()))
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
