//! Bearer-token authentication for `/api/*`: `Authorization: Bearer $API_TOKEN`,
//! compared in constant time. Failures answer 401 through `http::recover`.

use subtle::ConstantTimeEq;
use warp::{Filter, Rejection};

use crate::state::AppState;

/// The request had no valid bearer token.
#[derive(Debug)]
pub struct Unauthorized;
impl warp::reject::Reject for Unauthorized {}

/// Passes only requests carrying the configured API token.
pub fn bearer(state: AppState) -> impl Filter<Extract = (), Error = Rejection> + Clone {
    warp::header::optional::<String>("authorization")
        .and_then(move |header: Option<String>| {
            let ok = header
                .as_deref()
                .and_then(|h| {
                    h.strip_prefix("Bearer ")
                        .or_else(|| h.strip_prefix("bearer "))
                })
                .is_some_and(|token| token_matches(token.trim(), state.config.api_token.expose()));
            async move {
                if ok {
                    Ok(())
                } else {
                    Err(warp::reject::custom(Unauthorized))
                }
            }
        })
        .untuple_one()
}

/// Constant-time comparison (the length is not secret).
pub fn token_matches(given: &str, expected: &str) -> bool {
    given.len() == expected.len() && bool::from(given.as_bytes().ct_eq(expected.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::token_matches;

    #[test]
    fn tokens_must_match_exactly() {
        assert!(token_matches("0123456789abcdef", "0123456789abcdef"));
        assert!(!token_matches("0123456789abcdeF", "0123456789abcdef"));
        assert!(!token_matches("0123", "0123456789abcdef"));
        assert!(!token_matches("", "0123456789abcdef"));
    }
}
