//! Sessions, cookies, CSRF and flash messages. [`Ctx`] is the extractor every page takes: it
//! knows the signed-in user (if any), the CSRF token its forms must carry, and the flash
//! messages to show once.
//!
//! Session ids are 32 random bytes, stored only as their sha256, in an `HttpOnly`,
//! `SameSite=Lax` cookie (`Secure` when configured); a session ends after two weeks. Flash messages travel hex-encoded in a
//! short-lived cookie so a redirect can carry them without server state.

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use subtle::ConstantTimeEq;

use super::{AppError, AppState, FormPairs, field};
use crate::model::User;

pub const SESSION_COOKIE: &str = "rap_session";
pub const LOGIN_CSRF_COOKIE: &str = "rap_login_csrf";
pub const FLASH_COOKIE: &str = "rap_flash";
/// How long a sign-in lasts (Django's default session age, which the reference uses).
pub const SESSION_LIFETIME_SECS: i64 = 14 * 24 * 3600;

/// Per-request context for pages.
#[derive(Debug, Clone)]
pub struct Ctx {
    pub user: Option<User>,
    pub session_id: Option<String>,
    /// The token this page's forms carry (session-bound, or the sign-in double-submit value).
    pub csrf: String,
    pub flash: Vec<String>,
    pub secure_cookies: bool,
}

impl Ctx {
    /// A context with nobody signed in (error pages).
    pub fn anonymous() -> Self {
        Ctx {
            user: None,
            session_id: None,
            csrf: String::new(),
            flash: Vec::new(),
            secure_cookies: false,
        }
    }

    /// The signed-in user, or a redirect to the sign-in page.
    ///
    /// # Errors
    /// [`AppError::SignInRequired`] when nobody is signed in.
    pub fn require_user(&self) -> Result<&User, AppError> {
        self.user.as_ref().ok_or(AppError::SignInRequired)
    }

    /// The username shown in the navigation bar.
    pub fn username(&self) -> &str {
        self.user
            .as_ref()
            .map(|u| u.username.as_str())
            .unwrap_or("")
    }

    /// Checks a submitted form's `csrf_token` against this context's token, in constant time.
    ///
    /// # Errors
    /// [`AppError::Csrf`] on a missing or wrong token.
    pub fn check_csrf(&self, form: &FormPairs) -> Result<(), AppError> {
        let submitted = field(form, "csrf_token");
        if self.csrf.is_empty()
            || submitted.len() != self.csrf.len()
            || !bool::from(submitted.as_bytes().ct_eq(self.csrf.as_bytes()))
        {
            return Err(AppError::Csrf);
        }
        Ok(())
    }
}

/// 32 random bytes, hex.
pub fn random_token() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// The value of cookie `name` in a request.
pub fn cookie<'a>(parts: &'a Parts, name: &str) -> Option<&'a str> {
    parts
        .headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .find_map(|pair| {
            let (key, value) = pair.trim().split_once('=')?;
            (key == name).then_some(value)
        })
}

/// A `Set-Cookie` value with our attributes.
pub fn set_cookie(name: &str, value: &str, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!("{name}={value}; Path=/; HttpOnly; SameSite=Lax{secure}")
}

/// A `Set-Cookie` value that deletes the cookie.
pub fn clear_cookie(name: &str) -> String {
    format!("{name}=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0")
}

/// A flash cookie carrying `message`.
pub fn flash_cookie(message: &str, secure: bool) -> String {
    set_cookie(FLASH_COOKIE, &hex::encode(message.as_bytes()), secure)
}

impl FromRequestParts<AppState> for Ctx {
    type Rejection = AppError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let secure_cookies = state.config.secure_cookies;
        let flash = cookie(parts, FLASH_COOKIE)
            .and_then(|value| hex::decode(value).ok())
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .filter(|message| !message.is_empty())
            .map(|message| vec![message])
            .unwrap_or_default();
        if let Some(session_id) = cookie(parts, SESSION_COOKIE)
            && let Some(session) = state.store.session(session_id)?
        {
            if crate::model::now() - session.created_at > SESSION_LIFETIME_SECS {
                state.store.delete_session(session_id)?;
            } else if let Some(user) = state.store.user(&session.username)? {
                return Ok(Ctx {
                    user: Some(user),
                    session_id: Some(session_id.to_owned()),
                    csrf: session.csrf_token,
                    flash,
                    secure_cookies,
                });
            }
        }
        Ok(Ctx {
            user: None,
            session_id: None,
            csrf: cookie(parts, LOGIN_CSRF_COOKIE).unwrap_or("").to_owned(),
            flash,
            secure_cookies,
        })
    }
}
