//! The agent's HTTP front, built to hold under hostile clients: hyper's
//! HTTP/1.1 connections as tasks on one tokio thread, so a connection costs
//! a task and a buffer, never a thread.
//! - At most `max_connections` connections. When full, the oldest one that
//!   has not sent a request yet is closed to make room; when every one has,
//!   the newcomer gets a 503 and is closed at once. Both are counted.
//! - A connection must send a request's headers within `header_timeout` of
//!   starting to wait for them, which also ends idle keep-alive connections;
//!   headers (with the request line) are capped; a client that stops reading
//!   a response is dropped after `write_timeout`.
//! - Methods other than GET and HEAD get a 405 here, and requests without
//!   valid credentials a 401, or a 429 past a client's password attempts
//!   (`auth`), before the main loop sees them.
//! - Running out of descriptors never ends the agent: it closes the oldest
//!   connection that has sent no request, or refuses until one ends.
//!
//! Requests that pass go to the main loop, which owns the BPF objects, over a
//! channel; each carries the one-shot channel its answer goes back on. A
//! scrape the loop does not answer within 50 ms (it is rendering) gets the
//! loop's latest `/metrics` answer (`LatestMetrics`).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{header, Method, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::{oneshot, Notify, Semaphore};
use tokio::time::Sleep;
use tokio_rustls::TlsAcceptor;

use super::auth::{Authenticator, Verdict};
use super::web_config::WebConfig;

/// How the front protects itself.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_connections: usize,
    pub header_timeout: Duration,
    pub write_timeout: Duration,
    /// Bytes of request line and headers.
    pub max_header_bytes: usize,
}

/// Longest request target accepted (414 beyond).
const MAX_URL_BYTES: usize = 4096;

/// What the front counted, for `/metrics`.
#[derive(Default)]
pub struct HttpCounters {
    pub connections_open: AtomicU64,
    pub connections_refused: AtomicU64,
    /// Closed, while the front was full, before sending a request.
    pub evicted: AtomicU64,
    pub accept_errors: AtomicU64,
    pub tls_handshakes_failed: AtomicU64,
    pub unauthorized: AtomicU64,
    /// Requests answered 429 without a password check (see `auth`).
    pub auth_rate_limited: AtomicU64,
}

/// An answer from the main loop. The body is shared: requests that joined
/// one window get the same rendering without copies.
pub struct Reply {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Bytes,
    pub headers: Vec<(&'static str, String)>,
}

impl Reply {
    pub fn bytes(status: u16, content_type: &'static str, body: impl Into<Bytes>) -> Self {
        Reply {
            status,
            content_type,
            body: body.into(),
            headers: Vec::new(),
        }
    }

    pub fn text(status: u16, body: impl Into<String>) -> Self {
        Reply::bytes(
            status,
            "text/plain; charset=utf-8",
            body.into().into_bytes(),
        )
    }

    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }
}

/// The last `/metrics` answer the main loop made: a scrape that finds the
/// loop busy (rendering a profile) for more than `METRICS_PATIENCE` gets it
/// instead of waiting. The loop refreshes it at every scrape it answers
/// and before it renders, so it is never older than one rendering.
#[derive(Default)]
pub struct LatestMetrics {
    body: Mutex<Option<(Instant, Bytes)>>,
}

/// How long a scrape waits for the main loop before the latest answer does.
const METRICS_PATIENCE: Duration = Duration::from_millis(50);
/// Scrapers are taken to be gone after this long without a scrape: the
/// loop stops refreshing the answer before renderings.
const SCRAPER_GONE: Duration = Duration::from_secs(300);

impl LatestMetrics {
    pub fn store(&self, body: Bytes) {
        if let Ok(mut latest) = self.body.lock() {
            *latest = Some((Instant::now(), body));
        }
    }

    /// Whether anyone scraped lately (so renderings should refresh it first).
    pub fn wanted(&self) -> bool {
        self.body.lock().is_ok_and(|latest| {
            latest
                .as_ref()
                .is_some_and(|(at, _)| at.elapsed() < SCRAPER_GONE)
        })
    }

    fn get(&self) -> Option<Bytes> {
        self.body
            .lock()
            .ok()?
            .as_ref()
            .map(|(_, body)| body.clone())
    }
}

/// The content type of `/metrics` answers.
pub const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A request that passed the front's checks: its target (path and query),
/// and where its answer goes.
pub struct Request {
    pub url: String,
    reply: oneshot::Sender<Reply>,
}

impl Request {
    /// Answers; a client that went away is not the agent's problem.
    pub fn respond(self, reply: Reply) {
        let _ = self.reply.send(reply);
    }
}

