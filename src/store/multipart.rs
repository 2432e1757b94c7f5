//! An object written straight to its final key that nobody sees until it is
//! published: an S3 multipart upload lists nowhere (`ListObjects`, `aws s3
//! ls`) and cannot be read until `CompleteMultipartUpload`, which makes the
//! whole object appear at once. So a writer can stream the object, write
//! what describes it (its SHA-256 is known only at the end), and only then
//! publish it, without a second copy of the bytes.
//!
//! An upload whose writer died stays invisible but keeps its parts (and S3
//! bills them): its id is recorded by the writer (the backup records it under
//! `incoming/`) so a later sweep aborts it ([`Store::abort_upload`]);
//! [`Store::list_uploads`] finds uploads whose id was never recorded, on
//! servers that support listing them (AWS does; the embedded s3s-fs server
//! does not, and says `NotImplemented`).
//!
//! Parts go up while the next is read: at most [`PARTS_IN_FLIGHT`] parts
//! upload at once, so the producer (pg_dump) is not held while a part is in
//! flight, and memory stays at a few parts.

use aws_sdk_s3::error::ProvideErrorMetadata as _;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::CompletedPart;
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use tokio::io::AsyncRead;

use super::{PART_SIZE, Result, Store, StoreError, Transfer, read_part};

/// Parts uploading at once (each [`PART_SIZE`] in memory), besides the one being read.
pub const PARTS_IN_FLIGHT: usize = 2;

/// A part's upload task as it ends: its number and ETag, or why not.
type JoinedPart = std::result::Result<
    (
        i32,
        std::result::Result<String, aws_sdk_s3::error::SdkError<aws_sdk_s3::operation::upload_part::UploadPartError>>,
    ),
    tokio::task::JoinError,
>;

/// A multipart upload begun at `key`: invisible until [`Store::publish`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingUpload {
    pub key: String,
    pub upload_id: String,
}

/// Everything of a pending upload but its publication.
#[derive(Debug, Clone)]
pub struct StagedObject {
    pub transfer: Transfer,
    parts: Vec<CompletedPart>,
}

/// An unfinished multipart upload found by [`Store::list_uploads`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadInfo {
    pub upload: PendingUpload,
    pub initiated: Option<DateTime<Utc>>,
}

impl PendingUpload {
    /// How a writer records the upload so that a sweep can abort it.
    pub fn to_record(&self) -> Vec<u8> {
        format!("{}\n{}\n", self.key, self.upload_id).into_bytes()
    }

    /// Reads [`PendingUpload::to_record`] back.
    pub fn from_record(bytes: &[u8]) -> Option<Self> {
        let text = std::str::from_utf8(bytes).ok()?;
        let mut lines = text.lines();
        let (key, upload_id) = (lines.next()?.trim(), lines.next()?.trim());
        (!key.is_empty() && !upload_id.is_empty()).then(|| Self {
            key: key.to_owned(),
            upload_id: upload_id.to_owned(),
        })
    }
}

impl Store {
    /// Begins a multipart upload at `key`; nothing is visible there yet.
    pub async fn begin_upload(&self, key: &str) -> Result<PendingUpload> {
        Ok(PendingUpload {
            key: key.to_owned(),
            upload_id: self.begin_multipart(key).await?,
        })
    }

    /// Streams `reader` into `upload`'s parts (SHA-256 computed on the way),
    /// the next part read while earlier ones upload. The object stays
    /// invisible until [`Store::publish`].
    ///
    /// # Errors
    /// On a read or upload error; the upload is left for the caller to abort.
    pub async fn stage(&self, upload: &PendingUpload, reader: &mut (impl AsyncRead + Unpin)) -> Result<StagedObject> {
        let key = upload.key.as_str();
        let progress = crate::progress::task(format!("upload {key}"), crate::progress::Unit::Bytes, None);
        let mut hasher = Sha256::new();
        let mut total = 0u64;
        let mut parts = Vec::new();
        let mut in_flight = tokio::task::JoinSet::new();
        for number in 1.. {
            let part = read_part(reader, key, &progress).await?;
            let last = part.len() < PART_SIZE;
            // An empty read after a full part ends the stream; a first part
            // is sent even when empty, an upload needs one.
            if part.is_empty() && number > 1 {
                break;
            }
            hasher.update(&part);
            total += part.len() as u64;
            let request = self
                .client
                .upload_part()
                .bucket(&self.config.bucket)
                .key(self.full_key(key))
                .upload_id(&upload.upload_id)
                .part_number(number)
                .body(ByteStream::from(part));
            in_flight.spawn(async move {
                let sent = request.send().await;
                (number, sent.map(|output| output.e_tag().unwrap_or_default().to_owned()))
            });
            while in_flight.len() >= PARTS_IN_FLIGHT || (last && !in_flight.is_empty()) {
                parts.push(self.part_done(key, in_flight.join_next().await)?);
            }
            if last {
                break;
            }
        }
        parts.sort_by_key(|p: &CompletedPart| p.part_number());
        progress.finish();
        Ok(StagedObject {
            transfer: Transfer {
                bytes: total,
                sha256: hex::encode(hasher.finalize()),
            },
            parts,
        })
    }

