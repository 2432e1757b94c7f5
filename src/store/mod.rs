//! The backup catalog in S3: where things go ([`layout`]), what describes a
//! backup ([`manifest`]), and moving bytes in and out ([`Store`]).
//!
//! Works against any S3 API: AWS, the embedded s3s server, LocalStack, moto.
//! Large objects stream through a bounded buffer (one multipart part) with
//! their SHA-256 computed on the way; no object is ever held whole in memory.

pub mod layout;
pub mod manifest;
pub mod multipart;
pub mod owner;
mod ranged;

use std::path::Path;

use aws_sdk_s3::config::{Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation};
use aws_sdk_s3::error::ProvideErrorMetadata as _;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use crate::pg::Secret;

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Multipart part size: S3's minimum is 5 MiB; 16 MiB keeps the part count of
/// a 100 GiB dump under S3's 10,000-part limit.
pub const PART_SIZE: usize = 16 << 20;

/// Objects larger than this cannot be copied with one `CopyObject`.
const MAX_SINGLE_COPY: u64 = 5 << 30;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("failed to {operation} s3://{bucket}/{key}")]
    Request {
        operation: &'static str,
        bucket: String,
        key: String,
        #[source]
        source: Box<aws_sdk_s3::Error>,
    },
    #[error("s3://{bucket}/{key} does not exist")]
    NotFound { bucket: String, key: String },
    /// Distinct from [`StoreError::NotFound`]: a missing object can be the
    /// normal end of an archive, a missing bucket never is.
    #[error(
        "bucket {bucket:?} does not exist{at}: check the bucket name (--bucket / BACKUP_BUCKET), or create it first \
         (`aws s3 mb s3://{bucket}`); drillbook never creates a bucket it was given",
        at = endpoint.as_deref().map(|e| format!(" at {e}")).unwrap_or_default()
    )]
    NoSuchBucket { bucket: String, endpoint: Option<String> },
    #[error("failed to {context}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid S3 location {location:?}: {reason}")]
    BadLocation { location: String, reason: String },
}

/// Where the backups live and how to reach them.
#[derive(Clone, PartialEq, Eq)]
pub struct S3Config {
    /// A custom endpoint (embedded server, LocalStack, moto); `None` is AWS.
    pub endpoint: Option<String>,
    pub region: String,
    pub bucket: String,
    /// Key prefix inside the bucket (`""` or ending in `/`).
    pub prefix: String,
    /// Static credentials; `None` uses the default AWS credential chain.
    pub credentials: Option<(String, Secret)>,
}

impl std::fmt::Debug for S3Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Config")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("credentials", &self.credentials.as_ref().map(|(key, _)| (key, "***")))
            .finish()
    }
}

impl S3Config {
    /// Accepts `bucket`, `s3://bucket` or `s3://bucket/some/prefix` (the
    /// playbook's `BACKUP_BUCKET` form).
    pub fn parse_location(location: &str) -> Result<(String, String)> {
        let bad = |reason: &str| StoreError::BadLocation {
            location: location.to_owned(),
            reason: reason.to_owned(),
        };
        let rest = location.strip_prefix("s3://").unwrap_or(location);
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(bad("no bucket name"));
        }
        if !bucket
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        {
            return Err(bad("bucket names are lowercase letters, digits, '-' and '.'"));
        }
        let prefix = prefix.trim_matches('/');
        let prefix = if prefix.is_empty() {
            String::new()
        } else {
            format!("{prefix}/")
        };
        Ok((bucket.to_owned(), prefix))
    }

    /// `s3://bucket/prefix` for messages.
    pub fn location(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.prefix)
    }
}

/// One listed object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    /// Key relative to the store's prefix.
    pub key: String,
    pub size: u64,
    pub last_modified: Option<DateTime<Utc>>,
}

/// What an upload or download moved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transfer {
    pub bytes: u64,
    pub sha256: String,
}

/// An S3 client bound to one bucket and prefix. Keys given to its methods
/// are relative to the prefix.
#[derive(Debug, Clone)]
pub struct Store {
    client: aws_sdk_s3::Client,
    config: S3Config,
}

impl Store {
    pub async fn connect(config: S3Config) -> Self {
        let mut loader =
            aws_config::defaults(aws_config::BehaviorVersion::latest()).region(Region::new(config.region.clone()));
        if let Some((key, secret)) = &config.credentials {
            loader = loader.credentials_provider(Credentials::new(key, secret.expose(), None, None, "drillbook"));
        }
        let shared = loader.load().await;
        let mut builder = aws_sdk_s3::config::Builder::from(&shared)
            // S3-compatible servers reject or mis-handle the newer default
            // checksums; send and check them only where the API requires.
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
        if let Some(endpoint) = &config.endpoint {
            builder = builder.endpoint_url(endpoint).force_path_style(true);
        }
        Self {
            client: aws_sdk_s3::Client::from_conf(builder.build()),
            config,
        }
    }

