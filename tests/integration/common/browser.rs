//! What the browser tests share: the `serve` process, plain HTTP, and a WebDriver session with
//! headless Chromium (Debian's `chromium` and `chromium-driver`; `./test.sh` installs them).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// A server (or chromedriver) process, killed when dropped.
pub struct Process(pub Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `serve` on a free port; returns it and its address.
pub fn serve(model: &Path, extra: &[&str]) -> (Process, SocketAddr) {
    serve_with_env(Some(model), extra, &[])
}

/// `serve` with `env` in its environment (and without `--model` where `model` is None).
pub fn serve_with_env(
    model: Option<&Path>,
    extra: &[&str],
    env: &[(&str, &str)],
) -> (Process, SocketAddr) {
    let model_args = model.map(|m| vec!["--model".as_ref(), m.as_os_str()]);
    let mut child = Command::new(env!("CARGO_BIN_EXE_mnist-gpu"))
        .envs(env.iter().copied())
        .args(["serve", "--port", "0"])
        .args(model_args.unwrap_or_default())
        .args(extra)
        .env("XDG_RUNTIME_DIR", std::env::temp_dir())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the binary runs");
    let stdout = child.stdout.take().unwrap();
    let process = Process(child);
    let mut lines = BufReader::new(stdout).lines();
    let address = loop {
        let line = lines
            .next()
            .expect("serve printed its address")
            .expect("readable output");
        if let Some(rest) = line.strip_prefix("serving http://") {
            break rest.trim_end_matches('/').parse().expect("an address");
        }
    };
    // Keep reading the output, so that the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    (process, address)
}

/// One HTTP/1.1 request on its own connection: the status and the body.
pub fn http(address: SocketAddr, method: &str, path: &str, body: &[u8]) -> (u16, String) {
    let (status, bytes) = http_bytes(address, method, path, body);
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

/// `http`, the body as bytes.
pub fn http_bytes(address: SocketAddr, method: &str, path: &str, body: &[u8]) -> (u16, Vec<u8>) {
    let mut stream = TcpStream::connect(address).expect("the server listens");
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).unwrap();
    // A server may answer (413) and close before it has read a large body: that is fine.
    let _ = stream.write_all(body);
    response(stream)
}

/// Reads a response: up to the end of its head, then `Content-Length` bytes of body (or, without
/// one, to the end of the connection).
pub fn response(stream: TcpStream) -> (u16, Vec<u8>) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(120)));
    let mut reader = BufReader::new(stream);
    let mut head = String::new();
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) if line == "\r\n" => break,
            Ok(_) => head.push_str(&line),
        }
    }
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    let length = head.lines().find_map(|l| {
        let (name, value) = l.split_once(':')?;
        if name.eq_ignore_ascii_case("content-length") {
            value.trim().parse::<usize>().ok()
        } else {
            None
        }
    });
    let mut body = Vec::new();
    match length {
        Some(n) => {
            body.resize(n, 0);
            let _ = reader.read_exact(&mut body);
        }
        None => {
            let _ = reader.read_to_end(&mut body);
        }
    }
    (status, body)
}

pub fn json_of(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

/// A WebDriver session with headless Chromium.
pub struct Browser {
    driver: SocketAddr,
    session: String,
    _chromedriver: Process,
    _profile: tempfile::TempDir,
}

pub const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

pub fn find(program: &str, candidates: &[&str]) -> PathBuf {
    candidates
        .iter()
        .map(PathBuf::from)
        .chain(std::env::var_os("PATH").into_iter().flat_map(|p| {
            std::env::split_paths(&p).map(|d| d.join(program)).collect::<Vec<_>>()
        }))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "no {program}: the browser test needs Chromium and its WebDriver \
                 (`apt-get install chromium chromium-driver`, as root or with sudo; ./test.sh does it)"
            )
        })
}

impl Browser {
    pub fn start() -> Browser {
        Browser::start_with(false)
    }

    /// A session whose pages have WebGPU: Chromium's software adapter (SwiftShader) where the
    /// machine has no GPU it can use.
    pub fn with_webgpu() -> Browser {
        Browser::start_with(true)
    }

