//! The command line and its wiring, one module per tool: its flags, how it
//! loads and attaches its BPF object, and which engine runs it. Flags
//! several tools share are in `flags`.

pub mod biolatency;
pub mod flags;
pub mod fslatency;
pub mod funclatency;
pub mod offcpu;
pub mod profile;
pub mod runqlat;
pub mod runqlen;
pub mod serve;
pub mod syscount;
pub mod tcpconnlat;
pub mod tcplife;
pub mod tcpretrans;
pub mod unwind_table;
