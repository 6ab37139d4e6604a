//! A debuginfod client, following elfutils' conventions: servers from
//! `DEBUGINFOD_URLS` (space-separated) or `--debuginfod URL`, the debug
//! file of a build ID fetched from `SERVER/buildid/ID/debuginfo` and kept
//! under `$DEBUGINFOD_CACHE_PATH`, else `$XDG_CACHE_HOME/debuginfod_client`,
//! else `~/.cache/debuginfod_client`, as `ID/debuginfo`.
//!
//! Fetches start as soon as a stripped object without an installed debug
//! file is seen, on two worker threads, while collection goes on. Output
//! waits for them at most `timeout` after collection ends; fetches still
//! running then are abandoned. A download is kept only when it is an ELF
//! file with symbols and the requested build ID (anything else is deleted,
//! from the cache too). Servers that fail or cannot be reached cost a
//! summary line, not the profile.
//!
//! `http://` and `https://` servers are spoken to through hyper's HTTP/1.1
//! client, TLS through rustls with the system's CA certificates
//! (rustls-native-certs: `SSL_CERT_FILE` and `SSL_CERT_DIR` are honoured).
//! Certificates are verified; a refused one fails that server's fetches
//! with a summary line, within the same deadline as any other failure.

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::header::{ACCEPT_ENCODING, CONTENT_LENGTH, HOST, USER_AGENT};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;

use crate::host::object_files::{ObjectFile, MAX_OBJECT_SIZE};
use crate::host::private_dir::PrivateDir;

/// Parallel downloads.
const WORKERS: usize = 2;

/// One `http[s]://HOST[:PORT][/PATH]` server.
#[derive(Debug, Clone, PartialEq)]
struct Server {
    tls: bool,
    host: String,
    port: u16,
    base_path: String,
}

impl Server {
    fn parse(url: &str) -> Result<Server, String> {
        let (tls, rest) = match (url.strip_prefix("https://"), url.strip_prefix("http://")) {
            (Some(rest), _) => (true, rest),
            (None, Some(rest)) => (false, rest),
            (None, None) => return Err(format!("{url}: not an http:// or https:// URL")),
        };
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port)) if !host.ends_with(']') || authority.starts_with('[') => (
                host,
                port.parse::<u16>()
                    .map_err(|_| format!("{url}: bad port"))?,
            ),
            _ => (authority, if tls { 443 } else { 80 }),
        };
        if host.is_empty() {
            return Err(format!("{url}: no host"));
        }
        Ok(Server {
            tls,
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string(),
            port,
            base_path: match path.trim_end_matches('/') {
                "" => String::new(),
                path => format!("/{path}"),
            },
        })
    }

    /// HOST:PORT, as errors name it.
    fn name(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// TLS with the system's CA certificates; Err says why there is none.
fn tls_connector() -> Result<TlsConnector, String> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        return Err(match found.errors.first() {
            Some(error) => format!("https:// servers skipped: no CA certificates ({error})"),
            None => "https:// servers skipped: no CA certificates (install ca-certificates or set SSL_CERT_FILE)".into(),
        });
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(config)))
}

/// How one fetch ended.
enum Outcome {
    Found(Arc<ObjectFile>),
    FromCache(Arc<ObjectFile>),
    /// Every server answered that it has no such file (404).
    NotFound,
    /// A server could not be reached, answered wrongly, timed out, or sent
    /// a file that is not the requested one.
    Failed(String),
}

#[derive(Default)]
struct State {
    queue: VecDeque<String>,
    /// Requested build IDs: None while pending.
    results: HashMap<String, Option<Outcome>>,
    /// After this instant, workers abandon what they fetch.
    deadline: Option<Instant>,
}

pub struct Debuginfod {
    servers: Vec<Server>,
    /// For the https:// servers (None when there are none).
    tls: Option<TlsConnector>,
    cache_dir: PathBuf,
    timeout: Duration,
    state: Arc<(Mutex<State>, Condvar)>,
    /// Notes about the configuration (skipped URLs), for the summary.
    notes: Vec<String>,
}

/// The cache directory elfutils' client uses.
fn default_cache_dir() -> PathBuf {
    if let Some(path) = std::env::var_os("DEBUGINFOD_CACHE_PATH") {
        return PathBuf::from(path);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("/var/cache/bpfscope"));
    base.join("debuginfod_client")
}

