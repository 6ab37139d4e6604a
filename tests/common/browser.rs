//! Headless Chromium (Debian's `chromium`, installed by the test command)
//! driven over the DevTools protocol with a minimal WebSocket client, for
//! the tests of pages bpfscope makes: serve's live page, profile's heatmap.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

use super::{free_port, tmp_dir, wait_for, Workload};

/// GETs a path with HTTP/1.1 (Chromium's DevTools server ignores 1.0) and
/// reads the body by its Content-Length (it keeps connections open).
fn http_get(port: u16, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut received = Vec::new();
    let mut chunk = [0u8; 65536];
    loop {
        let text = String::from_utf8_lossy(&received).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head.lines().find_map(|line| {
                let (name, value) = line.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse::<usize>().ok())?
            });
            if length.is_some_and(|length| body.len() >= length) {
                return Some(body.to_string());
            }
        }
        match stream.read(&mut chunk) {
            Ok(0) => {
                let text = String::from_utf8_lossy(&received).into_owned();
                return Some(text.split_once("\r\n\r\n")?.1.to_string());
            }
            Ok(n) => received.extend(&chunk[..n]),
            Err(_) => return None,
        }
    }
}

/// A DevTools protocol session over a WebSocket (RFC 6455, text frames only).
pub struct DevTools {
    stream: TcpStream,
    next_id: u64,
}

impl DevTools {
    fn connect(url: &str) -> Self {
        let rest = url.strip_prefix("ws://").expect("a ws:// URL");
        let (host, path) = rest.split_once('/').unwrap();
        let mut stream = TcpStream::connect(host).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        write!(
            stream,
            "GET /{path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: YnBmc2NvcGUtdGVzdC1rZXk=\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        .unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            stream.read_exact(&mut byte).unwrap();
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head);
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        DevTools { stream, next_id: 1 }
    }

    fn send_text(&mut self, text: &str) {
        let payload = text.as_bytes();
        let mut frame = vec![0x81u8];
        match payload.len() {
            n if n < 126 => frame.push(0x80 | n as u8),
            n if n <= 0xffff => {
                frame.push(0x80 | 126);
                frame.extend((n as u16).to_be_bytes());
            }
            n => {
                frame.push(0x80 | 127);
                frame.extend((n as u64).to_be_bytes());
            }
        }
        // A zero masking key: client frames must be masked, any key will do.
        frame.extend([0u8; 4]);
        frame.extend(payload);
        self.stream.write_all(&frame).unwrap();
    }

    fn receive_text(&mut self) -> String {
        let mut message = Vec::new();
        loop {
            let mut head = [0u8; 2];
            self.stream.read_exact(&mut head).unwrap();
            let length = match head[1] & 0x7f {
                126 => {
                    let mut bytes = [0u8; 2];
                    self.stream.read_exact(&mut bytes).unwrap();
                    u16::from_be_bytes(bytes) as usize
                }
                127 => {
                    let mut bytes = [0u8; 8];
                    self.stream.read_exact(&mut bytes).unwrap();
                    u64::from_be_bytes(bytes) as usize
                }
                n => n as usize,
            };
            let mut payload = vec![0u8; length];
            self.stream.read_exact(&mut payload).unwrap();
            let opcode = head[0] & 0x0f;
            if opcode == 0x9 || opcode == 0xa {
                continue; // ping/pong: nothing to answer for a short session
            }
            message.extend(payload);
            if head[0] & 0x80 != 0 {
                return String::from_utf8(message).unwrap();
            }
        }
    }

    /// Calls a DevTools method and returns its result (events in between are skipped).
    pub fn call(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        self.send_text(&json!({"id": id, "method": method, "params": params}).to_string());
        loop {
            let reply: Value = serde_json::from_str(&self.receive_text()).unwrap();
            if reply["id"] == json!(id) {
                assert!(reply.get("error").is_none(), "{method}: {reply}");
                return reply["result"].clone();
            }
        }
    }

    /// Evaluates JavaScript in the page; returns its value.
    pub fn evaluate(&mut self, expression: &str) -> Value {
        let result = self.call(
            "Runtime.evaluate",
            json!({"expression": expression, "returnByValue": true}),
        );
        assert!(result.get("exceptionDetails").is_none(), "{result}");
        result["result"]["value"].clone()
    }
}

pub fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        _ => 63,
    };
    let symbols: Vec<u8> = text.bytes().filter(|&c| c != b'=').map(value).collect();
    let mut bytes = Vec::new();
    for chunk in symbols.chunks(4) {
        let bits = chunk
            .iter()
            .enumerate()
            .fold(0u32, |bits, (i, &v)| bits | (v as u32) << (18 - 6 * i));
        bytes.extend(&bits.to_be_bytes()[1..chunk.len()]);
    }
    bytes
}

/// Finds the burn_three frame in the page's flame graph: scrolls it into
/// view and returns its centre (page coordinates) and width, or null.
/// A headless Chromium showing one page, closed (and its profile
/// directory removed) when dropped.
pub struct Browser {
    pub devtools: DevTools,
    process: Option<Workload>,
    profile_dir: PathBuf,
}

impl Browser {
    /// Opens `url` and connects to the page whose URL contains `url_part`.
    pub fn open(url: &str, url_part: &str) -> Browser {
        let devtools_port = free_port();
        let profile_dir =
            tmp_dir().join(format!("chromium-{}-{devtools_port}", std::process::id()));
        let process = Workload(
            Command::new("chromium")
                .args([
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--no-first-run",
                    "--disable-background-networking",
                    "--disable-sync",
                    "--disable-extensions",
                    "--window-size=1400,1000",
                ])
                .arg(format!("--remote-debugging-port={devtools_port}"))
                .arg(format!("--user-data-dir={}", profile_dir.display()))
                .arg(url)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("chromium is installed by the test command"),
        );
        let mut page_socket = None;
        wait_for(Duration::from_secs(30), || {
            let Some(list) = http_get(devtools_port, "/json/list") else {
                return false;
            };
            let targets: Value = serde_json::from_str(&list).unwrap_or(Value::Null);
            page_socket = targets.as_array().and_then(|targets| {
                targets
                    .iter()
                    .find(|t| {
                        t["type"] == "page" && t["url"].as_str().unwrap_or("").contains(url_part)
                    })
                    .and_then(|t| t["webSocketDebuggerUrl"].as_str().map(String::from))
            });
            page_socket.is_some()
        });
        let devtools = DevTools::connect(&page_socket.expect("chromium never opened the page"));
        Browser {
            devtools,
            process: Some(process),
            profile_dir,
        }
    }

    /// Clicks at (x, y) in the page.
    pub fn click(&mut self, x: f64, y: f64) {
        for kind in ["mousePressed", "mouseReleased"] {
            self.devtools.call(
                "Input.dispatchMouseEvent",
                json!({"type": kind, "x": x, "y": y, "button": "left", "clickCount": 1}),
            );
        }
    }

    /// Keeps a PNG screenshot of the page in target/test-artifacts/NAME.
    pub fn screenshot(&mut self, name: &str) {
        let screenshot = self.devtools.call(
            "Page.captureScreenshot",
            json!({"format": "png", "captureBeyondViewport": true}),
        );
        let artifacts =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-artifacts");
        std::fs::create_dir_all(&artifacts).unwrap();
        let png = base64_decode(screenshot["data"].as_str().unwrap());
        assert!(png.starts_with(b"\x89PNG"), "not a PNG screenshot");
        std::fs::write(artifacts.join(name), png).unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        self.process.take();
        std::fs::remove_dir_all(&self.profile_dir).ok();
    }
}
