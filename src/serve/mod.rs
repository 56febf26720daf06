//! `mlxfs serve`: an OpenAI-compatible HTTP server over the whole catalog, one isolated
//! Python worker per loaded model. An adapter: the catalog decides what is served
//! ([`catalog`]), the runtime runs the workers ([`crate::runtime::worker`]), this module
//! speaks HTTP ([`api`], [`generate`]) and keeps the workers ([`pool`]).

pub mod api;
pub mod audio;
pub mod catalog;
pub mod error;
pub mod generate;
pub mod images;
pub mod jobs;
pub mod metrics;
pub mod pool;
pub mod remote;
pub mod request;
pub mod routes;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::catalog::Locations;
use crate::runtime::PythonEnv;

/// What `serve` was started with.
#[derive(Debug, Clone)]
pub struct Config {
    pub host: String,
    pub port: u16,
    /// Most workers (loaded models) at once; the least recently used is stopped first.
    pub max_loaded: usize,
    /// A worker idle this long is stopped.
    pub keep_alive: Duration,
    /// How long a request for a model that is not loaded waits for a loaded one to become
    /// idle (when `max_loaded` are loaded and busy) before it is answered 503.
    pub load_wait: Duration,
    /// Upper bound of `max_tokens` for every request.
    pub max_tokens: u32,
    /// Most requests queued or running per model; more get 503 (retryable).
    pub max_queue: usize,
    /// How long a request body may take to arrive (a client that announces a body and never
    /// sends it is answered 400, not waited for).
    pub body_timeout: Duration,
    /// How long a client may take to send a request's headers before it is disconnected
    /// (hyper's `header_read_timeout`; slow-header clients cannot hold connections open).
    pub header_timeout: Duration,
    pub api_key: Option<String>,
    pub cors_origins: Vec<String>,
    pub python: PythonEnv,
    /// Forbid runtime downloads in the workers (`HF_HUB_OFFLINE=1`).
    pub offline: bool,
    /// The user's token file, passed to the workers as `HF_TOKEN_PATH` (their `HF_HOME` is
    /// isolated), as `run` does.
    pub token_file: Option<std::path::PathBuf>,
    /// Whether and from where http(s) `image_url`s are fetched (by default they are refused:
    /// the server never fetches on a client's behalf).
    pub remote_images: RemoteImages,
}

/// Which http(s) `image_url`s the server fetches on a client's behalf (`--allow-remote-images`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemoteImages {
    /// None: such a part is refused (HTTP 400).
    Off,
    /// Only from public addresses ([`remote::is_public`]), connecting directly (no proxy):
    /// never this machine, its networks or a cloud metadata service (server-side request
    /// forgery), and every redirect is held to the same rule.
    Public,
    /// From any address, through the proxy the environment names, if any.
    Any,
}

/// The running server's state, shared by every request.
pub struct Server {
    pub config: Config,
    pub catalog: catalog::Catalog,
    pub pool: pool::Pool,
    pub metrics: metrics::Metrics,
    stopping: AtomicBool,
}

impl Server {
    pub fn new(config: Config, loc: Locations) -> Server {
        Server {
            pool: pool::Pool::new(&config),
            catalog: catalog::Catalog::new(loc),
            metrics: metrics::Metrics::default(),
            config,
            stopping: AtomicBool::new(false),
        }
    }

    pub fn stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// Ids of the models with a running worker.
    pub fn loaded_ids(&self) -> std::collections::BTreeSet<String> {
        self.pool.loaded_ids()
    }

    /// Jobs queued or running, over every worker.
    pub fn queue_depth(&self) -> usize {
        self.pool.queue_depth()
    }
}

/// Why the server did not start (or stopped with an error).
#[derive(Debug, Clone)]
pub struct StartError {
    pub kind: crate::error::ErrorType,
    pub message: String,
    pub hint: Option<String>,
}

