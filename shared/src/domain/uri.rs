//! `s3://bucket/key` URIs: how blobs travel between functions.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct S3Uri {
    pub bucket: String,
    pub key: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not an s3://bucket/key URI: {0:?}")]
pub struct BadS3Uri(pub String);

impl S3Uri {
    pub fn new(bucket: impl Into<String>, key: impl Into<String>) -> Self {
        Self { bucket: bucket.into(), key: key.into() }
    }

    /// The last path segment of the key.
    pub fn file_name(&self) -> &str {
        self.key.rsplit('/').next().unwrap_or(&self.key)
    }
}

impl FromStr for S3Uri {
    type Err = BadS3Uri;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let rest = s.strip_prefix("s3://").ok_or_else(|| BadS3Uri(s.to_owned()))?;
        match rest.split_once('/') {
            Some((bucket, key)) if !bucket.is_empty() && !key.is_empty() => Ok(Self::new(bucket, key)),
            _ => Err(BadS3Uri(s.to_owned())),
        }
    }
}

impl TryFrom<String> for S3Uri {
    type Error = BadS3Uri;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<S3Uri> for String {
    fn from(u: S3Uri) -> Self {
        u.to_string()
    }
}

impl fmt::Display for S3Uri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "s3://{}/{}", self.bucket, self.key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_partial_uris() {
        let u: S3Uri = "s3://b/a/b c.txt".parse().expect("parse");
        assert_eq!(u.bucket, "b");
        assert_eq!(u.key, "a/b c.txt");
        assert_eq!(u.file_name(), "b c.txt");
        assert_eq!(u.to_string(), "s3://b/a/b c.txt");
        for bad in ["s3://", "s3://b", "s3://b/", "http://b/k", "s3:///k"] {
            assert!(bad.parse::<S3Uri>().is_err(), "{bad}");
        }
    }
}
