//! What tools produce and renderers consume, independent of both: a profile
//! is symbolized stacks with values.

pub mod histogram;
pub mod profile;
