//! Load on `mnist-gpu serve`, over loopback only: trains a 784-256-10 model with the binary
//! (`--backend cpu`), starts `serve` with it, and sends `/api/predict` requests from many
//! threads, each on its own keep-alive HTTP/1.1 connection (std's `TcpStream`, nothing else):
//! 1, 16 and 200 clients; single images and 1,000-image bodies; JSON and binary
//! (`application/octet-stream`). Then the single-image latency while the 200 clients of
//! 1,000-image JSON run. Per load: requests/s, p50/p99 latency, the server's peak resident
//! memory (VmHWM, reset before each load through /proc/PID/clear_refs) and its resident memory
//! 10 s after (VmRSS). Ends by SIGTERM, timing the server's exit.
//!
//! Every load stops after `--seconds` (default 5) or its count of requests, whichever comes
//! first; the whole run takes about four minutes (most of it the 10 s waits).
//!
//! ```text
//! cargo build --release && cargo run --release --example serve_load
//! cargo run --release --example serve_load -- --bin /path/to/other/mnist-gpu --label before
//! ```
//! Options: `--bin PATH` (default target/release/mnist-gpu), `--seconds S`, `--settle S` (the
//! wait before the memory "after", default 10), `--label TEXT`, `--serve-arg ARG` (repeatable,
//! passed to `serve`), `--only SUBSTRING` (loads whose name has it), `--count N` (requests per
//! load), `--clients LIST` (default 1,16,200).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mnist_gpu::data::{EMBEDDED_TEST, PIXELS};

struct Options {
    bin: PathBuf,
    seconds: f64,
    settle: f64,
    label: String,
    serve_args: Vec<String>,
    only: Option<String>,
    /// Requests per load, where given: else 50,000 single images or 400 bodies of 1,000.
    count: Option<usize>,
    /// The numbers of clients of each load.
    clients: Vec<usize>,
}

fn options() -> Options {
    let mut o = Options {
        bin: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/release/mnist-gpu"),
        seconds: 5.0,
        settle: 10.0,
        label: String::new(),
        serve_args: Vec::new(),
        only: None,
        count: None,
        clients: vec![1, 16, 200],
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || {
            args.next()
                .unwrap_or_else(|| fail(&format!("{flag}: a value")))
        };
        match flag.as_str() {
            "--bin" => o.bin = PathBuf::from(value()),
            "--seconds" => o.seconds = value().parse().unwrap_or_else(|_| fail("--seconds")),
            "--settle" => o.settle = value().parse().unwrap_or_else(|_| fail("--settle")),
            "--label" => o.label = value(),
            "--serve-arg" => o.serve_args.push(value()),
            "--only" => o.only = Some(value()),
            "--count" => o.count = Some(value().parse().unwrap_or_else(|_| fail("--count"))),
            "--clients" => {
                let list: Result<Vec<usize>, _> =
                    value().split(',').map(|n| n.trim().parse()).collect();
                o.clients = list.unwrap_or_else(|_| fail("--clients: e.g. 1,16,200"));
            }
            _ => fail(&format!("unknown option {flag}")),
        }
    }
    o
}

fn fail(message: &str) -> ! {
    eprintln!("serve_load: {message}");
    std::process::exit(2)
}

/// A request's bytes, ready to write: the head and the body.
struct Body {
    name: &'static str,
    images: usize,
    /// Several requests (different images), used in turn.
    requests: Vec<Vec<u8>>,
}

