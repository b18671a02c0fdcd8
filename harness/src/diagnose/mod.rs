//! When a run fails: collect bounded evidence of the mesh's state (never secret content) before cleanup, and read
//! a one-line diagnosis off it with rules that each state only what the evidence shows.

mod collect;
mod facts;
mod rules;
mod store;

pub use collect::{
    Collected, DiagnoseInput, DiagnosedCluster, EndpointSource, checked_service, collect, needs_gateway,
    parse_proxy_endpoints,
};
pub use facts::*;
pub use rules::{Finding, Rule, diagnose};
pub use store::{DEFAULT_BUDGET, Store, StoredFile};
