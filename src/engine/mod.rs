//! The engines tools plug into: the collection loop every run shares, the
//! stack engine (profile, offcpu, serve's profiles), the histogram runner
//! and the event stream. An engine takes typed options from a tool, never
//! its command-line struct, and drives the kernel-access, host, unwinding
//! and symbolization layers below it.

pub mod events;
pub mod histogram;
pub mod run;
pub mod stack;