/// Starts serving `listener` on its own thread; requests arrive on the
/// returned channel. The thread ends with the process.
pub fn start(
    listener: std::net::TcpListener,
    limits: Limits,
    web: WebConfig,
    counters: Arc<HttpCounters>,
    latest_metrics: Arc<LatestMetrics>,
) -> Result<mpsc::Receiver<Request>> {
    listener
        .set_nonblocking(true)
        .context("cannot make the listening socket non-blocking")?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        // Password checks (bcrypt) run here, one at a time.
        .max_blocking_threads(1)
        .build()
        .context("cannot start the HTTP runtime")?;
    let (sender, receiver) = mpsc::channel();
    let front = Arc::new(Front {
        limits,
        counters,
        latest_metrics,
        to_main: sender,
        authenticator: (!web.users.is_empty()).then(|| Arc::new(Authenticator::new(web.users))),
        tls: web.tls,
    });
    std::thread::Builder::new()
        .name("http".into())
        .spawn(move || {
            runtime.block_on(async move {
                match TcpListener::from_std(listener) {
                    Ok(listener) => accept_loop(listener, front).await,
                    Err(error) => eprintln!("bpfscope: cannot serve HTTP: {error}"),
                }
            })
        })
        .context("cannot start the HTTP thread")?;
    Ok(receiver)
}

struct Front {
    limits: Limits,
    tls: Option<TlsAcceptor>,
    counters: Arc<HttpCounters>,
    to_main: mpsc::Sender<Request>,
    authenticator: Option<Arc<Authenticator>>,
    latest_metrics: Arc<LatestMetrics>,
}

/// Sent, as far as the socket takes it, to connections over the limit.
const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 37\r\nRetry-After: 1\r\nConnection: close\r\n\r\nbpfscope: too many connections open\n";

/// A connection the front holds: whether it still waits for its first
/// request, and how to close it.
struct Held {
    before_first_request: AtomicBool,
    close: Notify,
}

async fn accept_loop(listener: TcpListener, front: Arc<Front>) {
    let permits = Arc::new(Semaphore::new(front.limits.max_connections));
    // By arrival: the oldest first.
    let held: Arc<Mutex<BTreeMap<u64, Arc<Held>>>> = Arc::default();
    let mut arrivals = 0u64;
    loop {
        let (stream, client) = match listener.accept().await {
            Ok((stream, client)) => (stream, client.ip()),
            Err(_) => {
                // Out of descriptors or memory: close the oldest connection
                // that has sent no request, if any, else wait a moment; go on.
                front.counters.accept_errors.fetch_add(1, Ordering::Relaxed);
                if evict_oldest_before_request(&held) {
                    front.counters.evicted.fetch_add(1, Ordering::Relaxed);
                    tokio::task::yield_now().await;
                } else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                continue;
            }
        };
        let permit = match Arc::clone(&permits).try_acquire_owned() {
            Ok(permit) => Some(permit),
            // Full: the oldest connection that has not sent a request yet
            // (a half-open one, most likely) makes room, so idle sockets
            // cannot lock clients out; with none, the newcomer is refused.
            Err(_) if evict_oldest_before_request(&held) => {
                front.counters.evicted.fetch_add(1, Ordering::Relaxed);
                let freed = Arc::clone(&permits).acquire_owned();
                tokio::time::timeout(Duration::from_millis(100), freed)
                    .await
                    .ok()
                    .and_then(Result::ok)
            }
            Err(_) => None,
        };
        let Some(permit) = permit else {
            front
                .counters
                .connections_refused
                .fetch_add(1, Ordering::Relaxed);
            let _ = stream.try_write(BUSY);
            continue;
        };
        let front = Arc::clone(&front);
        let connection = Arc::new(Held {
            before_first_request: AtomicBool::new(true),
            close: Notify::new(),
        });
        arrivals += 1;
        let arrival = arrivals;
        if let Ok(mut held) = held.lock() {
            held.insert(arrival, Arc::clone(&connection));
        }
        let held = Arc::clone(&held);
        tokio::spawn(async move {
            front
                .counters
                .connections_open
                .fetch_add(1, Ordering::Relaxed);
            let _ = stream.set_nodelay(true);
            tokio::select! {
                () = serve_connection(stream, client, &front, &connection) => {}
                () = connection.close.notified() => {}
            }
            if let Ok(mut held) = held.lock() {
                held.remove(&arrival);
            }
            front
                .counters
                .connections_open
                .fetch_sub(1, Ordering::Relaxed);
            drop(permit);
        });
    }
}

/// Tells the oldest connection still before its first request to close;
/// false when every connection has sent one.
fn evict_oldest_before_request(held: &Mutex<BTreeMap<u64, Arc<Held>>>) -> bool {
    let Ok(held) = held.lock() else {
        return false;
    };
    let oldest = held.values().find(|connection| {
        connection
            .before_first_request
            .swap(false, Ordering::Relaxed)
    });
    match oldest {
        Some(connection) => {
            connection.close.notify_one();
            true
        }
        None => false,
    }
}