    pub fn config(&self) -> &S3Config {
        &self.config
    }

    pub fn client(&self) -> &aws_sdk_s3::Client {
        &self.client
    }

    fn full_key(&self, key: &str) -> String {
        format!("{}{key}", self.config.prefix)
    }

    fn request_error<E>(&self, operation: &'static str, key: &str) -> impl FnOnce(E) -> StoreError + use<'_, E>
    where
        aws_sdk_s3::Error: From<E>,
    {
        let (bucket, key) = (self.config.bucket.clone(), self.full_key(key));
        let endpoint = self.config.endpoint.clone();
        move |e| {
            let source = aws_sdk_s3::Error::from(e);
            if source.code() == Some("NoSuchBucket") {
                return StoreError::NoSuchBucket { bucket, endpoint };
            }
            StoreError::Request {
                operation,
                bucket,
                key,
                source: Box::new(source),
            }
        }
    }

    fn no_such_bucket(&self) -> StoreError {
        StoreError::NoSuchBucket {
            bucket: self.config.bucket.clone(),
            endpoint: self.config.endpoint.clone(),
        }
    }

    /// Fails with [`StoreError::NoSuchBucket`] unless the bucket exists; for
    /// commands to check before any work (a dump of hours) rather than after.
    pub async fn require_bucket(&self) -> Result<()> {
        match self.client.head_bucket().bucket(&self.config.bucket).send().await {
            Ok(_) => Ok(()),
            // HEAD has no body: a missing bucket is a bare 404.
            Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found()) => Err(self.no_such_bucket()),
            Err(e) => Err(self.request_error("check bucket", "")(e)),
        }
    }

    /// Creates the bucket if it does not exist (disposable environments only).
    pub async fn ensure_bucket(&self) -> Result<()> {
        if self
            .client
            .head_bucket()
            .bucket(&self.config.bucket)
            .send()
            .await
            .is_ok()
        {
            return Ok(());
        }
        self.client
            .create_bucket()
            .bucket(&self.config.bucket)
            .send()
            .await
            .map_err(self.request_error("create bucket", ""))?;
        Ok(())
    }

    pub async fn put_bytes(&self, key: &str, bytes: Vec<u8>, content_type: &str) -> Result<()> {
        self.client
            .put_object()
            .bucket(&self.config.bucket)
            .key(self.full_key(key))
            .content_type(content_type)
            .body(ByteStream::from(bytes))
            .send()
            .await
            .map_err(self.request_error("put", key))?;
        Ok(())
    }

    pub async fn get_bytes(&self, key: &str) -> Result<Vec<u8>> {
        let object = self.get(key).await?;
        let body = object.body.collect().await.map_err(|e| StoreError::Io {
            context: format!("read s3://{}/{}", self.config.bucket, self.full_key(key)),
            source: std::io::Error::other(e),
        })?;
        Ok(body.to_vec())
    }

    async fn get(&self, key: &str) -> Result<aws_sdk_s3::operation::get_object::GetObjectOutput> {
        match self
            .client
            .get_object()
            .bucket(&self.config.bucket)
            .key(self.full_key(key))
            .send()
            .await
        {
            Ok(object) => Ok(object),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => Err(StoreError::NotFound {
                bucket: self.config.bucket.clone(),
                key: self.full_key(key),
            }),
            Err(e) => Err(self.request_error("get", key)(e)),
        }
    }

