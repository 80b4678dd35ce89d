//! The public enrollment page: where the link in an enrollment's QR code leads. It explains, in
//! German and English, how to finish registration in a Matrix app, with the server address, the
//! username and the token ready to copy. Everything is rendered on the server and escaped; the
//! page loads only its own stylesheet and script, under a strict Content-Security-Policy.

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use feldpost_service::enrollment::{TokenState, token_state, valid_token};
use feldpost_service::ratelimit::Action;

use crate::AppState;
use crate::error::ApiResult;
use crate::extract::{ClientIp, Path};

const CSS: &str = include_str!("enrollment_page/enroll.css");
const JS: &str = include_str!("enrollment_page/enroll.js");

/// Only this page's own files; no inline code, no framing, no form posts, no referrer.
pub(crate) const CSP: &str = "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/_feldpost/enroll/{token}", get(page))
        .route("/_feldpost/enroll.css", get(css))
        .route("/_feldpost/enroll.js", get(js))
}

/// Escapes text for HTML element content and quoted attribute values.
pub(crate) fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Headers every Feldpost page carries.
pub(crate) fn page_headers(resp: &mut Response, csp: &'static str) {
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(csp),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

pub(crate) fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut r = ([(header::CONTENT_TYPE, content_type)], body).into_response();
    r.headers_mut().insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

async fn css() -> Response {
    asset("text/css; charset=utf-8", CSS)
}

async fn js() -> Response {
    asset("text/javascript; charset=utf-8", JS)
}

/// The address a Matrix app should use: the configured public URL or the one the phone used.
fn homeserver_url(state: &AppState, headers: &HeaderMap) -> String {
    if let Some(u) = &state.services.config.public_baseurl {
        return u.trim_end_matches('/').to_owned();
    }
    match headers.get(header::HOST).and_then(|h| h.to_str().ok()) {
        Some(host) => format!("http://{host}"),
        None => format!("http://{}", state.services.config.listen),
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn html(status: StatusCode, title: &str, body: &str) -> Response {
    let doc = format!(
        "<!DOCTYPE html>\n<html lang=\"de\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <meta name=\"referrer\" content=\"no-referrer\">\n\
         <title>{title}</title>\n<link rel=\"icon\" href=\"data:,\">\n<link rel=\"stylesheet\" href=\"/_feldpost/enroll.css\">\n\
         <script src=\"/_feldpost/enroll.js\" defer></script>\n</head>\n<body>\n<main>\n{body}</main>\n</body>\n</html>\n",
        title = escape(title),
    );
    let mut r = (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        doc,
    )
        .into_response();
    page_headers(&mut r, CSP);
    r
}

fn unusable(state: Option<TokenState>) -> Response {
    let (status, de, en) = match state {
        Some(TokenState::Used) => (
            StatusCode::GONE,
            "Diese Einladung wurde bereits verwendet.",
            "This invitation has already been used.",
        ),
        Some(TokenState::Expired) => (
            StatusCode::GONE,
            "Diese Einladung ist abgelaufen.",
            "This invitation has expired.",
        ),
        Some(TokenState::Revoked) => (
            StatusCode::GONE,
            "Diese Einladung wurde zurückgezogen.",
            "This invitation has been withdrawn.",
        ),
        Some(TokenState::Exhausted) => (
            StatusCode::CONFLICT,
            "Mit dieser Einladung wird gerade ein Konto angelegt.",
            "An account is being created with this invitation right now.",
        ),
        Some(TokenState::Valid) | None => (
            StatusCode::NOT_FOUND,
            "Diese Einladung ist ungültig.",
            "This invitation is not valid.",
        ),
    };
    let body = format!(
        "<h1><span lang=\"de\">Einladung nicht nutzbar</span> / <span lang=\"en\">Invitation not usable</span></h1>\n\
         <section lang=\"de\"><p>{de} Bitte wenden Sie sich an Ihre Administration, um eine neue zu erhalten.</p></section>\n\
         <section lang=\"en\"><p>{en} Please ask your administrators for a new one.</p></section>\n"
    );
    html(status, "Feldpost", &body)
}

/// One value with a copy button (the button appears when scripts run).
fn copy_field(id: &str, label: &str, value: &str) -> String {
    format!(
        "<div class=\"field\">\n<span class=\"label\" id=\"{id}-label\">{label}</span>\n\
         <code id=\"{id}\" aria-labelledby=\"{id}-label\">{value}</code>\n\
         <button type=\"button\" class=\"copy\" data-copy=\"{id}\" hidden>\
         <span lang=\"de\">Kopieren</span> / <span lang=\"en\">Copy</span></button>\n</div>\n",
        label = label,
        value = escape(value),
    )
}

async fn page(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    Path(token): Path<String>,
) -> ApiResult<Response> {
    let s = &state.services;
    s.rate_limiter
        .check(Action::Login, &format!("enroll-page:{ip}"))?;
    if !valid_token(&token) {
        return Ok(unusable(None));
    }
    let Some(t) = s.registration_tokens.find(&token).await? else {
        return Ok(unusable(None));
    };
    let now = now_ms();
    let st = token_state(&t, now);
    if st != TokenState::Valid {
        return Ok(unusable(Some(st)));
    }
    let server = homeserver_url(&state, &headers);
    let username = t.bound_localpart.clone();
    let user_id = username.as_ref().map(|u| format!("@{u}:{}", s.server_name));
    let minutes_left = t.expiry_time.map(|e| ((e - now).max(0) + 59_999) / 60_000);

    let mut fields = copy_field(
        "server",
        "<span lang=\"de\">Serveradresse</span> / <span lang=\"en\">Server address</span>",
        &server,
    );
    if let Some(u) = &username {
        fields.push_str(&copy_field(
            "username",
            "<span lang=\"de\">Benutzername</span> / <span lang=\"en\">Username</span>",
            u,
        ));
    }
    fields.push_str(&copy_field(
        "token",
        "<span lang=\"de\">Registrierungs-Token</span> / <span lang=\"en\">Registration token</span>",
        &t.token,
    ));

    let greeting = match (&t.displayname, &user_id) {
        (Some(d), Some(id)) => format!(
            "<p class=\"who\"><strong>{}</strong> ({})</p>\n",
            escape(d),
            escape(id)
        ),
        (None, Some(id)) => format!("<p class=\"who\"><strong>{}</strong></p>\n", escape(id)),
        _ => String::new(),
    };
    let validity = match minutes_left {
        Some(m) => format!(
            "<p class=\"validity\"><span lang=\"de\">Gültig für noch {m} Minute(n).</span> \
             <span lang=\"en\">Valid for {m} more minute(s).</span></p>\n"
        ),
        None => String::new(),
    };
    let (user_step_de, user_step_en) = match &username {
        Some(u) => (
            format!(
                "Geben Sie als Benutzernamen <code>{}</code> ein und wählen Sie ein eigenes Passwort.",
                escape(u)
            ),
            format!(
                "Enter <code>{}</code> as the username and choose a password of your own.",
                escape(u)
            ),
        ),
        None => (
            "Wählen Sie einen Benutzernamen und ein eigenes Passwort.".to_owned(),
            "Choose a username and a password of your own.".to_owned(),
        ),
    };
    let server_e = escape(&server);
    // An enrollment works once; a shared token may serve several people.
    let (once_de, once_en) = if t.uses_allowed == Some(1) {
        (
            "Dieser Link funktioniert nur einmal. Geben Sie ihn nicht weiter.",
            "This link works only once. Do not pass it on.",
        )
    } else {
        (
            "Geben Sie diesen Link nur an Personen weiter, für die er bestimmt ist.",
            "Pass this link on only to the people it is meant for.",
        )
    };
    let body = format!(
        "<h1><span lang=\"de\">Willkommen</span> / <span lang=\"en\">Welcome</span></h1>\n\
         {greeting}{validity}\
         <div class=\"fields\">\n{fields}</div>\n\
         <section lang=\"de\">\n<h2>So richten Sie Ihr Konto ein</h2>\n<ol>\n\
         <li>Installieren Sie eine Matrix-App aus dem App-Store Ihres Geräts.</li>\n\
         <li>Wählen Sie „Konto erstellen“ und ändern Sie den Server auf <code>{server_e}</code>.</li>\n\
         <li>{user_step_de}</li>\n\
         <li>Wenn die App nach einem Registrierungs-Token fragt, fügen Sie das Token von oben ein.</li>\n\
         </ol>\n<p>{once_de}</p>\n</section>\n\
         <section lang=\"en\">\n<h2>How to set up your account</h2>\n<ol>\n\
         <li>Install a Matrix app from your device's app store.</li>\n\
         <li>Choose “Create account” and change the server to <code>{server_e}</code>.</li>\n\
         <li>{user_step_en}</li>\n\
         <li>When the app asks for a registration token, paste the token from above.</li>\n\
         </ol>\n<p>{once_en}</p>\n</section>\n\
         <p class=\"status\" role=\"status\" aria-live=\"polite\"></p>\n"
    );
    Ok(html(
        StatusCode::OK,
        "Feldpost – Einladung / Invitation",
        &body,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_covers_markup_and_quotes() {
        assert_eq!(
            escape("<a href=\"x\" onclick='y'>&</a>"),
            "&lt;a href=&quot;x&quot; onclick=&#39;y&#39;&gt;&amp;&lt;/a&gt;"
        );
    }
}
