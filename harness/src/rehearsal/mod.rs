//! Rehearsal machinery for the `kwok` provider: supervised local processes (istiod, MetalLB controller), the
//! state the curl stand-in reads, a one-shot ADS client, and the stand-in itself.

pub mod pidfile;
pub mod procs;
pub mod shim;
pub mod state;
pub mod strays;
pub mod xds;

pub use shim::run_if_shim;