impl Debuginfod {
    /// A client for the servers of `--debuginfod` (which wins) or
    /// `DEBUGINFOD_URLS`; None when neither names any.
    pub fn from_settings(flag: Option<&str>, timeout: Duration) -> Option<Arc<Debuginfod>> {
        let urls = match flag {
            Some(urls) => urls.to_string(),
            None => std::env::var("DEBUGINFOD_URLS").unwrap_or_default(),
        };
        let mut servers = Vec::new();
        let mut notes = Vec::new();
        for url in urls.split_whitespace() {
            match Server::parse(url) {
                Ok(server) => servers.push(server),
                Err(reason) => notes.push(reason),
            }
        }
        if servers.is_empty() && notes.is_empty() {
            return None;
        }
        let mut tls = None;
        if servers.iter().any(|server| server.tls) {
            match tls_connector() {
                Ok(connector) => tls = Some(connector),
                Err(reason) => {
                    servers.retain(|server| !server.tls);
                    notes.push(reason);
                }
            }
        }
        let client = Arc::new(Debuginfod {
            servers,
            tls,
            cache_dir: default_cache_dir(),
            timeout,
            state: Arc::new((Mutex::new(State::default()), Condvar::new())),
            notes,
        });
        for _ in 0..WORKERS {
            let worker = Arc::clone(&client);
            std::thread::spawn(move || worker.work());
        }
        Some(client)
    }

    /// Asks for the debug file of `build_id` (once per ID).
    pub fn request(&self, build_id: &str) {
        if self.servers.is_empty() {
            return;
        }
        let (lock, wake) = &*self.state;
        let mut state = lock.lock().unwrap_or_else(|e| e.into_inner());
        if state.results.contains_key(build_id) {
            return;
        }
        state.results.insert(build_id.to_string(), None);
        state.queue.push_back(build_id.to_string());
        wake.notify_all();
    }

    /// Waits for the fetches requested so far, at most `timeout` from now;
    /// what is still running then is abandoned.
    pub fn wait(&self) {
        let (lock, wake) = &*self.state;
        let deadline = Instant::now() + self.timeout;
        let mut state = lock.lock().unwrap_or_else(|e| e.into_inner());
        state.deadline = Some(deadline);
        wake.notify_all();
        while state.results.values().any(Option::is_none) {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            state = wake
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        // Long-running callers (serve) request more later.
        state.deadline = None;
    }

    /// The debug file fetched (or cached) for `build_id`, if any.
    pub fn debug_file(&self, build_id: &str) -> Option<Arc<ObjectFile>> {
        let (lock, _) = &*self.state;
        let state = lock.lock().unwrap_or_else(|e| e.into_inner());
        match state.results.get(build_id)? {
            Some(Outcome::Found(file) | Outcome::FromCache(file)) => Some(Arc::clone(file)),
            _ => None,
        }
    }

    /// Whether a fetch failed (a server unreachable, refused or wrong):
    /// frames it could have named stay unnamed.
    pub fn failed(&self) -> bool {
        let (lock, _) = &*self.state;
        let state = lock.lock().unwrap_or_else(|e| e.into_inner());
        state
            .results
            .values()
            .any(|outcome| matches!(outcome, Some(Outcome::Failed(_))))
    }

    /// "debuginfod: 3 requested: 1 downloaded, 1 from cache, 1 not found
    /// ..." for the stderr summary; None when nothing was asked for.
    pub fn summary(&self) -> Option<String> {
        let (lock, _) = &*self.state;
        let state = lock.lock().unwrap_or_else(|e| e.into_inner());
        let mut parts = self.notes.clone();
        if !state.results.is_empty() {
            let (mut found, mut cached, mut missing, mut pending) = (0, 0, 0, 0);
            let mut failures: Vec<&str> = Vec::new();
            for outcome in state.results.values() {
                match outcome {
                    Some(Outcome::Found(_)) => found += 1,
                    Some(Outcome::FromCache(_)) => cached += 1,
                    Some(Outcome::NotFound) => missing += 1,
                    Some(Outcome::Failed(reason)) => failures.push(reason),
                    None => pending += 1,
                }
            }
            let mut line = format!(
                "{} requested: {found} downloaded, {cached} from cache, {missing} not on any server",
                state.results.len()
            );
            if pending > 0 {
                line.push_str(&format!(
                    ", {pending} not done within {} s (abandoned)",
                    self.timeout.as_secs()
                ));
            }
            if let Some(first) = failures.first() {
                line.push_str(&format!(", {} failed (first: {first})", failures.len()));
            }
            parts.push(line);
        }
        (!parts.is_empty()).then(|| format!("debuginfod: {}", parts.join("; ")))
    }

    fn work(&self) {
        let (lock, wake) = &*self.state;
        // Each worker drives its fetches on a runtime of its own.
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime,
            Err(error) => {
                let mut state = lock.lock().unwrap_or_else(|e| e.into_inner());
                let reason = format!("debuginfod worker: {error}");
                for (_, outcome) in state.results.iter_mut().filter(|(_, o)| o.is_none()) {
                    *outcome = Some(Outcome::Failed(reason.clone()));
                }
                wake.notify_all();
                return;
            }
        };
        loop {
            let (build_id, deadline) = {
                let mut state = lock.lock().unwrap_or_else(|e| e.into_inner());
                loop {
                    if let Some(id) = state.queue.pop_front() {
                        break (id, state.deadline);
                    }
                    state = wake.wait(state).unwrap_or_else(|e| e.into_inner());
                }
            };
            let deadline = deadline.unwrap_or_else(|| Instant::now() + self.timeout);
            let outcome = self.fetch(&runtime, &build_id, deadline);
            let mut state = lock.lock().unwrap_or_else(|e| e.into_inner());
            state.results.insert(build_id, Some(outcome));
            wake.notify_all();
        }
    }

