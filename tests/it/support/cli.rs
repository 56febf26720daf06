//! Running the `mlxfs` binary in a test: one command builder (a `Command` with only the
//! fixture's environment) and [`Run`], what a test reads from it — the raw `Output`, the JSON
//! envelope, a success's `data`, a refusal's error type and message.

use serde_json::Value;
use std::io::Read;
use std::path::PathBuf;
use std::process::{Child, Command, Output};

use super::Fx;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_mlxfs");

/// The one `PATH` the binary gets (nothing of the test runner's environment leaks in).
pub const PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// `mlxfs` with the fixture's HOME, HF_HOME and workspace home and nothing else.
pub fn mlxfs(fx: &Fx) -> Command {
    with_vars(&fx.vars())
}

/// [`mlxfs`], or with `network` false inside a network namespace of its own (`unshare -n`:
/// no network at all; needs root).
pub fn mlxfs_net(fx: &Fx, network: bool) -> Command {
    let mut c = if network {
        Command::new(BIN)
    } else {
        let mut c = Command::new("unshare");
        c.args(["-n", "--", BIN]);
        c
    };
    c.env_clear().env("PATH", PATH);
    for (k, v) in fx.vars() {
        c.env(k, v);
    }
    c
}

/// `mlxfs` with `PATH` and these variables only.
pub fn with_vars(vars: &[(&str, String)]) -> Command {
    let mut c = Command::new(BIN);
    c.env_clear().env("PATH", PATH);
    for (k, v) in vars {
        c.env(k, v);
    }
    c
}

/// Runs `c` with `input` written whole on its stdin, its stdout and stderr captured.
pub fn output_with_stdin(c: &mut Command, input: &[u8]) -> Output {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = c
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

/// `mlxfs run ARGS --json` with a Python that does not exist: for refusals, which come before
/// Python starts (reaching it would be a different error).
pub fn run_before_python(fx: &Fx, args: &[&str]) -> Command {
    let mut c = mlxfs(fx);
    c.arg("run")
        .args(args)
        .args(["--json", "--python", "/nonexistent/python"]);
    c
}

/// [`mlxfs_net`] against the hub at `url` (no retries), run from the fixture's temp dir.
pub fn against_hub(fx: &Fx, url: &str, network: bool) -> Command {
    let mut c = mlxfs_net(fx, network);
    c.env("HF_ENDPOINT", url)
        .env("MLXFS_HUB_RETRIES", "0")
        .current_dir(fx.tmp.path());
    c
}

/// The test venv when the tests have one, a folder that does not exist otherwise (for
/// refusals, which come before Python starts).
pub fn venv_or_none() -> PathBuf {
    match std::env::var("MLXFS_TEST_PYTHON") {
        Ok(_) => super::python::venv_dir(),
        Err(_) => PathBuf::from("/nonexistent-venv"),
    }
}

/// stdout as text (lossy).
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// stderr as text (lossy).
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// stdout as one JSON document; panics with stdout and stderr when it is not.
#[track_caller]
pub fn envelope(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not one JSON document ({e}): {}\n{}",
            stdout(o),
            stderr(o)
        )
    })
}

/// The `data` of a success envelope `v` (of the run `o`); panics with stderr otherwise.
#[track_caller]
pub fn data(v: &Value, o: &Output) -> Value {
    assert_eq!(v["status"], "success", "{v:#}\n{}", stderr(o));
    v["data"].clone()
}

/// `o` exited with `code` (stderr says why not); its JSON envelope.
#[track_caller]
pub fn exited(o: &Output, code: i32) -> Value {
    assert_eq!(o.status.code(), Some(code), "{}", stderr(o));
    envelope(o)
}

/// `o`'s stderr says `part`.
#[track_caller]
pub fn stderr_has(o: &Output, part: &str) {
    let err = stderr(o);
    assert!(err.contains(part), "{err}");
}

/// The error envelope `v` is of type `kind` with `part` in its message.
#[track_caller]
pub fn error_is(v: &Value, kind: &str, part: &str) {
    assert_eq!(v["error"]["type"], kind, "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains(part),
        "{v}"
    );
}

/// The error envelope `v` is of type `kind`: its message.
#[track_caller]
pub fn error_message<'a>(v: &'a Value, kind: &str) -> &'a str {
    assert_eq!(v["error"]["type"], kind, "{v}");
    v["error"]["message"].as_str().unwrap()
}

/// What is left on a spawned child's piped stderr, to its end.
pub fn rest_of_stderr(child: &mut Child) -> String {
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    err
}

/// What a test reads from a command (`mlxfs`, or any other: Python, diff).
pub trait Run {
    /// Run it to the end: its output.
    fn out(&mut self) -> Output;

    /// The program and its arguments, for messages.
    fn what(&self) -> String;

    /// Run it: it must exit 0; its output.
    #[track_caller]
    fn succeeds(&mut self) -> Output {
        let o = self.out();
        assert!(
            o.status.success(),
            "{} ({}): {}\n{}",
            self.what(),
            o.status,
            stdout(&o),
            stderr(&o)
        );
        o
    }

    /// Run it: (exit code, -1 when killed by a signal; the JSON envelope on stdout).
    #[track_caller]
    fn json(&mut self) -> (i32, Value) {
        let o = self.out();
        (o.status.code().unwrap_or(-1), envelope(&o))
    }

    /// Run it: the output and its JSON envelope.
    #[track_caller]
    fn envelope(&mut self) -> (Output, Value) {
        let o = self.out();
        let v = envelope(&o);
        (o, v)
    }

    /// Run it: it must succeed; the envelope's `data`.
    #[track_caller]
    fn ok(&mut self) -> Value {
        let (o, v) = self.envelope();
        data(&v, &o)
    }

    /// Run it: it must be refused (exit 1); the envelope's error type and message.
    #[track_caller]
    fn refused(&mut self) -> (String, String) {
        let o = self.out();
        assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
        let v = envelope(&o);
        (
            v["error"]["type"].as_str().unwrap_or_default().to_string(),
            v["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        )
    }
}

impl Run for Command {
    fn out(&mut self) -> Output {
        self.output().unwrap()
    }

    fn what(&self) -> String {
        let mut w = self.get_program().to_string_lossy().into_owned();
        for a in self.get_args() {
            w.push(' ');
            w.push_str(&a.to_string_lossy());
        }
        w
    }
}
