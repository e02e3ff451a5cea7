//! Presigned URLs checked as S3 checks them, in the functions' endpoints:
//! the signature must be the one its signer's key gives this method, path,
//! query and signed headers, and the URL must not have expired. LocalStack's
//! S3 checks this too; moto's checks nothing, so on the moto-only cloud a URL
//! handed out for one key would write any other without this.

use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    PercentEncodingMode, SignableBody, SignableRequest, SignatureLocation, SigningSettings, UriPathNormalizationMode, sign,
};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use axum::http::{HeaderMap, Method, Uri};

/// The query parameters a SigV4 presigner adds: everything else in the
/// query was there before signing and is signed.
const SIGNING_PARAMS: [&str; 6] =
    ["X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Date", "X-Amz-Expires", "X-Amz-SignedHeaders", "X-Amz-Signature"];

/// Why a presigned request is refused: S3's error codes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("the presigned URL is missing or has a malformed {0}")]
    Malformed(&'static str),
    #[error("Request has expired")]
    Expired,
    #[error("The request signature we calculated does not match the signature you provided.")]
    SignatureDoesNotMatch,
}

impl Refusal {
    /// S3's `Code` for it.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Malformed(_) => "AuthorizationQueryParametersError",
            Self::Expired => "AccessDenied",
            Self::SignatureDoesNotMatch => "SignatureDoesNotMatch",
        }
    }
}

/// Checks presigned request `method` `uri` (with the `headers` it came with)
/// against the signature `secret` gives, at `now`.
pub fn check(method: &Method, uri: &Uri, headers: &HeaderMap, secret: &str, now: SystemTime) -> Result<(), Refusal> {
    let query = uri.query().unwrap_or_default();
    let param = |name: &'static str| {
        form_urlencoded::parse(query.as_bytes()).find(|(k, _)| k == name).map(|(_, v)| v.into_owned()).ok_or(Refusal::Malformed(name))
    };
    let signature = param("X-Amz-Signature")?;
    let credential = param("X-Amz-Credential")?;
    let [access_key, _date, region, service, _terminator] =
        credential.split('/').collect::<Vec<_>>().try_into().map_err(|_| Refusal::Malformed("X-Amz-Credential"))?;
    let signed_at = chrono::NaiveDateTime::parse_from_str(&param("X-Amz-Date")?, "%Y%m%dT%H%M%SZ")
        .map_err(|_| Refusal::Malformed("X-Amz-Date"))?
        .and_utc();
    let expires_in = Duration::from_secs(param("X-Amz-Expires")?.parse().map_err(|_| Refusal::Malformed("X-Amz-Expires"))?);
    let signed_at = SystemTime::from(signed_at);
    if now > signed_at + expires_in {
        return Err(Refusal::Expired);
    }
    let signed_headers = param("X-Amz-SignedHeaders")?;
    let headers: Vec<(&str, &str)> = signed_headers
        .split(';')
        .map(|name| Ok((name, headers.get(name).and_then(|v| v.to_str().ok()).ok_or(Refusal::SignatureDoesNotMatch)?)))
        .collect::<Result<_, Refusal>>()?;
    // The URL as it was before signing: the signer adds its own parameters back.
    let unsigned_query: Vec<&str> =
        query.split('&').filter(|pair| !SIGNING_PARAMS.iter().any(|p| pair.split('=').next() == Some(*p))).collect();
    let unsigned = match unsigned_query.is_empty() {
        true => uri.path().to_owned(),
        false => format!("{}?{}", uri.path(), unsigned_query.join("&")),
    };

    let mut settings = SigningSettings::default();
    settings.signature_location = SignatureLocation::QueryParams;
    settings.expires_in = Some(expires_in);
    // S3 signs the path as sent, neither encoded again nor normalised.
    settings.percent_encoding_mode = PercentEncodingMode::Single;
    settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
    let identity: Identity = Credentials::new(access_key, secret, None, None, "presigned-url-check").into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(service)
        .time(signed_at)
        .settings(settings)
        .build()
        .map_err(|_| Refusal::Malformed("X-Amz-Credential"))?
        .into();
    let request = SignableRequest::new(method.as_str(), unsigned, headers.into_iter(), SignableBody::UnsignedPayload)
        .map_err(|_| Refusal::SignatureDoesNotMatch)?;
    let (_, expected) = sign(request, &params).map_err(|_| Refusal::SignatureDoesNotMatch)?.into_parts();
    if expected == signature { Ok(()) } else { Err(Refusal::SignatureDoesNotMatch) }
}

#[cfg(test)]
mod tests {
    use aws_sdk_s3::presigning::PresigningConfig;

    use super::*;

    /// A PUT URL from the SDK's own presigner, as the API function makes them,
    /// with the length signed; returns the URI and the headers a client sends.
    async fn presigned_put(key: &str, length: i64) -> (Uri, HeaderMap, SystemTime) {
        let config = aws_sdk_s3::Config::builder()
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .region(aws_sdk_s3::config::Region::new("us-east-1"))
            .endpoint_url("http://127.0.0.1:4566")
            .force_path_style(true)
            .credentials_provider(Credentials::new("test", "secret", None, None, "test"))
            .build();
        let at = SystemTime::now();
        let presigning = PresigningConfig::builder().start_time(at).expires_in(Duration::from_secs(900)).build().expect("config");
        let request = aws_sdk_s3::Client::from_conf(config)
            .put_object()
            .bucket("bucket")
            .key(key)
            .content_length(length)
            .presigned(presigning)
            .await
            .expect("presigned");
        let uri: Uri = request.uri().parse().expect("uri");
        let mut headers = HeaderMap::new();
        headers.insert("host", "127.0.0.1:4566".parse().expect("host"));
        for (name, value) in request.headers() {
            headers.insert(axum::http::HeaderName::from_bytes(name.as_bytes()).expect("name"), value.parse().expect("value"));
        }
        (uri, headers, at)
    }

    #[tokio::test]
    async fn a_url_holds_for_its_own_key_method_and_length_until_it_expires() {
        let (uri, headers, at) = presigned_put("uploads/tester/job/a b.txt", 11).await;
        let soon = at + Duration::from_secs(60);
        assert_eq!(check(&Method::PUT, &uri, &headers, "secret", soon), Ok(()));

        let elsewhere: Uri = uri.to_string().replacen("/uploads/tester/", "/uploads/victim/", 1).parse().expect("uri");
        assert_eq!(check(&Method::PUT, &elsewhere, &headers, "secret", soon), Err(Refusal::SignatureDoesNotMatch));
        assert_eq!(check(&Method::DELETE, &uri, &headers, "secret", soon), Err(Refusal::SignatureDoesNotMatch));
        let mut longer = headers.clone();
        longer.insert("content-length", "5000000000".parse().expect("length"));
        assert_eq!(check(&Method::PUT, &uri, &longer, "secret", soon), Err(Refusal::SignatureDoesNotMatch));
        assert_eq!(check(&Method::PUT, &uri, &headers, "another secret", soon), Err(Refusal::SignatureDoesNotMatch));
        assert_eq!(check(&Method::PUT, &uri, &headers, "secret", at + Duration::from_secs(901)), Err(Refusal::Expired));
        let unsigned: Uri = uri.path().parse().expect("uri");
        assert_eq!(check(&Method::PUT, &unsigned, &headers, "secret", soon), Err(Refusal::Malformed("X-Amz-Signature")));
    }
}
