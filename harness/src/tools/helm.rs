//! helm: the CLI tools/build.sh builds from the Go module proxy and the pinned Istio module's charts beside it,
//! for the guides' Helm tab (no `helm repo add`: no chart repository is reachable offline).

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::process::Cmd;
use crate::mesh::helm::Chart;

/// A helm binary and the chart directory it installs from.
#[derive(Debug, Clone)]
pub struct Helm {
    /// The binary.
    pub bin: PathBuf,
    /// `base`, `istiod` and `gateway` charts.
    pub charts: PathBuf,
}

impl Helm {
    /// The helm and `istio-charts` a tools build put in `tools_bin`, when both are there.
    pub fn beside(tools_bin: &Path) -> Option<Self> {
        Self::with_charts_of(tools_bin, tools_bin)
    }

    /// The helm a tools build put in `tools_bin` with the charts of the Istio build in `istio_dir`.
    pub fn with_charts_of(tools_bin: &Path, istio_dir: &Path) -> Option<Self> {
        let h = Self {
            bin: tools_bin.join("helm"),
            charts: istio_dir.join("istio-charts"),
        };
        (h.bin.is_file() && h.charts.join(Chart::Istiod.dir()).join("Chart.yaml").is_file()).then_some(h)
    }

    /// `helm install RELEASE <charts>/CHART -n NS --kubeconfig K --kube-context C [args]` (no `--wait`: the
    /// plan's own waits follow, with their deadlines and messages).
    pub fn install(
        &self,
        kubeconfig: &Path,
        context: &str,
        release: &str,
        chart: Chart,
        namespace: &str,
        args: &[String],
    ) -> Cmd {
        Cmd::new(&self.bin)
            .arg("install")
            .arg(release)
            .arg(self.charts.join(chart.dir()).display().to_string())
            .args(["-n", namespace])
            .arg(format!("--kubeconfig={}", kubeconfig.display()))
            .arg(format!("--kube-context={context}"))
            .args(args.iter().cloned())
            .timeout(Duration::from_secs(300))
    }

    /// `helm uninstall RELEASE -n NS --ignore-not-found`: a reset after a failed install finds no release.
    pub fn uninstall(&self, kubeconfig: &Path, context: &str, release: &str, namespace: &str) -> Cmd {
        Cmd::new(&self.bin)
            .arg("uninstall")
            .arg(release)
            .args(["-n", namespace, "--ignore-not-found"])
            .arg(format!("--kubeconfig={}", kubeconfig.display()))
            .arg(format!("--kube-context={context}"))
            .timeout(Duration::from_secs(300))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helm_is_found_only_with_its_charts() {
        let d = tempfile::tempdir().expect("tmp");
        assert!(Helm::beside(d.path()).is_none());
        std::fs::write(d.path().join("helm"), "").expect("write");
        assert!(Helm::beside(d.path()).is_none(), "no charts yet");
        let c = d.path().join("istio-charts/istiod");
        std::fs::create_dir_all(&c).expect("mkdir");
        std::fs::write(c.join("Chart.yaml"), "name: istiod\n").expect("write");
        let h = Helm::beside(d.path()).expect("helm with charts");
        let cmd = h.install(
            Path::new("/k"),
            "ctx",
            "istiod",
            Chart::Istiod,
            "istio-system",
            &["--set".into(), "a=b".into()],
        );
        let shown = cmd.display();
        assert!(shown.contains("install istiod"), "{shown}");
        assert!(
            shown
                .contains("istio-charts/istiod -n istio-system --kubeconfig=/k --kube-context=ctx --set a=b"),
            "{shown}"
        );
    }
}
