//! The barrier between a reader of `.mlxfs/catalog.json` and the refresher: "is the tree you
//! have current?" The refresher owns the inotify descriptor (`vfs/watch.rs`); a FUSE worker
//! asks through [`Barrier::sync`] and waits, bounded, for [`SyncAnswer`]. No fuser types here.

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::sync::mpsc::{Receiver, Sender, SyncSender, channel, sync_channel};
use std::time::Duration;

/// What the refresher answers a sync request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncAnswer {
    /// Counts the refresher's rebuilds; a catalog rendered after an answer with this number
    /// stays current until the number changes (any change seen forces a rebuild first).
    pub build: u64,
    /// Why currency cannot be proven (then nothing may be answered from the mount).
    pub unprovable: Option<String>,
}

/// A request: where to send the answer.
pub type SyncRequest = SyncSender<SyncAnswer>;

/// The reader's end: requests go through a channel, and a byte on a socket wakes the
/// refresher from its `poll`.
pub struct Barrier {
    tx: Sender<SyncRequest>,
    wake: UnixStream,
}

/// The refresher's end: the requests, and the socket whose readability means "look at them".
pub struct BarrierRx {
    pub requests: Receiver<SyncRequest>,
    pub wake: UnixStream,
}

impl Barrier {
    pub fn new() -> std::io::Result<(Barrier, BarrierRx)> {
        let (tx, requests) = channel();
        let (w, r) = UnixStream::pair()?;
        w.set_nonblocking(true)?;
        r.set_nonblocking(true)?;
        Ok((Barrier { tx, wake: w }, BarrierRx { requests, wake: r }))
    }

    /// Ask the refresher and wait at most `wait` for its answer.
    pub fn sync(&self, wait: Duration) -> Result<SyncAnswer, String> {
        let (tx, rx) = sync_channel(1);
        self.tx
            .send(tx)
            .map_err(|_| "the refresher has stopped".to_string())?;
        // A full socket already holds a wake-up: nothing is lost.
        let _ = (&self.wake).write(&[1]);
        rx.recv_timeout(wait).map_err(|_| {
            format!(
                "the refresher did not answer within {} s",
                wait.as_secs_f32()
            )
        })
    }
}

impl BarrierRx {
    /// Empty the wake-up socket and take every pending request.
    pub fn take(&self) -> Vec<SyncRequest> {
        use std::io::Read;
        let mut buf = [0u8; 256];
        while matches!((&self.wake).read(&mut buf), Ok(n) if n > 0) {}
        self.requests.try_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answered_and_bounded() {
        let (b, rx) = Barrier::new().unwrap();
        let t = std::thread::spawn(move || {
            // Answer the first request, then drop everything.
            loop {
                let reqs = rx.take();
                if let Some(r) = reqs.into_iter().next() {
                    let _ = r.send(SyncAnswer {
                        build: 7,
                        unprovable: None,
                    });
                    return rx;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        assert_eq!(b.sync(Duration::from_secs(5)).unwrap().build, 7);
        let rx = t.join().unwrap();
        // Nobody answers now: the wait ends.
        let e = b.sync(Duration::from_millis(50)).unwrap_err();
        assert!(e.contains("did not answer"), "{e}");
        drop(rx);
        assert!(b.sync(Duration::from_millis(50)).is_err());
    }
}
