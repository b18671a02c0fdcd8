//! Where a rehearsal listens: 20 ports per cluster on 127.0.0.1 from the port base (API server, etcd, kwok,
//! controllers, istiod, MetalLB), and the TEST-NET-1 address pool each cluster's MetalLB hands out.

/// Ports each rehearsal cluster takes from the port base.
pub const PORTS_PER_CLUSTER: u16 = 20;

/// The machine's ephemeral port range (`net.ipv4.ip_local_port_range`), Linux's default when unreadable.
pub fn ephemeral_range() -> (u16, u16) {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|t| {
            let mut it = t.split_whitespace().filter_map(|x| x.parse::<u16>().ok());
            Some((it.next()?, it.next()?))
        })
        .unwrap_or((32768, 60999))
}

/// Bad input when a rehearsal of `clusters` clusters from `base` would listen inside `ephemeral`: a client's
/// outgoing connection can take such a port first, and istiod then fails to bind it (seen with 33000).
pub fn check_port_base(base: u16, clusters: usize, ephemeral: (u16, u16)) -> Result<(), String> {
    let last = u32::from(base) + u32::from(PORTS_PER_CLUSTER) * clusters as u32 - 1;
    if last >= u32::from(ephemeral.0) && u32::from(base) <= u32::from(ephemeral.1) {
        return Err(format!(
            "--port-base {base}: the rehearsal of {clusters} clusters listens on {base}-{last}, inside this machine's \
             ephemeral port range {}-{} where outgoing connections take their ports; pick a base at most {}",
            ephemeral.0,
            ephemeral.1,
            u32::from(ephemeral.0).saturating_sub(u32::from(PORTS_PER_CLUSTER) * clusters as u32)
        ));
    }
    Ok(())
}

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
        let b = base + (i as u16) * PORTS_PER_CLUSTER;
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

    /// These ports with istiod's moved to control-plane slot `slot` of the cluster: slot 0 is the one above, slot 1
    /// (a second revision during a canary upgrade) takes the cluster's last six ports.
    pub(super) fn for_slot(&self, slot: usize) -> Self {
        if slot == 0 {
            return *self;
        }
        let b = self.apiserver + 14;
        Self {
            istiod_http: b,
            xds: b + 1,
            xds_tls: b + 2,
            webhook: b + 3,
            monitoring: b + 4,
            ctrlz: b + 5,
            ..*self
        }
    }

    /// The ports one run opens (both istiod slots, MetalLB): all but the control plane's (API server, etcd,
    /// kwok, controller-manager, scheduler), which a fleet keeps.
    pub(super) fn per_run(&self) -> Vec<u16> {
        let plane = self.control_plane();
        self.all().into_iter().filter(|p| !plane.contains(p)).collect()
    }

    /// The control plane's ports (API server, etcd, kwok, controller-manager, scheduler).
    pub(super) fn control_plane(&self) -> [u16; 6] {
        [
            self.apiserver,
            self.etcd,
            self.etcd_peer,
            self.kwok,
            self.kcm,
            self.scheduler,
        ]
    }

    pub(super) fn all(&self) -> [u16; 20] {
        let s = self.for_slot(1);
        [
            s.istiod_http,
            s.xds,
            s.xds_tls,
            s.webhook,
            s.monitoring,
            s.ctrlz,
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

#[cfg(test)]
mod port_base_tests {
    use super::*;

    #[test]
    fn the_second_control_plane_slot_takes_the_clusters_last_ports_and_every_port_is_distinct() {
        let p = Ports::for_index(31000, 1);
        let s = p.for_slot(1);
        assert_eq!((s.istiod_http, s.ctrlz), (31034, 31039));
        assert_eq!(s.apiserver, p.apiserver);
        let all = p.all();
        let distinct: std::collections::BTreeSet<u16> = all.iter().copied().collect();
        assert_eq!(distinct.len(), PORTS_PER_CLUSTER as usize);
        assert!(all.iter().all(|x| (31020..31040).contains(x)));
    }

    #[test]
    fn a_base_whose_ports_reach_the_ephemeral_range_is_refused() {
        assert!(check_port_base(31000, 3, (32768, 60999)).is_ok());
        assert!(
            check_port_base(32700, 3, (32768, 60999)).is_ok(),
            "32700-32759 stays below"
        );
        let e = check_port_base(33000, 2, (32768, 60999)).unwrap_err();
        assert!(e.contains("33000-33039") && e.contains("at most 32728"), "{e}");
        assert!(
            check_port_base(32720, 3, (32768, 60999)).is_err(),
            "32720-32779 reaches it"
        );
        assert!(
            check_port_base(61000, 2, (32768, 60999)).is_ok(),
            "above the range"
        );
    }
}
