//! Prerequisite checks.
