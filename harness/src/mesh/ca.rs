//! The shared-root CA of the before-you-begin page, generated in Rust: one root, an intermediate per cluster,
//! and the four `cacerts` keys (`ca-cert.pem`, `ca-key.pem`, `root-cert.pem`, `cert-chain.pem`).
//!
//! The guide's Makefile makes RSA-4096 keys; ring cannot generate RSA, so these are ECDSA P-256 keys, which
//! istiod's plugged-in CA accepts. Key material is never logged; `Debug` is redacted.

use std::collections::BTreeMap;
use std::fmt;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType, IsCa, KeyPair,
    KeyUsagePurpose, SanType,
};

/// CA generation failed.
#[derive(Debug, thiserror::Error)]
#[error("cannot generate the shared-root CA: {0}")]
pub struct CaError(#[from] rcgen::Error);

/// The four files of one cluster's `cacerts` Secret.
#[derive(Clone)]
pub struct CaBundle {
    /// The cluster's intermediate certificate.
    pub ca_cert: String,
    /// The intermediate's private key (secret).
    pub ca_key: String,
    /// The shared root certificate.
    pub root_cert: String,
    /// Intermediate followed by root.
    pub cert_chain: String,
}

impl fmt::Debug for CaBundle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CaBundle")
            .field("ca_key", &"<redacted>")
            .finish_non_exhaustive()
    }
}

impl CaBundle {
    /// The Secret's data keys as the guide's `kubectl create secret generic cacerts --from-file=...` makes them.
    pub fn secret_data(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("ca-cert.pem".to_string(), self.ca_cert.clone()),
            ("ca-key.pem".to_string(), self.ca_key.clone()),
            ("root-cert.pem".to_string(), self.root_cert.clone()),
            ("cert-chain.pem".to_string(), self.cert_chain.clone()),
        ])
    }
}

/// A root CA that signs one intermediate per cluster.
pub struct SharedRoot {
    root: CertifiedIssuer<'static, KeyPair>,
}

impl SharedRoot {
    /// Generates a root (O=Istio, CN=Root CA), like `make -f Makefile.selfsigned.mk root-ca`.
    pub fn generate() -> Result<Self, CaError> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name = dn(&[
            (DnType::OrganizationName, "Istio"),
            (DnType::CommonName, "Root CA"),
        ]);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let root = CertifiedIssuer::self_signed(params, KeyPair::generate()?)?;
        Ok(Self { root })
    }

    /// The root certificate PEM.
    pub fn root_pem(&self) -> String {
        self.root.pem()
    }

    /// An intermediate for `cluster`, like `make -f Makefile.selfsigned.mk <cluster>-cacerts`.
    pub fn intermediate(&self, cluster: &str) -> Result<CaBundle, CaError> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.subject_alt_names = vec![SanType::DnsName("istiod.istio-system.svc".try_into()?)];
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.distinguished_name = dn(&[
            (DnType::OrganizationName, "Istio"),
            (DnType::CommonName, "Intermediate CA"),
            (DnType::LocalityName, cluster),
        ]);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.root)?;
        let root_cert = self.root_pem();
        let ca_cert = cert.pem();
        Ok(CaBundle {
            cert_chain: format!("{ca_cert}{root_cert}"),
            ca_cert,
            ca_key: key.serialize_pem(),
            root_cert,
        })
    }
}

fn dn(parts: &[(DnType, &str)]) -> DistinguishedName {
    let mut d = DistinguishedName::new();
    for (t, v) in parts {
        d.push(t.clone(), *v);
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intermediates_share_the_root_and_chain_to_it() {
        let root = SharedRoot::generate().expect("root");
        let a = root.intermediate("cluster1").expect("c1");
        let b = root.intermediate("cluster2").expect("c2");
        assert_eq!(a.root_cert, b.root_cert);
        assert_ne!(a.ca_cert, b.ca_cert);
        assert!(a.cert_chain.starts_with(&a.ca_cert) && a.cert_chain.ends_with(&a.root_cert));
        assert!(a.ca_key.contains("PRIVATE KEY"));
        let keys: Vec<_> = a.secret_data().into_keys().collect();
        assert_eq!(
            keys,
            ["ca-cert.pem", "ca-key.pem", "cert-chain.pem", "root-cert.pem"]
        );
    }

    #[test]
    fn debug_never_prints_the_key() {
        let root = SharedRoot::generate().expect("root");
        let a = root.intermediate("cluster1").expect("c1");
        let shown = format!("{a:?}");
        assert!(!shown.contains("PRIVATE KEY") && shown.contains("redacted"));
    }
}
