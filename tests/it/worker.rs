//! The model worker of `mlxfs serve` (src/runtime/worker.rs), with real MLX inference on the
//! tiny model in the test venv (MLXFS_TEST_PYTHON).

use serde_json::json;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mlxfs::runtime::worker::{GenJob, JobEvent, JobHandle, Worker, WorkerSpec};
use mlxfs::runtime::{RunErrorKind, python};

use crate::support::python::*;

fn spec(ws: &Path) -> WorkerSpec {
    WorkerSpec {
        model_path: ws.to_path_buf(),
        cache_dir: ws.join(".hf_cache"),
        python: python::find(Some(&venv_dir())).unwrap(),
        offline: false,
        token_file: mlxfs::cli::run::python_token_file(),
        backend: Default::default(),
    }
}

/// Seeded sampling: `mlxfs run --temperature 0.7 --top-p 0.9 --repetition-penalty 1.1 --seed 7
/// --max-tokens 12` ([`SAMPLED`]) for the prompt as chat.
/// The tiny model (see [`with_tiny`]) and a worker over it.
fn tiny_worker() -> (crate::support::Fx, PathBuf, Worker) {
    let (fx, ws) = with_tiny();
    let w = Worker::start(&spec(&ws)).unwrap();
    (fx, ws, w)
}

fn chat(prompt: &str) -> GenJob {
    GenJob {
        messages: Some(vec![json!({"role": "user", "content": prompt})]),
        max_tokens: 12,
        temperature: 0.7,
        top_p: 0.9,
        repetition_penalty: Some(1.1),
        seed: Some(7),
        ..GenJob::default()
    }
}

/// `run`'s arguments for [`chat`]'s settings (its defaults are mlx-lm's: greedy, no penalty).
const SAMPLED: &[&str] = &[
    "--temperature",
    "0.7",
    "--top-p",
    "0.9",
    "--repetition-penalty",
    "1.1",
];

fn greedy(prompt: &str, max_tokens: u32) -> GenJob {
    GenJob {
        temperature: 0.0,
        max_tokens,
        ..chat(prompt)
    }
}

/// Every event of a job up to its last (a `Done` or an `Error`), within `limit`.
fn collect(h: &mut JobHandle, limit: Duration) -> (Vec<JobEvent>, JobEvent) {
    let deadline = Instant::now() + limit;
    let mut tokens = Vec::new();
    loop {
        match h.events.try_recv() {
            Ok(ev @ (JobEvent::Done { .. } | JobEvent::Error { .. })) => return (tokens, ev),
            Ok(ev) => tokens.push(ev),
            Err(tokio::sync::mpsc::error::TryRecvError::Empty) => {
                assert!(
                    Instant::now() < deadline,
                    "job {} took over {limit:?}",
                    h.id
                );
                std::thread::sleep(Duration::from_millis(2));
            }
            Err(e) => panic!("job {}: {e}", h.id),
        }
    }
}

/// The text of a job's first token (within a minute).
fn first_token(h: &mut JobHandle) -> String {
    let t0 = Instant::now();
    loop {
        match h.events.try_recv() {
            Ok(JobEvent::Token { text, .. }) => return text,
            Ok(other) => panic!("{other:?}"),
            Err(_) => {
                assert!(t0.elapsed() < Duration::from_secs(60));
                std::thread::sleep(Duration::from_millis(2));
            }
        }
    }
}

fn streamed(tokens: &[JobEvent]) -> String {
    tokens
        .iter()
        .map(|t| match t {
            JobEvent::Token { text, .. } => text.as_str(),
            _ => "",
        })
        .collect()
}

/// (finish_reason, text, completion_tokens) of a `Done`.
fn done(ev: &JobEvent) -> (String, String, u64) {
    match ev {
        JobEvent::Done {
            finish_reason,
            text,
            completion_tokens,
            ..
        } => (finish_reason.clone(), text.clone(), *completion_tokens),
        other => panic!("not done: {other:?}"),
    }
}

fn run_one(w: &Worker, job: GenJob) -> (String, String, u64) {
    let mut h = w.submit(job).unwrap();
    let (tokens, last) = collect(&mut h, Duration::from_secs(60));
    let d = done(&last);
    assert_eq!(streamed(&tokens), d.1, "the streamed text is the text");
    d
}

