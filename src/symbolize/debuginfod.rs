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
//! Only plain `http://` servers are spoken to (no TLS client is built in);
//! `https://` entries are skipped with a note.

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::host::object_files::{ObjectFile, MAX_OBJECT_SIZE};
use crate::host::private_dir::PrivateDir;

/// Parallel downloads.
const WORKERS: usize = 2;
/// The longest header line (or chunk-size line) read, and the most header lines.
const MAX_LINE_BYTES: u64 = 8 << 10;
const MAX_HEADER_LINES: usize = 100;

/// One `http://HOST[:PORT][/PATH]` server.
#[derive(Debug, Clone, PartialEq)]
struct Server {
    host: String,
    port: u16,
    base_path: String,
}

impl Server {
    fn parse(url: &str) -> Result<Server, String> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| format!("{url}: only http:// servers are supported"))?;
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port)) if !host.ends_with(']') || authority.starts_with('[') => (
                host,
                port.parse::<u16>()
                    .map_err(|_| format!("{url}: bad port"))?,
            ),
            _ => (authority, 80),
        };
        if host.is_empty() {
            return Err(format!("{url}: no host"));
        }
        Ok(Server {
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
        let client = Arc::new(Debuginfod {
            servers,
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
            let outcome = self.fetch(&build_id, deadline);
            let mut state = lock.lock().unwrap_or_else(|e| e.into_inner());
            state.results.insert(build_id, Some(outcome));
            wake.notify_all();
        }
    }

    /// The debug file from the cache, else from the first server that has it.
    fn fetch(&self, build_id: &str, deadline: Instant) -> Outcome {
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
                answer = download(server, build_id, deadline, file);
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
                        "{}:{} sent a file that is not the debug file of {build_id}",
                        server.host, server.port
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

/// GETs `/buildid/ID/debuginfo` into `out`. Err("") means 404.
fn download(
    server: &Server,
    build_id: &str,
    deadline: Instant,
    out: &mut File,
) -> Result<(), String> {
    let remaining = || {
        deadline
            .checked_duration_since(Instant::now())
            .filter(|left| !left.is_zero())
            .ok_or_else(|| format!("{}:{} timed out", server.host, server.port))
    };
    let address = (server.host.as_str(), server.port)
        .to_socket_addrs()
        .map_err(|e| format!("{}: {e}", server.host))?
        .next()
        .ok_or_else(|| format!("{}: no address", server.host))?;
    let stream = TcpStream::connect_timeout(&address, remaining()?)
        .map_err(|e| format!("{}:{}: {e}", server.host, server.port))?;
    stream.set_write_timeout(Some(remaining()?)).ok();
    let request = format!(
        "GET {}/buildid/{build_id}/debuginfo HTTP/1.1\r\nHost: {}:{}\r\nUser-Agent: bpfscope/{}\r\nAccept-Encoding: identity\r\nConnection: close\r\n\r\n",
        server.base_path,
        server.host,
        server.port,
        env!("CARGO_PKG_VERSION")
    );
    (&stream)
        .write_all(request.as_bytes())
        .map_err(|e| format!("{}:{}: {e}", server.host, server.port))?;
    let mut reader = BufReader::new(&stream);
    let fail = |what: &str| format!("{}:{}: {what}", server.host, server.port);

    let read_line = |reader: &mut BufReader<&TcpStream>| -> Result<String, String> {
        stream.set_read_timeout(Some(remaining()?)).ok();
        let mut line = Vec::new();
        reader
            .by_ref()
            .take(MAX_LINE_BYTES)
            .read_until(b'\n', &mut line)
            .map_err(|e| fail(&e.to_string()))?;
        if !line.ends_with(b"\n") {
            return Err(fail("response line too long or cut"));
        }
        Ok(String::from_utf8_lossy(&line).trim_end().to_string())
    };
    let status_line = read_line(&mut reader)?;
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| fail("not an HTTP response"))?;
    let mut length: Option<u64> = None;
    let mut chunked = false;
    for index in 0.. {
        if index == MAX_HEADER_LINES {
            return Err(fail("too many response headers"));
        }
        let line = read_line(&mut reader)?;
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                length = Some(value.parse().map_err(|_| fail("bad Content-Length"))?);
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                chunked = value.eq_ignore_ascii_case("chunked");
            }
        }
    }
    match status {
        200 => {}
        404 => return Err(String::new()),
        other => return Err(fail(&format!("HTTP {other}"))),
    }
    if length.is_some_and(|length| length > MAX_OBJECT_SIZE) {
        return Err(fail("file larger than 1 GiB"));
    }
    let mut copy =
        |reader: &mut BufReader<&TcpStream>, limit: Option<u64>| -> Result<u64, String> {
            let mut total = 0u64;
            let mut buffer = vec![0u8; 64 << 10];
            loop {
                stream.set_read_timeout(Some(remaining()?)).ok();
                let want = match limit {
                    Some(limit) if total >= limit => return Ok(total),
                    Some(limit) => buffer.len().min((limit - total) as usize),
                    None => buffer.len(),
                };
                let read = reader
                    .read(&mut buffer[..want])
                    .map_err(|e| fail(&e.to_string()))?;
                if read == 0 {
                    return match limit {
                        Some(_) => Err(fail("response cut short")),
                        None => Ok(total),
                    };
                }
                total += read as u64;
                if total > MAX_OBJECT_SIZE {
                    return Err(fail("file larger than 1 GiB"));
                }
                out.write_all(&buffer[..read])
                    .map_err(|e| format!("cache: {e}"))?;
            }
        };
    if chunked {
        let mut total = 0u64;
        loop {
            let size_line = read_line(&mut reader)?;
            let size = u64::from_str_radix(size_line.split(';').next().unwrap_or("").trim(), 16)
                .map_err(|_| fail("bad chunk"))?;
            if size == 0 {
                return Ok(());
            }
            total += size;
            if total > MAX_OBJECT_SIZE {
                return Err(fail("file larger than 1 GiB"));
            }
            copy(&mut reader, Some(size))?;
            read_line(&mut reader)?; // the CRLF after each chunk
        }
    }
    copy(&mut reader, length).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_server_urls() {
        assert_eq!(
            Server::parse("http://127.0.0.1:8002/").unwrap(),
            Server {
                host: "127.0.0.1".into(),
                port: 8002,
                base_path: String::new()
            }
        );
        assert_eq!(
            Server::parse("http://debuginfod.example/mirror").unwrap(),
            Server {
                host: "debuginfod.example".into(),
                port: 80,
                base_path: "/mirror".into()
            }
        );
        assert!(Server::parse("https://debuginfod.debian.net")
            .unwrap_err()
            .contains("only http://"));
        assert!(Server::parse("http://:80").is_err());
    }
}
