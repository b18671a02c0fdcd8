//! The in-mesh service a traffic check's URL names, parsed once for validation (what curl can reach by name),
//! the verdict's stand-in and the diagnostics (the Envoy cluster a sidecar uses for it).

/// Whether `s` is a DNS-1123 label: what Kubernetes names (clusters, namespaces, Services) and hosts are made of.
pub(crate) fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// The in-mesh service a check's URL names (`http://helloworld.sample:5000/hello`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceTarget {
    /// Service name.
    pub service: String,
    /// Namespace (`default` when the host has no second label).
    pub namespace: String,
    /// Port (80 when the URL names none).
    pub port: u16,
}

impl ServiceTarget {
    /// Parses `[scheme://]service[.namespace][:port][/path]`; `None` for a port that is not a number.
    pub fn parse(url: &str) -> Option<Self> {
        let rest = url.split_once("://").map_or(url, |(_, r)| r);
        let hostport = rest.split('/').next()?;
        let (host, port) = hostport
            .split_once(':')
            .map(|(h, p)| (h, p.parse().ok()))
            .unwrap_or((hostport, Some(80)));
        let mut parts = host.split('.');
        let service = parts.next().filter(|s| !s.is_empty())?.to_string();
        let namespace = parts.next().unwrap_or("default").to_string();
        Some(Self {
            service,
            namespace,
            port: port?,
        })
    }

    /// Checks that `url` is what the traffic check can send: `http://service[.namespace[.svc.cluster.local]][:port][/path]`,
    /// with a host curl reaches by a Service's DNS name (never an address) and a port from 1 to 65535. The error
    /// says what is wrong with it.
    pub fn parse_checked(url: &str) -> Result<Self, String> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| "it must start with http://".to_string())?;
        let hostport = rest.split(['/', '?', '#']).next().unwrap_or_default();
        if hostport.contains('@') {
            return Err("it must not carry user information (user@host)".into());
        }
        let (host, port) = match hostport.rsplit_once(':') {
            Some((h, p)) => {
                let port: u16 = p
                    .parse()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| format!("port '{p}' is not a number from 1 to 65535"))?;
                (h, port)
            }
            None => (hostport, 80),
        };
        if host.is_empty() {
            return Err("it names no host".into());
        }
        let labels: Vec<&str> = host.split('.').collect();
        if let Some(bad) = labels.iter().find(|l| !is_dns_label(l)) {
            return Err(format!(
                "host '{host}': '{bad}' is not a DNS label (lowercase letters, digits and '-', 1 to 63 characters)"
            ));
        }
        if labels.iter().all(|l| l.bytes().all(|b| b.is_ascii_digit()))
            || labels[0].bytes().all(|b| b.is_ascii_digit())
        {
            return Err(format!(
                "host '{host}' is an address, not a Service name: the check attributes answers to a Service's pods"
            ));
        }
        let suffix_ok = match labels.len() {
            1 | 2 => true,
            3 => labels[2] == "svc",
            5 => labels[2..] == ["svc", "cluster", "local"],
            _ => false,
        };
        if !suffix_ok {
            return Err(format!(
                "host '{host}' is not a Service name: use service, service.namespace or service.namespace.svc.cluster.local"
            ));
        }
        Ok(Self {
            service: labels[0].to_string(),
            namespace: labels.get(1).copied().unwrap_or("default").to_string(),
            port,
        })
    }

    /// The Envoy cluster a sidecar uses for it: `outbound|5000||helloworld.sample.svc.cluster.local`.
    pub fn envoy_cluster(&self) -> String {
        format!(
            "outbound|{}||{}.{}.svc.cluster.local",
            self.port, self.service, self.namespace
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checked_urls_name_a_service_curl_can_reach() {
        let t = ServiceTarget::parse_checked("http://helloworld.sample:5000/hello").expect("the guide's url");
        assert_eq!(
            (t.service.as_str(), t.namespace.as_str(), t.port),
            ("helloworld", "sample", 5000)
        );
        let t = ServiceTarget::parse_checked("http://web.ns.svc.cluster.local").expect("fqdn");
        assert_eq!((t.namespace.as_str(), t.port), ("ns", 80));
        for (url, why) in [
            ("http://", "names no host"),
            ("http://:5000/hello", "names no host"),
            ("https://helloworld.sample:5000/", "must start with http://"),
            ("http://helloworld.sample:0/", "not a number from 1 to 65535"),
            ("http://helloworld.sample:99999/", "not a number from 1 to 65535"),
            ("http://helloworld.sample:abc/", "not a number"),
            ("http://10.0.0.7:5000/", "is an address"),
            ("http://Hello_World.sample/", "not a DNS label"),
            ("http://a..b/", "not a DNS label"),
            ("http://helloworld.sample.example.com/", "not a Service name"),
            ("http://u@helloworld.sample/", "user information"),
        ] {
            let e = ServiceTarget::parse_checked(url).expect_err(url);
            assert!(e.contains(why), "{url}: {e}");
        }
    }

    #[test]
    fn targets_parse_like_curl() {
        let t = ServiceTarget::parse("helloworld.sample:5000/hello").expect("t");
        assert_eq!(
            (t.service.as_str(), t.namespace.as_str(), t.port),
            ("helloworld", "sample", 5000)
        );
        let t = ServiceTarget::parse("http://web.ns/").expect("t");
        assert_eq!(t.port, 80);
        assert!(ServiceTarget::parse("h:notaport/").is_none());
    }

    #[test]
    fn envoy_cluster_from_the_guide_url() {
        let t = ServiceTarget::parse("http://helloworld.sample:5000/hello").expect("t");
        assert_eq!(
            t.envoy_cluster(),
            "outbound|5000||helloworld.sample.svc.cluster.local"
        );
    }
}
