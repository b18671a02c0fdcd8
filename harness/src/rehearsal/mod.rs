//! Rehearsal.
