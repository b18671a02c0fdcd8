//! The seam between the runner's policy (stages, parallelism, retries, skips, interrupts, classification) and
//! what a step does: the runner drives a [`StepExecutor`], so its policy is tested in milliseconds against a
//! scripted one while runs use [`ContextExecutor`], the steps against real clusters.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;

use super::context::{RunContext, StepError, StepLogger};
use crate::diagnose::{self, DiagnoseInput, DiagnosedCluster, EndpointFact, EndpointSource};
use crate::plan::{PlannedStep, StepId};
use crate::report::Event;
use crate::scenario::ClusterName;

/// Deadline for collecting a failed run's diagnostics.
const DIAGNOSTICS_DEADLINE: Duration = Duration::from_secs(120);

/// Measurements a step reports as properties.
pub type Props = BTreeMap<String, String>;

/// Carries out the steps of a plan.
pub trait StepExecutor: Send + Sync {
    /// One attempt of `step`; progress goes to `log`.
    fn run<'a>(
        &'a self,
        step: &'a PlannedStep,
        log: &'a StepLogger,
    ) -> BoxFuture<'a, Result<Props, StepError>>;

    /// Evidence about the failed `steps`, collected while the clusters still stand, as the event to report.
    /// By default there is none to collect.
    fn diagnose(&self, _steps: Vec<StepId>) -> BoxFuture<'_, Option<Event>> {
        Box::pin(async { None })
    }
}

/// The executor of real runs: each step's code against the run's clusters.
pub struct ContextExecutor {
    /// The run's shared state.
    pub ctx: Arc<RunContext>,
}

impl ContextExecutor {
    /// The narrow view diagnostics get of this run: its clusters with their roles, the checked service, the
    /// client, where endpoint views come from and the provider's own processes.
    fn diagnose_input(&self) -> DiagnoseInput<'_> {
        let ctx = &self.ctx;
        let (app_namespace, envoy_cluster) = ctx.checked.clone();
        let clusters = ctx
            .planned
            .iter()
            .filter_map(|c| {
                Some(DiagnosedCluster {
                    name: c.name.clone(),
                    client: ctx.cluster(&c.name).ok()?.client,
                    role: c.role,
                    primary: c.primary.clone(),
                    needs_gateway: c.needs_gateway,
                    network: c.network.as_str().to_string(),
                })
            })
            .collect();
        DiagnoseInput {
            clusters,
            app_namespace,
            envoy_cluster,
            client_app: ctx.variant.client.name(),
            endpoints: self,
            process_logs: ctx.provider.diagnostics(),
            exited: ctx.provider.dead_processes(),
        }
    }
}

impl RunContext {
    /// The endpoints `namespace/pod`'s proxy in `name` holds for `envoy_cluster`, and where they were read: the
    /// provider computes them where the data plane is computed; else the client's proxy is asked with
    /// `istioctl proxy-config endpoints`.
    pub async fn endpoint_view(
        &self,
        name: &ClusterName,
        namespace: &str,
        pod: &str,
        envoy_cluster: &str,
    ) -> (String, Result<Vec<EndpointFact>, String>) {
        let cluster = match self.cluster(name) {
            Ok(c) => c,
            Err(e) => return ("the run's clusters".to_string(), Err(e.message)),
        };
        let cluster = &cluster;
        match self
            .provider
            .computed_endpoints(cluster, namespace, pod, envoy_cluster)
        {
            Some(fut) => (
                "istiod's ADS answer for this sidecar (computed data plane)".to_string(),
                fut.await.map_err(|e| e.to_string()),
            ),
            None => {
                let cmd = self.istioctl.proxy_config_endpoints(
                    &cluster.kubeconfig,
                    &cluster.context,
                    &format!("{pod}.{namespace}"),
                    envoy_cluster,
                );
                let source = format!(
                    "istioctl proxy-config endpoints {pod}.{namespace} --cluster '{envoy_cluster}' -o json"
                );
                let read = match cmd.run().await {
                    Ok(out) => diagnose::parse_proxy_endpoints(&out.stdout),
                    Err(e) => Err(e.to_string()),
                };
                (source, read)
            }
        }
    }
}

/// Endpoint views for diagnostics, read as the run's checks read them.
impl EndpointSource for ContextExecutor {
    fn endpoints<'a>(
        &'a self,
        name: &'a ClusterName,
        namespace: &'a str,
        pod: &'a str,
        envoy_cluster: &'a str,
    ) -> BoxFuture<'a, (String, Result<Vec<EndpointFact>, String>)> {
        Box::pin(self.ctx.endpoint_view(name, namespace, pod, envoy_cluster))
    }
}

impl StepExecutor for ContextExecutor {
    fn run<'a>(
        &'a self,
        step: &'a PlannedStep,
        log: &'a StepLogger,
    ) -> BoxFuture<'a, Result<Props, StepError>> {
        Box::pin(super::actions::run(step, &self.ctx, log))
    }

    fn diagnose(&self, steps: Vec<StepId>) -> BoxFuture<'_, Option<Event>> {
        Box::pin(async move {
            let opts = &self.ctx.opts;
            let dir = opts.diagnostics_dir.clone()?;
            let link = match dir.strip_prefix(&opts.report_dir) {
                Ok(rel) => rel.display().to_string(),
                Err(_) => dir.display().to_string(),
            };
            let budget = opts.diagnostics_budget;
            let input = self.diagnose_input();
            let work = crate::diagnose::collect(&input, &dir, budget);
            Some(match tokio::time::timeout(DIAGNOSTICS_DEADLINE, work).await {
                Ok(Ok(c)) => Event::Diagnostics {
                    steps,
                    path: dir.display().to_string(),
                    link,
                    files: c.files,
                    bytes: c.bytes,
                    budget,
                    diagnosis: c.findings.first().map(|f| f.line.clone()),
                    findings: c.findings.into_iter().map(|f| f.line).collect(),
                    unavailable: c
                        .facts
                        .clusters
                        .iter()
                        .flat_map(|f| f.unavailable.iter().map(move |u| format!("{}: {u}", f.name)))
                        .chain(c.facts.views.iter().filter_map(|v| {
                            v.error.as_ref().map(|e| format!("{}: endpoints: {e}", v.client))
                        }))
                        .collect(),
                },
                Ok(Err(e)) => Event::StepLog {
                    id: StepId("diagnostics".into()),
                    message: format!("could not write diagnostics to {}: {e}", dir.display()),
                },
                Err(_) => Event::StepLog {
                    id: StepId("diagnostics".into()),
                    message: format!("diagnostics were not collected within {DIAGNOSTICS_DEADLINE:?}"),
                },
            })
        })
    }
}
