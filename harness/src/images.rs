//! The images a kind run uses when no registry answers: the manifest `tools/images.sh` writes (node image, every
//! image loaded into the clusters, where each came from). Providers only ask for this set; they never build images.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Reading the manifest failed.
#[derive(Debug, thiserror::Error)]
pub enum ImagesError {
    /// The file could not be read.
    #[error(
        "cannot read the image manifest {path}: {source}. Build the images with `make images` (tools/images.sh)"
    )]
    Read {
        /// Manifest path.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The file is not a manifest.
    #[error("{path} is not an image manifest written by tools/images.sh: {message}")]
    Parse {
        /// Manifest path.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// One image and its provenance.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ImageRecord {
    /// Full reference, exactly as manifests name it (`registry.k8s.io/pause:3.10.1`).
    pub name: String,
    /// Where its contents came from (`k8s.io/kubernetes@v1.35.4 (Go module proxy)`).
    pub source: String,
    /// The recipe that built it (`tools/images/binary`).
    pub recipe: String,
    /// Already inside the node image's containerd (else loaded with `kind load docker-image`).
    pub preloaded: bool,
    /// Used by the guides' manifests at run time (Istio, samples, MetalLB): `kind load`ed into every cluster,
    /// which kind skips when the node already holds the same image ID. Older manifests lack the field: then
    /// every image not preloaded is loaded.
    #[serde(default)]
    pub runtime: Option<bool>,
}

/// The Istio images: `hub`/`tag` as `istioctl install` takes them.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct IstioImages {
    /// The build's short name (`1.32-dev`); manifests written before builds were named lack it.
    #[serde(default)]
    pub name: Option<String>,
    /// Image hub (`meshconf.local/istio`).
    pub hub: String,
    /// Image tag.
    pub tag: String,
    /// Where pilot-discovery and pilot-agent came from.
    pub source: String,
}

/// The images of one more Istio build (`tools/istio-builds.env`), preloaded beside the default's.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct BuildImages {
    /// Short name (`1.31-dev`).
    pub name: String,
    /// Image hub.
    pub hub: String,
    /// Image tag: the build's version label.
    pub tag: String,
    /// Where pilot-discovery and pilot-agent came from.
    pub source: String,
    /// The build's tools directory (istioctl, charts).
    pub bin: PathBuf,
}

/// MetalLB: the version and its native manifest, taken from the module's files.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct MetallbImages {
    /// Release (`v0.16.1`).
    pub version: String,
    /// Path of `config/manifests/metallb-native.yaml` from that module.
    pub manifest: PathBuf,
}

/// What `tools/images.sh` built.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ImageSet {
    /// Hash of every input.
    pub key: String,
    /// The kind node image.
    pub node_image: String,
    /// Kubernetes version inside it.
    pub kubernetes: String,
    /// `envoy --version` of the proxy image's Envoy.
    pub envoy: String,
    /// Istio images.
    pub istio: IstioImages,
    /// MetalLB.
    pub metallb: MetallbImages,
    /// Directory of the binaries built with the images (kind, istioctl of the same Istio).
    pub tools_bin: PathBuf,
    /// Every image.
    pub images: Vec<ImageRecord>,
    /// The extra Istio builds' images.
    #[serde(default)]
    pub istio_builds: Vec<BuildImages>,
    /// The directory of the Istio build in use (istioctl, charts): `tools_bin` unless [`ImageSet::with_build`]
    /// picked another.
    #[serde(skip)]
    pub istio_bin: Option<PathBuf>,
}

