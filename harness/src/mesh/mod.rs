//! Istio-specific material: version variants, generated IstioOperator files, the east-west gateway and
//! expose-istiod manifests, and the shared-root CA (`cacerts`).

mod ca;
mod iop;
mod manifests;
mod variant;

pub use ca::{CaBundle, CaError, SharedRoot};
pub use iop::{InstallOverlay, eastwest_operator, primary_operator, remote_operator};
pub use manifests::{DISCOVERY_ADDRESS_VAR, expose_istiod};
pub use variant::{ClientApp, IstioVersion, RemoteSecretCommand, Variant, VersionParseError};