    /// Size of an object, `None` when it does not exist.
    pub async fn size_of(&self, key: &str) -> Result<Option<u64>> {
        match self
            .client
            .head_object()
            .bucket(&self.config.bucket)
            .key(self.full_key(key))
            .send()
            .await
        {
            Ok(head) => Ok(Some(head.content_length().unwrap_or(0).max(0) as u64)),
            // A bare 404 also when the bucket is missing: tell the two apart.
            Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found()) => {
                self.require_bucket().await?;
                Ok(None)
            }
            Err(e) => Err(self.request_error("head", key)(e)),
        }
    }

    /// Every object under `prefix`, all pages.
    pub async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        let mut objects = Vec::new();
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.config.bucket)
            .prefix(self.full_key(prefix))
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(self.request_error("list", prefix))?;
            for object in page.contents() {
                let Some(key) = object.key().and_then(|k| k.strip_prefix(&self.config.prefix)) else {
                    continue;
                };
                objects.push(ObjectInfo {
                    key: key.to_owned(),
                    size: object.size().unwrap_or(0).max(0) as u64,
                    last_modified: object
                        .last_modified()
                        .and_then(|t| DateTime::from_timestamp(t.secs(), t.subsec_nanos())),
                });
            }
        }
        Ok(objects)
    }

    pub async fn delete(&self, key: &str) -> Result<()> {
        self.client
            .delete_object()
            .bucket(&self.config.bucket)
            .key(self.full_key(key))
            .send()
            .await
            .map_err(self.request_error("delete", key))?;
        Ok(())
    }

    /// Server-side copy; multipart (`UploadPartCopy`) past S3's 5 GiB limit.
    pub async fn copy(&self, from: &str, to: &str, size: u64) -> Result<()> {
        let source = format!("{}/{}", self.config.bucket, self.full_key(from));
        if size <= MAX_SINGLE_COPY {
            self.client
                .copy_object()
                .bucket(&self.config.bucket)
                .key(self.full_key(to))
                .copy_source(&source)
                .send()
                .await
                .map_err(self.request_error("copy to", to))?;
            return Ok(());
        }
        let upload = self.begin_multipart(to).await?;
        let result = async {
            let mut parts = Vec::new();
            let mut offset = 0u64;
            for number in 1.. {
                if offset >= size {
                    break;
                }
                let end = (offset + MAX_SINGLE_COPY).min(size) - 1;
                let part = self
                    .client
                    .upload_part_copy()
                    .bucket(&self.config.bucket)
                    .key(self.full_key(to))
                    .upload_id(&upload)
                    .part_number(number)
                    .copy_source(&source)
                    .copy_source_range(format!("bytes={offset}-{end}"))
                    .send()
                    .await
                    .map_err(self.request_error("copy part to", to))?;
                let etag = part.copy_part_result().and_then(|r| r.e_tag()).unwrap_or_default();
                parts.push(CompletedPart::builder().part_number(number).e_tag(etag).build());
                offset = end + 1;
            }
            self.complete_multipart(to, &upload, parts).await
        }
        .await;
        if result.is_err() {
            self.abort_multipart(to, &upload).await;
        }
        result
    }

    /// Streams `reader` to `key`, computing its SHA-256 on the way. Memory use
    /// is one part; small objects go up in a single `PutObject`.
    ///
    /// # Guarantees
    /// On error no object exists at `key` (an unfinished multipart upload is
    /// aborted).
    pub async fn upload_stream(
        &self,
        key: &str,
        reader: &mut (impl AsyncRead + Unpin),
        content_type: &str,
    ) -> Result<Transfer> {
        let mut hasher = Sha256::new();
        let mut total = 0u64;
        // Counted as read from `reader` (total unknown: the data is still being produced).
        let progress = crate::progress::task(format!("upload {key}"), crate::progress::Unit::Bytes, None);
        let first = read_part(reader, key, &progress).await?;
        hasher.update(&first);
        total += first.len() as u64;
        if first.len() < PART_SIZE {
            self.put_bytes(key, first, content_type).await?;
            progress.finish();
            return Ok(Transfer {
                bytes: total,
                sha256: hex::encode(hasher.finalize()),
            });
        }

        let upload = self.begin_multipart(key).await?;
        let result = async {
            let mut parts = Vec::new();
            let mut part = first;
            for number in 1.. {
                let etag = self
                    .client
                    .upload_part()
                    .bucket(&self.config.bucket)
                    .key(self.full_key(key))
                    .upload_id(&upload)
                    .part_number(number)
                    .body(ByteStream::from(std::mem::take(&mut part)))
                    .send()
                    .await
                    .map_err(self.request_error("upload part of", key))?
                    .e_tag()
                    .unwrap_or_default()
                    .to_owned();
                parts.push(CompletedPart::builder().part_number(number).e_tag(etag).build());
                tracing::debug!(key, part = number, bytes = total, "uploaded part");
                part = read_part(reader, key, &progress).await?;
                if part.is_empty() {
                    break;
                }
                hasher.update(&part);
                total += part.len() as u64;
            }
            self.complete_multipart(key, &upload, parts).await
        }
        .await;
        if let Err(e) = result {
            self.abort_multipart(key, &upload).await;
            return Err(e);
        }
        progress.finish();
        Ok(Transfer {
            bytes: total,
            sha256: hex::encode(hasher.finalize()),
        })
    }

    /// Reads `key` through and returns its size and SHA-256, keeping
    /// nothing: checking an object without a disk to spare.
    pub async fn hash_object(&self, key: &str) -> Result<Transfer> {
        let object = self.get(key).await?;
        let size = object.content_length().and_then(|n| u64::try_from(n).ok());
        let progress = crate::progress::task(format!("hash {key}"), crate::progress::Unit::Bytes, size);
        let mut body = object.body;
        let mut hasher = Sha256::new();
        let mut total = 0u64;
        while let Some(chunk) = body.try_next().await.map_err(|e| StoreError::Io {
            context: format!("read s3://{}/{}", self.config.bucket, self.full_key(key)),
            source: std::io::Error::other(e),
        })? {
            hasher.update(&chunk);
            total += chunk.len() as u64;
            progress.advance(chunk.len() as u64);
        }
        progress.finish();
        Ok(Transfer {
            bytes: total,
            sha256: hex::encode(hasher.finalize()),
        })
    }

    /// Downloads `key` into `path`, computing its SHA-256 on the way.
    pub async fn download_to_file(&self, key: &str, path: &Path) -> Result<Transfer> {
        let object = self.get(key).await?;
        let io_error = |what: &str| {
            let context = format!("{what} {}", path.display());
            move |source| StoreError::Io { context, source }
        };
        // Owner-only: a dump holds the whole ledger.
        let mut file = tokio::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)
            .await
            .map_err(io_error("create"))?;
        let size = object.content_length().and_then(|n| u64::try_from(n).ok());
        let progress = crate::progress::task(format!("download {key}"), crate::progress::Unit::Bytes, size);
        let mut body = object.body;
        let mut hasher = Sha256::new();
        let mut total = 0u64;
        while let Some(chunk) = body.try_next().await.map_err(|e| StoreError::Io {
            context: format!("download s3://{}/{}", self.config.bucket, self.full_key(key)),
            source: std::io::Error::other(e),
        })? {
            hasher.update(&chunk);
            total += chunk.len() as u64;
            file.write_all(&chunk).await.map_err(io_error("write"))?;
            progress.advance(chunk.len() as u64);
        }
        file.flush().await.map_err(io_error("flush"))?;
        progress.finish();
        Ok(Transfer {
            bytes: total,
            sha256: hex::encode(hasher.finalize()),
        })
    }

    async fn begin_multipart(&self, key: &str) -> Result<String> {
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&self.config.bucket)
            .key(self.full_key(key))
            .send()
            .await
            .map_err(self.request_error("start multipart upload of", key))?;
        Ok(created.upload_id().unwrap_or_default().to_owned())
    }

    async fn complete_multipart(&self, key: &str, upload: &str, parts: Vec<CompletedPart>) -> Result<()> {
        self.client
            .complete_multipart_upload()
            .bucket(&self.config.bucket)
            .key(self.full_key(key))
            .upload_id(upload)
            .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(parts)).build())
            .send()
            .await
            .map_err(self.request_error("complete multipart upload of", key))?;
        Ok(())
    }

    async fn abort_multipart(&self, key: &str, upload: &str) {
        let aborted = self
            .client
            .abort_multipart_upload()
            .bucket(&self.config.bucket)
            .key(self.full_key(key))
            .upload_id(upload)
            .send()
            .await;
        if let Err(e) = aborted {
            tracing::warn!(key, error = %aws_sdk_s3::Error::from(e), "could not abort multipart upload");
        }
    }
}