fn request(content_type: &str, body: &[u8]) -> Vec<u8> {
    let mut bytes = format!(
        "POST /api/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\n\
         Content-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

/// An image as Python's `json.dumps` writes it (", " between numbers): 1,000 of them are the
/// 2.6 MB bodies of issue 29.
fn json_image(pixels: &[u8]) -> String {
    let numbers: Vec<String> = pixels.iter().map(|p| p.to_string()).collect();
    format!("[{}]", numbers.join(", "))
}

/// Single images and 1,000-image bodies, as JSON and binary.
fn bodies(images: &[u8]) -> Vec<Body> {
    let image = |i: usize| &images[i * PIXELS..(i + 1) * PIXELS];
    let thousand = |first: usize| &images[first * PIXELS..(first + 1000) * PIXELS];
    let json_single = (0..64)
        .map(|i| {
            request(
                "application/json",
                format!("{{\"pixels\": {}}}", json_image(image(i))).as_bytes(),
            )
        })
        .collect();
    let binary_single = (0..64)
        .map(|i| request("application/octet-stream", image(i)))
        .collect();
    let json_batch = (0..2)
        .map(|k| {
            let list: Vec<String> = (0..1000).map(|i| json_image(image(k * 1000 + i))).collect();
            request(
                "application/json",
                format!("{{\"images\": [{}]}}", list.join(", ")).as_bytes(),
            )
        })
        .collect();
    let binary_batch = (0..2)
        .map(|k| request("application/octet-stream", thousand(k * 1000)))
        .collect();
    vec![
        Body {
            name: "1 image, JSON",
            images: 1,
            requests: json_single,
        },
        Body {
            name: "1 image, binary",
            images: 1,
            requests: binary_single,
        },
        Body {
            name: "1,000 images, binary",
            images: 1000,
            requests: binary_batch,
        },
        Body {
            name: "1,000 images, JSON",
            images: 1000,
            requests: json_batch,
        },
    ]
}

/// One keep-alive connection.
struct Connection {
    address: SocketAddr,
    stream: Option<BufReader<TcpStream>>,
}

/// What came back: the status and the Retry-After seconds (if any).
type Answer = (u16, Option<u64>);

impl Connection {
    fn send(&mut self, bytes: &[u8]) -> std::io::Result<Answer> {
        if self.stream.is_none() {
            let stream = TcpStream::connect(self.address)?;
            stream.set_nodelay(true)?;
            stream.set_read_timeout(Some(Duration::from_secs(120)))?;
            self.stream = Some(BufReader::new(stream));
        }
        let reader = self.stream.as_mut().expect("connected");
        let written = reader.get_mut().write_all(bytes);
        // A server may answer (503, 413) and close before it has read the body: read on.
        let answer = read_response(reader);
        match (&answer, written) {
            (Ok((_, _, true)), _) | (Err(_), _) => self.stream = None,
            _ => {}
        }
        answer.map(|(status, retry, _)| (status, retry))
    }
}

/// The status, Retry-After, and whether the server closes the connection.
fn read_response(reader: &mut BufReader<TcpStream>) -> std::io::Result<(u16, Option<u64>, bool)> {
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let status: u16 = line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("no status in {line:?}"),
            )
        })?;
    let (mut length, mut retry, mut close) = (None, None, false);
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" {
            break;
        }
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match name.to_ascii_lowercase().as_str() {
            "content-length" => length = value.parse::<u64>().ok(),
            "retry-after" => retry = value.parse().ok(),
            "connection" => close = value.eq_ignore_ascii_case("close"),
            _ => {}
        }
    }
    let mut sink = Vec::new();
    match length {
        Some(n) => {
            reader.by_ref().take(n).read_to_end(&mut sink)?;
        }
        None => {
            reader.read_to_end(&mut sink)?;
            close = true;
        }
    }
    Ok((status, retry, close))
}

/// One load's outcome.
#[derive(Default)]
struct Tally {
    latencies_us: Vec<u64>,
    busy: usize,
    other: Vec<u16>,
    failed: usize,
}

