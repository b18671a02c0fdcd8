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
    /// Image hub (`meshconf.local/istio`).
    pub hub: String,
    /// Image tag.
    pub tag: String,
    /// Where pilot-discovery and pilot-agent came from.
    pub source: String,
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

    #[test]
    fn a_manifest_without_images_or_of_another_shape_is_an_error_naming_the_file() {
        let e = ImageSet::parse(Path::new("/x/m.json"), "{}").expect_err("not a manifest");
        assert!(e.to_string().contains("/x/m.json"), "{e}");
        let empty = MANIFEST.replace(r#""images":["#, r#""images":[],"old":["#);
        assert!(ImageSet::parse(Path::new("m.json"), &empty).is_err());
    }
}