async fn serve_connection(
    stream: tokio::net::TcpStream,
    client: IpAddr,
    front: &Arc<Front>,
    held: &Arc<Held>,
) {
    let limits = front.limits;
    match &front.tls {
        None => {
            serve_http(
                WriteDeadline::new(stream, limits.write_timeout),
                client,
                front,
                held,
            )
            .await
        }
        Some(acceptor) => {
            let handshake = tokio::time::timeout(limits.header_timeout, acceptor.accept(stream));
            match handshake.await {
                Ok(Ok(tls)) => {
                    serve_http(
                        WriteDeadline::new(tls, limits.write_timeout),
                        client,
                        front,
                        held,
                    )
                    .await
                }
                _ => {
                    front
                        .counters
                        .tls_handshakes_failed
                        .fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
}

async fn serve_http<S>(io: WriteDeadline<S>, client: IpAddr, front: &Arc<Front>, held: &Arc<Held>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let limits = front.limits;
    let service = service_fn(|request| {
        held.before_first_request.store(false, Ordering::Relaxed);
        let front = Arc::clone(front);
        async move { Ok::<_, Infallible>(answer(request, client, &front).await) }
    });
    let _ = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_header_size(limits.max_header_bytes)
        .max_buf_size(limits.max_header_bytes.max(8192) + 8192)
        .serve_connection(TokioIo::new(io), service)
        .await;
}

type Response = hyper::Response<Full<Bytes>>;

fn response(reply: Reply) -> Response {
    let mut builder = hyper::Response::builder()
        .status(StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header(header::CONTENT_TYPE, reply.content_type);
    for (name, value) in reply.headers {
        builder = builder.header(name, value);
    }
    builder
        .body(Full::new(reply.body))
        .unwrap_or_else(|_| hyper::Response::new(Full::new(Bytes::from_static(b"bad header\n"))))
}

async fn answer(request: hyper::Request<Incoming>, client: IpAddr, front: &Arc<Front>) -> Response {
    if !matches!(*request.method(), Method::GET | Method::HEAD) {
        return response(
            Reply::text(405, "only GET and HEAD are served\n").with_header("Allow", "GET, HEAD"),
        );
    }
    let url = request
        .uri()
        .path_and_query()
        .map_or("/", |target| target.as_str())
        .to_string();
    if url.len() > MAX_URL_BYTES {
        return response(Reply::text(
            414,
            format!("request target over {MAX_URL_BYTES} bytes\n"),
        ));
    }
    if let Some(authenticator) = &front.authenticator {
        let authorization = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok());
        match authenticator.check(client, authorization).await {
            Verdict::Accepted => {}
            Verdict::Refused => {
                front.counters.unauthorized.fetch_add(1, Ordering::Relaxed);
                return response(
                    Reply::text(401, "unauthorized\n")
                        .with_header("WWW-Authenticate", "Basic realm=\"bpfscope\""),
                );
            }
            Verdict::TooManyAttempts => {
                front
                    .counters
                    .auth_rate_limited
                    .fetch_add(1, Ordering::Relaxed);
                return response(
                    Reply::text(429, "too many password attempts from this address\n")
                        .with_header("Retry-After", "10"),
                );
            }
        }
    }
    let scrape = url == "/metrics";
    let (reply, mut answered) = oneshot::channel();
    let sent = front.to_main.send(Request { url, reply }).is_ok();
    if !sent {
        return response(Reply::text(503, "the agent is stopping\n"));
    }
    if scrape {
        // A scrape never waits behind a rendering: the latest answer does.
        tokio::select! {
            reply = &mut answered => return main_loop_answer(reply),
            () = tokio::time::sleep(METRICS_PATIENCE) => {
                if let Some(latest) = front.latest_metrics.get() {
                    return response(Reply::bytes(200, METRICS_CONTENT_TYPE, latest));
                }
            }
        }
    }
    main_loop_answer(answered.await)
}

fn main_loop_answer(reply: Result<Reply, oneshot::error::RecvError>) -> Response {
    match reply {
        Ok(reply) => response(reply),
        Err(_) => response(Reply::text(503, "the agent is stopping\n")),
    }
}

/// A stream whose writes fail once they have waited `timeout` without
/// progress: a client that stops reading cannot hold its connection.
struct WriteDeadline<S> {
    inner: S,
    timeout: Duration,
    stalled: Option<Pin<Box<Sleep>>>,
}

impl<S> WriteDeadline<S> {
    fn new(inner: S, timeout: Duration) -> Self {
        WriteDeadline {
            inner,
            timeout,
            stalled: None,
        }
    }

    /// After the inner stream said Pending: an error once stalled too long.
    fn check_stall<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        let timeout = self.timeout;
        let stalled = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        match stalled.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client stopped reading",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn progressed<T>(
        &mut self,
        result: Poll<io::Result<T>>,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<T>> {
        match result {
            Poll::Pending => self.check_stall(cx),
            ready => {
                self.stalled = None;
                ready
            }
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for WriteDeadline<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for WriteDeadline<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.progressed(result, cx)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let result = Pin::new(&mut self.inner).poll_flush(cx);
        self.progressed(result, cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let result = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.progressed(result, cx)
    }
}