/// `clients` threads send `body`'s requests until `count` are sent or `seconds` pass.
fn run_load(
    address: SocketAddr,
    body: &Body,
    clients: usize,
    count: usize,
    seconds: f64,
    stop: Option<Arc<AtomicBool>>,
) -> (Tally, f64) {
    let requests = Arc::new(body.requests.clone());
    let sent = Arc::new(AtomicUsize::new(0));
    let tally = Arc::new(Mutex::new(Tally::default()));
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(seconds);
    let threads: Vec<_> = (0..clients)
        .map(|client| {
            let (requests, sent, tally, stop) =
                (requests.clone(), sent.clone(), tally.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut mine = Tally::default();
                let mut connection = Connection {
                    address,
                    stream: None,
                };
                let mut k = client;
                loop {
                    let stopped = stop.as_ref().is_some_and(|s| s.load(Ordering::Relaxed));
                    if stopped
                        || Instant::now() >= deadline
                        || sent.fetch_add(1, Ordering::Relaxed) >= count
                    {
                        break;
                    }
                    let t = Instant::now();
                    match connection.send(&requests[k % requests.len()]) {
                        Ok((200, _)) => mine.latencies_us.push(t.elapsed().as_micros() as u64),
                        Ok((503, retry)) => {
                            mine.busy += 1;
                            std::thread::sleep(Duration::from_secs(retry.unwrap_or(1).min(2)));
                        }
                        Ok((status, _)) => mine.other.push(status),
                        Err(_) => mine.failed += 1,
                    }
                    k += 1;
                }
                let mut all = tally.lock().unwrap();
                all.latencies_us.extend(mine.latencies_us);
                all.busy += mine.busy;
                all.other.extend(mine.other);
                all.failed += mine.failed;
            })
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
    let elapsed = started.elapsed().as_secs_f64();
    let tally = std::mem::take(&mut *tally.lock().unwrap());
    (tally, elapsed)
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let at = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[at] as f64 / 1000.0
}

/// The server process's VmRSS and VmHWM, in MB.
fn memory(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map_or(f64::NAN, |kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Resets VmHWM to the current RSS (Linux ≥ 4.0); false where it could not.
fn reset_peak(pid: u32) -> bool {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok()
}

struct Server {
    child: Child,
    address: SocketAddr,
}

fn start_server(o: &Options, model: &std::path::Path) -> Server {
    let mut child = Command::new(&o.bin)
        .args(["serve", "--backend", "cpu", "--port", "0", "--model"])
        .arg(model)
        .args(&o.serve_args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| fail(&format!("{}: {e}", o.bin.display())));
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let address = loop {
        let line = lines
            .next()
            .and_then(|l| l.ok())
            .unwrap_or_else(|| fail("serve printed no address"));
        if let Some(rest) = line.strip_prefix("serving http://") {
            break rest
                .trim_end_matches('/')
                .parse()
                .unwrap_or_else(|_| fail(&line));
        }
    };
    std::thread::spawn(move || for _ in lines {});
    Server { child, address }
}

fn train_model(o: &Options, dir: &std::path::Path) -> PathBuf {
    let model = dir.join("784-256-10.safetensors");
    let out = Command::new(&o.bin)
        .current_dir(dir)
        .args([
            "--backend",
            "cpu",
            "--hidden",
            "256",
            "--batch-size",
            "100",
            "--epochs",
            "2",
        ])
        .args(["--save", "784-256-10.safetensors"])
        .output()
        .unwrap_or_else(|e| fail(&format!("{}: {e}", o.bin.display())));
    if !out.status.success() {
        fail(&format!(
            "training: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    model
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split(' ').take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
            })
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    format!("{cores} cores, {cpu}")
}

fn row(name: &str, clients: usize, tally: &mut Tally, elapsed: f64, peak: f64, after: f64) {
    tally.latencies_us.sort_unstable();
    let ok = tally.latencies_us.len();
    let mut other = tally.other.clone();
    other.sort_unstable();
    other.dedup();
    let others = if tally.other.is_empty() {
        String::new()
    } else {
        format!(" ({} × {other:?})", tally.other.len())
    };
    println!(
        "| {name} | {clients} | {ok} | {} | {}{others} | {:.0} | {:.1} | {:.1} | {peak:.0} | {after:.0} |",
        tally.busy,
        tally.failed + tally.other.len(),
        ok as f64 / elapsed,
        percentile(&tally.latencies_us, 0.5),
        percentile(&tally.latencies_us, 0.99),
    );
}

fn main() {
    let o = options();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let started = Instant::now();
    let load_before = load_average();
    let model = train_model(&o, dir.path());
    let test = EMBEDDED_TEST.load().expect("the embedded test digits");
    let bodies = bodies(&test.images);
    let mut server = start_server(&o, &model);
    let pid = server.child.id();
    std::thread::sleep(Duration::from_secs(1));
    let (start_rss, _) = memory(pid);
    println!("## serve_load {}", o.label);
    println!();
    println!(
        "{}; binary {}; {}",
        machine(),
        o.bin.display(),
        o.serve_args.join(" ")
    );
    println!("784-256-10 ReLU, serve --backend cpu; load average before: {load_before}");
    let sizes: Vec<String> = bodies
        .iter()
        .map(|b| format!("{}: {} bytes", b.name, b.requests[0].len()))
        .collect();
    println!("requests (head and body): {}", sizes.join("; "));
    println!("resident memory at the start: {start_rss:.0} MB");
    println!();
    println!("| load | clients | answered | 503 | other | requests/s | p50 ms | p99 ms | peak MB | 10 s after MB |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    let can_reset = reset_peak(pid);
    for body in &bodies {
        for &clients in &o.clients {
            let name = body.name.to_string();
            if o.only
                .as_ref()
                .is_some_and(|only| !format!("{name} {clients}").contains(only.as_str()))
            {
                continue;
            }
            let count = o
                .count
                .unwrap_or(if body.images == 1 { 50_000 } else { 400 });
            reset_peak(pid);
            let (mut tally, elapsed) =
                run_load(server.address, body, clients, count, o.seconds, None);
            let (_, peak) = memory(pid);
            std::thread::sleep(Duration::from_secs_f64(o.settle));
            let (after, _) = memory(pid);
            row(&name, clients, &mut tally, elapsed, peak, after);
        }
    }
    mixed(&o, &server, &bodies, pid);
    let (end_rss, _) = memory(pid);
    println!();
    println!("resident memory at the end: {end_rss:.0} MB (start {start_rss:.0} MB); peak reset per load: {can_reset}");
    stop(&mut server);
    println!(
        "load average after: {}; the whole run took {:.0} s",
        load_average(),
        started.elapsed().as_secs_f64()
    );
}

/// Single images, one client, while 200 clients send 1,000-image JSON bodies.
fn mixed(o: &Options, server: &Server, bodies: &[Body], pid: u32) {
    if o.only
        .as_ref()
        .is_some_and(|only| !"mixed".contains(only.as_str()))
    {
        return;
    }
    reset_peak(pid);
    let stop = Arc::new(AtomicBool::new(false));
    let address = server.address;
    let single = Arc::new(Body {
        name: "",
        images: 1,
        requests: bodies[0].requests.clone(),
    });
    let (flag, seconds) = (stop.clone(), o.seconds);
    let probe = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(500));
        run_load(address, &single, 1, usize::MAX, seconds, Some(flag))
    });
    let (mut bulk, bulk_elapsed) = run_load(address, &bodies[3], 200, 400, o.seconds + 0.5, None);
    stop.store(true, Ordering::Relaxed);
    let (mut singles, elapsed) = probe.join().expect("the probe");
    let (_, peak) = memory(pid);
    std::thread::sleep(Duration::from_secs_f64(o.settle));
    let (after, _) = memory(pid);
    row(
        "mixed: 1,000 images, JSON",
        200,
        &mut bulk,
        bulk_elapsed,
        peak,
        after,
    );
    row(
        "mixed: 1 image, JSON, meanwhile",
        1,
        &mut singles,
        elapsed,
        peak,
        after,
    );
}

/// SIGTERM, and how long the server took to exit.
fn stop(server: &mut Server) {
    let t = Instant::now();
    let _ = Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status();
    loop {
        if let Ok(Some(status)) = server.child.try_wait() {
            println!(
                "SIGTERM: exited in {:.2} s ({status})",
                t.elapsed().as_secs_f64()
            );
            return;
        }
        if t.elapsed() > Duration::from_secs(10) {
            let _ = server.child.kill();
            println!("SIGTERM: still running after 10 s; killed");
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
