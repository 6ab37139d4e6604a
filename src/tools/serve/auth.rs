//! Basic authentication for the agent's HTTP front. A bcrypt check costs
//! CPU on purpose, so it is what an attacker would spend: credentials
//! bcrypt accepted are remembered (as SHA-256), so a scraper pays once;
//! each client (an IPv4 address, an IPv6 /64) has at most one check
//! running and `MAX_FAILURES` failed ones a minute, and past either gets a
//! fast 429 without a check, so a storm of wrong passwords from one
//! client cannot queue in front of another client's login. Unknown users
//! are checked against a dummy hash, so timing does not tell them.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::web_config::{basic_credentials, UNKNOWN_USER_HASH};

/// At most this many successful credential checks are remembered.
const ACCEPTED_ENTRIES: usize = 64;
/// Failed checks a client may have per `FAILURE_WINDOW`.
const MAX_FAILURES: u32 = 5;
const FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// Clients tracked at once; past it, clients not yet tracked wait (429)
/// until records expire.
const MAX_CLIENTS: usize = 4096;

/// How a request's credentials fared.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Accepted,
    Refused,
    /// Not checked: the client has a check running or too many failures.
    TooManyAttempts,
}

#[derive(Default)]
struct ClientRecord {
    checking: bool,
    failures: u32,
    window_start: Option<Instant>,
}

pub struct Authenticator {
    /// User name to bcrypt hash.
    users: HashMap<String, String>,
    accepted: Mutex<HashSet<[u8; 32]>>,
    clients: Mutex<HashMap<IpAddr, ClientRecord>>,
}

/// The key a client is limited under: IPv6 clients by /64 (one host
/// usually holds a whole /64).
fn client_key(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut segments = v6.segments();
                segments[4..].fill(0);
                IpAddr::V6(segments.into())
            }
        },
        v4 => v4,
    }
}

impl Authenticator {
    pub fn new(users: HashMap<String, String>) -> Self {
        Authenticator {
            users,
            accepted: Mutex::default(),
            clients: Mutex::default(),
        }
    }

    /// Checks an `Authorization` header value from `client`.
    pub async fn check(self: &Arc<Self>, client: IpAddr, authorization: Option<&str>) -> Verdict {
        let Some((user, password)) = authorization.and_then(basic_credentials) else {
            return Verdict::Refused;
        };
        let key: [u8; 32] = Sha256::new()
            .chain_update(user.as_bytes())
            .chain_update([0])
            .chain_update(password.as_bytes())
            .finalize()
            .into();
        if self
            .accepted
            .lock()
            .is_ok_and(|accepted| accepted.contains(&key))
        {
            return Verdict::Accepted;
        }
        let client = client_key(client);
        if !self.begin_check(client) {
            return Verdict::TooManyAttempts;
        }
        let hash = self.users.get(&user).cloned();
        let accepted = tokio::task::spawn_blocking(move || {
            let hash = hash.as_deref().unwrap_or(UNKNOWN_USER_HASH);
            bcrypt::verify(password, hash).unwrap_or(false) && hash != UNKNOWN_USER_HASH
        })
        .await
        .unwrap_or(false);
        self.end_check(client, accepted);
        if !accepted {
            return Verdict::Refused;
        }
        if let Ok(mut cache) = self.accepted.lock() {
            if cache.len() >= ACCEPTED_ENTRIES {
                cache.clear();
            }
            cache.insert(key);
        }
        Verdict::Accepted
    }

    /// Marks a check of `client` as running; false when it may not have one.
    fn begin_check(&self, client: IpAddr) -> bool {
        let Ok(mut clients) = self.clients.lock() else {
            return false;
        };
        let now = Instant::now();
        if clients.len() >= MAX_CLIENTS && !clients.contains_key(&client) {
            clients.retain(|_, record| {
                record.checking
                    || record
                        .window_start
                        .is_some_and(|start| now.duration_since(start) < FAILURE_WINDOW)
            });
            if clients.len() >= MAX_CLIENTS {
                return false;
            }
        }
        let record = clients.entry(client).or_default();
        if record
            .window_start
            .is_some_and(|start| now.duration_since(start) >= FAILURE_WINDOW)
        {
            record.failures = 0;
            record.window_start = None;
        }
        if record.checking || record.failures >= MAX_FAILURES {
            return false;
        }
        record.checking = true;
        true
    }

    fn end_check(&self, client: IpAddr, accepted: bool) {
        let Ok(mut clients) = self.clients.lock() else {
            return;
        };
        let Some(record) = clients.get_mut(&client) else {
            return;
        };
        record.checking = false;
        if !accepted {
            record.failures += 1;
            record.window_start.get_or_insert_with(Instant::now);
        } else if record.failures == 0 {
            clients.remove(&client);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_gets_one_check_at_a_time_and_few_failures() {
        let authenticator = Authenticator::new(HashMap::new());
        let attacker: IpAddr = "127.0.0.2".parse().unwrap();
        assert!(authenticator.begin_check(attacker));
        assert!(!authenticator.begin_check(attacker), "one at a time");
        assert!(authenticator.begin_check("127.0.0.1".parse().unwrap()));
        authenticator.end_check(attacker, false);
        for _ in 1..MAX_FAILURES {
            assert!(authenticator.begin_check(attacker));
            authenticator.end_check(attacker, false);
        }
        assert!(!authenticator.begin_check(attacker), "too many failures");
    }

    #[test]
    fn ipv6_clients_are_limited_by_their_64() {
        let a = client_key("2001:db8:1:2:aaaa::1".parse().unwrap());
        let b = client_key("2001:db8:1:2:bbbb::2".parse().unwrap());
        assert_eq!(a, b);
        assert_eq!(
            client_key("::ffff:10.0.0.1".parse().unwrap()),
            "10.0.0.1".parse::<IpAddr>().unwrap()
        );
    }
}