/// Reads up to one part; shorter only at the end of the stream. Every read
/// advances `progress`.
async fn read_part(
    reader: &mut (impl AsyncRead + Unpin),
    key: &str,
    progress: &crate::progress::Task,
) -> Result<Vec<u8>> {
    let mut part = Vec::with_capacity(PART_SIZE);
    let mut limited = (&mut *reader).take(PART_SIZE as u64);
    loop {
        let read = limited.read_buf(&mut part).await.map_err(|source| StoreError::Io {
            context: format!("read the data for {key}"),
            source,
        })?;
        if read == 0 {
            return Ok(part);
        }
        progress.advance(read as u64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_accept_the_playbooks_form() {
        assert_eq!(
            S3Config::parse_location("s3://immoflowme-backups").unwrap(),
            ("immoflowme-backups".into(), "".into())
        );
        assert_eq!(
            S3Config::parse_location("s3://b/drills/x/").unwrap(),
            ("b".into(), "drills/x/".into())
        );
        assert_eq!(S3Config::parse_location("b").unwrap(), ("b".into(), "".into()));
        let err = S3Config::parse_location("s3://Bad_Bucket").unwrap_err();
        assert!(err.to_string().contains("lowercase"), "{err}");
    }

    #[test]
    fn credentials_never_show_in_debug_output() {
        let config = S3Config {
            endpoint: None,
            region: "eu-central-1".into(),
            bucket: "b".into(),
            prefix: String::new(),
            credentials: Some(("AKIAEXAMPLE".into(), Secret::new("wJalrXUtnFEMI"))),
        };
        let shown = format!("{config:?}");
        assert!(!shown.contains("wJalr"), "{shown}");
    }
}