impl From<std::io::Error> for StartError {
    fn from(e: std::io::Error) -> StartError {
        let hint = (e.kind() == std::io::ErrorKind::AddrInUse).then(|| {
            "another server uses that port: pick one with --port (0: any free one)".into()
        });
        StartError {
            kind: crate::error::ErrorType::ServerError,
            message: e.to_string(),
            hint,
        }
    }
}

/// Bind, call `ready` with the address (after `preload` has loaded its models), serve until
/// SIGINT/SIGTERM, then stop accepting, let streams end (at most `drain`), stop every worker.
pub fn run(
    server: Server,
    preload: Vec<catalog::Served>,
    drain: Duration,
    ready: impl FnOnce(SocketAddr, &Server),
) -> Result<(), StartError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .worker_threads(4)
        .build()?;
    let srv = Arc::new(server);
    rt.block_on(async {
        let addr: SocketAddr = format!("{}:{}", srv.config.host, srv.config.port)
            .parse()
            .or_else(|_| {
                use std::net::ToSocketAddrs;
                (srv.config.host.as_str(), srv.config.port)
                    .to_socket_addrs()
                    .ok()
                    .and_then(|mut a| a.next())
                    .ok_or_else(|| {
                        std::io::Error::new(
                            std::io::ErrorKind::InvalidInput,
                            format!("cannot resolve host {}", srv.config.host),
                        )
                    })
            })?;
        // Bound first (a port in use is said before a long load), answering only once the
        // preloads are in and the router is built.
        let listener = tokio::net::TcpListener::bind(addr).await?;
        for s in preload {
            let p = srv.clone();
            tokio::task::spawn_blocking(move || p.pool.load(&s))
                .await
                .map_err(std::io::Error::other)?
                .map_err(|e| StartError {
                    kind: e
                        .error
                        .as_ref()
                        .map_or(crate::error::ErrorType::LoadFailed, |r| r.kind.error_type()),
                    hint: e.error.as_ref().and_then(|r| r.hint.clone()),
                    message: e.message,
                })?;
        }
        let app = api::router(srv.clone());
        let bound = listener.local_addr()?;
        ready(bound, &srv);
        let reaper = {
            let p = srv.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    let p2 = p.clone();
                    let _ = tokio::task::spawn_blocking(move || p2.pool.unload_idle()).await;
                }
            })
        };
        let stop_srv = srv.clone();
        let shutdown = async move {
            wait_for_signal().await;
            stop_srv.stopping.store(true, Ordering::SeqCst);
        };
        let serving = accept_loop(listener, app, srv.config.header_timeout, shutdown);
        // After the signal, in-flight streams get `drain` to finish.
        let srv2 = srv.clone();
        tokio::select! {
            r = serving => r?,
            _ = async {
                while !srv2.stopping() {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                tokio::time::sleep(drain).await;
            } => {}
        }
        reaper.abort();
        Ok::<(), StartError>(())
    })?;
    let p = srv.clone();
    p.pool.stop_all(Duration::from_secs(2));
    rt.shutdown_timeout(Duration::from_secs(1));
    Ok(())
}

/// Serve HTTP/1.1 connections until `shutdown` resolves, then wait for the open ones to finish
/// (the caller bounds that wait). Unlike `axum::serve`, hyper gets a timer, so its header-read
/// timeout applies: a client that sends headers slowly (or opens a connection and says
/// nothing) is disconnected after `header_timeout`.
async fn accept_loop(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    header_timeout: Duration,
    shutdown: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(s) => s,
                // Out of descriptors or a connection reset before accept: not the listener's
                // end; a short pause keeps an EMFILE from spinning.
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(header_timeout)
            .serve_connection(TokioIo::new(stream), service);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            let _ = conn.await;
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).ok();
    let mut int = signal(SignalKind::interrupt()).ok();
    tokio::select! {
        _ = async { match term.as_mut() { Some(s) => { s.recv().await; } None => std::future::pending().await } } => {}
        _ = async { match int.as_mut() { Some(s) => { s.recv().await; } None => std::future::pending().await } } => {}
    }
}
