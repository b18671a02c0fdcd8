//! Proof that no packet left the machine during a kind run: a DROP rule at the top of Docker's `DOCKER-USER`
//! chain for packets forwarded from the kind network's bridge to any other interface (the uplink, other Docker
//! networks). Node-to-node traffic stays on the bridge and is not counted, even where `br_netfilter` shows it to
//! iptables; packets to the host itself are local, not forwarded. The rule's packet counter is the run's
//! `egress-packets` property, and it must be 0. Where the rule cannot be set (not root, no iptables, an engine
//! without that chain) the property says so instead of claiming a 0.

use std::time::Duration;

use crate::tools::Cmd;

/// The egress count of a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EgressCount {
    /// Packets from the kind network to outside it, dropped and counted.
    Packets(u64),
    /// Not measured, and why.
    Unmeasured(String),
}

impl std::fmt::Display for EgressCount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EgressCount::Packets(n) => write!(f, "{n}"),
            EgressCount::Unmeasured(why) => write!(f, "unmeasured ({why})"),
        }
    }
}

/// The DROP-and-count rule of one run.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EgressRule {
    /// The Linux bridge of the kind network.
    pub bridge: String,
    /// The rule's comment, unique per run.
    pub comment: String,
}

const CHAIN: &str = "DOCKER-USER";

impl EgressRule {
    /// The rule for the kind network's `bridge`, tagged with `run_id`.
    pub fn new(bridge: &str, run_id: &str) -> Self {
        Self {
            bridge: bridge.to_string(),
            comment: format!("meshconf-egress {run_id}"),
        }
    }

    fn spec(&self) -> Vec<String> {
        let b = self.bridge.as_str();
        [
            "-i",
            b,
            "!",
            "-o",
            b,
            "-m",
            "comment",
            "--comment",
            &self.comment,
            "-j",
            "DROP",
        ]
        .iter()
        .map(|a| a.to_string())
        .collect()
    }

    fn iptables(args: &[&str], rest: &[String]) -> Cmd {
        Cmd::new("iptables")
            .args(["-w", "10"])
            .args(args.iter().copied())
            .args(rest.iter().cloned())
            .timeout(Duration::from_secs(20))
    }

    /// `iptables -I DOCKER-USER 1 <spec>`.
    pub fn insert_cmd(&self) -> Cmd {
        Self::iptables(&["-I", CHAIN, "1"], &self.spec())
    }

    /// `iptables -D DOCKER-USER <spec>`.
    pub fn delete_cmd(&self) -> Cmd {
        Self::iptables(&["-D", CHAIN], &self.spec())
    }

    /// `iptables -L DOCKER-USER -v -x -n`.
    pub fn list_cmd() -> Cmd {
        Self::iptables(&["-L", CHAIN, "-v", "-x", "-n"], &[])
    }

    /// Sets the rule. `Err` says why the count will be unmeasured.
    pub async fn arm(&self) -> Result<(), String> {
        if !nix::unistd::geteuid().is_root() {
            return Err("not root: the DOCKER-USER rule needs iptables as root".into());
        }
        if crate::tools::which("iptables").is_none() {
            return Err("iptables is not on PATH".into());
        }
        self.insert_cmd()
            .run()
            .await
            .map(|_| ())
            .map_err(|e| format!("cannot add the {CHAIN} rule: {e}"))
    }

    /// Reads the rule's packet counter.
    pub async fn read(&self) -> EgressCount {
        match Self::list_cmd().run().await {
            Ok(out) => match packets_of(&out.stdout, &self.comment) {
                Some(n) => EgressCount::Packets(n),
                None => EgressCount::Unmeasured(format!("the {CHAIN} rule '{}' is gone", self.comment)),
            },
            Err(e) => EgressCount::Unmeasured(format!("cannot list {CHAIN}: {e}")),
        }
    }

    /// Removes the rule.
    pub async fn disarm(&self) -> Result<(), String> {
        self.delete_cmd()
            .run()
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

/// The packet count of the rule commented `comment` in `iptables -L CHAIN -v -x -n` output.
pub fn packets_of(listing: &str, comment: &str) -> Option<u64> {
    let tag = format!("/* {comment} */");
    listing
        .lines()
        .find(|l| l.contains(&tag))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LISTING: &str = "Chain DOCKER-USER (1 references)\n    pkts      bytes target     prot opt in     out     source               destination\n      17     1204 DROP       all  --  *      *       172.30.0.0/16       !172.30.0.0/16        /* meshconf-egress run-a */\n       0        0 DROP       all  --  *      *       172.30.0.0/16       !172.30.0.0/16        /* meshconf-egress run-b */\n  981234 99912345 RETURN     all  --  *      *       0.0.0.0/0            0.0.0.0/0\n";

    #[test]
    fn reads_the_counter_of_this_runs_rule_only() {
        assert_eq!(packets_of(LISTING, "meshconf-egress run-a"), Some(17));
        assert_eq!(packets_of(LISTING, "meshconf-egress run-b"), Some(0));
        assert_eq!(packets_of(LISTING, "meshconf-egress run-c"), None);
    }

    #[test]
    fn the_rule_drops_only_what_leaves_the_kind_bridge() {
        let r = EgressRule::new("meshconf-kind", "x");
        insta::assert_snapshot!(
            [r.insert_cmd().display(), r.delete_cmd().display(), EgressRule::list_cmd().display()].join("\n"),
            @r###"
        iptables -w 10 -I DOCKER-USER 1 -i meshconf-kind ! -o meshconf-kind -m comment --comment 'meshconf-egress x' -j DROP
        iptables -w 10 -D DOCKER-USER -i meshconf-kind ! -o meshconf-kind -m comment --comment 'meshconf-egress x' -j DROP
        iptables -w 10 -L DOCKER-USER -v -x -n
        "###
        );
        assert_eq!(
            EgressCount::Unmeasured("not root".into()).to_string(),
            "unmeasured (not root)"
        );
    }
}
