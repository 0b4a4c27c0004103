//! How the services reach ClickHouse: the HTTP client under every `clickhouse::Client`
//! (plain `http`, or `https` trusting the public web CAs and an optional CA file), and the
//! check at start that stops a service on a refused password or an untrusted certificate
//! instead of retrying it forever. A server that is merely down stays the caller's to
//! wait for.

use std::error::Error as StdError;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::rt::TokioExecutor;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use traffsure_config::ClickHouseSettings;

/// As the clickhouse crate's own client: below the server's 3 s keep-alive, so a pooled
/// connection is never reused just as the server closes it.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(2);
const TCP_KEEPALIVE: Duration = Duration::from_secs(60);
/// How long the start check waits for ClickHouse's answer.
const CHECK_TIMEOUT: Duration = Duration::from_secs(15);

/// ClickHouse error codes that mean the user or password was refused: 192 unknown user,
/// 193 wrong password, 194 password required (18.x), 516 authentication failed (later).
const AUTH_CODES: [&str; 4] = ["Code: 192", "Code: 193", "Code: 194", "Code: 516"];

/// Why a service cannot use ClickHouse at all.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    #[error("clickhouse authentication failed: {0}")]
    Authentication(String),
    #[error("clickhouse tls: {0}")]
    Tls(String),
    #[error("clickhouse.ca_path {path}: {reason}")]
    CaFile { path: String, reason: String },
    #[error("clickhouse.shards: {0}")]
    Shards(String),
}

/// The CAs every `https` connection trusts: the public web CAs, plus the CA file's.
fn trusted_roots(settings: &ClickHouseSettings) -> Result<rustls::RootCertStore, AccessError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if settings.ca_path.is_empty() {
        return Ok(roots);
    }
    let ca_error = |reason: String| AccessError::CaFile {
        path: settings.ca_path.clone(),
        reason,
    };
    let certificates = CertificateDer::pem_file_iter(&settings.ca_path)
        .map_err(|e| ca_error(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ca_error(e.to_string()))?;
    if certificates.is_empty() {
        return Err(ca_error("no PEM certificate in the file".into()));
    }
    for certificate in certificates {
        roots
            .add(certificate)
            .map_err(|e| ca_error(e.to_string()))?;
    }
    Ok(roots)
}

/// A `clickhouse::Client` over an HTTP client that speaks `http` and `https`. A CA file
/// that cannot be read leaves only the public CAs trusted; [`check_access`] reports it.
pub(crate) fn http_client(settings: &ClickHouseSettings) -> clickhouse::Client {
    let roots = trusted_roots(settings).unwrap_or_else(|error| {
        tracing::error!(%error, "clickhouse ca file unusable");
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        roots
    });
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("ring supports the default TLS versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let mut http = HttpConnector::new();
    http.set_keepalive(Some(TCP_KEEPALIVE));
    http.enforce_http(false);
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    let client = HyperClient::builder(TokioExecutor::new())
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .build(connector);
    clickhouse::Client::with_http_client(client)
}

/// Runs one trivial query (bounded in time) and fails on what retrying cannot mend: a
/// refused user or password, a certificate the client does not trust, an unreadable CA
/// file, a list of shards that is wrong in itself or does not match the cluster
/// (`crate::shards`). Any other outcome (the server down or slow) passes, with a warning.
pub async fn check_access(settings: &ClickHouseSettings) -> Result<(), AccessError> {
    trusted_roots(settings)?;
    crate::shards::urls(settings).map_err(AccessError::Shards)?;
    let client = crate::server_client(settings);
    let answer =
        tokio::time::timeout(CHECK_TIMEOUT, client.query("SELECT 1").fetch_one::<u8>()).await;
    match answer {
        Ok(Ok(_)) => {
            let checked =
                tokio::time::timeout(CHECK_TIMEOUT, crate::shards::check_cluster(settings)).await;
            match checked {
                Ok(Ok(Err(why))) => Err(AccessError::Shards(why)),
                Ok(Ok(Ok(()))) => Ok(()),
                Ok(Err(error)) => {
                    tracing::warn!(%error, "clickhouse shards not checked yet");
                    Ok(())
                }
                Err(_) => {
                    tracing::warn!("clickhouse shards not checked yet");
                    Ok(())
                }
            }
        }
        Ok(Err(error)) => match classify(&error) {
            Some(failure) => Err(failure),
            None => {
                tracing::warn!(%error, url = %settings.url, "clickhouse not answering yet");
                Ok(())
            }
        },
        Err(_) => {
            tracing::warn!(url = %settings.url, "clickhouse not answering yet");
            Ok(())
        }
    }
}

/// Sorts an error into a refused login, a TLS failure, or neither.
fn classify(error: &clickhouse::error::Error) -> Option<AccessError> {
    if let clickhouse::error::Error::BadResponse(text) = error {
        let refused = AUTH_CODES.iter().any(|code| text.contains(code))
            || text.starts_with("401 ")
            || text.contains("AUTHENTICATION_FAILED");
        return refused.then(|| AccessError::Authentication(text.trim().to_string()));
    }
    tls_failure(error).map(AccessError::Tls)
}

/// The rustls error somewhere in a network error's chain, as text.
fn tls_failure(error: &(dyn StdError + 'static)) -> Option<String> {
    let mut current: Option<&(dyn StdError + 'static)> = Some(error);
    while let Some(error) = current {
        if let Some(tls) = error.downcast_ref::<rustls::Error>() {
            return Some(tls.to_string());
        }
        // An io::Error hides the error it wraps from `source()` (the TLS connector wraps
        // rustls' error in two of them): step into it instead.
        current = match error
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            Some(inner) => Some(inner as &(dyn StdError + 'static)),
            None => error.source(),
        };
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_login_is_told_from_other_answers() {
        let answers = [
            "Code: 193, e.displayText() = DB::Exception: Wrong password for user default",
            "Code: 516. DB::Exception: default: Authentication failed (AUTHENTICATION_FAILED)",
        ];
        for text in answers {
            let error = clickhouse::error::Error::BadResponse(text.into());
            assert!(
                matches!(classify(&error), Some(AccessError::Authentication(_))),
                "{text}"
            );
        }
        let other = clickhouse::error::Error::BadResponse(
            "Code: 60, e.displayText() = DB::Exception: Table x doesn't exist".into(),
        );
        assert!(classify(&other).is_none());
    }

    #[test]
    fn a_certificate_error_inside_io_is_found() {
        let tls = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let io = std::io::Error::other(std::io::Error::new(std::io::ErrorKind::InvalidData, tls));
        let error = clickhouse::error::Error::Network(Box::new(io));
        match classify(&error) {
            Some(AccessError::Tls(text)) => assert!(text.contains("UnknownIssuer"), "{text}"),
            other => panic!("{other:?}"),
        }
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert!(classify(&clickhouse::error::Error::Network(Box::new(refused))).is_none());
    }

    #[test]
    fn a_missing_ca_file_names_the_setting() {
        let settings = ClickHouseSettings {
            ca_path: "/nonexistent/ca.pem".into(),
            ..ClickHouseSettings::default()
        };
        let error = trusted_roots(&settings).expect_err("the file is missing");
        assert!(error
            .to_string()
            .starts_with("clickhouse.ca_path /nonexistent/ca.pem"));
    }
}
