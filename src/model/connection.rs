//! A TCP connection as the TCP tools report it: IPv4 or IPv6 addresses and
//! ports, and the names of TCP states.

use std::net::IpAddr;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connection {
    pub local: IpAddr,
    pub local_port: u16,
    pub remote: IpAddr,
    pub remote_port: u16,
}

impl Connection {
    /// "4" or "6", as BCC's IP column.
    pub fn ip_version(&self) -> char {
        if self.local.is_ipv6() {
            '6'
        } else {
            '4'
        }
    }
}

/// TCP state names (include/net/tcp_states.h), as BCC prints them.
pub fn tcp_state_name(state: u32) -> &'static str {
    match state {
        1 => "ESTABLISHED",
        2 => "SYN_SENT",
        3 => "SYN_RECV",
        4 => "FIN_WAIT1",
        5 => "FIN_WAIT2",
        6 => "TIME_WAIT",
        7 => "CLOSE",
        8 => "CLOSE_WAIT",
        9 => "LAST_ACK",
        10 => "LISTEN",
        11 => "CLOSING",
        12 => "NEW_SYN_RECV",
        _ => "UNKNOWN",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_versions_and_states() {
        let v6 = Connection {
            local: "::1".parse().unwrap(),
            local_port: 1,
            remote: "::1".parse().unwrap(),
            remote_port: 2,
        };
        assert_eq!(v6.ip_version(), '6');
        assert_eq!(tcp_state_name(1), "ESTABLISHED");
    }
}
