//! One large object read as several ranged GETs in flight, handed on in
//! order: a single GET is one TCP stream whose latency and per-request work
//! leave the link idle between reads; a few ranges in flight keep it busy.
//! Memory is bounded by `in_flight` ranges.

use bytes::Bytes;
use futures::{Stream, StreamExt, stream};

use super::{Result, Store, StoreError};

impl Store {
    /// The bytes of `key`, which is `size` bytes long, as consecutive ranges
    /// of `range_size` bytes (the last shorter), `in_flight` of them fetched
    /// at a time and yielded in order.
    ///
    /// # Errors
    /// A range that fails or comes back shorter or longer than asked (the
    /// object is not `size` bytes) ends the stream with that error.
    pub fn download_ranges<'a>(
        &'a self,
        key: &'a str,
        size: u64,
        range_size: u64,
        in_flight: usize,
    ) -> impl Stream<Item = Result<Bytes>> + 'a {
        let range_size = range_size.max(1);
        let ranges = (0..size.div_ceil(range_size)).map(move |i| {
            let first = i * range_size;
            (first, (first + range_size).min(size) - 1)
        });
        stream::iter(ranges)
            .map(move |(first, last)| self.get_range(key, first, last))
            .buffered(in_flight.max(1))
    }

    /// Bytes `first..=last` of `key`.
    async fn get_range(&self, key: &str, first: u64, last: u64) -> Result<Bytes> {
        let object = match self
            .client
            .get_object()
            .bucket(&self.config.bucket)
            .key(self.full_key(key))
            .range(format!("bytes={first}-{last}"))
            .send()
            .await
        {
            Ok(object) => object,
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => {
                return Err(StoreError::NotFound {
                    bucket: self.config.bucket.clone(),
                    key: self.full_key(key),
                });
            }
            Err(e) => return Err(self.request_error("get a range of", key)(e)),
        };
        let context = || {
            format!(
                "read bytes {first}-{last} of s3://{}/{}",
                self.config.bucket,
                self.full_key(key)
            )
        };
        let body = object
            .body
            .collect()
            .await
            .map_err(|e| StoreError::Io {
                context: context(),
                source: std::io::Error::other(e),
            })?
            .into_bytes();
        let expected = last - first + 1;
        if body.len() as u64 != expected {
            return Err(StoreError::Io {
                context: context(),
                source: std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!("got {} bytes, expected {expected}", body.len()),
                ),
            });
        }
        Ok(body)
    }
}