    /// The debug file from the cache, else from the first server that has it.
    fn fetch(
        &self,
        runtime: &tokio::runtime::Runtime,
        build_id: &str,
        deadline: Instant,
    ) -> Outcome {
        if !(build_id.len() >= 2 && build_id.bytes().all(|b| b.is_ascii_hexdigit())) {
            return Outcome::NotFound;
        }
        let directory = match PrivateDir::open(&self.cache_dir.join(build_id), "debuginfod cache") {
            Ok(directory) => directory,
            Err(reason) => return Outcome::Failed(reason),
        };
        if let Some(cached) = directory.open_entry("debuginfo", libc::O_RDONLY, 0) {
            match checked_debug_file(cached, build_id) {
                Some(file) => return Outcome::FromCache(file),
                None => directory.remove_entry("debuginfo"),
            }
        }
        let mut failure = None;
        for server in &self.servers {
            let mut answer = Err(String::new());
            directory.write_entry("debuginfo", |file| {
                answer = runtime.block_on(download(
                    server,
                    self.tls.as_ref(),
                    build_id,
                    tokio::time::Instant::from_std(deadline),
                    file,
                ));
                answer.is_ok()
            });
            match answer {
                Ok(()) => {}
                Err(reason) if reason.is_empty() => continue, // 404
                Err(reason) => {
                    failure.get_or_insert(reason);
                    continue;
                }
            }
            match directory
                .open_entry("debuginfo", libc::O_RDONLY, 0)
                .and_then(|file| checked_debug_file(file, build_id))
            {
                Some(file) => return Outcome::Found(file),
                None => {
                    directory.remove_entry("debuginfo");
                    failure.get_or_insert(format!(
                        "{} sent a file that is not the debug file of {build_id}",
                        server.name()
                    ));
                }
            }
        }
        match failure {
            Some(reason) => Outcome::Failed(reason),
            None => Outcome::NotFound,
        }
    }
}

/// The file, when it is ELF with symbols and the given build ID.
fn checked_debug_file(file: File, build_id: &str) -> Option<Arc<ObjectFile>> {
    let object = ObjectFile::from_open_file(file).ok()?;
    (object.build_id().as_deref() == Some(build_id) && object.elf().has_symbols)
        .then(|| Arc::new(object))
}

