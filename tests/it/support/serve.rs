//! A running `mlxfs serve` over a fixture and the clients the tests drive it with: raw HTTP
//! (the error cases) and the official `openai` Python client.

use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::Fx;
use super::cli::mlxfs;
use super::python::{venv_dir, venv_python};

/// A running `mlxfs serve`; killed (SIGKILL) when dropped if still running.
pub struct Served {
    pub child: Child,
    pub addr: String,
    pub ready: Value,
    stderr: PathBuf,
}

impl Served {
    pub fn start(fx: &Fx, args: &[&str]) -> Served {
        Served::try_start(fx, args).unwrap_or_else(|(code, out, err)| {
            panic!("serve did not start ({code:?}): {out}\n{err}")
        })
    }

    /// Start and wait for the ready line; `Err((exit code, stdout, stderr))` when it exits first.
    pub fn try_start(fx: &Fx, args: &[&str]) -> Result<Served, (Option<i32>, String, String)> {
        Served::try_start_with(fx, args, |_| {})
    }

    /// [`Served::start`] as the leader of a process group of its own, as a shell starts a
    /// command in a terminal: [`Served::interrupt_group`] is then the terminal's Ctrl-C.
    pub fn start_in_own_group(fx: &Fx, args: &[&str]) -> Served {
        use std::os::unix::process::CommandExt;
        Served::try_start_with(fx, args, |c| {
            c.process_group(0);
        })
        .unwrap_or_else(|(code, out, err)| panic!("serve did not start ({code:?}): {out}\n{err}"))
    }

    fn try_start_with(
        fx: &Fx,
        args: &[&str],
        setup: impl FnOnce(&mut Command),
    ) -> Result<Served, (Option<i32>, String, String)> {
        let stderr = fx
            .tmp
            .path()
            .join(format!("serve-{}.log", std::process::id()));
        let mut c = mlxfs(fx);
        c.args(["serve", "--json", "--python"]).arg(venv_dir());
        if !args.contains(&"--port") {
            c.args(["--port", "0"]);
        }
        setup(&mut c);
        let mut child = c
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let mut reader = BufReader::new(out);
        let mut seen = String::new();
        let ready: Value = loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                let code = child.wait().ok().and_then(|s| s.code());
                let err = std::fs::read_to_string(&stderr).unwrap_or_default();
                return Err((code, seen, err));
            }
            seen.push_str(&line);
            if let Ok(v) = serde_json::from_str::<Value>(&line)
                && v["status"] == "success"
            {
                break v;
            }
        };
        let addr = format!(
            "{}:{}",
            ready["data"]["host"].as_str().unwrap(),
            ready["data"]["port"]
        );
        Ok(Served {
            child,
            addr,
            ready,
            stderr,
        })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// SIGTERM and wait; the exit code.
    pub fn terminate(&mut self) -> Option<i32> {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        self.exit_code(Duration::from_secs(20), "SIGTERM")
    }

    /// SIGINT to the whole process group of a server started with
    /// [`Served::start_in_own_group`] (a terminal's Ctrl-C), and wait up to `within`; the exit
    /// code.
    pub fn interrupt_group(&mut self, within: Duration) -> Option<i32> {
        unsafe { libc::killpg(self.child.id() as i32, libc::SIGINT) };
        self.exit_code(within, "SIGINT to its group")
    }

    fn exit_code(&mut self, within: Duration, after: &str) -> Option<i32> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(st)) = self.child.try_wait() {
                return st.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "serve did not stop within {within:?} of {after}:\n{}",
            self.log()
        );
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.1 request: (status, lower-cased headers, body).
pub fn http(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    // A server may answer (401, 413) and close before it read the whole body: the write can
    // then fail, and the answer is still there to read.
    let _ = s.write_all(body);
    let mut raw = Vec::new();
    if let Err(e) = s.read_to_end(&mut raw) {
        assert!(!raw.is_empty(), "{method} {path}: no answer ({e})");
    }
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("an HTTP head");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut rest = raw[split + 4..].to_vec();
    let mut lines = head.lines();
    let status: u16 = lines
        .next()
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_lowercase(), v.trim().to_string()))
        .collect();
    if headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"))
    {
        rest = dechunk(&rest);
    }
    (status, headers, rest)
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = b.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let n = usize::from_str_radix(String::from_utf8_lossy(&b[..eol]).trim(), 16).unwrap_or(0);
        if n == 0 {
            return out;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + n]);
        b = &b[eol + 2 + n + 2..];
    }
}

pub fn get_json(addr: &str, path: &str, headers: &[(&str, &str)]) -> (u16, Value) {
    let (st, _, body) = http(addr, "GET", path, headers, b"");
    (st, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

pub fn post_json(addr: &str, path: &str, headers: &[(&str, &str)], body: &Value) -> (u16, Value) {
    let mut h = vec![("Content-Type", "application/json")];
    h.extend_from_slice(headers);
    let (st, _, b) = http(addr, "POST", path, &h, body.to_string().as_bytes());
    (st, serde_json::from_slice(&b).unwrap_or(Value::Null))
}

/// Python with the openai client, against `url`; the script's stdout as JSON (`openai`,
/// `json`, `sys` and `base64` imported, the client as `c`).
pub fn openai(url: &str, body: &str) -> Value {
    let script = format!(
        "import openai, json, sys, base64\nc = openai.OpenAI(base_url='{url}/v1', api_key='k', max_retries=0)\n{body}"
    );
    let o = Command::new(venv_python())
        .args(["-c", &script])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&o.stdout)))
}
