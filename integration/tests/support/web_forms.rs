//! The job server's web app driven through its HTML forms, as a browser without JavaScript
//! would: plain HTTP/1.0 on a fresh connection per request, a cookie jar, and every form posted
//! with the `csrf_token` read from the page that shows it.

use std::collections::BTreeMap;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// An answer from the web app.
pub struct Page {
    /// The HTTP status code.
    pub status: u16,
    /// The `Location` header of a redirect.
    pub location: Option<String>,
    /// The body as text.
    pub body: String,
}

/// One user's session with the web app at `http://<host>`.
pub struct FormClient {
    host: String,
    cookies: BTreeMap<String, String>,
}

impl FormClient {
    /// A client for the web app at `base_url` (`http://host:port`), with no cookies yet.
    pub fn new(base_url: &str) -> FormClient {
        let host = base_url
            .strip_prefix("http://")
            .expect("an http:// URL")
            .trim_end_matches('/');
        FormClient {
            host: host.to_owned(),
            cookies: BTreeMap::new(),
        }
    }

    /// `GET path`.
    pub async fn get(&mut self, path: &str) -> Page {
        self.request("GET", path, None).await
    }

    /// Opens `form_page`, then posts `fields` and the page's `csrf_token` to `action`.
    pub async fn submit(&mut self, form_page: &str, action: &str, fields: &[(&str, &str)]) -> Page {
        let page = self.get(form_page).await;
        assert_eq!(page.status, 200, "GET {form_page}: {}", page.body);
        let csrf = between(&page.body, r#"name="csrf_token" value=""#, "\"")
            .unwrap_or_else(|| panic!("no csrf_token on {form_page}: {}", page.body));
        let mut body = format!("csrf_token={}", url_encode(csrf));
        for (name, value) in fields {
            body.push_str(&format!("&{}={}", url_encode(name), url_encode(value)));
        }
        self.request("POST", action, Some(&body)).await
    }

    /// Signs in through the password form; panics unless the web app accepts it.
    pub async fn sign_in(&mut self, username: &str, password: &str) {
        let page = self
            .submit(
                "/login/",
                "/login/",
                &[("username", username), ("password", password)],
            )
            .await;
        assert_eq!(page.status, 303, "sign-in as {username}: {}", page.body);
    }

    /// Creates workspace `name` in `project` for branch `main` of the repository at
    /// `repo_url`; panics unless the web app accepts it.
    pub async fn create_workspace(&mut self, project: &str, name: &str, repo_url: &str) {
        let form = format!("/{project}/new-workspace/");
        let page = self
            .submit(
                &form,
                &form,
                &[
                    ("name", name),
                    ("repo_url", repo_url),
                    ("branch", "main"),
                    ("purpose", "An end-to-end test"),
                ],
            )
            .await;
        assert_eq!(page.status, 303, "new workspace {name}: {}", page.body);
    }

    /// Asks for `actions` of the workspace on `backend` through its Run jobs form; the web app
    /// sends the user to the workspace's job requests, where the new one is listed first.
    /// Returns its rap id.
    pub async fn run_jobs(
        &mut self,
        project: &str,
        workspace: &str,
        actions: &[&str],
        backend: &str,
    ) -> String {
        let form = format!("/{project}/{workspace}/run-jobs/");
        let mut fields: Vec<(&str, &str)> = actions
            .iter()
            .map(|action| ("requested_actions", *action))
            .collect();
        fields.push(("backend", backend));
        let ran = self.submit(&form, &form, &fields).await;
        assert_eq!(ran.status, 303, "run jobs: {}", ran.body);
        let logs_page = format!("/{project}/{workspace}/logs/");
        assert_eq!(ran.location.as_deref(), Some(logs_page.as_str()));
        let logs = self.get(&logs_page).await;
        between(
            &logs.body,
            &format!("<td><a href=\"/{project}/{workspace}/"),
            "/",
        )
        .unwrap_or_else(|| panic!("no job request listed: {}", logs.body))
        .to_owned()
    }

    async fn request(&mut self, method: &str, path: &str, form: Option<&str>) -> Page {
        let mut stream = tokio::net::TcpStream::connect(&self.host).await.unwrap();
        let mut request = format!("{method} {path} HTTP/1.0\r\nHost: {}\r\n", self.host);
        if !self.cookies.is_empty() {
            let jar: Vec<String> = self
                .cookies
                .iter()
                .map(|(name, value)| format!("{name}={value}"))
                .collect();
            request.push_str(&format!("Cookie: {}\r\n", jar.join("; ")));
        }
        if let Some(body) = form {
            request.push_str(&format!(
                "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            ));
        } else {
            request.push_str("\r\n");
        }
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
        let mut lines = head.lines();
        let status = lines
            .next()
            .and_then(|line| line.split_whitespace().nth(1))
            .and_then(|code| code.parse().ok())
            .unwrap_or_else(|| panic!("{method} {path}: not an HTTP response: {head}"));
        let mut location = None;
        for line in lines {
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            let value = value.trim();
            if name.eq_ignore_ascii_case("location") {
                location = Some(value.to_owned());
            } else if name.eq_ignore_ascii_case("set-cookie") {
                let pair = value.split(';').next().unwrap_or("");
                let (cookie, cookie_value) = pair.split_once('=').unwrap_or((pair, ""));
                if cookie_value.is_empty() || value.contains("Max-Age=0") {
                    self.cookies.remove(cookie);
                } else {
                    self.cookies
                        .insert(cookie.to_owned(), cookie_value.to_owned());
                }
            }
        }
        Page {
            status,
            location,
            body: body.to_owned(),
        }
    }
}

/// The text between the first `start` and the next `end` after it.
pub fn between<'a>(text: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let rest = &text[text.find(start)? + start.len()..];
    Some(&rest[..rest.find(end)?])
}

/// `application/x-www-form-urlencoded` encoding of one name or value.
fn url_encode(text: &str) -> String {
    let mut encoded = String::new();
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                encoded.push(byte as char)
            }
            b' ' => encoded.push('+'),
            _ => encoded.push_str(&format!("%{byte:02X}")),
        }
    }
    encoded
}