impl ImageSet {
    /// Parses a manifest's text; `path` names it in errors.
    pub fn parse(path: &Path, text: &str) -> Result<Self, ImagesError> {
        let set: ImageSet = serde_json::from_str(text).map_err(|e| ImagesError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        if set.images.is_empty() || set.node_image.is_empty() {
            return Err(ImagesError::Parse {
                path: path.to_path_buf(),
                message: "it names no images".into(),
            });
        }
        Ok(set)
    }

    /// Reads a manifest file.
    pub fn load(path: &Path) -> Result<Self, ImagesError> {
        let text = std::fs::read_to_string(path).map_err(|source| ImagesError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(path, &text)
    }

    /// The manifest to use: `$MESHCONF_IMAGES`, else the one `tools/images.sh` last pointed at
    /// (`<cache>/images/current`). `None` means: use released images from their registries.
    pub fn locate() -> Result<Option<Self>, ImagesError> {
        if let Some(p) = std::env::var_os("MESHCONF_IMAGES").filter(|p| !p.is_empty()) {
            return Self::load(Path::new(&p)).map(Some);
        }
        let pointer = crate::tools::cache_dir().join("images").join("current");
        match std::fs::read_to_string(&pointer) {
            Ok(p) => Self::load(Path::new(p.trim())).map(Some),
            Err(_) => Ok(None),
        }
    }

    /// The set as a run of Istio build `build` uses it: that build's hub, tag and tools, its pilot and proxyv2
    /// loaded into the clusters and no other build's. Bad input when the images were built without it or with
    /// another tag than the build's tools report.
    pub fn with_build(&self, build: &crate::builds::IstioBuild) -> Result<Self, String> {
        let mut out = self.clone();
        // Manifests from before builds were named hold only the default build.
        let current = match &self.istio.name {
            Some(n) => *n == build.name,
            None => build.default,
        };
        let (hub, tag, source, bin) = if current {
            (
                self.istio.hub.clone(),
                self.istio.tag.clone(),
                self.istio.source.clone(),
                self.istio_dir().to_path_buf(),
            )
        } else {
            let b = self.istio_builds.iter().find(|b| b.name == build.name).ok_or_else(|| {
                format!(
                    "the images were built without the Istio build '{}' (they have {}): run `make images`",
                    build.name,
                    std::iter::once(self.istio.name.clone().unwrap_or_else(|| self.istio.tag.clone()))
                        .chain(self.istio_builds.iter().map(|b| b.name.clone()))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })?;
            (b.hub.clone(), b.tag.clone(), b.source.clone(), b.bin.clone())
        };
        if tag != build.label {
            return Err(format!(
                "the images of Istio build '{}' are tagged {tag}, but its istioctl is {}: rebuild with `make images`",
                build.name, build.label
            ));
        }
        for i in out.images.iter_mut().filter(|i| self.is_istio_image(&i.name)) {
            i.runtime = Some(i.name.ends_with(&format!(":{tag}")));
        }
        // Every build but the one in use stays findable by name (a mixed-version scenario's clusters run them).
        if let Some(default) = self.istio.name.clone().filter(|n| *n != build.name) {
            out.istio_builds.push(BuildImages {
                name: default,
                hub: self.istio.hub.clone(),
                tag: self.istio.tag.clone(),
                source: self.istio.source.clone(),
                bin: self.istio_dir().to_path_buf(),
            });
        }
        out.istio_builds.retain(|b| b.name != build.name);
        out.istio = IstioImages {
            name: Some(build.name.clone()),
            hub,
            tag,
            source,
        };
        out.istio_bin = Some(bin);
        Ok(out)
    }

    /// The images' hub and tag of build `name`: the one in use or another this set holds.
    pub fn hub_tag(&self, name: &str) -> Option<(&str, &str)> {
        if self.istio.name.as_deref() == Some(name) {
            return Some((self.istio.hub.as_str(), self.istio.tag.as_str()));
        }
        self.istio_builds
            .iter()
            .find(|b| b.name == name)
            .map(|b| (b.hub.as_str(), b.tag.as_str()))
    }

    /// The pilot and proxyv2 images of build `name` (empty when the set has no such build).
    pub fn build_images(&self, name: &str) -> Vec<String> {
        let Some((_, tag)) = self.hub_tag(name) else {
            return Vec::new();
        };
        self.images
            .iter()
            .filter(|i| self.is_istio_image(&i.name) && i.name.ends_with(&format!(":{tag}")))
            .map(|i| i.name.clone())
            .collect()
    }

    /// Whether `name` is one of the Istio images a build brings (pilot or proxyv2 under the set's hub).
    fn is_istio_image(&self, name: &str) -> bool {
        name.starts_with(&format!("{}/", self.istio.hub))
            && (name.contains("/pilot:") || name.contains("/proxyv2:"))
    }

    /// The directory of the Istio build in use.
    pub fn istio_dir(&self) -> &Path {
        self.istio_bin.as_deref().unwrap_or(&self.tools_bin)
    }

    /// Images to load into every cluster after creation (the rest are inside the node image).
    pub fn to_load(&self) -> Vec<&str> {
        self.images
            .iter()
            .filter(|i| i.runtime.unwrap_or(!i.preloaded))
            .map(|i| i.name.as_str())
            .collect()
    }

    /// `name ← source` lines for reports.
    pub fn provenance(&self) -> Vec<String> {
        std::iter::once(format!(
            "{} ← tools/images/node (Debian bookworm, Kubernetes {})",
            self.node_image, self.kubernetes
        ))
        .chain(self.images.iter().map(|i| format!("{} ← {}", i.name, i.source)))
        .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MANIFEST: &str = r#"{"key":"abc","node_image":"meshconf.local/kind-node:v1.35.4-abc","kubernetes":"v1.35.4",
      "envoy":"1.40.0/Clean/RELEASE/BoringSSL","istio":{"hub":"meshconf.local/istio","tag":"1.32-dev","source":"istio.io/istio@v0"},
      "metallb":{"version":"v0.16.1","manifest":"/c/metallb-native.yaml"},"tools_bin":"/c/bin",
      "images":[{"name":"registry.k8s.io/pause:3.10.1","source":"tools/images/pause (meshconf)","recipe":"tools/images/pause","preloaded":true},
                {"name":"meshconf.local/istio/pilot:1.32-dev","source":"istio.io/istio@v0","recipe":"tools/images/istio-pilot","preloaded":false}]}"#;

    #[test]
    fn manifest_parses_and_splits_preloaded_from_loaded() {
        let s = ImageSet::parse(Path::new("m.json"), MANIFEST).expect("parse");
        assert_eq!(s.to_load(), vec!["meshconf.local/istio/pilot:1.32-dev"]);
        assert_eq!(s.provenance().len(), 3);
        assert!(s.provenance()[0].starts_with("meshconf.local/kind-node:v1.35.4-abc ← "));
    }

    #[test]
    fn runtime_images_are_loaded_even_when_the_node_image_holds_them() {
        let m = MANIFEST.replace(
            r#""recipe":"tools/images/istio-pilot","preloaded":false"#,
            r#""recipe":"tools/images/istio-pilot","preloaded":true,"runtime":true"#,
        );
        let s = ImageSet::parse(Path::new("m.json"), &m).expect("parse");
        assert_eq!(s.to_load(), vec!["meshconf.local/istio/pilot:1.32-dev"]);
        let none = m.replace(r#""runtime":true"#, r#""runtime":false"#);
        let s = ImageSet::parse(Path::new("m.json"), &none).expect("parse");
        assert!(s.to_load().is_empty());
    }

    fn with_builds() -> ImageSet {
        let m = MANIFEST
            .replace(r#""tag":"1.32-dev","#, r#""name":"1.32-dev","tag":"1.32-dev.eed","#)
            .replace("pilot:1.32-dev\",\"source", "pilot:1.32-dev.eed\",\"source")
            .replace(
                r#""preloaded":false}]}"#,
                r#""preloaded":true,"runtime":true},
                {"name":"meshconf.local/istio/pilot:1.31-dev.b01","source":"istio.io/istio@v1","recipe":"tools/images/istio-pilot","preloaded":true,"runtime":false}],
                "istio_builds":[{"name":"1.31-dev","hub":"meshconf.local/istio","tag":"1.31-dev.b01","source":"istio.io/istio@v1","bin":"/c/bin/istio/1.31-dev"}]}"#,
            );
        ImageSet::parse(Path::new("m.json"), &m).expect("parse")
    }

    fn build(name: &str, label: &str, default: bool) -> crate::builds::IstioBuild {
        crate::builds::IstioBuild {
            name: name.into(),
            label: label.into(),
            module: "v0".into(),
            dir: PathBuf::from("/c/bin"),
            default,
        }
    }

    #[test]
    fn a_build_picks_its_own_hub_tag_tools_and_loads_only_its_images() {
        let s = with_builds();
        assert_eq!(s.to_load(), vec!["meshconf.local/istio/pilot:1.32-dev.eed"]);
        let old = s
            .with_build(&build("1.31-dev", "1.31-dev.b01", false))
            .expect("built");
        assert_eq!(old.istio.tag, "1.31-dev.b01");
        assert_eq!(old.istio.source, "istio.io/istio@v1");
        assert_eq!(old.istio_dir(), Path::new("/c/bin/istio/1.31-dev"));
        assert_eq!(old.to_load(), vec!["meshconf.local/istio/pilot:1.31-dev.b01"]);
        // Provenance (the fleet key's input) does not depend on the build a run picked.
        assert_eq!(old.provenance(), s.provenance());
        assert_eq!(
            old.hub_tag("1.32-dev"),
            Some(("meshconf.local/istio", "1.32-dev.eed"))
        );
        assert_eq!(
            old.build_images("1.32-dev"),
            vec!["meshconf.local/istio/pilot:1.32-dev.eed"]
        );
        assert_eq!(old.build_images("1.30-dev"), Vec::<String>::new());
        let new = old
            .with_build(&build("1.32-dev", "1.32-dev.eed", true))
            .expect("default");
        assert_eq!(new.to_load(), vec!["meshconf.local/istio/pilot:1.32-dev.eed"]);
        assert_eq!(new.istio_dir(), Path::new("/c/bin"));
    }

    #[test]
    fn a_build_the_images_lack_or_tag_differently_is_refused() {
        let s = with_builds();
        let e = s.with_build(&build("1.30-dev", "1.30-dev.x", false)).unwrap_err();
        assert!(
            e.contains("without the Istio build '1.30-dev'") && e.contains("1.32-dev, 1.31-dev"),
            "{e}"
        );
        let e = s
            .with_build(&build("1.31-dev", "1.31-dev.other", false))
            .unwrap_err();
        assert!(
            e.contains("tagged 1.31-dev.b01") && e.contains("1.31-dev.other"),
            "{e}"
        );
    }

    #[test]
    fn a_manifest_without_images_or_of_another_shape_is_an_error_naming_the_file() {
        let e = ImageSet::parse(Path::new("/x/m.json"), "{}").expect_err("not a manifest");
        assert!(e.to_string().contains("/x/m.json"), "{e}");
        let empty = MANIFEST.replace(r#""images":["#, r#""images":[],"old":["#);
        assert!(ImageSet::parse(Path::new("m.json"), &empty).is_err());
    }
}
