//! Sessions (spec B2): an opaque random token in the `airlock-sessionid` cookie (HttpOnly,
//! SameSite=Lax, Secure when served over TLS) naming a stored [`SessionRecord`] with the
//! user's job-server details and the CSRF token of the session's forms. The [`Ctx`]
//! extractor loads it, re-authorises the user with the job server when the details are
//! older than the configured timeout (keeping the old ones if that fails), and slides the
//! expiry.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use prost::Message;
use rand::RngCore;
use rap_proto::pb::jobserver::v1::Level4User;
use subtle::ConstantTimeEq;

use super::{AppError, AppState, now_secs};
use crate::jobserver::{user_from_pb, user_to_pb};
use crate::store::SessionRecord;
use crate::user::User;

/// The session cookie's name (the reference's).
pub const SESSION_COOKIE: &str = "airlock-sessionid";
/// The sign-in form's double-submit CSRF cookie.
pub const LOGIN_CSRF_COOKIE: &str = "airlock-login-csrf";

/// The signed-in user and their session, for a handler.
#[derive(Debug, Clone)]
pub struct Ctx {
    pub user: User,
    pub token: String,
    pub csrf: String,
    /// A message from the previous action, shown once.
    pub flash: String,
}

impl Ctx {
    /// Checks a submitted form's CSRF token against the session's, in constant time.
    ///
    /// # Errors
    /// [`AppError::Csrf`] when they differ.
    pub fn check_csrf(&self, submitted: &str) -> Result<(), AppError> {
        if bool::from(self.csrf.as_bytes().ct_eq(submitted.as_bytes())) {
            return Ok(());
        }
        Err(AppError::Csrf)
    }
}

/// 32 random bytes as hex.
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// A cookie's value from the request's `Cookie` headers.
pub fn cookie(headers: &axum::http::HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.to_string())
}

/// A `Set-Cookie` value.
pub fn set_cookie(name: &str, value: &str, max_age: i64, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!("{name}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age}{secure}")
}

/// Encodes a user for the session record.
pub fn encode_user(user: &User) -> String {
    hex::encode(user_to_pb(user).encode_to_vec())
}

fn decode_user(text: &str) -> Option<User> {
    let bytes = hex::decode(text).ok()?;
    Level4User::decode(bytes.as_slice()).ok().map(user_from_pb)
}

impl FromRequestParts<AppState> for Ctx {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Ctx, AppError> {
        let next = parts
            .uri
            .path_and_query()
            .map(|pq| pq.as_str().to_string())
            .unwrap_or_else(|| "/".to_string());
        let sign_in = || AppError::SignInRequired { next: next.clone() };
        let Some(token) = cookie(&parts.headers, SESSION_COOKIE) else {
            return Err(sign_in());
        };
        let Some(mut session) = state.store.session(&token)? else {
            return Err(sign_in());
        };
        let now = now_secs();
        if now > session.expires_at {
            state.store.delete_session(&token)?;
            return Err(sign_in());
        }
        let Some(mut user) = decode_user(&session.user_json) else {
            state.store.delete_session(&token)?;
            return Err(sign_in());
        };
        if now - session.last_refresh > state.config.authz_timeout_secs {
            match state.link.authorise(&user.username).await {
                Ok(fresh) => {
                    user = fresh;
                    session.user_json = encode_user(&user);
                    session.last_refresh = now;
                }
                // The reference keeps the old details when the refresh fails.
                Err(error) => tracing::warn!(user = %user.username, %error, "re-authorising"),
            }
        }
        let flash = session.flash.take().unwrap_or_default();
        session.expires_at = now + state.config.session_age_secs;
        state.store.put_session(&token, &session)?;
        Ok(Ctx {
            user,
            token,
            csrf: session.csrf_token,
            flash,
        })
    }
}

/// Stores a one-shot message for the session's next page.
///
/// # Errors
/// Storage.
pub fn set_flash(state: &AppState, ctx: &Ctx, message: &str) -> Result<(), AppError> {
    if let Some(mut session) = state.store.session(&ctx.token)? {
        session.flash = Some(message.to_string());
        state.store.put_session(&ctx.token, &session)?;
    }
    Ok(())
}

/// A new session record for a freshly authenticated user.
pub fn new_session(user: &User, age_secs: i64) -> SessionRecord {
    let now = now_secs();
    SessionRecord {
        version: 1,
        username: user.username.clone(),
        user_json: encode_user(user),
        csrf_token: random_token(),
        last_refresh: now,
        expires_at: now + age_secs,
        flash: None,
    }
}
