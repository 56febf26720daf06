//! The loaded models: one worker process per model, at most `--max-loaded` of them, the
//! least recently used stopped first (the `lru` crate), an idle one stopped after
//! `--keep-alive`. A request for a model that is loading waits for that load instead of
//! starting a second one; requests for other models never wait for it (room is made and
//! counted under a lock held for that alone, never while a worker starts). A worker that died
//! is started again by the next request for its model, and so is one whose model's files
//! changed on disk (the old one finishes its requests first).

use lru::LruCache;
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::Config;
use super::catalog::Served;
use crate::catalog::capability::{self, Modality};
use crate::catalog::loader_files::FilesId;
use crate::runtime::worker::{Worker, WorkerSpec};
use crate::runtime::{Backend, PythonEnv, RunError};

/// The library a served model's worker runs: that of its one modality
/// ([`capability::served`]).
pub fn backend_of(r: &crate::catalog::record::ModelRecord) -> Backend {
    backend_for(capability::served(r))
}

/// The library that runs a modality: mlx-lm for text, mlx-vlm for vision, mlx-whisper for
/// speech to text (`run` and `serve` alike).
pub fn backend_for(m: Modality) -> Backend {
    match m {
        Modality::Text => Backend::MlxLm,
        Modality::Vision => Backend::MlxVlm,
        Modality::Speech => Backend::MlxWhisper,
    }
}

/// A model with its worker.
pub struct Loaded {
    pub id: String,
    /// The model's files as the worker loaded them.
    files: FilesId,
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
    /// The room: workers being started or stopped, counted with the loaded and retired ones
    /// against `--max-loaded`. Held only to make room and count (never while a worker starts
    /// or stops), so a slow or stuck load of one model never holds up another model's load
    /// or requests.
    room: Mutex<Room>,
    /// Workers of a model whose files changed while they had requests: no new request goes to
    /// them; each is stopped once its requests ended (they still count against the room).
    retired: Mutex<Vec<Arc<Loaded>>>,
    /// Workers started, and started again after dying (for /metrics).
    pub starts: std::sync::atomic::AtomicU64,
    pub restarts: std::sync::atomic::AtomicU64,
}

