use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::error::SdkError;
use aws_sdk_s3::operation::get_object::GetObjectError;
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream;
use bytes::Bytes;

use super::boxed;
use crate::domain::uri::S3Uri;
use crate::ports::error::BlobError;
use crate::ports::{BlobStore, ObjectHead, ObjectMeta};

#[derive(Debug, Clone)]
pub struct S3BlobStore {
    client: super::LazyClient<Client>,
}

impl S3BlobStore {
    pub fn new(client: super::LazyClient<Client>) -> Self {
        Self { client }
    }

    fn client(&self) -> &Client {
        self.client.get()
    }
}

/// A missing key is the object's fault (permanent); a missing bucket is the
/// deployment's, and worth retrying until an operator fixes it.
fn get_error(uri: &S3Uri, e: SdkError<GetObjectError>) -> BlobError {
    use aws_sdk_s3::error::ProvideErrorMetadata;
    let not_found = e.raw_response().is_some_and(|r| r.status().as_u16() == 404);
    match e.as_service_error() {
        Some(GetObjectError::NoSuchKey(_)) => BlobError::NotFound(uri.clone()),
        Some(s) if s.code() == Some("NoSuchBucket") => BlobError::Unavailable(boxed(e)),
        _ if not_found => BlobError::NotFound(uri.clone()),
        _ => BlobError::Unavailable(boxed(e)),
    }
}

/// The total size from a `Content-Range: bytes 0-99/1234` header.
fn total_from_content_range(range: &str) -> Option<u64> {
    range.rsplit_once('/')?.1.parse().ok()
}

#[async_trait]
impl BlobStore for S3BlobStore {
    async fn read_head(&self, uri: &S3Uri, len: usize) -> Result<ObjectHead, BlobError> {
        let last = len.saturating_sub(1);
        let result = self.client().get_object().bucket(&uri.bucket).key(&uri.key).range(format!("bytes=0-{last}")).send().await;
        let out = match result {
            Ok(out) => out,
            // S3 answers 416 to any range of an empty object.
            Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 416) => {
                return Ok(ObjectHead { bytes: Bytes::new(), size: 0 });
            }
            Err(e) => return Err(get_error(uri, e)),
        };
        let size = out
            .content_range()
            .and_then(total_from_content_range)
            .or_else(|| out.content_length().and_then(|n| u64::try_from(n).ok()))
            .unwrap_or(0);
        let body = out.body.collect().await.map_err(|e| BlobError::Unavailable(boxed(e)))?.into_bytes();
        // Some servers ignore Range; never hand back more than was asked for.
        Ok(ObjectHead { bytes: body.slice(..len.min(body.len())), size })
    }

    async fn read_all(&self, uri: &S3Uri, limit: u64) -> Result<Bytes, BlobError> {
        let out = self.client().get_object().bucket(&uri.bucket).key(&uri.key).send().await.map_err(|e| get_error(uri, e))?;
        let size = out.content_length().and_then(|n| u64::try_from(n).ok()).unwrap_or(0);
        if size > limit {
            return Err(BlobError::TooLarge { uri: uri.clone(), size, limit });
        }
        let body = out.body.collect().await.map_err(|e| BlobError::Unavailable(boxed(e)))?;
        Ok(body.into_bytes())
    }

    async fn download(&self, uri: &S3Uri, path: &std::path::Path, limit: u64) -> Result<u64, BlobError> {
        use tokio::io::AsyncWriteExt;
        let mut out = self.client().get_object().bucket(&uri.bucket).key(&uri.key).send().await.map_err(|e| get_error(uri, e))?;
        let size = out.content_length().and_then(|n| u64::try_from(n).ok()).unwrap_or(0);
        if size > limit {
            return Err(BlobError::TooLarge { uri: uri.clone(), size, limit });
        }
        let local = |e: std::io::Error| BlobError::Unavailable(Box::new(e));
        let mut file = tokio::io::BufWriter::new(tokio::fs::File::create(path).await.map_err(local)?);
        let mut written = 0u64;
        while let Some(chunk) = out.body.next().await {
            let chunk = chunk.map_err(|e| BlobError::Unavailable(boxed(e)))?;
            written += chunk.len() as u64;
            // The length header can be absent: the limit holds for the bytes themselves.
            if written > limit {
                return Err(BlobError::TooLarge { uri: uri.clone(), size: written, limit });
            }
            file.write_all(&chunk).await.map_err(local)?;
        }
        file.flush().await.map_err(local)?;
        Ok(written)
    }

    async fn write(&self, uri: &S3Uri, body: Bytes, content_type: &str) -> Result<ObjectMeta, BlobError> {
        let size = body.len() as u64;
        let out = self
            .client()
            .put_object()
            .bucket(&uri.bucket)
            .key(&uri.key)
            .content_type(content_type)
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|e| BlobError::Unavailable(boxed(e)))?;
        match out.e_tag() {
            Some(etag) => Ok(ObjectMeta { size, etag: etag.trim_matches('"').to_owned() }),
            // S3 always answers with one; a store that does not is asked.
            None => self.stat(uri).await,
        }
    }

    async fn stat(&self, uri: &S3Uri) -> Result<ObjectMeta, BlobError> {
        let out = self.client().head_object().bucket(&uri.bucket).key(&uri.key).send().await.map_err(|e| {
            if e.raw_response().is_some_and(|r| r.status().as_u16() == 404) {
                BlobError::NotFound(uri.clone())
            } else {
                BlobError::Unavailable(boxed(e))
            }
        })?;
        Ok(ObjectMeta {
            size: out.content_length().and_then(|n| u64::try_from(n).ok()).unwrap_or(0),
            etag: out.e_tag().unwrap_or_default().trim_matches('"').to_owned(),
        })
    }

    async fn presign_put(&self, uri: &S3Uri, expires_in: Duration, content_length: Option<u64>) -> Result<String, BlobError> {
        let presigning = PresigningConfig::expires_in(expires_in).map_err(|e| BlobError::Unavailable(boxed(e)))?;
        let request = self
            .client()
            .put_object()
            .bucket(&uri.bucket)
            .key(&uri.key)
            .set_content_length(content_length.and_then(|n| i64::try_from(n).ok()))
            .presigned(presigning)
            .await
            .map_err(|e| BlobError::Unavailable(boxed(e)))?;
        Ok(request.uri().to_owned())
    }

    async fn presign_get(&self, uri: &S3Uri, expires_in: Duration) -> Result<String, BlobError> {
        let presigning = PresigningConfig::expires_in(expires_in).map_err(|e| BlobError::Unavailable(boxed(e)))?;
        let request = self
            .client()
            .get_object()
            .bucket(&uri.bucket)
            .key(&uri.key)
            .presigned(presigning)
            .await
            .map_err(|e| BlobError::Unavailable(boxed(e)))?;
        Ok(request.uri().to_owned())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_total_size_from_content_range() {
        assert_eq!(super::total_from_content_range("bytes 0-99/1234"), Some(1234));
        assert_eq!(super::total_from_content_range("bytes */0"), Some(0));
        assert_eq!(super::total_from_content_range("garbage"), None);
    }
}
