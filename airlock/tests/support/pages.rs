//! Pages through `tower::ServiceExt::oneshot` (no socket for the web app): a signed-in
//! "browser" holding the session cookie and CSRF token, signed in through the in-test
//! ReleaseService's single-use tokens. Shared by the page tests and the benches.

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use rap_airlock::web;
use rap_proto::pb::jobserver::v1 as pb;
use tower::ServiceExt;

use super::FakeJobServer;

/// One answer: status, headers and the body as text.
pub struct Page {
    pub status: StatusCode,
    pub headers: axum::http::HeaderMap,
    pub body: String,
}

/// Sends one request to the app.
pub async fn send(app: &Router, request: Request<Body>) -> Page {
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    Page {
        status,
        headers,
        body: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

/// The value of the first hidden input called `name` in `html`.
pub fn hidden_value(html: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html
        .find(&marker)
        .unwrap_or_else(|| panic!("no {name} in {html}"))
        + marker.len();
    html[start..].split('"').next().unwrap().to_string()
}

/// A form body, `application/x-www-form-urlencoded`.
pub fn encode(fields: &[(&str, &str)]) -> String {
    fields
        .iter()
        .map(|(key, value)| format!("{key}={}", web::encode_component(value)))
        .collect::<Vec<_>>()
        .join("&")
}

/// A signed-in browser: the session cookie and the session's CSRF token.
pub struct Browser {
    pub cookie: String,
    pub csrf: String,
}

impl Browser {
    pub async fn get(&self, app: &Router, path: &str) -> Page {
        let request = Request::get(path)
            .header(header::COOKIE, &self.cookie)
            .body(Body::empty())
            .unwrap();
        send(app, request).await
    }

    /// POSTs the form with the session's CSRF token added.
    pub async fn post(&self, app: &Router, path: &str, fields: &[(&str, &str)]) -> Page {
        let mut all = vec![("csrf", self.csrf.as_str())];
        all.extend_from_slice(fields);
        let request = Request::post(path)
            .header(header::COOKIE, &self.cookie)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(encode(&all)))
            .unwrap();
        send(app, request).await
    }
}

/// Signs `user` in through the login form with a single-use token the fake job server
/// accepts once.
pub async fn sign_in(app: &Router, fake: &FakeJobServer, user: pb::Level4User) -> Browser {
    let username = user.username.clone();
    {
        let mut seen = fake.seen.lock().unwrap();
        seen.logins
            .insert((username.clone(), "one-time".to_string()), user.clone());
        seen.users.insert(username.clone(), user);
    }
    let page = send(app, Request::get("/login/").body(Body::empty()).unwrap()).await;
    assert_eq!(page.status, StatusCode::OK);
    let login_csrf = hidden_value(&page.body, "csrf");
    let login_cookie = page.headers[header::SET_COOKIE]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let body = encode(&[
        ("csrf", &login_csrf),
        ("user", &username),
        ("token", "one-time"),
        ("next", "/workspaces/"),
    ]);
    let request = Request::post("/login/")
        .header(header::COOKIE, &login_cookie)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(body))
        .unwrap();
    let page = send(app, request).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    let set_cookie = page.headers[header::SET_COOKIE]
        .to_str()
        .unwrap()
        .to_string();
    assert!(set_cookie.contains("HttpOnly") && set_cookie.contains("SameSite=Lax"));
    let cookie = set_cookie.split(';').next().unwrap().to_string();
    let mut browser = Browser {
        cookie,
        csrf: String::new(),
    };
    let page = browser.get(app, "/workspaces/").await;
    assert_eq!(page.status, StatusCode::OK);
    browser.csrf = hidden_value(&page.body, "csrf");
    browser
}
