//! Bearer-token authentication of the jobs, batch and admin APIs.
//!
//! Tokens are configured as hashes ([`ApiTokens`], `FERRY_API_TOKENS` and
//! `FERRY_ADMIN_TOKEN`) and swapped as a whole on SIGHUP. A route group is
//! guarded with [`Guard`] and [`guard`]; its handlers find the caller's [`Principal`] in
//! the request extensions (`Extension<Principal>`). Refusals answer 401 or
//! 403 with a fixed body that tells an attacker nothing (not whether a token
//! exists, nor which scopes would do), and are reported as security events
//! (target `security`) without the presented value.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, RwLock};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
pub use ferry_common::api_tokens::{ApiTokens, Principal, Scope, Scopes};

use crate::error::ApiError;
use crate::security::SecurityEvent;
use crate::state::AppState;

/// The configured tokens of this process, replaceable while it runs.
#[derive(Debug, Default)]
pub struct Authenticator {
    tokens: RwLock<Arc<ApiTokens>>,
}

impl Authenticator {
    pub fn new(tokens: ApiTokens) -> Self {
        Self {
            tokens: RwLock::new(Arc::new(tokens)),
        }
    }

    /// Swaps in a new set of tokens (SIGHUP); requests already admitted
    /// are not affected. Returns whether anything changed.
    pub fn replace(&self, tokens: ApiTokens) -> bool {
        let mut current = self.tokens.write().unwrap_or_else(|e| e.into_inner());
        let changed = current.fingerprint() != tokens.fingerprint();
        *current = Arc::new(tokens);
        changed
    }

    /// The current tokens' fingerprint: dashboard sessions remember it, so
    /// any change of the tokens (a rotation after a leak) ends them all.
    pub fn fingerprint(&self) -> [u8; 32] {
        self.current().fingerprint()
    }

    fn current(&self) -> Arc<ApiTokens> {
        Arc::clone(&self.tokens.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Checks a presented token (a bearer token or the dashboard's cookie)
    /// for `scope`. Failures are counted and logged as security events.
    pub fn check(
        &self,
        presented: Option<&str>,
        scope: Scope,
        client: Option<IpAddr>,
        security: &crate::SecurityCounters,
    ) -> Result<Principal, ApiError> {
        let Some(presented) = presented.filter(|t| !t.is_empty()) else {
            return Err(ApiError::Unauthorized);
        };
        let Some(principal) = self.current().authenticate(presented) else {
            security.report(SecurityEvent::BadToken, client, "unknown bearer token");
            return Err(ApiError::Unauthorized);
        };
        if !principal.scopes.allows(scope) {
            security.report(
                SecurityEvent::Forbidden,
                client,
                &format!(
                    "token {:?} ({}) lacks scope {}",
                    principal.name,
                    principal.scopes,
                    scope.name()
                ),
            );
            return Err(ApiError::Forbidden);
        }
        Ok(principal)
    }
}

/// The bearer token of `Authorization: Bearer <token>`, if any.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Middleware state: the app and the scope a route group needs. Guard a
/// group with
/// `.route_layer(middleware::from_fn_with_state(Guard::new(state, Scope::Submit), auth::guard))`;
/// its handlers take `Extension<Principal>`.
#[derive(Clone)]
pub struct Guard {
    state: AppState,
    scope: Scope,
}

impl Guard {
    pub fn new(state: AppState, scope: Scope) -> Self {
        Self { state, scope }
    }
}

/// Admits only requests whose bearer token has the guard's scope.
pub async fn guard(State(guard): State<Guard>, mut request: Request, next: Next) -> Response {
    match authenticate(&guard.state, &request, guard.scope) {
        Ok(principal) => {
            request.extensions_mut().insert(principal);
            next.run(request).await
        }
        Err(e) => e.into_response(),
    }
}

/// The principal behind a request's bearer token, if it has `scope`: the
/// one check of every bearer-guarded route (each API renders the refusal in
/// its own shape). The client address, for the security log, is the one
/// the trusted-proxy rules give.
pub fn authenticate(
    state: &AppState,
    request: &Request,
    scope: Scope,
) -> Result<Principal, ApiError> {
    let client = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|info| state.clients.resolve(info.0.ip(), request.headers()));
    state
        .auth
        .check(bearer(request.headers()), scope, client, &state.security)
}
#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;
    use ferry_common::api_tokens::hash_hex;

    use super::*;
    use crate::SecurityCounters;

    fn authenticator() -> Authenticator {
        let entries = [
            format!("ci:submit:{}", hash_hex("t-ci")),
            format!("viewer:read:{}", hash_hex("t-view")),
        ];
        Authenticator::new(ApiTokens::parse(&entries, None).unwrap())
    }

    #[test]
    fn the_bearer_scheme_is_read_case_insensitively() {
        let mut headers = HeaderMap::new();
        assert_eq!(bearer(&headers), None);
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer abc"),
        );
        assert_eq!(bearer(&headers), Some("abc"));
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("bearer  abc "),
        );
        assert_eq!(bearer(&headers), Some("abc"));
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert_eq!(bearer(&headers), None);
    }

    #[test]
    fn missing_unknown_and_out_of_scope_tokens_are_refused_and_counted() {
        let auth = authenticator();
        let counters = SecurityCounters::default();
        let ip = Some("203.0.113.7".parse().unwrap());
        let who = auth
            .check(Some("t-ci"), Scope::Submit, ip, &counters)
            .unwrap();
        assert_eq!(who.name, "ci");
        assert!(matches!(
            auth.check(None, Scope::Submit, ip, &counters),
            Err(ApiError::Unauthorized)
        ));
        assert!(matches!(
            auth.check(Some("t-guess"), Scope::Read, ip, &counters),
            Err(ApiError::Unauthorized)
        ));
        assert!(matches!(
            auth.check(Some("t-view"), Scope::Submit, ip, &counters),
            Err(ApiError::Forbidden)
        ));
        assert!(matches!(
            auth.check(Some("t-ci"), Scope::Admin, ip, &counters),
            Err(ApiError::Forbidden)
        ));
        let counts = counters.counts();
        assert_eq!((counts.bad_token, counts.forbidden), (1, 2));
    }

    #[test]
    fn refusals_say_nothing_about_tokens() {
        for refusal in [ApiError::Unauthorized, ApiError::Forbidden] {
            let response = refusal.into_response();
            let status = response.status();
            assert!(status == 401 || status == 403);
            if status == 401 {
                assert_eq!(response.headers()[header::WWW_AUTHENTICATE], "Bearer");
            }
        }
        assert_eq!(ApiError::Unauthorized.to_string(), "unauthorized");
        assert_eq!(ApiError::Forbidden.to_string(), "forbidden");
    }
}
