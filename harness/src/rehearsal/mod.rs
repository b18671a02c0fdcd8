//! Rehearsal machinery for the `kwok` provider: supervised local processes (istiod, MetalLB controller), the
//! state the stand-ins read, an ADS client (one-shot and standing), and the stand-ins themselves (curl, the traffic generator).

pub mod departures;
pub mod loadgen;
pub mod pidfile;
pub mod procs;
pub mod shim;
pub mod state;
pub mod strays;
pub mod watch;
pub mod xds;

pub use shim::run_if_shim;
