//! Connections as the TCP tools' BPF programs report them (`struct
//! connection` in src/bpf/sock.h): IPv4 or IPv6 addresses and ports.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

const AF_INET6: u16 = 10;
/// sizeof(struct connection).
pub const CONNECTION_SIZE: usize = 40;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connection {
    pub local: IpAddr,
    pub local_port: u16,
    pub remote: IpAddr,
    pub remote_port: u16,
}

impl Connection {
    pub fn parse(raw: &[u8]) -> Option<Self> {
        if raw.len() < CONNECTION_SIZE {
            return None;
        }
        let u16_at = |at: usize| u16::from_ne_bytes(raw[at..at + 2].try_into().expect("2 bytes"));
        let address = |at: usize| -> IpAddr {
            if u16_at(0) == AF_INET6 {
                IpAddr::V6(Ipv6Addr::from(
                    <[u8; 16]>::try_from(&raw[at..at + 16]).expect("16 bytes"),
                ))
            } else {
                IpAddr::V4(Ipv4Addr::new(
                    raw[at],
                    raw[at + 1],
                    raw[at + 2],
                    raw[at + 3],
                ))
            }
        };
        Some(Connection {
            local: address(8),
            local_port: u16_at(2),
            remote: address(24),
            remote_port: u16_at(4),
        })
    }

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
    fn parses_ipv4_and_ipv6_connections() {
        let mut raw = vec![0u8; CONNECTION_SIZE];
        raw[0..2].copy_from_slice(&2u16.to_ne_bytes());
        raw[2..4].copy_from_slice(&40000u16.to_ne_bytes());
        raw[4..6].copy_from_slice(&80u16.to_ne_bytes());
        raw[8..12].copy_from_slice(&[127, 0, 0, 1]);
        raw[24..28].copy_from_slice(&[10, 1, 2, 3]);
        let v4 = Connection::parse(&raw).unwrap();
        assert_eq!(v4.local, "127.0.0.1".parse::<IpAddr>().unwrap());
        assert_eq!(v4.remote, "10.1.2.3".parse::<IpAddr>().unwrap());
        assert_eq!(
            (v4.local_port, v4.remote_port, v4.ip_version()),
            (40000, 80, '4')
        );

        raw[0..2].copy_from_slice(&10u16.to_ne_bytes());
        raw[8..24].copy_from_slice(&Ipv6Addr::LOCALHOST.octets());
        let v6 = Connection::parse(&raw).unwrap();
        assert_eq!(v6.local, IpAddr::V6(Ipv6Addr::LOCALHOST));
        assert_eq!(v6.ip_version(), '6');
        assert!(Connection::parse(&raw[..39]).is_none());
        assert_eq!(tcp_state_name(1), "ESTABLISHED");
    }
}
