//! Istio version → guide variant. The seed guides predate several changes; the harness follows the istioctl it
//! drives and reports which variant it used.

use std::fmt;

use serde::Serialize;

/// An Istio version as printed by `istioctl version --remote=false`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct IstioVersion {
    /// Major (1).
    pub major: u32,
    /// Minor.
    pub minor: u32,
    /// Patch, when the build has one.
    pub patch: Option<u32>,
    /// The string as printed.
    pub raw: String,
}

/// istioctl printed something that is not a version.
#[derive(Debug, thiserror::Error)]
#[error("cannot find an Istio version (like 1.24.0) in istioctl output {0:?}; is this istioctl?")]
pub struct VersionParseError(pub String);

impl IstioVersion {
    /// Parses `1.24.0`, `1.32-dev+abc`, or istioctl's `client version: 1.24.0` line.
    pub fn parse(output: &str) -> Result<Self, VersionParseError> {
        for token in output.split(|c: char| c.is_whitespace() || c == '"' || c == ',') {
            let t = token.trim();
            let mut parts = t.splitn(3, '.');
            let (Some(a), Some(b)) = (parts.next(), parts.next()) else {
                continue;
            };
            let Ok(major) = a.parse::<u32>() else { continue };
            let minor_digits: String = b.chars().take_while(char::is_ascii_digit).collect();
            let Ok(minor) = minor_digits.parse::<u32>() else {
                continue;
            };
            let patch = parts.next().and_then(|p| {
                p.chars()
                    .take_while(char::is_ascii_digit)
                    .collect::<String>()
                    .parse::<u32>()
                    .ok()
            });
            return Ok(Self {
                major,
                minor,
                patch,
                raw: t.to_string(),
            });
        }
        Err(VersionParseError(output.chars().take(200).collect()))
    }

    /// A version from its parts (tests, defaults).
    pub fn new(major: u32, minor: u32, patch: u32) -> Self {
        Self {
            major,
            minor,
            patch: Some(patch),
            raw: format!("{major}.{minor}.{patch}"),
        }
    }

    fn at_least(&self, major: u32, minor: u32) -> bool {
        (self.major, self.minor) >= (major, minor)
    }
}

impl fmt::Display for IstioVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

/// How `create-remote-secret` is spelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RemoteSecretCommand {
    /// `istioctl create-remote-secret` (top level since 1.12; the only form from 1.19).
    TopLevel,
    /// `istioctl x create-remote-secret`, as guides up to 1.18 wrote it (removed in 1.19).
    Experimental,
}

/// The in-mesh client sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ClientApp {
    /// `samples/curl` (1.24+).
    Curl,
    /// `samples/sleep` (before 1.24).
    Sleep,
}

impl ClientApp {
    /// Name of the ServiceAccount, Service, Deployment, container and `app` label.
    pub fn name(self) -> &'static str {
        match self {
            ClientApp::Curl => "curl",
            ClientApp::Sleep => "sleep",
        }
    }
}

/// Everything that differs between guide revisions, decided once from the istioctl version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Variant {
    /// The istioctl version driving the run.
    pub version: IstioVersion,
    /// Remote secret command spelling.
    pub remote_secret: RemoteSecretCommand,
    /// curl or sleep.
    pub client: ClientApp,
    /// `values.global.externalIstiod` (1.24+ guides) instead of `values.pilot.env.EXTERNAL_ISTIOD`.
    pub external_istiod_value: bool,
    /// apiVersion of Gateway/VirtualService in expose-istiod.yaml.
    pub networking_api: &'static str,
    /// The remote profile (`profile: remote` + `istiodRemote.injectionPath`, 1.24+ guides).
    pub remote_profile: bool,
    /// HelloWorld image for a version, as `{}` placeholder for `v1`/`v2`.
    pub helloworld_image: &'static str,
    /// The curl/sleep image.
    pub client_image: &'static str,
}

