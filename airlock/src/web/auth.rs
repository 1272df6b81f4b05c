//! Sign in with a single-use token generated on the job server, and sign out (spec B2).

use askama::Template;
use axum::Router;
use axum::extract::{Form, Query, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use subtle::ConstantTimeEq;

use super::session::{
    Ctx, LOGIN_CSRF_COOKIE, SESSION_COOKIE, cookie, new_session, random_token, set_cookie,
};
use super::{AppError, AppState, render};
use crate::jobserver::LinkError;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/workspaces/") }))
        .route("/login/", get(login_page).post(login))
        .route("/logout/", post(logout))
}

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    csrf: String,
    next: String,
    user: String,
    error: String,
}

#[derive(Deserialize)]
struct NextQuery {
    #[serde(default)]
    next: String,
}

/// Only internal paths: never redirect off-site after sign-in.
fn safe_next(next: &str) -> String {
    if next.starts_with('/') && !next.starts_with("//") && !next.contains('\\') {
        return next.to_string();
    }
    "/workspaces/".to_string()
}

fn login_response(page: &LoginPage, secure: bool) -> Result<Response, AppError> {
    let mut response = render(page)?;
    let value = set_cookie(LOGIN_CSRF_COOKIE, &page.csrf, 3600, secure);
    if let Ok(value) = value.parse() {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    Ok(response)
}

async fn login_page(
    State(state): State<AppState>,
    Query(query): Query<NextQuery>,
) -> Result<Response, AppError> {
    let page = LoginPage {
        csrf: random_token(),
        next: safe_next(&query.next),
        user: String::new(),
        error: String::new(),
    };
    login_response(&page, state.config.secure_cookies)
}

#[derive(Deserialize)]
struct LoginForm {
    user: String,
    token: String,
    #[serde(default)]
    next: String,
    csrf: String,
}

async fn login(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Result<Response, AppError> {
    let expected = cookie(&headers, LOGIN_CSRF_COOKIE).unwrap_or_default();
    if expected.is_empty() || !bool::from(expected.as_bytes().ct_eq(form.csrf.as_bytes())) {
        return Err(AppError::Csrf);
    }
    let next = safe_next(&form.next);
    let user = match state
        .link
        .authenticate(form.user.trim(), form.token.trim())
        .await
    {
        Ok(user) => user,
        Err(error) => {
            let message = match error {
                LinkError::Denied(_) => "Invalid user or token",
                LinkError::Unavailable(_) => "Could not connect to the job server",
                _ => "Error when logging in",
            };
            tracing::info!(user = %form.user, %error, "sign-in failed");
            let page = LoginPage {
                csrf: random_token(),
                next,
                user: form.user,
                error: message.to_string(),
            };
            return login_response(&page, state.config.secure_cookies);
        }
    };
    let token = random_token();
    let session = new_session(&user, state.config.session_age_secs);
    state.store.put_session(&token, &session)?;
    let mut response = Redirect::to(&next).into_response();
    let value = set_cookie(
        SESSION_COOKIE,
        &token,
        state.config.session_age_secs,
        state.config.secure_cookies,
    );
    if let Ok(value) = value.parse() {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    Ok(response)
}

#[derive(Deserialize)]
struct CsrfForm {
    csrf: String,
}

async fn logout(
    State(state): State<AppState>,
    ctx: Ctx,
    Form(form): Form<CsrfForm>,
) -> Result<Response, AppError> {
    ctx.check_csrf(&form.csrf)?;
    state.store.delete_session(&ctx.token)?;
    let mut response = Redirect::to("/login/").into_response();
    let value = set_cookie(SESSION_COOKIE, "", 0, state.config.secure_cookies);
    if let Ok(value) = value.parse() {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    Ok(response)
}
