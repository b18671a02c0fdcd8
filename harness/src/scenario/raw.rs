//! The on-disk shape of a scenario file, with source positions kept for every reference that validation checks.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_saphyr::Spanned;

use super::model::{InstallMethod, Role, Trust};

pub(crate) type S<T> = Spanned<T>;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct RawScenario {
    pub name: S<String>,
    #[serde(default)]
    pub guide: Option<String>,
    pub mesh: RawMesh,
    #[serde(default)]
    pub trust: Option<S<Trust>>,
    #[serde(default)]
    pub install_method: Option<S<InstallMethod>>,
    pub clusters: Vec<RawCluster>,
    pub steps: Vec<RawStep>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct RawMesh {
    pub id: S<String>,
    #[serde(default)]
    pub retry_on: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct RawCluster {
    pub name: S<String>,
    pub role: S<Role>,
    pub network: S<String>,
    #[serde(default)]
    pub primary: Option<S<String>>,
    pub kind_config: S<String>,
    #[serde(default)]
    pub istio: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) enum RawStep {
    InstallIstio(RawInstallIstio),
    SetNetwork(RawOnCluster),
    EastwestGateway(RawEastwestGateway),
    ExposeServices(RawOnCluster),
    ExposeIstiod(RawOnCluster),
    RemoteSecret(RawRemoteSecret),
    InstallRemote(RawInstallRemote),
    DeployApps(RawDeployApps),
    CheckTraffic(RawCheckTraffic),
    StartTraffic(RawStartTraffic),
    MoveWorkloads(RawMoveWorkloads),
    UpgradeIstio(RawUpgradeIstio),
    RestartWorkloads(RawRestartWorkloads),
    RemoveRevision(RawRemoveRevision),
    CheckLiveTraffic(RawCheckLiveTraffic),
    CheckProxies(RawCheckProxies),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct RawInstallIstio {
    pub cluster: S<String>,
    #[serde(default)]
    pub external_istiod: bool,
    #[serde(default)]
    pub revision: Option<S<String>>,
    #[serde(default)]
    pub istio: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawStartTraffic {
    pub from: Vec<S<String>>,
    pub url: S<String>,
    #[serde(default)]
    pub rate: Option<S<u32>>,
    #[serde(default)]
    pub connections: Option<S<u32>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawMoveWorkloads {
    pub namespace: S<String>,
    pub revision: S<String>,
    #[serde(default)]
    pub restart: Option<S<super::model::Restart>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawUpgradeIstio {
    pub cluster: S<String>,
    pub istio: S<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRestartWorkloads {
    pub namespace: S<String>,
    #[serde(default)]
    pub restart: Option<S<super::model::Restart>>,
    #[serde(default)]
    pub clusters: Option<Vec<S<String>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCheckProxies {
    pub namespace: S<String>,
    pub expect: BTreeMap<String, S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRemoveRevision {
    pub cluster: S<String>,
    pub revision: S<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCheckLiveTraffic {
    pub expect: BTreeMap<String, S<OneOrMany>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawOnCluster {
    pub cluster: S<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawEastwestGateway {
    pub cluster: S<String>,
    #[serde(default)]
    pub revision: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRemoteSecret {
    pub from: S<String>,
    pub into: S<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawInstallRemote {
    pub cluster: S<String>,
    pub primary: S<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDeployApps {
    pub namespace: S<String>,
    #[serde(default)]
    pub injection: Option<bool>,
    pub helloworld: BTreeMap<String, S<String>>,
    pub client: Vec<S<String>>,
    #[serde(default)]
    pub revision: Option<S<String>>,
    #[serde(default, rename = "graceful-shutdown")]
    pub graceful_shutdown: Option<S<u32>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCheckTraffic {
    pub from: Vec<S<String>>,
    pub url: S<String>,
    pub expect: BTreeMap<String, S<OneOrMany>>,
    #[serde(default)]
    pub requests: Option<S<u32>>,
}

/// A cluster name, or a list of them (`v1: cluster1`, `v2: [cluster2, cluster3]`). Spanned as a whole: spans
/// inside an untagged enum are lost.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub fn items(&self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s.clone()],
            OneOrMany::Many(v) => v.clone(),
        }
    }
}

/// The part of a kind `Cluster` config the topology needs; everything else is passed to kind untouched.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RawKindConfig {
    pub kind: Option<String>,
    pub api_version: Option<String>,
    #[serde(default)]
    pub networking: Option<RawKindNetworking>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RawKindNetworking {
    pub pod_subnet: Option<S<String>>,
    pub service_subnet: Option<S<String>>,
}