/// Workers that take room without being in the loaded list.
#[derive(Debug, Default)]
struct Room {
    starting: usize,
    stopping: usize,
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
            room: Mutex::new(Room::default()),
            retired: Mutex::new(Vec::new()),
            starts: Default::default(),
            restarts: Default::default(),
        }
    }

    /// The pool key of a served model: its folder (a hub model's snapshot, so that
    /// `org/name@rev` and `org/name` are different workers).
    fn key(s: &Served) -> String {
        s.weights.to_string_lossy().into_owned()
    }

    /// The worker of `s`, started when needed (blocking: call from a blocking task). A
    /// running worker is used while the model's files are the ones it loaded
    /// ([`FilesId`]); after they changed (a folder replaced, weights rewritten) the next
    /// request gets a new worker, and the old one finishes its requests first.
    pub fn load(&self, s: &Served) -> Result<Arc<Loaded>, LoadError> {
        let key = Pool::key(s);
        let files = FilesId::of(&s.weights);
        if let Some(l) = self.alive(&key, &files) {
            return Ok(l);
        }
        let gate = lock(&self.loading)
            .entry(key.clone())
            .or_insert_with(|| Arc::new(Mutex::new(())))
            .clone();
        let _loading = lock(&gate);
        // Someone else may have loaded it while we waited.
        if let Some(l) = self.alive(&key, &files) {
            return Ok(l);
        }
        let (victims, died) = self.reserve(&key, &s.id)?;
        if !victims.is_empty() {
            let n = victims.len();
            for v in victims {
                v.worker.stop(Duration::from_secs(5));
            }
            lock(&self.room).stopping -= n;
        }
        let spec = WorkerSpec {
            model_path: s.weights.clone(),
            cache_dir: s.model.isolated_cache_to_write(),
            python: self.python.clone(),
            offline: self.offline,
            token_file: self.token_file.clone(),
            backend: backend_of(&s.record),
        };
        let started = Worker::start(&spec);
        let mut room = lock(&self.room);
        room.starting -= 1;
        let worker = started.map_err(|e| LoadError {
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
            files,
            worker,
            last_used: Mutex::new(Instant::now()),
        });
        // Counted in the same step as `starting` went down.
        lock(&self.loaded).put(key, l.clone());
        drop(room);
        Ok(l)
    }

    /// The running worker under `key` for the files `files`, marked as just used.
    fn alive(&self, key: &str, files: &FilesId) -> Option<Arc<Loaded>> {
        let mut loaded = lock(&self.loaded);
        let l = loaded.get(key)?.clone();
        if !l.worker.alive() || l.files != *files {
            return None;
        }
        l.touch();
        Some(l)
    }

    /// Make room for one more worker and count it as starting: the previous worker under
    /// `key` (dead, or of files that changed) leaves the list — a busy one is retired —, then
    /// least recently used idle workers are taken out until one more fits. A busy worker is
    /// never stopped (its requests would be cut short): the load waits for one to become
    /// idle, and after `load_wait` gives up (`busy`). Returns the workers to stop (counted as
    /// stopping until the caller has stopped them) and whether a dead worker was replaced.
    fn reserve(&self, key: &str, for_id: &str) -> Result<(Vec<Arc<Loaded>>, bool), LoadError> {
        let deadline = Instant::now() + self.load_wait;
        let mut victims = Vec::new();
        let mut died = false;
        loop {
            {
                let mut room = lock(&self.room);
                let mut loaded = lock(&self.loaded);
                let mut retired = lock(&self.retired);
                if let Some(old) = loaded.pop(key) {
                    if !old.worker.alive() {
                        died = true;
                    } else if in_use(&old) == 0 {
                        victims.push(old);
                    } else {
                        retired.push(old);
                    }
                }
                // Dead workers take no room.
                let dead: Vec<String> = loaded
                    .iter()
                    .filter(|(_, l)| !l.worker.alive())
                    .map(|(k, _)| k.clone())
                    .collect();
                for k in dead {
                    loaded.pop(&k);
                }
                // Retired workers whose requests ended are stopped now.
                let (idle, busy): (Vec<_>, Vec<_>) = retired
                    .drain(..)
                    .filter(|l| l.worker.alive())
                    .partition(|l| in_use(l) == 0);
                *retired = busy;
                victims.extend(idle);
                loop {
                    let taken = loaded.len() + retired.len() + room.starting + room.stopping;
                    if taken < self.max_loaded {
                        room.starting += 1;
                        room.stopping += victims.len();
                        return Ok((victims, died));
                    }
                    let idle = loaded
                        .iter()
                        .rev()
                        .find(|(_, l)| in_use(l) == 0)
                        .map(|(k, _)| k.clone());
                    match idle.and_then(|k| loaded.pop(&k)) {
                        Some(v) => victims.push(v),
                        None => break,
                    }
                }
            }
            // Nothing idle yet: what was taken out so far is stopped while we wait (counted
            // as stopping until it is).
            if !victims.is_empty() {
                let n = victims.len();
                lock(&self.room).stopping += n;
                for v in victims.drain(..) {
                    v.worker.stop(Duration::from_secs(5));
                }
                lock(&self.room).stopping -= n;
            }
            if Instant::now() >= deadline {
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
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stop workers idle longer than the keep-alive, and retired ones whose requests ended.
    pub fn unload_idle(&self) {
        let idle: Vec<Arc<Loaded>> = {
            let mut loaded = lock(&self.loaded);
            let ids: Vec<String> = loaded
                .iter()
                .filter(|(_, l)| in_use(l) == 0 && l.idle_for() >= self.keep_alive)
                .map(|(k, _)| k.clone())
                .collect();
            let mut out: Vec<Arc<Loaded>> = ids.iter().filter_map(|k| loaded.pop(k)).collect();
            let mut retired = lock(&self.retired);
            let (done, busy): (Vec<_>, Vec<_>) = retired.drain(..).partition(|l| in_use(l) == 0);
            *retired = busy;
            out.extend(done);
            out
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

    /// Every worker: the loaded ones, most recently used first, then the retired ones.
    fn all(&self) -> Vec<Arc<Loaded>> {
        let mut v: Vec<Arc<Loaded>> = lock(&self.loaded).iter().map(|(_, l)| l.clone()).collect();
        v.extend(lock(&self.retired).iter().cloned());
        v
    }

    pub fn queue_depth(&self) -> usize {
        self.all().iter().map(|l| l.worker.queue_depth()).sum()
    }

    /// The running workers: (model id, pid, jobs queued or running, BLAS), most recently used
    /// first, then those retired (their model's files changed) that still finish requests.
    pub fn workers(&self) -> Vec<(String, u32, usize, String)> {
        self.all()
            .iter()
            .filter(|l| l.worker.alive())
            .map(|l| {
                let blas = l.worker.blas();
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
            v.append(&mut lock(&self.retired));
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
