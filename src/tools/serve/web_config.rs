//! `--web.config.file`: TLS and basic authentication in the YAML format of
//! the Prometheus exporter toolkit, so that a scrape configuration written
//! for node_exporter works unchanged against the agent.
//!
//! ```yaml
//! tls_server_config:
//!   cert_file: server.crt          # paths relative to this file
//!   key_file: server.key
//!   client_auth_type: RequireAndVerifyClientCert   # or NoClientCert
//!   client_ca_file: clients.crt
//!   min_version: TLS12             # TLS12 or TLS13
//! basic_auth_users:
//!   prometheus: $2y$10$...         # bcrypt hashes
//! ```
//!
//! Fields of the toolkit's format that the agent cannot honour (cipher
//! suites, curves, HTTP/2, extra headers) are refused by name, never ignored.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use base64::Engine;
use serde::Deserialize;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{self, RootCertStore, ServerConfig, SupportedProtocolVersion};
use tokio_rustls::TlsAcceptor;

/// A bcrypt hash no password matches in practice: users that do not exist
/// are checked against it, so that a check takes as long either way.
pub const UNKNOWN_USER_HASH: &str = "$2b$10$SWQbLrlTiOAwpmNZwgfFUejojfCJUeeGevLodbLl2o2PvXHWXFvq2";

/// The highest bcrypt cost accepted: each check of a cost-14 hash takes
/// about a second of CPU, and a cost-31 one days.
pub const MAX_BCRYPT_COST: u32 = 14;

/// The cost of a well-formed bcrypt hash (`$2a$`, `$2b$`, `$2x$` or `$2y$`,
/// two digits, `$`, 53 characters of bcrypt's base64), checked without
/// running bcrypt.
fn bcrypt_cost(hash: &str) -> Option<u32> {
    let rest = ["$2a$", "$2b$", "$2x$", "$2y$"]
        .iter()
        .find_map(|prefix| hash.strip_prefix(prefix))?;
    let (cost, salt_and_hash) = rest.split_once('$')?;
    let cost: u32 = cost.parse().ok().filter(|_| cost.len() == 2)?;
    let alphabet = |c: char| c.is_ascii_alphanumeric() || c == '.' || c == '/';
    ((4..=31).contains(&cost) && salt_and_hash.len() == 53 && salt_and_hash.chars().all(alphabet))
        .then_some(cost)
}

/// Largest configuration, certificate or key file read.
const MAX_FILE_BYTES: u64 = 1 << 20;

