//! Sign-in, sign-out and the settings page (where Airlock login tokens are generated).

use askama::Template;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};

use super::session::{self, LOGIN_CSRF_COOKIE, SESSION_COOKIE, random_token};
use super::{AppError, AppState, Ctx, FormPairs, field, render};
use crate::accounts;
use crate::model::{Session, now};

/// Routes of this area.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/login/", get(login_page).post(login))
        .route("/logout/", post(logout))
        .route("/settings/", get(settings))
        .route("/settings/token/", post(generate_token))
}

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    ctx: Ctx,
    username: String,
    error: String,
}

/// The reference's (Django's) message for a failed sign-in.
pub const BAD_LOGIN: &str =
    "Please enter a correct username and password. Note that both fields may be case-sensitive.";

async fn login_page(mut ctx: Ctx) -> Result<Response, AppError> {
    if ctx.user.is_some() {
        return Ok(Redirect::to("/").into_response());
    }
    let fresh = ctx.csrf.is_empty();
    if fresh {
        ctx.csrf = random_token();
    }
    let mut response = render(
        &ctx,
        &LoginPage {
            ctx: ctx.clone(),
            username: String::new(),
            error: String::new(),
        },
    )?;
    if fresh {
        let cookie = session::set_cookie(LOGIN_CSRF_COOKIE, &ctx.csrf, ctx.secure_cookies);
        if let Ok(value) = cookie.parse() {
            response.headers_mut().append(header::SET_COOKIE, value);
        }
    }
    Ok(response)
}

async fn login(
    State(state): State<AppState>,
    ctx: Ctx,
    Form(form): Form<FormPairs>,
) -> Result<Response, AppError> {
    ctx.check_csrf(&form)?;
    let username = field(&form, "username");
    let password = field(&form, "password");
    let user = state.store.user(&username)?;
    let stored = user
        .as_ref()
        .map(|u| u.password_hash.clone())
        .unwrap_or_default();
    // argon2 takes tens of milliseconds of CPU: keep it off the async threads.
    let ok = tokio::task::spawn_blocking(move || accounts::verify_password(&password, &stored))
        .await
        .unwrap_or(false);
    let Some(user) = user.filter(|_| ok) else {
        return render(
            &ctx,
            &LoginPage {
                ctx: ctx.clone(),
                username,
                error: BAD_LOGIN.to_owned(),
            },
        );
    };
    let session_id = random_token();
    state.store.put_session(
        &session_id,
        &Session {
            username: user.username.clone(),
            csrf_token: random_token(),
            created_at: now(),
        },
    )?;
    let mut response = Redirect::to("/").into_response();
    let headers = response.headers_mut();
    for cookie in [
        session::set_cookie(SESSION_COOKIE, &session_id, ctx.secure_cookies),
        session::clear_cookie(LOGIN_CSRF_COOKIE),
    ] {
        if let Ok(value) = cookie.parse() {
            headers.append(header::SET_COOKIE, value);
        }
    }
    Ok(response)
}

async fn logout(
    State(state): State<AppState>,
    ctx: Ctx,
    Form(form): Form<FormPairs>,
) -> Result<Response, AppError> {
    ctx.check_csrf(&form)?;
    if let Some(session_id) = &ctx.session_id {
        state.store.delete_session(session_id)?;
    }
    let mut response = Redirect::to("/").into_response();
    if let Ok(value) = session::clear_cookie(SESSION_COOKIE).parse() {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    Ok(response)
}

#[derive(Template)]
#[template(path = "settings.html")]
struct SettingsPage {
    ctx: Ctx,
    fullname: String,
    email: String,
    may_generate_token: bool,
    token: String,
}

async fn settings(State(state): State<AppState>, ctx: Ctx) -> Result<Response, AppError> {
    let user = ctx.require_user()?;
    let may_generate_token = !state.store.backends_of_user(&user.username)?.is_empty();
    render(
        &ctx,
        &SettingsPage {
            fullname: user.fullname.clone(),
            email: user.email.clone(),
            may_generate_token,
            token: String::new(),
            ctx: ctx.clone(),
        },
    )
}

/// Generates a single-use Airlock login token and shows it once (A3). Only users with at least
/// one backend membership may have one.
async fn generate_token(
    State(state): State<AppState>,
    ctx: Ctx,
    Form(form): Form<FormPairs>,
) -> Result<Response, AppError> {
    ctx.check_csrf(&form)?;
    let user = ctx.require_user()?;
    if state.store.backends_of_user(&user.username)?.is_empty() {
        return Err(AppError::NotFound);
    }
    let (token, stored) = accounts::new_login_token(now());
    let mut updated = user.clone();
    updated.login_token = Some(stored);
    state.store.put_user(&updated)?;
    render(
        &ctx,
        &SettingsPage {
            fullname: user.fullname.clone(),
            email: user.email.clone(),
            may_generate_token: true,
            token,
            ctx: ctx.clone(),
        },
    )
}
