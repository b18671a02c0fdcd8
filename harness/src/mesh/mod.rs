//! Istio-specific material: version variants, generated IstioOperator files and Helm values, the east-west gateway and
//! expose-istiod manifests, and the shared-root CA (`cacerts`).

mod ca;
pub mod helm;
mod iop;
mod manifests;
mod variant;

/// The east-west gateway's port for other networks' mTLS traffic, passed through by SNI (`AUTO_PASSTHROUGH`).
pub const GATEWAY_PORT: u32 = 15443;

pub use ca::{CaBundle, CaError, SharedRoot};
pub use iop::{
    InstallOverlay, eastwest_operator, primary_operator, remote_operator, upgrade_spec, with_retry_on,
};
pub use manifests::{DISCOVERY_ADDRESS_VAR, expose_istiod, expose_services};
pub use variant::{ClientApp, IstioVersion, RemoteSecretCommand, Variant, VersionParseError};
