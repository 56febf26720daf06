//! The test suite's local hub as a program, for benchmarks and manual checks:
//! `cargo run --example fakehub -- ROOT [PORT]` serves `ROOT/<org>/<name>/` as model repos and
//! prints its base URL (use it as `HF_ENDPOINT`).

// The example uses only part of what the tests use.
#[allow(dead_code)]
#[path = "../tests/it/support/fakehub.rs"]
mod fakehub;

fn main() {
    let mut args = std::env::args().skip(1);
    let Some(root) = args.next() else {
        eprintln!("usage: fakehub ROOT [PORT]");
        std::process::exit(2);
    };
    let port = args.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    let hub = fakehub::FakeHub::start_on(std::path::Path::new(&root), port);
    println!("{}", hub.url);
    use std::io::Write;
    let _ = std::io::stdout().flush();
    loop {
        std::thread::park();
    }
}
