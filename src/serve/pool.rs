//! The loaded models: one worker process per model, at most `--max-loaded` of them, the
//! least recently used stopped first (the `lru` crate), an idle one stopped after
//! `--keep-alive`. A request for a model that is loading waits for that load instead of
//! starting a second one; requests for other models never wait for it. A worker that died is
//! started again by the next request for its model.

use lru::LruCache;
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::Config;
use super::catalog::Served;
use crate::runtime::worker::{Worker, WorkerSpec};
use crate::runtime::{Backend, PythonEnv, RunError};

/// The library a served model's worker runs: mlx-vlm for a model with the `vision`
/// capability (requests with and without images), mlx-whisper for a speech-to-text model,
/// mlx-lm for the rest.
pub fn backend_of(r: &crate::catalog::record::ModelRecord) -> Backend {
    use crate::catalog::verdict::{Capability, ModelType};
    if r.model_type == ModelType::Audio {
        Backend::MlxWhisper
    } else if r.capabilities.contains(&Capability::Vision) {
        Backend::MlxVlm
    } else {
        Backend::MlxLm
    }
}

/// A model with its worker.
pub struct Loaded {
    pub id: String,
    pub worker: Worker,
    last_used: Mutex<Instant>,
}

impl Loaded {
    fn touch(&self) {
        *self.last_used.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
    }
    fn idle_for(&self) -> Duration {
        self.last_used
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .elapsed()
    }
}

/// Why a model could not be loaded: the worker's own error, or every loaded model stayed
/// busy (`busy`: nothing could be stopped to make room within `--load-wait`).
#[derive(Debug, Clone)]
pub struct LoadError {
    pub message: String,
    pub error: Option<Box<RunError>>,
    pub busy: bool,
}

pub struct Pool {
    max_loaded: usize,
    keep_alive: Duration,
    /// How long a load waits for a loaded model to become idle when all are busy.
    load_wait: Duration,
    python: PythonEnv,
    offline: bool,
    token_file: Option<std::path::PathBuf>,
    loaded: Mutex<LruCache<String, Arc<Loaded>>>,
    /// One lock per model being loaded: a second request for it waits on it.
    loading: Mutex<HashMap<String, Arc<Mutex<()>>>>,
    /// Held while a worker starts: loads of different models take turns, so `--max-loaded`
    /// always holds (room is made and the worker counted under it).
    slot: Mutex<()>,
    /// Workers started, and started again after dying (for /metrics).
    pub starts: std::sync::atomic::AtomicU64,
    pub restarts: std::sync::atomic::AtomicU64,
}