/// What the HTTP front enforces.
#[derive(Default)]
pub struct WebConfig {
    pub tls: Option<TlsAcceptor>,
    /// User name to bcrypt hash; empty: no authentication.
    pub users: HashMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileFormat {
    tls_server_config: Option<TlsFormat>,
    #[serde(default)]
    basic_auth_users: HashMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsFormat {
    cert_file: String,
    key_file: String,
    #[serde(default)]
    client_auth_type: Option<String>,
    #[serde(default)]
    client_ca_file: Option<String>,
    #[serde(default)]
    min_version: Option<String>,
    #[serde(default)]
    max_version: Option<String>,
}

impl WebConfig {
    /// Reads and checks `path`; every certificate and key is loaded now.
    pub fn load(path: &Path) -> Result<WebConfig> {
        let text = read_small(path)?;
        let text = String::from_utf8(text)
            .map_err(|_| anyhow!("bad web config {}: not UTF-8", path.display()))?;
        // A file of comments only (as packaged) configures nothing.
        let only_comments = text
            .lines()
            .all(|line| line.trim().is_empty() || line.trim_start().starts_with('#'));
        if only_comments {
            return Ok(WebConfig::default());
        }
        let format: FileFormat = serde_yaml_ng::from_str(&text)
            .map_err(|error| anyhow!("bad web config {}: {error}", path.display()))?;
        let directory = path.parent().unwrap_or(Path::new("."));
        for (user, hash) in &format.basic_auth_users {
            match bcrypt_cost(hash) {
                None => bail!(
                    "bad web config {}: the password of user {user:?} is not a bcrypt hash",
                    path.display()
                ),
                Some(cost) if cost > MAX_BCRYPT_COST => bail!(
                    "bad web config {}: the bcrypt hash of user {user:?} has cost {cost}, over the most served ({MAX_BCRYPT_COST}): each check would take too long; hash the password with a lower cost",
                    path.display()
                ),
                Some(_) => {}
            }
        }
        let tls = format
            .tls_server_config
            .map(|tls| tls_acceptor(&tls, directory))
            .transpose()
            .with_context(|| format!("bad web config {}", path.display()))?;
        Ok(WebConfig {
            tls,
            users: format.basic_auth_users,
        })
    }

    /// What clients face, for the start-up line.
    pub fn describe(&self) -> String {
        match (self.tls.is_some(), self.users.is_empty()) {
            (true, false) => "TLS and basic authentication".into(),
            (true, true) => "TLS, no authentication".into(),
            (false, false) => "basic authentication without TLS".into(),
            (false, true) => "plain HTTP, no authentication".into(),
        }
    }
}

fn read_small(path: &Path) -> Result<Vec<u8>> {
    let file = std::fs::File::open(path)
        .map_err(|error| anyhow!("cannot read {}: {error}", path.display()))?;
    let metadata = file.metadata()?;
    if !metadata.is_file() {
        bail!("cannot read {}: not a regular file", path.display());
    }
    if metadata.len() > MAX_FILE_BYTES {
        bail!(
            "cannot read {}: over {MAX_FILE_BYTES} bytes",
            path.display()
        );
    }
    Ok(std::fs::read(path)?)
}

fn tls_version(name: &str) -> Result<&'static SupportedProtocolVersion> {
    match name {
        "TLS12" => Ok(&rustls::version::TLS12),
        "TLS13" => Ok(&rustls::version::TLS13),
        other => bail!("TLS version {other:?} is not supported: give TLS12 or TLS13"),
    }
}

fn tls_acceptor(tls: &TlsFormat, directory: &Path) -> Result<TlsAcceptor> {
    let resolve = |name: &str| -> PathBuf { directory.join(name) };
    let cert_path = resolve(&tls.cert_file);
    let certificates = CertificateDer::pem_slice_iter(&read_small(&cert_path)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| anyhow!("bad certificate {}: {error}", cert_path.display()))?;
    if certificates.is_empty() {
        bail!("no certificate in {}", cert_path.display());
    }
    let key_path = resolve(&tls.key_file);
    let key = PrivateKeyDer::from_pem_slice(&read_small(&key_path)?)
        .map_err(|error| anyhow!("bad private key {}: {error}", key_path.display()))?;
    let lowest = tls_version(tls.min_version.as_deref().unwrap_or("TLS12"))?;
    let highest = tls_version(tls.max_version.as_deref().unwrap_or("TLS13"))?;
    let versions: Vec<&'static SupportedProtocolVersion> =
        [&rustls::version::TLS12, &rustls::version::TLS13]
            .into_iter()
            .filter(|version| {
                let rank = |v: &SupportedProtocolVersion| u16::from(v.version);
                rank(version) >= rank(lowest) && rank(version) <= rank(highest)
            })
            .collect();
    if versions.is_empty() {
        bail!("min_version is above max_version");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&versions)?;
    let builder = match tls.client_auth_type.as_deref().unwrap_or("NoClientCert") {
        "NoClientCert" => builder.with_no_client_auth(),
        "RequireAndVerifyClientCert" => {
            let Some(ca_file) = &tls.client_ca_file else {
                bail!("client_auth_type RequireAndVerifyClientCert needs client_ca_file");
            };
            let ca_path = resolve(ca_file);
            let mut roots = RootCertStore::empty();
            for certificate in CertificateDer::pem_slice_iter(&read_small(&ca_path)?) {
                let certificate = certificate
                    .map_err(|error| anyhow!("bad certificate {}: {error}", ca_path.display()))?;
                roots.add(certificate)?;
            }
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider).build()?;
            builder.with_client_cert_verifier(verifier)
        }
        other => bail!(
            "client_auth_type {other:?} is not supported: give NoClientCert or RequireAndVerifyClientCert"
        ),
    };
    let config = builder
        .with_single_cert(certificates, key)
        .map_err(|error| anyhow!("the certificate and key do not go together: {error}"))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// (user, password) from an `Authorization: Basic ...` value.
pub fn basic_credentials(value: &str) -> Option<(String, String)> {
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(directory: &Path, name: &str, text: &str) -> PathBuf {
        let path = directory.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn basic_credentials_are_decoded() {
        // "prometheus:s3cret:x" — the password may hold colons.
        assert_eq!(
            basic_credentials("Basic cHJvbWV0aGV1czpzM2NyZXQ6eA=="),
            Some(("prometheus".into(), "s3cret:x".into()))
        );
        assert_eq!(basic_credentials("Bearer abc"), None);
        assert_eq!(basic_credentials("Basic !!!"), None);
    }

    #[test]
    fn bcrypt_costs_are_read_without_running_bcrypt() {
        assert_eq!(bcrypt_cost(UNKNOWN_USER_HASH), Some(10));
        let cost_31 = UNKNOWN_USER_HASH.replace("$10$", "$31$");
        assert_eq!(bcrypt_cost(&cost_31), Some(31));
        for bad in ["hunter2", "$2b$1$abc", "$2b$10$short", "$3b$10$"] {
            assert_eq!(bcrypt_cost(bad), None, "{bad}");
        }
    }

    #[test]
    fn unknown_fields_and_bad_hashes_are_refused() {
        let directory = std::env::temp_dir().join(format!("webconfig-{}", std::process::id()));
        std::fs::create_dir_all(&directory).unwrap();
        let path = write(&directory, "a.yml", "http_server_config:\n  http2: true\n");
        let error = format!("{:#}", WebConfig::load(&path).err().unwrap());
        assert!(error.contains("http_server_config"), "{error}");
        let path = write(&directory, "b.yml", "basic_auth_users:\n  alice: plain\n");
        let error = format!("{:#}", WebConfig::load(&path).err().unwrap());
        assert!(error.contains("not a bcrypt hash"), "{error}");
        let path = write(
            &directory,
            "c.yml",
            &format!("basic_auth_users:\n  alice: '{UNKNOWN_USER_HASH}'\n"),
        );
        let config = WebConfig::load(&path).unwrap();
        assert!(config.tls.is_none());
        assert_eq!(config.users.len(), 1);
        std::fs::remove_dir_all(&directory).unwrap();
    }
}
