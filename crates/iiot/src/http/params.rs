//! Extractors that never answer with axum's plain-text rejections: query strings are taken as
//! a map of strings and parsed here, so a bad value gets an [`AppError`] naming the parameter.

use std::collections::HashMap;
use std::str::FromStr;

use axum::extract::{FromRequestParts, Path, Query};
use axum::http::request::Parts;

use super::error::AppError;

/// The query string as name → value. An empty value (`?status=`) counts as not given, so a form
/// that sends every filter, set or not, works as expected. Unknown names are ignored.
#[derive(Debug, Clone, Default)]
pub(crate) struct Params(HashMap<String, String>);

impl<S: Send + Sync> FromRequestParts<S> for Params {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, AppError> {
        let Query(map) = Query::<HashMap<String, String>>::from_request_parts(parts, state)
            .await
            .map_err(|e| AppError::BadRequest(format!("malformed query string: {e}")))?;
        Ok(Params(map))
    }
}

impl Params {
    /// The value of `name`, if given and not empty.
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.0
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// `name` parsed with `parse`; `allowed` describes what `parse` accepts.
    pub(crate) fn parse_with<T>(
        &self,
        name: &'static str,
        allowed: impl FnOnce() -> String,
        parse: impl FnOnce(&str) -> Option<T>,
    ) -> Result<Option<T>, AppError> {
        match self.get(name) {
            None => Ok(None),
            Some(v) => parse(v)
                .map(Some)
                .ok_or_else(|| AppError::bad(name, v, allowed())),
        }
    }

    /// `name` as an integer in `min..=max`.
    pub(crate) fn int_in<T>(
        &self,
        name: &'static str,
        min: T,
        max: T,
    ) -> Result<Option<T>, AppError>
    where
        T: FromStr + PartialOrd + Copy + std::fmt::Display,
    {
        self.parse_with(
            name,
            || format!("an integer from {min} to {max}"),
            |v| v.parse::<T>().ok().filter(|n| (min..=max).contains(n)),
        )
    }

    /// `name` as any integer that fits `T`; `what` says what it means (e.g. `Unix ms`).
    pub(crate) fn int<T: FromStr>(
        &self,
        name: &'static str,
        what: &'static str,
    ) -> Result<Option<T>, AppError> {
        self.parse_with(
            name,
            || format!("an integer ({what})"),
            |v| v.parse::<T>().ok(),
        )
    }
}

/// The single path parameter of a route (`{id}`, `{alert_id}`), as a string.
#[derive(Debug, Clone)]
pub(crate) struct PathId(pub(crate) String);

impl<S: Send + Sync> FromRequestParts<S> for PathId {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, AppError> {
        let Path(id) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|e| AppError::BadRequest(format!("bad path: {e}")))?;
        Ok(PathId(id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> Params {
        Params(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn integers_out_of_range_or_malformed_name_the_parameter() {
        let p = params(&[("points", "0"), ("page", "x"), ("floor", "-2"), ("q", "")]);
        assert_eq!(
            p.int_in("points", 1usize, 10_000),
            Err(AppError::bad("points", "0", "an integer from 1 to 10000"))
        );
        assert_eq!(
            p.int_in("page", 1usize, 9),
            Err(AppError::bad("page", "x", "an integer from 1 to 9"))
        );
        assert_eq!(p.int::<i32>("floor", "a floor number"), Ok(Some(-2)));
        assert_eq!(p.get("q"), None, "empty means not given");
        assert_eq!(p.int_in("per_page", 1usize, 10), Ok(None));
    }
}