    fn part_done(&self, key: &str, joined: Option<JoinedPart>) -> Result<CompletedPart> {
        let (number, sent) = joined
            .expect("called with parts in flight")
            .map_err(|e| StoreError::Io {
                context: format!("upload a part of {key}"),
                source: std::io::Error::other(e),
            })?;
        let etag = sent.map_err(self.request_error("upload part of", key))?;
        tracing::debug!(key, part = number, "uploaded part");
        Ok(CompletedPart::builder().part_number(number).e_tag(etag).build())
    }

    /// Publishes a staged upload: the whole object appears at its key at once.
    pub async fn publish(&self, upload: &PendingUpload, staged: StagedObject) -> Result<()> {
        self.complete_multipart(&upload.key, &upload.upload_id, staged.parts)
            .await
    }

    /// Aborts `upload`, removing its parts; one already gone (aborted,
    /// published) is fine.
    pub async fn abort_upload(&self, upload: &PendingUpload) -> Result<()> {
        let aborted = self
            .client
            .abort_multipart_upload()
            .bucket(&self.config.bucket)
            .key(self.full_key(&upload.key))
            .upload_id(&upload.upload_id)
            .send()
            .await;
        match aborted {
            Ok(_) => Ok(()),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_upload()) => Ok(()),
            // s3s-fs answers an unknown upload id as AccessDenied, AWS as NoSuchUpload.
            Err(e) if e.code() == Some("AccessDenied") && self.config.endpoint.is_some() => Ok(()),
            Err(e) => Err(self.request_error("abort the multipart upload of", &upload.key)(e)),
        }
    }

    /// Unfinished multipart uploads under `prefix`; `None` when the server
    /// cannot list them (`NotImplemented`, as the embedded s3s-fs says).
    pub async fn list_uploads(&self, prefix: &str) -> Result<Option<Vec<UploadInfo>>> {
        let mut uploads = Vec::new();
        let mut key_marker: Option<String> = None;
        let mut id_marker: Option<String> = None;
        loop {
            let listed = self
                .client
                .list_multipart_uploads()
                .bucket(&self.config.bucket)
                .prefix(self.full_key(prefix))
                .set_key_marker(key_marker.take())
                .set_upload_id_marker(id_marker.take())
                .send()
                .await;
            let page = match listed {
                Ok(page) => page,
                Err(e) if e.code() == Some("NotImplemented") => return Ok(None),
                Err(e) => return Err(self.request_error("list the multipart uploads under", prefix)(e)),
            };
            for upload in page.uploads() {
                let (Some(key), Some(id)) = (upload.key(), upload.upload_id()) else {
                    continue;
                };
                let Some(key) = key.strip_prefix(&self.config.prefix) else {
                    continue;
                };
                uploads.push(UploadInfo {
                    upload: PendingUpload {
                        key: key.to_owned(),
                        upload_id: id.to_owned(),
                    },
                    initiated: upload
                        .initiated()
                        .and_then(|t| DateTime::from_timestamp(t.secs(), t.subsec_nanos())),
                });
            }
            if page.is_truncated() != Some(true) {
                return Ok(Some(uploads));
            }
            key_marker = page.next_key_marker().map(str::to_owned);
            id_marker = page.next_upload_id_marker().map(str::to_owned);
            if key_marker.is_none() {
                return Ok(Some(uploads));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_upload_record_round_trips_and_junk_is_refused() {
        let upload = PendingUpload {
            key: "daily/20260109T235959.999Z/db.dump".into(),
            upload_id: "2f0c1c9e-upload".into(),
        };
        assert_eq!(PendingUpload::from_record(&upload.to_record()), Some(upload));
        assert_eq!(PendingUpload::from_record(b""), None);
        assert_eq!(PendingUpload::from_record(b"key only\n"), None);
    }
}