    fn start_with(webgpu: bool) -> Browser {
        let chromedriver = find("chromedriver", &["/usr/bin/chromedriver"]);
        let chromium = find(
            "chromium",
            &["/usr/bin/chromium", "/usr/bin/chromium-browser"],
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let process = Process(child);
        let driver: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let started = Instant::now();
        while TcpStream::connect(driver).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "chromedriver does not listen"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let profile = tempfile::tempdir().unwrap();
        let args = [
            "--headless=new",
            "--no-sandbox",
            if webgpu {
                "--enable-unsafe-webgpu"
            } else {
                "--disable-gpu"
            },
            "--disable-dev-shm-usage",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--window-size=1300,1500",
        ];
        let mut args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        args.push(format!("--user-data-dir={}", profile.path().display()));
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": chromium, "args": args},
            // The console's messages, for `console_errors`.
            "goog:loggingPrefs": {"browser": "ALL"},
        }}});
        let (status, body) = http(
            driver,
            "POST",
            "/session",
            capabilities.to_string().as_bytes(),
        );
        assert_eq!(status, 200, "no browser session: {body}");
        let session = json_of(&body)["value"]["sessionId"]
            .as_str()
            .unwrap()
            .to_string();
        Browser {
            driver,
            session,
            _chromedriver: process,
            _profile: profile,
        }
    }

    pub fn call(&self, method: &str, path: &str, body: Value) -> Value {
        let body = if method == "GET" {
            String::new()
        } else {
            body.to_string()
        };
        let path = format!("/session/{}{path}", self.session);
        let (status, text) = http(self.driver, method, &path, body.as_bytes());
        assert_eq!(status, 200, "WebDriver {method} {path}: {text}");
        json_of(&text)["value"].clone()
    }

    pub fn element(&self, css: &str) -> String {
        let found = self.call(
            "POST",
            "/element",
            json!({"using": "css selector", "value": css}),
        );
        found[ELEMENT].as_str().unwrap().to_string()
    }

    pub fn click(&self, css: &str) {
        let element = self.element(css);
        self.call("POST", &format!("/element/{element}/click"), json!({}));
    }

    pub fn script(&self, script: &str) -> Value {
        self.call(
            "POST",
            "/execute/sync",
            json!({"script": script, "args": []}),
        )
    }

    pub fn text(&self, id: &str) -> String {
        let script = format!("return document.getElementById('{id}').textContent");
        self.script(&script)
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// The errors the browser's console logged since the last call (a failed load among them:
    /// "… Failed to load resource: … 404"), through chromedriver's log endpoint.
    pub fn console_errors(&self) -> Vec<String> {
        let entries = self.call("POST", "/se/log", json!({"type": "browser"}));
        entries
            .as_array()
            .expect("chromedriver's log is a list")
            .iter()
            .filter(|e| e["level"] == "SEVERE")
            .map(|e| e["message"].as_str().unwrap_or_default().to_string())
            .collect()
    }

    /// Waits until `until` holds for the page, at most 20 s.
    pub fn wait(&self, what: &str, until: impl Fn(&Browser) -> bool) {
        self.wait_for(what, 20, until)
    }

    /// Waits until `until` holds for the page, at most `seconds`.
    pub fn wait_for(&self, what: &str, seconds: u64, until: impl Fn(&Browser) -> bool) {
        let started = Instant::now();
        while !until(self) {
            assert!(
                started.elapsed() < Duration::from_secs(seconds),
                "the page never showed {what}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Draws `strokes` (lines through points of the unit square) on the pad with pointer
    /// events, as a mouse would.
    pub fn draw(&self, strokes: &[Vec<(f64, f64)>]) {
        let pad = self.element("#pad");
        // The digit's box on the 280×280 pad, as offsets from its centre: 160 wide, 200 tall.
        let at = |(u, v): (f64, f64)| {
            json!({"type": "pointerMove", "duration": 5, "origin": {ELEMENT: pad},
                   "x": (u * 160.0 - 80.0).round() as i64, "y": (v * 200.0 - 100.0).round() as i64})
        };
        let mut actions = Vec::new();
        for stroke in strokes {
            actions.push(at(stroke[0]));
            actions.push(json!({"type": "pointerDown", "button": 0}));
            actions.extend(stroke[1..].iter().map(|&p| at(p)));
            actions.push(json!({"type": "pointerUp", "button": 0}));
        }
        let pointer = json!({"type": "pointer", "id": "pen", "parameters": {"pointerType": "mouse"},
                             "actions": actions});
        self.call("POST", "/actions", json!({"actions": [pointer]}));
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let path = format!("/session/{}", self.session);
        let _ = http(self.driver, "DELETE", &path, b"");
    }
}

/// The bytes of standard base64 `text`.
pub fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        _ => 63,
    };
    let clean: Vec<u8> = text
        .bytes()
        .filter(|&c| c != b'=' && !c.is_ascii_whitespace())
        .collect();
    clean
        .chunks(4)
        .flat_map(|chunk| {
            let bits = chunk
                .iter()
                .fold(0u32, |acc, &c| acc << 6 | value(c) as u32)
                << (6 * (4 - chunk.len()));
            let bytes = [(bits >> 16) as u8, (bits >> 8) as u8, bits as u8];
            bytes[..chunk.len() - 1].to_vec()
        })
        .collect()
}