#[test]
fn the_worker_gives_the_text_of_run_and_serves_jobs_at_once() {
    crate::require!(Python);
    let (fx, ws) = with_tiny();
    let by_run = run_json(&fx, "tiny", SAMPLED);
    let greedy_run = run_json(&fx, "tiny", &["--temperature", "0"]);
    let w = Worker::start(&spec(&ws)).unwrap();
    assert!(w.alive());
    let info = w.info().clone();
    assert_eq!(info["scheduling"], "continuous-batching");
    assert_eq!(info["chat_template"], true);

    // The same prompt as chat, the same settings: the same text and counts as `run`.
    for (job, run) in [
        (chat("Explain FUSE"), &by_run),
        (greedy("Explain FUSE", 12), &greedy_run),
    ] {
        let mut h = w.submit(job).unwrap();
        let (tokens, last) = collect(&mut h, Duration::from_secs(60));
        match &last {
            JobEvent::Done {
                finish_reason,
                prompt_tokens,
                completion_tokens,
                text,
                tool_calls,
                ..
            } => {
                assert_eq!(text, run["text"].as_str().unwrap());
                assert_eq!(finish_reason, run["finish_reason"].as_str().unwrap());
                assert_eq!(*prompt_tokens, run["prompt_tokens"].as_u64().unwrap());
                assert_eq!(
                    *completion_tokens,
                    run["generation_tokens"].as_u64().unwrap()
                );
                assert_eq!(*tool_calls, None);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(streamed(&tokens), run["text"].as_str().unwrap());
    }

    // Jobs at once, one joining the batch while the others generate: each the text it gives
    // alone (the first: `run`'s).
    let prompts = [
        "Explain FUSE",
        "Hello, world!",
        "The quick brown fox",
        "MLX runs",
        "Models live in workspaces and in the hub cache",
    ];
    let alone: Vec<_> = prompts.iter().map(|p| run_one(&w, greedy(p, 12))).collect();
    assert_eq!(alone[0].1, greedy_run["text"].as_str().unwrap());
    let mut handles: Vec<_> = prompts[..4]
        .iter()
        .map(|p| w.submit(greedy(p, 12)).unwrap())
        .collect();
    assert_eq!(w.queue_depth(), 4);
    std::thread::sleep(Duration::from_millis(30));
    handles.push(w.submit(greedy(prompts[4], 12)).unwrap());
    for (h, expected) in handles.iter_mut().zip(&alone) {
        let (tokens, last) = collect(h, Duration::from_secs(60));
        assert_eq!(&done(&last), expected);
        assert_eq!(&streamed(&tokens), &expected.1);
    }
    assert_eq!(w.queue_depth(), 0);

    // Seeded sampling jobs submitted at once (each runs alone): each the text of `run`.
    let mut handles: Vec<_> = (0..3)
        .map(|_| w.submit(chat("Explain FUSE")).unwrap())
        .collect();
    handles.push(w.submit(greedy("Hello, world!", 12)).unwrap());
    for (i, h) in handles.iter_mut().enumerate() {
        let (_, last) = collect(h, Duration::from_secs(60));
        let expected = if i < 3 {
            by_run["text"].as_str().unwrap()
        } else {
            alone[1].1.as_str()
        };
        assert_eq!(done(&last).1, expected, "job {i}");
    }

    // A raw prompt (completions): no template.
    let raw = run_one(
        &w,
        GenJob {
            messages: None,
            prompt: Some("Explain FUSE".into()),
            ..greedy("", 12)
        },
    );
    let raw_run = run_json(&fx, "tiny", &["--temperature", "0", "--no-chat-template"]);
    assert_eq!(raw.1, raw_run["text"].as_str().unwrap());

    // Logprobs: one entry per generated token, the chosen one's and the top 2, each with its
    // own bytes; the entries' texts and offsets cover the text.
    let mut h = w
        .submit(GenJob {
            logprobs: Some(2),
            ..greedy("Explain FUSE", 5)
        })
        .unwrap();
    let (tokens, last) = collect(&mut h, Duration::from_secs(60));
    let (_, text, n) = done(&last);
    assert_eq!(streamed(&tokens), text);
    let entries: Vec<_> = tokens
        .iter()
        .flat_map(|t| match t {
            JobEvent::Token {
                logprobs: Some(e), ..
            } => e.clone(),
            _ => Vec::new(),
        })
        .collect();
    assert_eq!(entries.len() as u64, n, "{tokens:?}");
    for e in &entries {
        assert_eq!(e.top.len(), 2);
        assert!(e.logprob <= 0.0 && e.top[0].2 >= e.top[1].2);
        // Greedy: the chosen token is the likeliest.
        assert!((e.logprob - e.top[0].2).abs() < 1e-5, "{e:?}");
        assert_eq!(e.token, String::from_utf8_lossy(&e.bytes), "{e:?}");
    }
    let bytes: Vec<u8> = entries.iter().flat_map(|e| e.bytes.clone()).collect();
    assert_eq!(String::from_utf8_lossy(&bytes), text);
}

/// (text, prompt_tokens, cached_tokens) of one job run to its end.
fn cached_run(w: &Worker, job: GenJob) -> (String, u64, u64) {
    let mut h = w.submit(job).unwrap();
    let (tokens, last) = collect(&mut h, Duration::from_secs(60));
    match last {
        JobEvent::Done {
            finish_reason,
            prompt_tokens,
            cached_tokens,
            text,
            ..
        } => {
            assert_ne!(finish_reason, "cancelled");
            assert_eq!(streamed(&tokens), text, "the streamed text is the text");
            (text, prompt_tokens, cached_tokens)
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_repeated_or_extended_prompt_reuses_the_cache_and_gives_the_same_text() {
    crate::require!(Python);
    let (_fx, ws) = with_tiny();
    let first = vec![json!({"role": "user", "content": "Explain FUSE"})];
    let job = |messages: &[serde_json::Value]| GenJob {
        messages: Some(messages.to_vec()),
        ..greedy("", 12)
    };
    // Cold: a fresh worker for the first prompt.
    let cold = Worker::start(&spec(&ws)).unwrap();
    let (text1, p1, c1) = cached_run(&cold, job(&first));
    assert_eq!(c1, 0, "a fresh worker has nothing cached");
    assert!(!text1.is_empty());
    drop(cold);
    let mut second = first.clone();
    second.push(json!({"role": "assistant", "content": text1}));
    second.push(json!({"role": "user", "content": "And how does it differ from NFS?"}));
    let cold = Worker::start(&spec(&ws)).unwrap();
    let (text2, p2, c2) = cached_run(&cold, job(&second));
    assert_eq!(c2, 0);
    drop(cold);

    // Warm: the same prompt again, then one that extends it, on one worker.
    let w = Worker::start(&spec(&ws)).unwrap();
    assert_eq!(cached_run(&w, job(&first)), (text1.clone(), p1, 0));
    // The text of the cold run, and how many prompt tokens came from the cache.
    let warm = |messages: &[serde_json::Value], want: &(String, u64, u64)| {
        let (text, p, cached) = cached_run(&w, job(messages));
        assert_eq!(
            (&text, p),
            (&want.0, want.1),
            "a cache hit gives the same text"
        );
        cached
    };
    let cached = warm(&first, &(text1.clone(), p1, 0));
    assert!(
        cached > 0 && cached < p1,
        "the repeated prompt came from the cache but its last token: {cached} of {p1}"
    );
    let cached = warm(&second, &(text2, p2, 0));
    assert!(
        cached >= p1 / 2 && cached < p2,
        "the extended prompt reused the first one: {cached} of {p2}"
    );
    // Alone (seeded sampling, no repetition penalty) the cache is used too, with the text of
    // a cold worker.
    let seeded = GenJob {
        repetition_penalty: None,
        temperature: 0.7,
        ..job(&second)
    };
    let cold = Worker::start(&spec(&ws)).unwrap();
    let (text3, _, c3) = cached_run(&cold, seeded.clone());
    assert_eq!(c3, 0);
    drop(cold);
    let (seeded_warm, _, cached) = cached_run(&w, seeded);
    assert_eq!(seeded_warm, text3);
    assert!(
        cached > 0,
        "a job that runs alone starts from the cache too"
    );
}

#[test]
fn stop_sequences_end_the_text_and_are_never_streamed() {
    crate::require!(Python);
    let (_fx, _ws, w) = tiny_worker();
    let (_, full, _) = run_one(&w, greedy("Explain FUSE", 24));
    let chars: Vec<char> = full.chars().collect();
    assert!(chars.len() >= 10, "{full:?}");
    // A stop string from the middle of the text, and one that never occurs.
    let stop: String = chars[5..8].iter().collect();
    let at = full.find(&stop).unwrap();
    let mut h = w
        .submit(GenJob {
            stop: vec!["never in this text \u{1}".into(), stop.clone()],
            ..greedy("Explain FUSE", 24)
        })
        .unwrap();
    let (tokens, last) = collect(&mut h, Duration::from_secs(60));
    let (reason, text, _) = done(&last);
    assert_eq!(reason, "stop");
    assert_eq!(text, full[..at]);
    assert_eq!(streamed(&tokens), text);
    for t in &tokens {
        if let JobEvent::Token { text, .. } = t {
            assert!(!text.contains(&stop), "{t:?}");
        }
    }
}

#[test]
fn cancel_stops_a_running_and_a_queued_job_and_the_worker_goes_on() {
    crate::require!(Python);
    let (_fx, _ws, w) = tiny_worker();
    // Greedy decoding of this model never emits end-of-text: it would run for minutes.
    let mut long = w.submit(greedy("hello", 1_000_000)).unwrap();
    let mut other = w.submit(greedy("Explain FUSE", 1_000_000)).unwrap();
    let mut so_far = first_token(&mut long);
    first_token(&mut other);
    // A seeded sampling job runs alone: it waits for the batch to empty.
    let mut queued = w.submit(chat("hello")).unwrap();
    assert_eq!(w.queue_depth(), 3);
    w.cancel(queued.id);
    let (_, last) = collect(&mut queued, Duration::from_secs(2));
    assert_eq!(done(&last), ("cancelled".into(), String::new(), 0));
    let sent = Instant::now();
    w.cancel(long.id);
    let (tokens, last) = collect(&mut long, Duration::from_secs(5));
    assert!(
        sent.elapsed() < Duration::from_secs(2),
        "{:?}",
        sent.elapsed()
    );
    let (reason, text, n) = done(&last);
    assert_eq!(reason, "cancelled");
    assert!(n >= 1);
    for t in &tokens {
        if let JobEvent::Token { text, .. } = t {
            so_far.push_str(text);
        }
    }
    assert_eq!(so_far, text);
    // The other job of the batch goes on.
    first_token(&mut other);
    first_token(&mut other);
    w.cancel(other.id);
    let (_, last) = collect(&mut other, Duration::from_secs(5));
    assert_eq!(done(&last).0, "cancelled");
    // An unknown id, and a cancel after the end, are ignored; the next job runs.
    w.cancel(long.id);
    w.cancel(9999);
    let (reason, _, n) = run_one(&w, greedy("hello", 4));
    assert_eq!((reason.as_str(), n), ("length", 4));
    assert!(w.alive());
}

#[test]
fn a_killed_worker_fails_its_jobs_and_takes_no_more() {
    crate::require!(Python);
    let (_fx, _ws, w) = tiny_worker();
    let mut running = w.submit(greedy("hello", 1_000_000)).unwrap();
    first_token(&mut running);
    // Waits for the batch to empty (a seeded sampling job runs alone).
    let mut queued = w.submit(chat("hello")).unwrap();
    unsafe { libc::kill(w.pid() as i32, libc::SIGKILL) };
    for h in [&mut running, &mut queued] {
        let (_, last) = collect(h, Duration::from_secs(5));
        match last {
            JobEvent::Error { kind, message } => {
                assert_eq!(kind, "worker_died");
                assert!(message.contains("SIGKILL"), "{message}");
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(!w.alive());
    assert!(w.submit(greedy("hello", 5)).is_err());
    assert_eq!(w.queue_depth(), 0);
    assert!(gone(w.pid()));
}

/// Issue 25 §1, the worker's own guard (serve checks first; a job that was not checked must
/// still not crash the process or fail the batch): the worker measures its vocabulary (the
/// logits a position gets), acknowledges each job it reads, refuses token ids past the
/// vocabulary, an empty prompt and messages its chat template rejects as `invalid_request`
/// while another job runs on unharmed; a crash (SIGSEGV) is `worker_crashed`, not a kill.
#[test]
fn unchecked_values_are_refused_by_the_worker_and_harm_no_other_job() {
    crate::require!(Python);
    let (_fx, _ws, w) = tiny_worker();
    assert_eq!(w.vocab_size(), Some(384));
    let alone = run_one(&w, greedy("Explain FUSE", 300));
    let mut running = w.submit(greedy("Explain FUSE", 300)).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    assert_eq!(rt.block_on(&mut running.accepted), Ok(()));
    let bad = [
        GenJob {
            logit_bias: Some([(384, 1.0)].into_iter().collect()),
            ..greedy("hi", 3)
        },
        GenJob {
            logit_bias: Some([(u32::MAX, 1.0)].into_iter().collect()),
            ..greedy("hi", 3)
        },
        GenJob {
            messages: None,
            prompt: Some(String::new()),
            ..greedy("", 3)
        },
    ];
    for job in bad {
        let mut h = w.submit(job.clone()).unwrap();
        let (_, last) = collect(&mut h, Duration::from_secs(60));
        match last {
            JobEvent::Error { kind, message } => {
                assert_eq!(kind, "invalid_request", "{job:?}: {message}");
                assert!(!message.contains("Traceback"), "{message}");
                // serve's rule (`jobs::fit_to_model`), in its words.
                if let Some(id) = job.logit_bias.as_ref().and_then(|b| b.keys().next()) {
                    assert_eq!(
                        message,
                        format!(
                            "`logit_bias`: token id {id} is not in this model's vocabulary of 384 tokens (ids 0 to 383)"
                        )
                    );
                }
            }
            other => panic!("{job:?}: {other:?}"),
        }
    }
    // A top_k of the whole vocabulary is no restriction: off, as serve turns it off.
    let (_, _, n) = run_one(
        &w,
        GenJob {
            top_k: Some(384),
            temperature: 0.5,
            seed: None,
            ..greedy("hi", 3)
        },
    );
    assert!(n >= 1);
    let (tokens, last) = collect(&mut running, Duration::from_secs(60));
    assert_eq!(done(&last), alone, "the running job was harmed");
    assert_eq!(streamed(&tokens), alone.1);
    assert!(w.alive());
    // A crash is told apart from a kill: the same job could crash the next worker.
    let mut h = w.submit(greedy("hello", 1_000_000)).unwrap();
    first_token(&mut h);
    unsafe { libc::kill(w.pid() as i32, libc::SIGSEGV) };
    let (_, last) = collect(&mut h, Duration::from_secs(10));
    match last {
        JobEvent::Error { kind, .. } => assert_eq!(kind, "worker_crashed"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn no_worker_outlives_its_handle_or_its_parent() {
    crate::require!(Python);
    let (fx, ws) = with_tiny();
    // Dropping the handle ends and reaps the process.
    let w = Worker::start(&spec(&ws)).unwrap();
    let pid = w.pid();
    assert!(!gone(pid));
    drop(w);
    assert!(gone(pid), "the worker outlived its handle");

    // A parent SIGKILLed: this test binary again, as the `probe` below, started the worker
    // from a thread that has ended since. It also passed the write end of the worker's stdin
    // to a `sleep` that outlives it: stdin never closes, so only the parent-death signal can
    // end the worker.
    let pid_file = fx.tmp.path().join("worker.pid");
    let mut probe = Command::new(std::env::current_exe().unwrap())
        .args([
            "worker::worker_probe",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("MLXFS_WORKER_PROBE", &pid_file)
        .env("MLXFS_WORKER_PROBE_MODEL", &ws)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    let text = loop {
        if let Ok(t) = fs::read_to_string(&pid_file)
            && t.ends_with('\n')
        {
            break t;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "the probe did not start a worker"
        );
        assert!(probe.try_wait().unwrap().is_none(), "the probe ended");
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut pids = text.split_whitespace().map(|p| p.parse::<u32>().unwrap());
    let (worker, holder) = (pids.next().unwrap(), pids.next().unwrap());
    // The starting thread is gone; the worker is not.
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !gone(worker),
        "the worker died with the thread that started it"
    );
    unsafe { libc::kill(probe.id() as i32, libc::SIGKILL) };
    let _ = probe.wait();
    let died = wait_gone(worker, Duration::from_secs(5));
    unsafe { libc::kill(holder as i32, libc::SIGKILL) };
    assert!(died, "the worker outlived its parent");
}

/// Run by the test above in a process of its own (ignored otherwise).
#[test]
#[ignore = "a helper process of no_worker_outlives_its_handle_or_its_parent"]
fn worker_probe() {
    let (Some(pid_file), Some(model)) = (
        std::env::var_os("MLXFS_WORKER_PROBE"),
        std::env::var_os("MLXFS_WORKER_PROBE_MODEL"),
    ) else {
        return;
    };
    let model = PathBuf::from(model);
    let w = std::thread::spawn(move || Worker::start(&spec(&model)).unwrap())
        .join()
        .unwrap();
    // The write end of the worker's stdin: the only pipe the worker reads (it moved it off
    // fd 0), found among ours.
    use std::os::unix::fs::PermissionsExt;
    let commands = fs::read_dir(format!("/proc/{}/fd", w.pid()))
        .unwrap()
        .flatten()
        .filter(|e| {
            let mode = fs::symlink_metadata(e.path()).unwrap().permissions().mode();
            mode & 0o200 == 0
        })
        .filter_map(|e| fs::read_link(e.path()).ok())
        .find(|l| l.to_string_lossy().starts_with("pipe:"))
        .expect("the worker's command pipe");
    let mine = fs::read_dir("/proc/self/fd")
        .unwrap()
        .flatten()
        .find(|e| fs::read_link(e.path()).ok().as_ref() == Some(&commands))
        .expect("the write end of the worker's stdin");
    let fd: i32 = mine.file_name().to_str().unwrap().parse().unwrap();
    let dup = unsafe { libc::dup(fd) };
    // Killed by the test that started this process.
    #[allow(clippy::zombie_processes)]
    let holder = Command::new("sleep")
        .arg("120")
        .stdin(unsafe { <Stdio as std::os::fd::FromRawFd>::from_raw_fd(dup) })
        .spawn()
        .unwrap();
    fs::write(&pid_file, format!("{} {}\n", w.pid(), holder.id())).unwrap();
    std::thread::sleep(Duration::from_secs(120));
    drop(w);
}

#[test]
fn a_model_that_does_not_load_is_an_error_with_its_reason() {
    crate::require!(Python);
    let (fx, ws) = with_tiny();
    break_layers(&ws);
    let Err(e) = Worker::start(&spec(&ws)) else {
        panic!("a broken model loaded")
    };
    assert_eq!(
        e.kind,
        RunErrorKind::Reported(mlxfs::error::ErrorType::LoadFailed)
    );
    assert!(
        e.message.contains("ValueError") && e.message.contains("Missing"),
        "{}",
        e.message
    );

    // A tokenizer that needs the model's own code: refused as `run` refuses it.
    let qwen = qwenish(&fx);
    let Err(e) = Worker::start(&spec(&qwen)) else {
        panic!("a model needing its own code loaded")
    };
    assert_eq!(
        e.kind,
        RunErrorKind::Reported(mlxfs::error::ErrorType::RemoteCodeRequired)
    );
    assert!(e.message.contains("tokenization_qwen.QWenTokenizer"));
    assert!(e.hint.unwrap().contains("never runs code"));

    // Not a Python.
    let mut s = spec(&ws);
    s.python.python = fx.tmp.path().join("no-python");
    let Err(e) = Worker::start(&s) else {
        panic!("no Python, yet a worker")
    };
    assert_eq!(e.kind, RunErrorKind::PythonNotFound);
}

#[test]
fn the_worker_runs_in_the_isolated_cache() {
    crate::require!(Python);
    let (fx, ws) = with_tiny();
    let cache = fx.tmp.path().join("iso-cache");
    let w = Worker::start(&WorkerSpec {
        cache_dir: cache.clone(),
        offline: true,
        ..spec(&ws)
    })
    .unwrap();
    assert!(cache.is_dir());
    let info = w.info();
    assert_eq!(info["hf_home"], cache.to_string_lossy().as_ref());
    assert_eq!(
        info["hub_cache"],
        cache.join("hub").to_string_lossy().as_ref()
    );
    assert_eq!(info["offline"], true);
    assert_eq!(info["prefix"], venv_dir().to_string_lossy().as_ref());
    let caches = info["caches"].as_object().unwrap();
    assert!(caches.len() > 5, "{info}");
    for (k, p) in caches {
        if k != "huggingface_hub.HF_TOKEN_PATH" {
            assert!(
                p.as_str().unwrap().starts_with(cache.to_str().unwrap()),
                "{k} = {p}"
            );
        }
    }
    // The token stays the user's, as for `run`.
    if let Some(t) = mlxfs::cli::run::python_token_file() {
        assert_eq!(
            caches["huggingface_hub.HF_TOKEN_PATH"],
            t.to_string_lossy().as_ref()
        );
    }
    // The server's own environment is untouched.
    assert_ne!(
        std::env::var_os("HF_HOME").as_deref(),
        Some(cache.as_os_str())
    );
}

/// The tool-call filter, the stop-sequence hold-back and the OpenAI shape of parsed calls, in
/// worker.py itself (the tiny model has no tool-calling tokenizer).
#[test]
fn tool_calls_are_cut_from_the_text_and_parsed() {
    crate::require!(Python);
    let code = r#"
import json, sys, types
for name, source in json.loads(sys.argv[2]):
    sys.modules[name] = types.ModuleType(name)
    exec(compile(source, name + ".py", "exec"), sys.modules[name].__dict__)
m = types.ModuleType("worker")
exec(sys.argv[1], m.__dict__)
f = m._ToolFilter("<tool_call>", "</tool_call>")
pieces = ["Hi <tool", "_call>{\"name\": \"f\", ", "\"arguments\": {\"a\": 1}}</tool_", "call> bye <", "x"]
shown = [f.feed(p) for p in pieces] + [f.feed("", final=True)]
assert shown == ["Hi ", "", "", " bye ", "<x", ""], shown
assert f.calls == ['{"name": "f", "arguments": {"a": 1}}'], f.calls
cut = m._ToolFilter("<tool_call>", "</tool_call>")
assert cut.feed("a<tool_call>{\"name\": \"g\"", final=True) == "a" and cut.calls == ['{"name": "g"']
class Tok:
    tool_parser = staticmethod(lambda text, tools: json.loads(text))
calls = m._tool_calls(Tok(), f.calls + ["not json"], [{"type": "function"}])
assert len(calls) == 1 and calls[0]["type"] == "function", calls
assert calls[0]["function"] == {"name": "f", "arguments": '{"a": 1}'}, calls
assert calls[0]["id"].startswith("call_")
assert m._tool_calls(Tok(), ["not json"], None) is None
assert m.held_back("abc <st", ["<stop>", "zz"]) == 3
assert m.held_back("abc", ["<stop>"]) == 0
assert m.held_back("x<", ["<a", "<<b"]) == 1
assert m._text_content([{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "image_url"}, {"type": "text", "text": "b"}]}]) == [{"role": "user", "content": "ab"}]
print("ok")
"#;
    let shared = serde_json::to_string(&mlxfs::runtime::SHARED).unwrap();
    let o = Command::new(crate::support::python::venv_python())
        .args(["-c", code, mlxfs::runtime::worker::WORKER_PY, &shared])
        .output()
        .unwrap();
    assert!(
        o.status.success() && o.stdout == b"ok\n",
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Issue 25 review §1: jobs are prepared (chat template, encoding, the context and vocabulary
/// checks) off the scheduling thread, so a long prompt being encoded holds neither the running
/// batch nor a short job read after it. Before, the worker encoded in its scheduling loop: a
/// 7.8 MB prompt stopped every stream of the model for the 8 s of its encoding, and a 3-token
/// request sent 1.5 s after it took 7.75 s (0.06 s after).
#[test]
fn a_long_prompt_being_encoded_holds_no_other_job() {
    crate::require!(Python);
    let (_fx, _ws, w) = tiny_worker();
    // Its longest token, "<|assistant|>": the bound serve's early refusal uses.
    assert_eq!(w.max_token_chars(), Some(13));
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    // A stream that runs on (its end-of-text token, id 2, biased away).
    let mut running = w
        .submit(GenJob {
            logit_bias: Some([(2, -100.0)].into_iter().collect()),
            ..greedy("Explain FUSE", 1_000_000)
        })
        .unwrap();
    first_token(&mut running);
    let big = GenJob {
        messages: None,
        prompt: Some("The quick brown fox jumps. ".repeat(100_000)),
        context_length: Some(512),
        ..greedy("", 4)
    };
    let t0 = Instant::now();
    let mut big = w.submit(big).unwrap();
    assert_eq!(rt.block_on(&mut big.accepted), Ok(()));
    std::thread::sleep(Duration::from_millis(300));
    let mut small = w
        .submit(GenJob {
            context_length: Some(512),
            ..greedy("hi", 3)
        })
        .unwrap();
    let (mut small_done, mut big_done) = (None, None);
    let mut streamed_meanwhile = 0;
    while small_done.is_none() || big_done.is_none() {
        assert!(t0.elapsed() < Duration::from_secs(300), "no answer");
        while let Ok(ev) = running.events.try_recv() {
            assert!(matches!(ev, JobEvent::Token { .. }), "{ev:?}");
            if big_done.is_none() {
                streamed_meanwhile += 1;
            }
        }
        if let Ok(ev) = small.events.try_recv()
            && matches!(ev, JobEvent::Done { .. } | JobEvent::Error { .. })
        {
            assert!(matches!(ev, JobEvent::Done { .. }), "{ev:?}");
            small_done = Some(t0.elapsed());
        }
        if let Ok(ev) = big.events.try_recv() {
            match ev {
                JobEvent::Error { kind, message } => {
                    assert_eq!(kind, "context_length_exceeded", "{message}");
                    assert_eq!(
                        message,
                        "the prompt is 1400000 tokens; this model's context length is 512"
                    );
                    big_done = Some(t0.elapsed());
                }
                other => panic!("{other:?}"),
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let (small_done, big_done) = (small_done.unwrap(), big_done.unwrap());
    eprintln!(
        "small answered at {small_done:?}, the long prompt refused at {big_done:?}, {streamed_meanwhile} tokens streamed meanwhile"
    );
    assert!(
        small_done < big_done,
        "the short job waited for the long prompt's encoding: {small_done:?} ≥ {big_done:?}"
    );
    assert!(
        streamed_meanwhile >= 20,
        "the running stream stalled while the long prompt was encoded: {streamed_meanwhile} tokens in {big_done:?}"
    );
    w.cancel(running.id);
}

/// Issue 25 review §4: prompt and completion are held to the context, one rule for `run`
/// and `serve` (generate.py `fit_completion`): an explicit `max_tokens` that does not fit
/// beside the prompt is refused in OpenAI's words; a default one is cut to what fits, the
/// text ending with `length` there (before, 1 + 512 tokens went into a 512-token context).
#[test]
fn max_tokens_is_held_to_the_context() {
    crate::require!(Python);
    let (_fx, _ws, w) = tiny_worker();
    let job = |max_tokens: u32, explicit: bool| GenJob {
        max_tokens,
        max_tokens_explicit: explicit,
        context_length: Some(512),
        logit_bias: Some([(2, -100.0)].into_iter().collect()),
        ..greedy("Explain FUSE", 0)
    };
    let mut h = w.submit(job(4096, false)).unwrap();
    let (_, last) = collect(&mut h, Duration::from_secs(120));
    let JobEvent::Done {
        finish_reason,
        prompt_tokens,
        completion_tokens,
        ..
    } = last
    else {
        panic!("{last:?}")
    };
    assert_eq!(finish_reason, "length");
    assert!(prompt_tokens > 1, "{prompt_tokens}");
    assert_eq!(prompt_tokens + completion_tokens, 512);
    // Explicit: what fits is taken, one more is refused.
    let room = 512 - prompt_tokens as u32;
    let (reason, _, n) = run_one(&w, job(room, true));
    assert_eq!((reason.as_str(), n), ("length", u64::from(room)));
    for asked in [room + 1, 512, 1500] {
        let mut h = w.submit(job(asked, true)).unwrap();
        let (_, last) = collect(&mut h, Duration::from_secs(60));
        match last {
            JobEvent::Error { kind, message } => {
                assert_eq!(kind, "context_length_exceeded");
                assert_eq!(
                    message,
                    format!(
                        "this model's context length is 512 tokens, but you requested {} tokens \
                         ({prompt_tokens} in the prompt, {asked} for the completion): ask for at \
                         most {room} completion tokens, or shorten the prompt",
                        prompt_tokens + u64::from(asked)
                    )
                );
            }
            other => panic!("{other:?}"),
        }
    }
}
