//! One module per tool: its command-line flags, how it sets up its BPF
//! program, and how it turns the kernel's summary into the model.

pub mod biolatency;
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
