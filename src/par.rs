//! The thread pools: `par_map` (work on a few threads, one per core up to 8), `par_map_io`
//! (work that waits on the disk: a pool that grows while its threads block) and `par_map_on`
//! (a given number of threads). Each keeps the order of its items. Used by the catalog's
//! scans and records, the tree's builder, `serve` and `health`.

use std::sync::atomic::{AtomicUsize, Ordering};

/// Map `f` over `items` on a few threads, keeping order (model records are independent).
pub fn par_map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, 8);
    par_map_on(threads, items, f)
}

/// Most threads of [`par_map_io`]: a cold listing waits on the disk, one small file at a time
/// per thread, so many more requests in flight than cores pay (issue 15 §1,
/// docs/PERFORMANCE.md).
pub const IO_THREADS: usize = 64;

/// [`par_map`] for work that mostly waits on file-system metadata and small reads (scanning
/// and describing models), keeping order. It starts on two threads per core and grows
/// towards [`IO_THREADS`] while the work waits on the disk: a worker whose last chunk blocked
/// at least once per item (voluntary context switches, `getrusage(RUSAGE_THREAD)`) starts
/// one more. Warm, the work stays on few threads (64 threads cost ~8% more time on 2 cores
/// than 4); cold, the pool reaches many requests in flight within a few chunks. Where the
/// thread's switches cannot be read (not Linux), it runs on [`IO_THREADS`] threads.
pub fn par_map_io<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let max = IO_THREADS.min(items.len() / 2).max(1);
    if max == 1 || items.len() < 8 {
        return items.iter().map(&f).collect();
    }
    if voluntary_switches().is_none() {
        return par_map_on(IO_THREADS, items, f);
    }
    let pool = Pool {
        items,
        f: &f,
        // Small chunks: a blocked chunk is seen (and answered) early.
        chunk: items.len().div_ceil(max * 4),
        next: AtomicUsize::new(0),
        started: AtomicUsize::new(0),
        max,
        parts: std::sync::Mutex::new(Vec::new()),
    };
    let start = (2 * cores).clamp(1, max);
    std::thread::scope(|s| {
        for _ in 0..start {
            pool.spawn(s);
        }
    });
    let mut parts = pool.parts.into_inner().unwrap_or_else(|e| e.into_inner());
    assert_eq!(
        parts.iter().map(|p| p.1.len()).sum::<usize>(),
        items.len(),
        "catalog worker panicked"
    );
    parts.sort_by_key(|p| p.0);
    parts.into_iter().flat_map(|p| p.1).collect()
}

/// The shared state of one [`par_map_io`].
struct Pool<'a, T, R, F> {
    items: &'a [T],
    f: &'a F,
    chunk: usize,
    next: AtomicUsize,
    started: AtomicUsize,
    max: usize,
    /// Each chunk's results, by its first index.
    parts: std::sync::Mutex<Vec<(usize, Vec<R>)>>,
}

impl<'a, T: Sync, R: Send, F: Fn(&T) -> R + Sync> Pool<'a, T, R, F> {
    /// Start one more worker, unless there are [`Pool::max`] already.
    fn spawn<'s>(&'s self, s: &'s std::thread::Scope<'s, '_>) {
        if self.started.fetch_add(1, Ordering::Relaxed) >= self.max {
            return;
        }
        s.spawn(move || self.work(s));
    }

    fn work<'s>(&'s self, s: &'s std::thread::Scope<'s, '_>) {
        let mut mine = Vec::new();
        loop {
            let i = self.next.fetch_add(1, Ordering::Relaxed);
            let start = i * self.chunk;
            if start >= self.items.len() {
                break;
            }
            let end = (start + self.chunk).min(self.items.len());
            let before = voluntary_switches();
            mine.push((start, self.items[start..end].iter().map(self.f).collect()));
            if let (Some(b), Some(a)) = (before, voluntary_switches())
                && a.saturating_sub(b) >= (end - start) as u64
            {
                self.spawn(s);
            }
        }
        let mut parts = self.parts.lock().unwrap_or_else(|e| e.into_inner());
        parts.extend(mine);
    }
}

/// The calling thread's voluntary context switches so far (it blocked: on the disk, or on a
/// lock); `None` where they cannot be read.
fn voluntary_switches() -> Option<u64> {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: getrusage fills the struct we own.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        let rc = unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) };
        (rc == 0).then(|| u64::try_from(ru.ru_nvcsw).unwrap_or(0))
    }
    #[cfg(not(target_os = "linux"))]
    {
        None
    }
}

/// [`par_map`] on `threads` threads whatever the core count (at most one per two items).
pub fn par_map_on<T: Sync, R: Send>(
    threads: usize,
    items: &[T],
    f: impl Fn(&T) -> R + Sync,
) -> Vec<R> {
    let threads = threads.min(items.len() / 2).max(1);
    if threads == 1 || items.len() < 8 {
        return items.iter().map(&f).collect();
    }
    let chunk = items.len().div_ceil(threads * 4);
    let next = std::sync::atomic::AtomicUsize::new(0);
    let mut parts: Vec<(usize, Vec<R>)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let mut mine = Vec::new();
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let start = i * chunk;
                        if start >= items.len() {
                            break;
                        }
                        let end = (start + chunk).min(items.len());
                        mine.push((start, items[start..end].iter().map(&f).collect()));
                    }
                    mine
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("catalog worker panicked"))
            .collect()
    });
    parts.sort_by_key(|p| p.0);
    parts.into_iter().flat_map(|p| p.1).collect()
}
