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
use crate::runtime::{PythonEnv, RunError};

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

/// Why a model could not be loaded (the worker's own error).
#[derive(Debug, Clone)]
pub struct LoadError {
    pub message: String,
    pub error: Option<Box<RunError>>,
}

pub struct Pool {
    max_loaded: usize,
    keep_alive: Duration,
    python: PythonEnv,
    offline: bool,
    token_file: Option<std::path::PathBuf>,
    loaded: Mutex<LruCache<String, Arc<Loaded>>>,
    /// One lock per model id being loaded: a second request waits on it.
    loading: Mutex<HashMap<String, Arc<Mutex<()>>>>,
    /// Workers started, and started again after dying (for /metrics).
    pub starts: std::sync::atomic::AtomicU64,
    pub restarts: std::sync::atomic::AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Pool {
    pub fn new(c: &Config) -> Pool {
        Pool {
            max_loaded: c.max_loaded.max(1),
            keep_alive: c.keep_alive,
            python: c.python.clone(),
            offline: c.offline,
            token_file: c.token_file.clone(),
            loaded: Mutex::new(LruCache::unbounded()),
            loading: Mutex::new(HashMap::new()),
            starts: Default::default(),
            restarts: Default::default(),
        }
    }

    /// The worker of `s`, started when needed (blocking: call from a blocking task).
    pub fn load(&self, s: &Served) -> Result<Arc<Loaded>, LoadError> {
        if let Some(l) = self.alive(&s.id) {
            return Ok(l);
        }
        let gate = lock(&self.loading)
            .entry(s.id.clone())
            .or_insert_with(|| Arc::new(Mutex::new(())))
            .clone();
        let _loading = lock(&gate);
        // Someone else may have loaded it while we waited.
        if let Some(l) = self.alive(&s.id) {
            return Ok(l);
        }
        let died = lock(&self.loaded).pop(&s.id).is_some();
        self.make_room();
        let spec = WorkerSpec {
            model_path: s.weights.clone(),
            cache_dir: s.model.isolated_cache(),
            python: self.python.clone(),
            offline: self.offline,
            token_file: self.token_file.clone(),
        };
        let worker = Worker::start(&spec).map_err(|e| LoadError {
            message: format!("cannot load {}: {}", s.id, e.message),
            error: Some(Box::new(e)),
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
        lock(&self.loaded).put(s.id.clone(), l.clone());
        Ok(l)
    }

    /// The running worker of `id`, marked as just used.
    fn alive(&self, id: &str) -> Option<Arc<Loaded>> {
        let mut loaded = lock(&self.loaded);
        let l = loaded.get(id)?.clone();
        if !l.worker.alive() {
            return None;
        }
        l.touch();
        Some(l)
    }

    /// Stop least recently used workers until one more fits: idle ones first.
    fn make_room(&self) {
        loop {
            let victim = {
                let mut loaded = lock(&self.loaded);
                if loaded.len() < self.max_loaded {
                    return;
                }
                let idle = loaded
                    .iter()
                    .rev()
                    .find(|(_, l)| l.worker.queue_depth() == 0)
                    .map(|(k, _)| k.clone());
                match idle {
                    Some(k) => loaded.pop(&k),
                    None => loaded.pop_lru().map(|(_, l)| l),
                }
            };
            if let Some(v) = victim {
                // Its jobs (if any) get their time to end before it is made to.
                std::thread::spawn(move || v.worker.stop(Duration::from_secs(30)));
            } else {
                return;
            }
        }
    }

    /// Stop workers idle longer than the keep-alive.
    pub fn unload_idle(&self) {
        let idle: Vec<Arc<Loaded>> = {
            let mut loaded = lock(&self.loaded);
            let ids: Vec<String> = loaded
                .iter()
                .filter(|(_, l)| l.worker.queue_depth() == 0 && l.idle_for() >= self.keep_alive)
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
            .map(|(k, _)| k.clone())
            .collect()
    }

    pub fn queue_depth(&self) -> usize {
        lock(&self.loaded)
            .iter()
            .map(|(_, l)| l.worker.queue_depth())
            .sum()
    }

    /// The running workers: (model id, pid, jobs queued or running), most recently used first.
    pub fn workers(&self) -> Vec<(String, u32, usize)> {
        lock(&self.loaded)
            .iter()
            .filter(|(_, l)| l.worker.alive())
            .map(|(k, l)| (k.clone(), l.worker.pid(), l.worker.queue_depth()))
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
