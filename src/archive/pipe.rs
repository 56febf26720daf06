//! File data moves in fixed chunks: read into one of a few buffers, written out, then hashed
//! on a second thread while the next chunk is read. Memory is `BUFFERS × CHUNK` whatever the
//! size of the files, and on two cores hashing costs (almost) no time of its own.

use std::io::{self, Read, Write};
use std::sync::mpsc::{Receiver, Sender, SyncSender, channel, sync_channel};
use std::thread::JoinHandle;

use super::{ArchiveError, Progress, Result};
use crate::hash::stream::{FileHasher, FileSums};

/// Bytes per chunk.
pub const CHUNK: usize = 1 << 20;
/// Chunks in flight.
const BUFFERS: usize = 8;

enum Msg {
    Begin(usize, Vec<u8>),
    Data(Vec<u8>, usize),
    End,
}

/// The hashing thread and its buffers.
pub struct Hashing {
    tx: Option<SyncSender<Msg>>,
    free: Receiver<Vec<u8>>,
    handle: Option<JoinHandle<Vec<(usize, FileSums)>>>,
}

impl Hashing {
    pub fn new() -> Hashing {
        let (tx, rx) = sync_channel::<Msg>(BUFFERS + 2);
        let (free_tx, free) = channel::<Vec<u8>>();
        for _ in 0..BUFFERS {
            let _ = free_tx.send(vec![0u8; CHUNK]);
        }
        let handle = std::thread::Builder::new()
            .name("mlxfs-hash".into())
            .spawn(move || hash_loop(rx, free_tx))
            .expect("spawning the hashing thread");
        Hashing {
            tx: Some(tx),
            free,
            handle: Some(handle),
        }
    }

    fn send(&self, m: Msg) {
        if let Some(tx) = &self.tx {
            // The thread only stops when `tx` is dropped; a send cannot fail before.
            let _ = tx.send(m);
        }
    }

    /// Copy exactly `size` bytes of file number `idx` (named `name`, for its hash class)
    /// from `src` to `dst`, hashing them. `Ok(n < size)` when `src` ends early.
    #[allow(clippy::too_many_arguments)]
    pub fn copy(
        &self,
        idx: usize,
        name: &[u8],
        size: u64,
        src: &mut dyn Read,
        dst: &mut dyn Write,
        progress: &dyn Progress,
        read_err: &dyn Fn(io::Error) -> ArchiveError,
        write_err: &dyn Fn(io::Error) -> ArchiveError,
    ) -> Result<u64> {
        self.send(Msg::Begin(idx, name.to_vec()));
        let mut done = 0u64;
        while done < size {
            if progress.cancelled() {
                self.send(Msg::End);
                return Err(ArchiveError::interrupted());
            }
            let mut buf = self
                .free
                .recv()
                .expect("the hashing thread returns every buffer");
            let want = (size - done).min(CHUNK as u64) as usize;
            let mut n = 0;
            while n < want {
                match src.read(&mut buf[n..want]) {
                    Ok(0) => break,
                    Ok(k) => n += k,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        self.send(Msg::Data(buf, 0));
                        self.send(Msg::End);
                        return Err(read_err(e));
                    }
                }
            }
            if let Err(e) = dst.write_all(&buf[..n]) {
                self.send(Msg::Data(buf, 0));
                self.send(Msg::End);
                return Err(write_err(e));
            }
            self.send(Msg::Data(buf, n));
            done += n as u64;
            progress.advance(n as u64);
            if n < want {
                break;
            }
        }
        self.send(Msg::End);
        Ok(done)
    }

    /// Wait for every hash: file number → sums.
    pub fn finish(mut self) -> Vec<(usize, FileSums)> {
        drop(self.tx.take());
        let mut out = self
            .handle
            .take()
            .map(|h| h.join().expect("the hashing thread does not panic"))
            .unwrap_or_default();
        out.sort_by_key(|(i, _)| *i);
        out
    }
}

impl Drop for Hashing {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn hash_loop(rx: Receiver<Msg>, free: Sender<Vec<u8>>) -> Vec<(usize, FileSums)> {
    let mut out = Vec::new();
    let mut cur: Option<(usize, FileHasher)> = None;
    while let Ok(m) = rx.recv() {
        match m {
            Msg::Begin(i, name) => cur = Some((i, FileHasher::new(&name))),
            Msg::Data(buf, n) => {
                if let Some((_, h)) = &mut cur {
                    h.update(&buf[..n]);
                }
                let _ = free.send(buf);
            }
            Msg::End => {
                if let Some((i, h)) = cur.take() {
                    out.push((i, h.finish()));
                }
            }
        }
    }
    out
}
