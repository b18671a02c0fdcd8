//! meshconf: a conformance harness for multicluster service-mesh installs.
//!
//! Flow is one-directional: a [`scenario`] file is loaded and validated, turned into a [`plan::Plan`] of typed
//! steps, executed by the [`runner`] against a [`provider`], and every observation is emitted as a
//! [`report::Event`] that reporters (console, JUnit, JSON) consume. Nothing downstream reaches back upstream.

pub mod apps;
pub mod builds;
pub mod compare;
pub mod diagnose;
pub mod doctor;
pub mod exit;
pub mod fleet;
pub mod images;
pub mod kube;
pub mod lease;
pub mod mesh;
pub mod plan;
pub mod provider;
pub mod rehearsal;
pub mod report;
pub mod runner;
pub mod scenario;
pub mod session;
pub mod tools;
pub mod topology;
pub mod verify;

pub use exit::ExitStatus;
