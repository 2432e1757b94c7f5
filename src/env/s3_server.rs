//! An S3-compatible server in this process: s3s-fs serving a temp dir on
//! 127.0.0.1, SigV4-authenticated with per-environment random credentials.
//!
//! It runs on its own thread with its own Tokio runtime, so it keeps serving
//! whatever the caller's runtime is doing (a single-threaded test runtime
//! blocked in a synchronous call, say) and stops cleanly when dropped.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use s3s::access::{S3Access, S3AccessContext};
use s3s::auth::SimpleAuth;
use s3s::path::S3Path;
use s3s::service::S3ServiceBuilder;
use tokio::sync::oneshot;

use crate::pg::Secret;
use crate::scratch::keep_requested;
use crate::store::S3Config;

pub(super) const REGION: &str = "us-east-1";

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum S3ServerError {
    #[error("failed to {context}")]
    Io {
        context: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// s3s-fs's error type does not implement `std::error::Error`; keep its text.
    #[error("failed to set up the s3s file system store: {0}")]
    Store(String),
}

/// A running embedded S3 server.
#[derive(Debug)]
pub struct EmbeddedS3 {
    addr: SocketAddr,
    access_key: String,
    secret_key: Secret,
    root: PathBuf,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
    keep: bool,
}

impl EmbeddedS3 {
    pub fn start() -> Result<Self, S3ServerError> {
        let io = |context| move |source| S3ServerError::Io { context, source };
        // Owner-only: the objects are dumps of the ledger.
        let root = tempfile::Builder::new()
            .prefix("drillbook-s3-")
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .tempdir()
            .map_err(io("create the S3 data dir"))?
            .keep();
        // A later process reaps the dir if this one dies without cleaning up.
        if !keep_requested()
            && let Some(owner) = crate::scratch::Owner::current()
            && let Err(e) = crate::scratch::record_owner(&root, owner)
        {
            let _ = std::fs::remove_dir_all(&root);
            return Err(io("record the S3 data dir's owner")(e));
        }
        let access_key = format!("DRILL{}", token(8).to_uppercase());
        let secret_key = Secret::new(token(20));

        let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(io("bind 127.0.0.1"))?;
        listener.set_nonblocking(true).map_err(io("configure the listener"))?;
        let addr = listener.local_addr().map_err(io("read the listener address"))?;

        let service = {
            let mut builder = S3ServiceBuilder::new(
                s3s_fs::FileSystem::new(&root).map_err(|e| S3ServerError::Store(format!("{e:?}")))?,
            );
            builder.set_auth(SimpleAuth::from_single(
                access_key.clone(),
                secret_key.expose().to_owned(),
            ));
            builder.set_access(BucketsMustExist { root: root.clone() });
            builder.build()
        };
        let (shutdown, mut stopped) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("drillbook-s3".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a current-thread runtime builds");
                runtime.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(listener).expect("listener registers");
                    let http = ConnBuilder::new(TokioExecutor::new());
                    loop {
                        let socket = tokio::select! {
                            accepted = listener.accept() => match accepted {
                                Ok((socket, _)) => socket,
                                Err(e) => { tracing::warn!(error = %e, "embedded S3 accept failed"); continue }
                            },
                            _ = &mut stopped => break,
                        };
                        let connection = http
                            .serve_connection(TokioIo::new(socket), service.clone())
                            .into_owned();
                        tokio::spawn(async move {
                            let _ = connection.await;
                        });
                    }
                });
            })
            .map_err(io("start the S3 server thread"))?;

        tracing::debug!(%addr, root = %root.display(), "embedded S3 listening");
        Ok(Self {
            addr,
            access_key,
            secret_key,
            root,
            shutdown: Some(shutdown),
            thread: Some(thread),
            keep: keep_requested(),
        })
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn access_key(&self) -> &str {
        &self.access_key
    }

    pub fn secret_key(&self) -> &Secret {
        &self.secret_key
    }

    /// The directory the objects live in (`<root>/<bucket>/<key>`).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// How to reach `bucket` on this server.
    pub fn config(&self, bucket: &str) -> S3Config {
        S3Config {
            endpoint: Some(self.endpoint()),
            region: REGION.to_owned(),
            bucket: bucket.to_owned(),
            prefix: String::new(),
            credentials: Some((self.access_key.clone(), self.secret_key.clone())),
        }
    }

    /// Stops the server and removes its data (kept with `DRILL_KEEP=1`).
    pub fn cleanup(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
            if self.keep {
                eprintln!("DRILL_KEEP=1: kept embedded S3 data at {}", self.root.display());
            } else if let Err(e) = std::fs::remove_dir_all(&self.root) {
                eprintln!("drillbook: failed to remove {}: {e}", self.root.display());
            }
        }
    }
}

impl Drop for EmbeddedS3 {
    fn drop(&mut self) {
        self.stop();
    }
}

/// s3s-fs creates a missing bucket's directory on PutObject,
/// CreateMultipartUpload and CopyObject, and answers NoSuchKey for a GetObject
/// in one: a backup to a misspelt bucket would succeed and `wal-fetch` would
/// take a missing archive for its normal end. Real S3 answers NoSuchBucket to
/// every object request into a missing bucket; so does this check, which runs
/// after authentication and before s3s-fs sees the request.
struct BucketsMustExist {
    root: PathBuf,
}

#[async_trait::async_trait]
impl S3Access for BucketsMustExist {
    async fn check(&self, cx: &mut S3AccessContext<'_>) -> s3s::S3Result<()> {
        if cx.credentials().is_none() {
            return Err(s3s::s3_error!(AccessDenied, "Signature is required"));
        }
        let bucket = match cx.s3_path() {
            S3Path::Object { bucket, .. } => bucket,
            S3Path::Bucket { bucket } if cx.s3_op().name() != "CreateBucket" => bucket,
            _ => return Ok(()),
        };
        // s3s has already validated the name (no '/', no "..").
        match tokio::fs::metadata(self.root.join(&**bucket)).await {
            Ok(meta) if meta.is_dir() => Ok(()),
            _ => Err(s3s::s3_error!(NoSuchBucket, "The specified bucket does not exist")),
        }
    }
}

fn token(bytes: usize) -> String {
    use rand::RngCore;
    let mut buffer = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buffer);
    hex::encode(buffer)
}