/// Requests holding this worker (each holds an `Arc` from [`Pool::load`] until its answer
/// ends) plus its queued jobs: 0 means idle. Read under the pool's lock, where handing out an
/// `Arc` also happens, so a worker a request just got is never taken as idle.
fn in_use(l: &Arc<Loaded>) -> usize {
    (Arc::strong_count(l) - 1) + l.worker.queue_depth()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Pool {
    pub fn new(c: &Config) -> Pool {
        Pool {
            max_loaded: c.max_loaded.max(1),
            keep_alive: c.keep_alive,
            load_wait: c.load_wait,
            python: c.python.clone(),
            offline: c.offline,
            token_file: c.token_file.clone(),
            loaded: Mutex::new(LruCache::unbounded()),
            loading: Mutex::new(HashMap::new()),
            slot: Mutex::new(()),
            starts: Default::default(),
            restarts: Default::default(),
        }
    }

    /// The pool key of a served model: its folder (a hub model's snapshot, so that
    /// `org/name@rev` and `org/name` are different workers).
    fn key(s: &Served) -> String {
        s.weights.to_string_lossy().into_owned()
    }

    /// The worker of `s`, started when needed (blocking: call from a blocking task).
    pub fn load(&self, s: &Served) -> Result<Arc<Loaded>, LoadError> {
        let key = Pool::key(s);
        if let Some(l) = self.alive(&key) {
            return Ok(l);
        }
        let gate = lock(&self.loading)
            .entry(key.clone())
            .or_insert_with(|| Arc::new(Mutex::new(())))
            .clone();
        let _loading = lock(&gate);
        // Someone else may have loaded it while we waited.
        if let Some(l) = self.alive(&key) {
            return Ok(l);
        }
        let _slot = lock(&self.slot);
        let died = lock(&self.loaded).pop(&key).is_some();
        self.make_room(&s.id)?;
        let spec = WorkerSpec {
            model_path: s.weights.clone(),
            cache_dir: s.model.isolated_cache_to_write(),
            python: self.python.clone(),
            offline: self.offline,
            token_file: self.token_file.clone(),
            backend: backend_of(&s.record),
        };
        let worker = Worker::start(&spec).map_err(|e| LoadError {
            message: format!("cannot load {}: {}", s.id, e.message),
            error: Some(Box::new(e)),
            busy: false,
        })?;
        use std::sync::atomic::Ordering::Relaxed;
        self.starts.fetch_add(1, Relaxed);
        if died {
            self.restarts.fetch_add(1, Relaxed);
        }
        let l = Arc::new(Loaded {
            id: s.id.clone(),
            worker,
            last_used: Mutex::new(Instant::now()),
        });
        lock(&self.loaded).put(key, l.clone());
        Ok(l)
    }

    /// The running worker under `key`, marked as just used.
    fn alive(&self, key: &str) -> Option<Arc<Loaded>> {
        let mut loaded = lock(&self.loaded);
        let l = loaded.get(key)?.clone();
        if !l.worker.alive() {
            return None;
        }
        l.touch();
        Some(l)
    }

    /// Stop least recently used idle workers until one more fits. A busy worker is never
    /// stopped (its requests would be cut short): the load waits for one to become idle, and
    /// after `load_wait` gives up (`busy`).
    fn make_room(&self, for_id: &str) -> Result<(), LoadError> {
        let deadline = Instant::now() + self.load_wait;
        loop {
            let victim = {
                let mut loaded = lock(&self.loaded);
                // Dead workers take no room.
                let dead: Vec<String> = loaded
                    .iter()
                    .filter(|(_, l)| !l.worker.alive())
                    .map(|(k, _)| k.clone())
                    .collect();
                for k in dead {
                    loaded.pop(&k);
                }
                if loaded.len() < self.max_loaded {
                    return Ok(());
                }
                let idle = loaded
                    .iter()
                    .rev()
                    .find(|(_, l)| in_use(l) == 0)
                    .map(|(k, _)| k.clone());
                idle.and_then(|k| loaded.pop(&k))
            };
            match victim {
                Some(v) => v.worker.stop(Duration::from_secs(5)),
                None if Instant::now() >= deadline => {
                    return Err(LoadError {
                        message: format!(
                            "cannot load {for_id}: all {} loaded models (--max-loaded) stayed busy for {} s",
                            self.max_loaded,
                            self.load_wait.as_secs()
                        ),
                        error: None,
                        busy: true,
                    });
                }
                None => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    /// Stop workers idle longer than the keep-alive.
    pub fn unload_idle(&self) {
        let idle: Vec<Arc<Loaded>> = {
            let mut loaded = lock(&self.loaded);
            let ids: Vec<String> = loaded
                .iter()
                .filter(|(_, l)| in_use(l) == 0 && l.idle_for() >= self.keep_alive)
                .map(|(k, _)| k.clone())
                .collect();
            ids.iter().filter_map(|k| loaded.pop(k)).collect()
        };
        for l in idle {
            l.worker.stop(Duration::from_secs(2));
        }
    }

    pub fn loaded_ids(&self) -> BTreeSet<String> {
        lock(&self.loaded)
            .iter()
            .filter(|(_, l)| l.worker.alive())
            .map(|(_, l)| l.id.clone())
            .collect()
    }

    pub fn queue_depth(&self) -> usize {
        lock(&self.loaded)
            .iter()
            .map(|(_, l)| l.worker.queue_depth())
            .sum()
    }

    /// The running workers: (model id, pid, jobs queued or running), most recently used first.
    pub fn workers(&self) -> Vec<(String, u32, usize, String)> {
        lock(&self.loaded)
            .iter()
            .filter(|(_, l)| l.worker.alive())
            .map(|(_, l)| {
                let blas = l.worker.info()["blas"].as_str().unwrap_or("bundled");
                (
                    l.id.clone(),
                    l.worker.pid(),
                    l.worker.queue_depth(),
                    blas.to_string(),
                )
            })
            .collect()
    }

    /// Stop every worker (shutdown).
    pub fn stop_all(&self, grace: Duration) {
        let all: Vec<Arc<Loaded>> = {
            let mut loaded = lock(&self.loaded);
            let mut v = Vec::new();
            while let Some((_, l)) = loaded.pop_lru() {
                v.push(l);
            }
            v
        };
        let handles: Vec<_> = all
            .into_iter()
            .map(|l| std::thread::spawn(move || l.worker.stop(grace)))
            .collect();
        for h in handles {
            let _ = h.join();
        }
    }
}

/// Cancels the job when the answer is dropped before its end (a client that went away).
pub struct CancelGuard {
    loaded: Arc<Loaded>,
    id: u64,
    pub done: bool,
}

impl CancelGuard {
    pub fn new(loaded: Arc<Loaded>, id: u64) -> CancelGuard {
        CancelGuard {
            loaded,
            id,
            done: false,
        }
    }
}

impl Drop for CancelGuard {
    fn drop(&mut self) {
        if !self.done {
            self.loaded.worker.cancel(self.id);
        }
    }
}