/// GETs `/buildid/ID/debuginfo` into `out` by `deadline`. Err("") means 404.
async fn download(
    server: &Server,
    tls: Option<&TlsConnector>,
    build_id: &str,
    deadline: tokio::time::Instant,
    out: &mut File,
) -> Result<(), String> {
    let fail = |what: &dyn std::fmt::Display| format!("{}: {what}", server.name());
    let stream = tokio::time::timeout_at(
        deadline,
        TcpStream::connect((server.host.as_str(), server.port)),
    )
    .await
    .map_err(|_| fail(&"timed out"))?
    .map_err(|e| fail(&e))?;
    let request = Request::get(format!("{}/buildid/{build_id}/debuginfo", server.base_path))
        .header(HOST, server.name())
        .header(USER_AGENT, concat!("bpfscope/", env!("CARGO_PKG_VERSION")))
        .header(ACCEPT_ENCODING, "identity")
        .body(Empty::<Bytes>::new())
        .map_err(|e| fail(&e))?;
    match (server.tls, tls) {
        (false, _) => fetch_over(TokioIo::new(stream), request, deadline, out, &fail).await,
        (true, Some(connector)) => {
            let name = ServerName::try_from(server.host.clone()).map_err(|e| fail(&e))?;
            let stream = tokio::time::timeout_at(deadline, connector.connect(name, stream))
                .await
                .map_err(|_| fail(&"timed out"))?
                .map_err(|e| fail(&format!("TLS: {e}")))?;
            fetch_over(TokioIo::new(stream), request, deadline, out, &fail).await
        }
        (true, None) => Err(fail(&"no TLS client")),
    }
}

/// Sends `request` over `io` and copies a 200's body to `out`, each step by
/// `deadline`, at most MAX_OBJECT_SIZE bytes.
async fn fetch_over<IO>(
    io: IO,
    request: Request<Empty<Bytes>>,
    deadline: tokio::time::Instant,
    out: &mut File,
    fail: &dyn Fn(&dyn std::fmt::Display) -> String,
) -> Result<(), String>
where
    IO: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let in_time = |what| move |_| fail(&format!("timed out {what}"));
    let (mut sender, connection) =
        tokio::time::timeout_at(deadline, hyper::client::conn::http1::handshake(io))
            .await
            .map_err(in_time("connecting"))?
            .map_err(|e| fail(&e))?;
    // The connection is driven beside the request; it ends with the body.
    let connection = tokio::spawn(connection);
    let response = tokio::time::timeout_at(deadline, sender.send_request(request))
        .await
        .map_err(in_time("waiting for the answer"))?
        .map_err(|e| fail(&e))?;
    let result = async {
        match response.status() {
            StatusCode::OK => {}
            StatusCode::NOT_FOUND => return Err(String::new()),
            other => return Err(fail(&format!("HTTP {}", other.as_u16()))),
        }
        let length = response
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|value| value.to_str().ok()?.parse::<u64>().ok());
        if length.is_some_and(|length| length > MAX_OBJECT_SIZE) {
            return Err(fail(&"file larger than 1 GiB"));
        }
        let mut body = response.into_body();
        let mut total = 0u64;
        while let Some(frame) = tokio::time::timeout_at(deadline, body.frame())
            .await
            .map_err(in_time("reading the file"))?
        {
            let Ok(data) = frame.map_err(|e| fail(&e))?.into_data() else {
                continue; // trailers
            };
            total += data.len() as u64;
            if total > MAX_OBJECT_SIZE {
                return Err(fail(&"file larger than 1 GiB"));
            }
            out.write_all(&data).map_err(|e| format!("cache: {e}"))?;
        }
        match length {
            Some(length) if length != total => Err(fail(&"response cut short")),
            _ => Ok(()),
        }
    }
    .await;
    connection.abort();
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_server_urls() {
        assert_eq!(
            Server::parse("http://127.0.0.1:8002/").unwrap(),
            Server {
                tls: false,
                host: "127.0.0.1".into(),
                port: 8002,
                base_path: String::new()
            }
        );
        assert_eq!(
            Server::parse("http://debuginfod.example/mirror").unwrap(),
            Server {
                tls: false,
                host: "debuginfod.example".into(),
                port: 80,
                base_path: "/mirror".into()
            }
        );
        assert_eq!(
            Server::parse("https://debuginfod.debian.net").unwrap(),
            Server {
                tls: true,
                host: "debuginfod.debian.net".into(),
                port: 443,
                base_path: String::new()
            }
        );
        assert!(Server::parse("ftp://debuginfod.example").is_err());
        assert!(Server::parse("http://:80").is_err());
    }
}