impl Variant {
    /// The variant for an istioctl version.
    pub fn for_version(version: IstioVersion) -> Self {
        let v = &version;
        Self {
            remote_secret: if v.at_least(1, 19) {
                RemoteSecretCommand::TopLevel
            } else {
                RemoteSecretCommand::Experimental
            },
            client: if v.at_least(1, 24) {
                ClientApp::Curl
            } else {
                ClientApp::Sleep
            },
            external_istiod_value: v.at_least(1, 24),
            networking_api: if v.at_least(1, 24) {
                "networking.istio.io/v1"
            } else {
                "networking.istio.io/v1alpha3"
            },
            remote_profile: v.at_least(1, 24),
            helloworld_image: if v.at_least(1, 30) {
                "registry.istio.io/release/examples-helloworld-{}:1.0"
            } else if v.at_least(1, 22) {
                "docker.io/istio/examples-helloworld-{}:1.0"
            } else {
                "docker.io/istio/examples-helloworld-{}"
            },
            client_image: if v.at_least(1, 29) {
                "docker.io/curlimages/curl:8.16.0"
            } else if v.at_least(1, 28) {
                "curlimages/curl:8.16.0"
            } else {
                "curlimages/curl"
            },
            version,
        }
    }

    /// The subcommand words for creating a remote secret.
    pub fn remote_secret_words(&self) -> &'static [&'static str] {
        match self.remote_secret {
            RemoteSecretCommand::TopLevel => &["create-remote-secret"],
            RemoteSecretCommand::Experimental => &["x", "create-remote-secret"],
        }
    }

    /// HelloWorld image for `version` (e.g. `v1`).
    pub fn helloworld_image_for(&self, version: &str) -> String {
        self.helloworld_image.replace("{}", version)
    }

    /// A one-line description for reports: which guide revision this follows.
    pub fn describe(&self) -> String {
        format!(
            "istioctl {}: `istioctl {}`, client sample '{}', {}, {}",
            self.version,
            self.remote_secret_words().join(" "),
            self.client.name(),
            if self.external_istiod_value {
                "values.global.externalIstiod"
            } else {
                "values.pilot.env.EXTERNAL_ISTIOD"
            },
            if self.remote_profile {
                "remote profile"
            } else {
                "remote via remotePilotAddress only"
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case("1.24.0", 1, 24, Some(0))]
    #[case("client version: 1.30.3\n", 1, 30, Some(3))]
    #[case("1.32-dev+eed52ebb66ad", 1, 32, None)]
    #[case("{\"clientVersion\": {\"version\": \"1.18.2\"}}", 1, 18, Some(2))]
    fn parses_istioctl_output(
        #[case] s: &str,
        #[case] major: u32,
        #[case] minor: u32,
        #[case] patch: Option<u32>,
    ) {
        let v = IstioVersion::parse(s).expect("version");
        assert_eq!((v.major, v.minor, v.patch), (major, minor, patch));
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(IstioVersion::parse("command not found").is_err());
    }

    #[test]
    fn variants_follow_the_release_history() {
        let old = Variant::for_version(IstioVersion::new(1, 18, 0));
        assert_eq!(old.remote_secret_words(), ["x", "create-remote-secret"]);
        assert_eq!(old.client, ClientApp::Sleep);
        let mid = Variant::for_version(IstioVersion::new(1, 23, 0));
        assert_eq!(mid.remote_secret_words(), ["create-remote-secret"]);
        assert_eq!(mid.client, ClientApp::Sleep);
        let new = Variant::for_version(IstioVersion::new(1, 30, 3));
        assert_eq!(new.client, ClientApp::Curl);
        assert!(new.external_istiod_value);
        assert_eq!(
            new.helloworld_image_for("v2"),
            "registry.istio.io/release/examples-helloworld-v2:1.0"
        );
        assert_eq!(new.client_image, "docker.io/curlimages/curl:8.16.0");
    }
}
