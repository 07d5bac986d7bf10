//! The one HTTP client every provider shares.
//!
//! Built once per process so connections (and their TLS sessions) are pooled
//! across jobs. TLS is rustls with certificates always verified; a private
//! gateway with its own CA is trusted by adding that CA, never by turning
//! verification off. The request timeout bounds one attempt; the router's
//! budget bounds the whole call. [`post_json`] is the one way a wire format
//! sends a request, so every answer is read and classified the same way.

use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::header::{HeaderName, HeaderValue};
use serde::Serialize;

use ferry_common::{KeyRing, Secret};

use super::failure::{FailureClass, ProviderError, retry_hint};

/// How the provider client connects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpSettings {
    /// Time to establish a connection (TCP and TLS).
    pub connect_timeout: Duration,
    /// Time for one whole attempt, from sending to the last byte.
    pub request_timeout: Duration,
    /// A PEM file of extra CA certificates to trust (a private gateway),
    /// in addition to the built-in web roots.
    pub extra_ca_pem: Option<PathBuf>,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(60),
            extra_ca_pem: None,
        }
    }
}

/// The client could not be built: start-up stops with this.
#[derive(Debug, thiserror::Error)]
pub enum HttpSetupError {
    #[error("cannot read the CA file {path}: {source}")]
    ReadCa {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the CA file {path} holds no usable PEM certificate{reason}")]
    BadCa { path: PathBuf, reason: String },
    #[error("cannot build the HTTP client: {0}")]
    Build(#[from] reqwest::Error),
}

/// Idle connections kept per provider host.
const MAX_IDLE_PER_HOST: usize = 32;

/// Builds the shared provider client.
pub fn build_client(settings: &HttpSettings) -> Result<reqwest::Client, HttpSetupError> {
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .connect_timeout(settings.connect_timeout)
        .timeout(settings.request_timeout)
        .tcp_keepalive(Duration::from_secs(30))
        .pool_idle_timeout(Duration::from_secs(60))
        // A burst of slow calls opens a connection per call (HTTP/1.1); once
        // answered, keep a few for the next calls and close the rest, not
        // a thousand idle ones with their buffers (bench/RESULTS.md, "Speed
        // near the floor": worker memory).
        .pool_max_idle_per_host(MAX_IDLE_PER_HOST)
        .user_agent(concat!("ferry/", env!("CARGO_PKG_VERSION")));
    if let Some(path) = &settings.extra_ca_pem {
        for cert in read_ca_bundle(path)? {
            builder = builder.add_root_certificate(cert);
        }
    }
    Ok(builder.build()?)
}

fn read_ca_bundle(path: &Path) -> Result<Vec<reqwest::Certificate>, HttpSetupError> {
    let pem = std::fs::read(path).map_err(|source| HttpSetupError::ReadCa {
        path: path.to_path_buf(),
        source,
    })?;
    let bad = |reason: String| HttpSetupError::BadCa {
        path: path.to_path_buf(),
        reason,
    };
    let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| bad(format!(": {e}")))?;
    if certs.is_empty() {
        return Err(bad(String::new()));
    }
    Ok(certs)
}

/// The provider's next key in turn; with none configured the provider
/// cannot be called at all, an auth failure.
pub(super) fn next_key(provider: &str, keys: &KeyRing) -> Result<Secret, ProviderError> {
    keys.next_key()
        .ok_or_else(|| ProviderError::new(provider, FailureClass::Auth, "no API key configured"))
}

/// An auth header for `provider` carrying `key`: sensitive, so it is never
/// printed. A key that cannot be a header value is an auth failure.
pub(super) fn auth_header(
    provider: &str,
    name: HeaderName,
    value: &str,
) -> Result<(HeaderName, HeaderValue), ProviderError> {
    let mut value = HeaderValue::from_str(value).map_err(|_| {
        let msg = "the API key holds characters an HTTP header cannot carry";
        ProviderError::new(provider, FailureClass::Auth, msg)
    })?;
    value.set_sensitive(true);
    Ok((name, value))
}

/// Posts `body` as JSON and returns the answer's body on a 2xx status. Any
/// other status becomes a classified [`ProviderError`]; a request that got
/// no answer is transient.
pub(super) async fn post_json<B: Serialize>(
    client: &reqwest::Client,
    provider: &str,
    url: &str,
    auth: (HeaderName, HeaderValue),
    body: &B,
) -> Result<String, ProviderError> {
    let response = client
        .post(url)
        .header(auth.0, auth.1)
        .json(body)
        .send()
        .await
        .map_err(|e| ProviderError::network(provider, &e))?;
    let status = response.status();
    let hint = retry_hint(response.headers());
    let text = response
        .text()
        .await
        .map_err(|e| ProviderError::network(provider, &e))?;
    if status.is_success() {
        Ok(text)
    } else {
        Err(ProviderError::from_response(
            provider,
            status.as_u16(),
            hint,
            &text,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// ISRG Root X2, a public root: stands in for a private gateway's CA.
    const A_CA: &str = "-----BEGIN CERTIFICATE-----
MIICGzCCAaGgAwIBAgIQQdKd0XLq7qeAwSxs6S+HUjAKBggqhkjOPQQDAzBPMQsw
CQYDVQQGEwJVUzEpMCcGA1UEChMgSW50ZXJuZXQgU2VjdXJpdHkgUmVzZWFyY2gg
R3JvdXAxFTATBgNVBAMTDElTUkcgUm9vdCBYMjAeFw0yMDA5MDQwMDAwMDBaFw00
MDA5MTcxNjAwMDBaME8xCzAJBgNVBAYTAlVTMSkwJwYDVQQKEyBJbnRlcm5ldCBT
ZWN1cml0eSBSZXNlYXJjaCBHcm91cDEVMBMGA1UEAxMMSVNSRyBSb290IFgyMHYw
EAYHKoZIzj0CAQYFK4EEACIDYgAEzZvVn4CDCuwJSvMWSj5cz3es3mcFDR0HttwW
+1qLFNvicWDEukWVEYmO6gbf9yoWHKS5xcUy4APgHoIYOIvXRdgKam7mAHf7AlF9
ItgKbppbd9/w+kHsOdx1ymgHDB/qo0IwQDAOBgNVHQ8BAf8EBAMCAQYwDwYDVR0T
AQH/BAUwAwEB/zAdBgNVHQ4EFgQUfEKWrt5LSDv6kviejM9ti6lyN5UwCgYIKoZI
zj0EAwMDaAAwZQIwe3lORlCEwkSHRhtFcP9Ymd70/aTSVaYgLXTWNLxBo1BfASdW
tL4ndQavEi51mI38AjEAi/V3bNTIZargCyzuFJ0nN6T5U6VR5CmD1/iQMVtCnwr1
/q4AaOeMSQ+2b1tbFfLn
-----END CERTIFICATE-----
";

    fn write_temp(name: &str, contents: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("ferry-http-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, contents).unwrap();
        path
    }

    #[test]
    fn defaults_are_five_seconds_to_connect_and_a_minute_per_attempt() {
        let s = HttpSettings::default();
        assert_eq!(s.connect_timeout, Duration::from_secs(5));
        assert_eq!(s.request_timeout, Duration::from_secs(60));
        assert!(build_client(&s).is_ok());
    }

    #[test]
    fn an_extra_ca_file_is_trusted() {
        let path = write_temp("ca.pem", A_CA);
        let settings = HttpSettings {
            extra_ca_pem: Some(path),
            ..HttpSettings::default()
        };
        assert!(build_client(&settings).is_ok());
    }

    #[test]
    fn a_missing_or_empty_ca_file_stops_start_up() {
        let missing = HttpSettings {
            extra_ca_pem: Some("/nonexistent/ca.pem".into()),
            ..HttpSettings::default()
        };
        let err = build_client(&missing).unwrap_err();
        assert!(matches!(err, HttpSetupError::ReadCa { .. }), "{err}");

        let empty = HttpSettings {
            extra_ca_pem: Some(write_temp("empty.pem", "not a certificate\n")),
            ..HttpSettings::default()
        };
        let err = build_client(&empty).unwrap_err();
        assert!(matches!(err, HttpSetupError::BadCa { .. }), "{err}");
    }
}
