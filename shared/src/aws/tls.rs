//! The one HTTPS client a function's SDK clients share, and the roots it trusts.
//!
//! The SDK's default client reads the system's root store when each SDK
//! client is built (every file of `/etc/ssl/certs` on Debian, the bundle on
//! Amazon Linux) and parses all ~150 roots again for each client: two thirds
//! of a function's cold start here (`prism bench --only cold-start`). A
//! function only ever talks to AWS endpoints, whose certificates all chain to
//! Amazon Trust Services' roots, so it trusts those five and nothing else:
//! less to parse, and no other CA can stand in for an AWS endpoint.
//! `PRISM_TLS_ROOTS=system` trusts the system's store instead (an endpoint
//! behind a TLS-inspecting proxy, or an emulator with its own CA).

use aws_smithy_http_client::tls::{self, TlsContext, TrustStore, rustls_provider::CryptoMode};
use aws_smithy_runtime_api::client::http::SharedHttpClient;

use crate::ports::error::ConfigError;

/// Amazon Root CA 1–4 and Starfield Services Root G2 (fingerprints in the file).
const AMAZON_TRUST_SERVICES_ROOTS: &str = include_str!("amazon_trust_services_roots.pem");

/// The certificate authorities a function's HTTPS connections trust.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrustedRoots {
    /// Amazon Trust Services' roots, compiled in (the default).
    AmazonTrustServices,
    /// The system's root store, as the SDK's default client trusts.
    System,
}

impl TrustedRoots {
    /// `PRISM_TLS_ROOTS`: `amazon` (or unset) or `system`.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::parse(crate::runtime::config::optional("PRISM_TLS_ROOTS").as_deref())
    }

    fn parse(value: Option<&str>) -> Result<Self, ConfigError> {
        match value {
            None | Some("amazon") => Ok(Self::AmazonTrustServices),
            Some("system") => Ok(Self::System),
            Some(other) => {
                Err(ConfigError::Invalid { name: "PRISM_TLS_ROOTS", reason: format!("{other:?} is neither \"amazon\" nor \"system\"") })
            }
        }
    }
}

/// The SDK's own hyper/rustls client (aws-lc), trusting `roots`.
pub fn https_client(roots: TrustedRoots) -> Result<SharedHttpClient, ConfigError> {
    let store = match roots {
        TrustedRoots::AmazonTrustServices => {
            TrustStore::empty().with_native_roots(false).with_pem_certificate(AMAZON_TRUST_SERVICES_ROOTS.as_bytes())
        }
        TrustedRoots::System => TrustStore::default(),
    };
    let context = TlsContext::builder()
        .with_trust_store(store)
        .build()
        .map_err(|e| ConfigError::Invalid { name: "PRISM_TLS_ROOTS", reason: e.to_string() })?;
    Ok(aws_smithy_http_client::Builder::new().tls_provider(tls::Provider::Rustls(CryptoMode::AwsLc)).tls_context(context).build_https())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_compiled_in_roots_are_the_five_amazon_trust_services_certificates() {
        let blocks = AMAZON_TRUST_SERVICES_ROOTS.matches("-----BEGIN CERTIFICATE-----").count();
        let ends = AMAZON_TRUST_SERVICES_ROOTS.matches("-----END CERTIFICATE-----").count();
        assert_eq!((blocks, ends), (5, 5));
        for name in ["Amazon Root CA 1", "Amazon Root CA 2", "Amazon Root CA 3", "Amazon Root CA 4", "Starfield Services Root"] {
            assert!(AMAZON_TRUST_SERVICES_ROOTS.contains(name), "{name} is listed");
        }
        // An SDK client builds its connector's TLS config when it is built:
        // a block that does not parse as a certificate fails it here.
        let http = https_client(TrustedRoots::AmazonTrustServices).expect("the roots make a client");
        let conf = aws_sdk_sqs::Config::builder()
            .behavior_version(aws_config::BehaviorVersion::latest())
            .region(aws_sdk_sqs::config::Region::from_static("eu-west-1"))
            .http_client(http)
            .build();
        let _client = aws_sdk_sqs::Client::from_conf(conf);
    }

    #[test]
    fn prism_tls_roots_chooses_amazon_by_default_or_the_system_store_and_refuses_anything_else() {
        assert_eq!(TrustedRoots::parse(None).ok(), Some(TrustedRoots::AmazonTrustServices));
        assert_eq!(TrustedRoots::parse(Some("amazon")).ok(), Some(TrustedRoots::AmazonTrustServices));
        assert_eq!(TrustedRoots::parse(Some("system")).ok(), Some(TrustedRoots::System));
        assert!(matches!(TrustedRoots::parse(Some("webpki")), Err(ConfigError::Invalid { name: "PRISM_TLS_ROOTS", .. })));
    }
}
