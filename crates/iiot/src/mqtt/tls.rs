//! `mqtts://`: the TLS client configuration of an MQTT connection — the server verified
//! against `MQTT_CA_LOCATION` (PEM; else the system's roots), optionally a client certificate
//! and key (`MQTT_CERTIFICATE_LOCATION`, `MQTT_KEY_LOCATION`, PEM) for mutual TLS. rustls with
//! ring (the `tls` feature). Errors name the file and what is wrong with it, never its content.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::MqttSettings;

/// Why the TLS configuration cannot be built: the setting and the reason.
#[derive(Debug, thiserror::Error)]
#[error("{key}={path}: {reason}")]
pub struct TlsSetupError {
    /// The setting at fault (`MQTT_CA_LOCATION`, …).
    pub key: &'static str,
    /// Its value (a path, not a secret).
    pub path: String,
    /// What is wrong, completing "must …".
    pub reason: String,
}

/// The TLS client configuration `settings` ask for, or `None` for `mqtt://`.
pub fn client_config(
    settings: &MqttSettings,
) -> Result<Option<Arc<rustls::ClientConfig>>, TlsSetupError> {
    if !settings.is_tls() {
        return Ok(None);
    }
    let mut roots = rustls::RootCertStore::empty();
    match &settings.ca_location {
        Some(path) => {
            for cert in certificates("MQTT_CA_LOCATION", path)? {
                roots.add(cert).map_err(|e| TlsSetupError {
                    key: "MQTT_CA_LOCATION",
                    path: path.clone(),
                    reason: format!("must hold CA certificates rustls accepts ({e})"),
                })?;
            }
        }
        None => {
            // The system's trust store; certificates it cannot parse are skipped.
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsSetupError {
            key: "MQTT_URL",
            path: settings.url.clone().unwrap_or_default(),
            reason: format!("TLS is not available ({e})"),
        })?
        .with_root_certificates(roots);
    let config = match (&settings.certificate_location, &settings.key_location) {
        (None, None) => builder.with_no_client_auth(),
        (Some(cert), Some(key)) => {
            let chain = certificates("MQTT_CERTIFICATE_LOCATION", cert)?;
            let private = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsSetupError {
                key: "MQTT_KEY_LOCATION",
                path: key.clone(),
                reason: format!("must name a readable unencrypted PEM private key ({e})"),
            })?;
            builder
                .with_client_auth_cert(chain, private)
                .map_err(|e| TlsSetupError {
                    key: "MQTT_KEY_LOCATION",
                    path: key.clone(),
                    reason: format!("must be the key of MQTT_CERTIFICATE_LOCATION ({e})"),
                })?
        }
        (Some(cert), None) => {
            return Err(half("MQTT_CERTIFICATE_LOCATION", cert, "MQTT_KEY_LOCATION"));
        }
        (None, Some(key)) => {
            return Err(half("MQTT_KEY_LOCATION", key, "MQTT_CERTIFICATE_LOCATION"));
        }
    };
    Ok(Some(Arc::new(config)))
}

/// The transport of `settings`: TLS for `mqtts://`, else `None` (plain TCP).
pub fn transport(settings: &MqttSettings) -> Result<Option<rumqttc::Transport>, TlsSetupError> {
    Ok(client_config(settings)?.map(|config| {
        rumqttc::Transport::tls_with_config(rumqttc::TlsConfiguration::Rustls(config))
    }))
}

/// The PEM certificates in `path` (at least one).
fn certificates(
    key: &'static str,
    path: &str,
) -> Result<Vec<CertificateDer<'static>>, TlsSetupError> {
    let error = |reason: String| TlsSetupError {
        key,
        path: path.to_string(),
        reason,
    };
    if !Path::new(path).is_file() {
        return Err(error("must name a readable PEM file".into()));
    }
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|e| {
            error(format!(
                "must name a readable PEM file of certificates ({e})"
            ))
        })?;
    if certs.is_empty() {
        return Err(error("must hold at least one PEM certificate".into()));
    }
    Ok(certs)
}

fn half(key: &'static str, path: &str, other: &str) -> TlsSetupError {
    TlsSetupError {
        key,
        path: path.to_string(),
        reason: format!("needs {other} as well (a client certificate and its key go together)"),
    }
}
