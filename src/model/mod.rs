//! What tools produce and renderers consume, independent of both: a profile
//! is symbolized stacks with values, a histogram report is buckets per key,
//! connections and modules are what events and frames refer to. Nothing
//! here imports anything above it.

pub mod connection;
pub mod diff;
pub mod histogram;
pub mod module;
pub mod process;
pub mod profile;
