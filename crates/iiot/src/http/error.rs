//! [`AppError`]: every way a request can fail, answered as `{"error": "...", …}` with its status.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use crate::store::StoreError;

/// Why a request failed. Its `Display` is the `error` field of the JSON answer.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AppError {
    /// A query or path parameter has a value outside what is accepted (400).
    #[error("invalid value for `{param}`: {allowed}")]
    BadParameter {
        /// The parameter.
        param: &'static str,
        /// The value as given.
        value: String,
        /// What is accepted, e.g. `an integer from 1 to 10000`.
        allowed: String,
    },
    /// The request as a whole makes no sense, e.g. `from` after `to` (400).
    #[error("{0}")]
    BadRequest(String),
    /// No reading of this device was ever recorded (404).
    #[error("unknown device")]
    UnknownDevice(String),
    /// No open alert has this id: it never existed or is already resolved (404).
    #[error("unknown alert")]
    UnknownAlert(String),
    /// The alert was acknowledged before (409).
    #[error("alert already acknowledged")]
    AlreadyAcknowledged(String),
    /// No silence has this id (404).
    #[error("unknown silence")]
    UnknownSilence(String),
    /// No route has this path (404).
    #[error("not found")]
    NotFound(String),
    /// The request body is larger than allowed (413).
    #[error("the body is larger than {limit} bytes ({what})")]
    TooLarge {
        /// The limit, in bytes.
        limit: usize,
        /// Which limit: its setting, or what it bounds.
        what: &'static str,
    },
    /// No valid credentials: sign in or send a token (401).
    #[error("{0}")]
    Unauthorized(String),
    /// Signed in, but not allowed: role too low, CSRF token missing, foreign page (403).
    #[error("{0}")]
    Forbidden(String),
    /// A part the answer depends on is down or too slow (503).
    #[error("{0}")]
    Unavailable(&'static str),
}

impl AppError {
    /// A [`AppError::BadParameter`].
    pub(crate) fn bad(param: &'static str, value: &str, allowed: impl Into<String>) -> AppError {
        AppError::BadParameter {
            param,
            value: value.to_owned(),
            allowed: allowed.into(),
        }
    }

    /// The HTTP status of this error.
    pub fn status(&self) -> StatusCode {
        match self {
            AppError::BadParameter { .. } | AppError::BadRequest(_) => StatusCode::BAD_REQUEST,
            AppError::UnknownDevice(_)
            | AppError::UnknownAlert(_)
            | AppError::UnknownSilence(_)
            | AppError::NotFound(_) => StatusCode::NOT_FOUND,
            AppError::AlreadyAcknowledged(_) => StatusCode::CONFLICT,
            AppError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            AppError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            AppError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            AppError::Forbidden(_) => StatusCode::FORBIDDEN,
        }
    }

    /// The JSON body: `error` plus the fields that say what it was about.
    pub fn body(&self) -> Value {
        let mut body = Map::new();
        body.insert("error".into(), json!(self.to_string()));
        let mut add = |k: &str, v: &str| body.insert(k.into(), json!(v));
        match self {
            AppError::BadParameter {
                param,
                value,
                allowed,
            } => {
                add("parameter", param);
                add("value", value);
                add("allowed", allowed);
            }
            AppError::UnknownDevice(id) => {
                add("device_id", id);
            }
            AppError::UnknownAlert(id) | AppError::AlreadyAcknowledged(id) => {
                add("alert_id", id);
            }
            AppError::UnknownSilence(id) => {
                add("silence_id", id);
            }
            AppError::NotFound(path) => {
                add("path", path);
            }
            AppError::TooLarge { limit, .. } => {
                body.insert("limit_bytes".into(), json!(limit));
            }
            AppError::BadRequest(_)
            | AppError::Unavailable(_)
            | AppError::Unauthorized(_)
            | AppError::Forbidden(_) => {}
        }
        Value::Object(body)
    }
}

impl From<StoreError> for AppError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::UnknownDevice(id) => AppError::UnknownDevice(id),
            StoreError::BadRange(why) => AppError::BadRequest(format!("bad range: {why}")),
        }
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::warn!(status = status.as_u16(), error = %self, "request failed");
        } else {
            tracing::debug!(status = status.as_u16(), error = %self, "request refused");
        }
        (status, Json(self.body())).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_what_they_are_about() {
        let e = AppError::bad("floor", "x", "an integer");
        assert_eq!(e.status(), StatusCode::BAD_REQUEST);
        assert_eq!(
            e.body(),
            json!({"error": "invalid value for `floor`: an integer", "parameter": "floor",
                   "value": "x", "allowed": "an integer"})
        );
        let e = AppError::from(StoreError::UnknownDevice("d1".into()));
        assert_eq!(e.status(), StatusCode::NOT_FOUND);
        assert_eq!(
            e.body(),
            json!({"error": "unknown device", "device_id": "d1"})
        );
        assert_eq!(
            AppError::AlreadyAcknowledged("a".into()).status(),
            StatusCode::CONFLICT
        );
    }
}
