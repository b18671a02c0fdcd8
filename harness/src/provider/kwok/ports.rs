//! Where a rehearsal listens: 20 ports per cluster on 127.0.0.1 from the port base (API server, etcd, kwok,
//! controllers, istiod, MetalLB), and the TEST-NET-1 address pool each cluster's MetalLB hands out.

#[derive(Debug, Clone, Copy)]
pub(super) struct Ports {
    pub(super) apiserver: u16,
    pub(super) etcd: u16,
    pub(super) etcd_peer: u16,
    pub(super) kwok: u16,
    pub(super) kcm: u16,
    pub(super) scheduler: u16,
    pub(super) istiod_http: u16,
    pub(super) xds: u16,
    pub(super) xds_tls: u16,
    pub(super) webhook: u16,
    pub(super) monitoring: u16,
    pub(super) ctrlz: u16,
    pub(super) metallb_metrics: u16,
    pub(super) metallb_health: u16,
}

impl Ports {
    pub(super) fn for_index(base: u16, i: usize) -> Self {
        let b = base + (i as u16) * 20;
        Self {
            apiserver: b,
            etcd: b + 1,
            etcd_peer: b + 2,
            kwok: b + 3,
            kcm: b + 4,
            scheduler: b + 5,
            istiod_http: b + 6,
            xds: b + 7,
            xds_tls: b + 8,
            webhook: b + 9,
            monitoring: b + 10,
            ctrlz: b + 11,
            metallb_metrics: b + 12,
            metallb_health: b + 13,
        }
    }

    pub(super) fn all(&self) -> [u16; 14] {
        [
            self.apiserver,
            self.etcd,
            self.etcd_peer,
            self.kwok,
            self.kcm,
            self.scheduler,
            self.istiod_http,
            self.xds,
            self.xds_tls,
            self.webhook,
            self.monitoring,
            self.ctrlz,
            self.metallb_metrics,
            self.metallb_health,
        ]
    }
}

/// MetalLB pool for rehearsal cluster `i`: TEST-NET-1 addresses that are written into Service status and Istio
/// values only, never dialled.
pub(super) fn rehearsal_pool(i: usize) -> String {
    let first = 128 + i * 16;
    format!("192.0.2.{first}-192.0.2.{}", first + 15)
}
