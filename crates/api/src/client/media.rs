//! The content repository: uploads (direct, and to ids reserved with `/create`), authenticated
//! downloads and thumbnails, and the media config. Everything served carries headers that keep
//! uploaded content from running as a page of ours.
//!
//! The unauthenticated `/_matrix/media/v3/download` and `/thumbnail` endpoints are frozen as the
//! spec asks of servers since v1.12: media uploaded after the freeze is served only on the
//! authenticated endpoints, and as every upload to this server postdates it, they answer
//! `M_NOT_FOUND`. `/_matrix/media/v3/config` was always authenticated and is still served.

use std::time::Duration;

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, RequestExt, Router};
use bytes::BytesMut;
use feldpost_service::media::{
    DEFAULT_WAIT, MediaFile, MediaRecord, Thumbnail, ThumbnailMethod, ThumbnailSpec, UploadMeta,
};
use feldpost_service::{Error, ErrorKind};
use futures::{Stream, StreamExt};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Auth, Path, Query, qs};

pub fn routes(state: &AppState) -> Router<AppState> {
    let max = state.services.config.media.max_upload_size;
    let upload_limit = DefaultBodyLimit::max(usize::try_from(max).unwrap_or(usize::MAX));
    Router::new()
        .route("/_matrix/media/v3/upload", post(upload).layer(upload_limit))
        .route(
            "/_matrix/media/v3/upload/{server_name}/{media_id}",
            put(upload_to).layer(upload_limit),
        )
        .route("/_matrix/media/v1/create", post(create))
        .route("/_matrix/client/v1/media/config", get(config))
        .route("/_matrix/media/v3/config", get(config))
        .route(
            "/_matrix/client/v1/media/download/{server_name}/{media_id}",
            get(download),
        )
        .route(
            "/_matrix/client/v1/media/download/{server_name}/{media_id}/{file_name}",
            get(download_named),
        )
        .route(
            "/_matrix/client/v1/media/thumbnail/{server_name}/{media_id}",
            get(thumbnail),
        )
        .route(
            "/_matrix/media/v3/download/{server_name}/{media_id}",
            get(frozen),
        )
        .route(
            "/_matrix/media/v3/download/{server_name}/{media_id}/{file_name}",
            get(frozen),
        )
        .route(
            "/_matrix/media/v3/thumbnail/{server_name}/{media_id}",
            get(frozen),
        )
}

/// Content types the spec considers safe to render inline; everything else is an attachment.
const INLINE_TYPES: &[&str] = &[
    "text/css",
    "text/plain",
    "text/csv",
    "application/json",
    "application/ld+json",
    "image/jpeg",
    "image/gif",
    "image/png",
    "image/apng",
    "image/webp",
    "image/avif",
    "video/mp4",
    "video/webm",
    "video/ogg",
    "video/quicktime",
    "audio/mp4",
    "audio/webm",
    "audio/aac",
    "audio/mpeg",
    "audio/ogg",
    "audio/wave",
    "audio/wav",
    "audio/x-wav",
    "audio/x-pn-wav",
    "audio/flac",
    "audio/x-flac",
];

const CSP: &str = "sandbox; default-src 'none'; script-src 'none'; plugin-types application/pdf; \
                   style-src 'unsafe-inline'; media-src 'self'; object-src 'self';";

/// RFC 5987 `attr-char`s stay as they are; everything else in `filename*` is percent-encoded.
const ATTR_CHAR: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'!')
    .remove(b'#')
    .remove(b'$')
    .remove(b'&')
    .remove(b'+')
    .remove(b'-')
    .remove(b'.')
    .remove(b'^')
    .remove(b'_')
    .remove(b'`')
    .remove(b'|')
    .remove(b'~');

const CHUNK: usize = 64 * 1024;

#[derive(Deserialize, Default)]
#[serde(default)]
struct UploadQuery {
    filename: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct DownloadQuery {
    #[serde(deserialize_with = "qs::opt_u64")]
    timeout_ms: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ThumbnailQuery {
    #[serde(deserialize_with = "qs::opt_u64")]
    width: Option<u64>,
    #[serde(deserialize_with = "qs::opt_u64")]
    height: Option<u64>,
    method: Option<String>,
    #[serde(deserialize_with = "qs::opt_bool")]
    animated: Option<bool>,
    #[serde(deserialize_with = "qs::opt_u64")]
    timeout_ms: Option<u64>,
}

async fn config(State(state): State<AppState>, Auth(_): Auth) -> Json<Value> {
    Json(json!({"m.upload.size": state.services.media.max_upload_size()}))
}

async fn upload(
    State(state): State<AppState>,
    Auth(r): Auth,
    Query(q): Query<UploadQuery>,
    req: Request,
) -> ApiResult<Json<Value>> {
    let (meta, body) = upload_body(&state, q, req)?;
    let uri = state.services.media.upload(&r.user_id, meta, body).await?;
    Ok(Json(json!({"content_uri": uri})))
}

async fn create(State(state): State<AppState>, Auth(r): Auth) -> ApiResult<Json<Value>> {
    let (uri, expires) = state.services.media.create(&r.user_id).await?;
    Ok(Json(
        json!({"content_uri": uri, "unused_expires_at": expires}),
    ))
}

async fn upload_to(
    State(state): State<AppState>,
    Auth(r): Auth,
    Path((server_name, media_id)): Path<(String, String)>,
    Query(q): Query<UploadQuery>,
    req: Request,
) -> ApiResult<Json<Value>> {
    let (meta, body) = upload_body(&state, q, req)?;
    state
        .services
        .media
        .upload_to(&r.user_id, &server_name, &media_id, meta, body)
        .await?;
    Ok(Json(json!({})))
}

/// The upload's metadata and its body as a stream, limited by the route's `DefaultBodyLimit`.
fn upload_body(
    state: &AppState,
    q: UploadQuery,
    req: Request,
) -> ApiResult<(
    UploadMeta,
    impl Stream<Item = feldpost_service::Result<Vec<u8>>> + Unpin + Send + use<>,
)> {
    let headers = req.headers();
    // A declared length over the limit is refused before the body is read.
    if let Some(len) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
    {
        state.services.media.check_size(len)?;
    }
    let meta = UploadMeta {
        content_type: headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        filename: q.filename,
    };
    let body = req
        .into_limited_body()
        .into_data_stream()
        .map(|chunk| chunk.map(Vec::from).map_err(body_error));
    Ok((meta, body))
}

fn body_error(e: axum::Error) -> Error {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    while let Some(c) = cause {
        if c.is::<http_body_util::LengthLimitError>() {
            return Error::new(ErrorKind::TooLarge, "Upload too large");
        }
        cause = c.source();
    }
    Error::new(ErrorKind::Unknown, format!("Failed to read upload: {e}"))
}

/// Finds uploaded media, waiting for a reserved id's content for at most `timeout_ms` — but
/// not past shutdown.
async fn uploaded(
    state: &AppState,
    server_name: &str,
    media_id: &str,
    timeout_ms: Option<u64>,
) -> ApiResult<MediaRecord> {
    let media = &state.services.media;
    match media.content(server_name, media_id, Duration::ZERO).await {
        Err(e) if e.kind == ErrorKind::NotYetUploaded => {}
        other => return Ok(other?),
    }
    let wait = timeout_ms.map_or(DEFAULT_WAIT, Duration::from_millis);
    let mut shutdown = state.shutdown.clone();
    let stopped = async move {
        if shutdown.wait_for(|stop| *stop).await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        rec = media.content(server_name, media_id, wait) => Ok(rec?),
        () = stopped => Err(ApiError::new(ErrorKind::NotYetUploaded, "Content has not yet been uploaded")),
    }
}

async fn download(
    State(state): State<AppState>,
    Auth(_): Auth,
    Path((server_name, media_id)): Path<(String, String)>,
    Query(q): Query<DownloadQuery>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let rec = uploaded(&state, &server_name, &media_id, q.timeout_ms).await?;
    let file = state.services.media.open_content(rec).await?;
    serve_file(file, None, &headers).await
}

async fn download_named(
    State(state): State<AppState>,
    Auth(_): Auth,
    Path((server_name, media_id, file_name)): Path<(String, String, String)>,
    Query(q): Query<DownloadQuery>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let rec = uploaded(&state, &server_name, &media_id, q.timeout_ms).await?;
    let file = state.services.media.open_content(rec).await?;
    serve_file(file, Some(file_name), &headers).await
}

async fn thumbnail(
    State(state): State<AppState>,
    Auth(_): Auth,
    Path((server_name, media_id)): Path<(String, String)>,
    Query(q): Query<ThumbnailQuery>,
) -> ApiResult<Response> {
    let dimension = |v: Option<u64>, name: &str| -> ApiResult<u32> {
        match v {
            None => Err(ApiError::new(
                ErrorKind::MissingParam,
                format!("{name} is required"),
            )),
            Some(0) => Err(ApiError::new(
                ErrorKind::InvalidParam,
                format!("{name} must be positive"),
            )),
            // Anything beyond the image is the image itself: no need to tell large from huge.
            Some(n) => Ok(u32::try_from(n).unwrap_or(u32::MAX)),
        }
    };
    let method = match q.method.as_deref() {
        None | Some("scale") => ThumbnailMethod::Scale,
        Some("crop") => ThumbnailMethod::Crop,
        Some(other) => {
            return Err(ApiError::new(
                ErrorKind::InvalidParam,
                format!("Unknown thumbnail method {other:?}: expected crop or scale"),
            ));
        }
    };
    let spec = ThumbnailSpec {
        width: dimension(q.width, "width")?,
        height: dimension(q.height, "height")?,
        method,
        animated: q.animated,
    };
    let rec = uploaded(&state, &server_name, &media_id, q.timeout_ms).await?;
    let Thumbnail { content_type, data } = state.services.media.thumbnail(&rec, spec).await?;
    let ext = content_type.strip_prefix("image/").unwrap_or("png");
    let mut resp = (StatusCode::OK, data).into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Ok(v) = HeaderValue::from_str(&format!("inline; filename=\"thumbnail.{ext}\"")) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    protect(h);
    Ok(resp)
}

async fn frozen() -> ApiError {
    ApiError::new(
        ErrorKind::NotFound,
        "Unauthenticated media access is frozen: use /_matrix/client/v1/media",
    )
}

/// Headers on everything the repository serves: never sniffed, never scripted, embeddable by
/// web clients on other origins.
fn protect(h: &mut HeaderMap) {
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::HeaderName::from_static("cross-origin-resource-policy"),
        HeaderValue::from_static("cross-origin"),
    );
    // Content under a media id never changes.
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, max-age=86400"),
    );
}

/// `inline` only for types the spec lists as safe; the filename per RFC 6266, with an ASCII
/// fallback and the exact name in `filename*` when they differ.
fn disposition(content_type: &str, filename: Option<&str>) -> HeaderValue {
    let base = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let kind = if INLINE_TYPES.contains(&base.as_str()) {
        "inline"
    } else {
        "attachment"
    };
    let Some(name) = filename.filter(|n| !n.is_empty()) else {
        return HeaderValue::from_static(kind);
    };
    let fallback: String = name
        .chars()
        .map(|c| {
            if c.is_ascii() && !c.is_ascii_control() && c != '"' && c != '\\' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let value = if fallback == name {
        format!("{kind}; filename=\"{name}\"")
    } else {
        let exact = utf8_percent_encode(name, ATTR_CHAR);
        format!("{kind}; filename=\"{fallback}\"; filename*=utf-8''{exact}")
    };
    HeaderValue::from_str(&value).unwrap_or_else(|_| HeaderValue::from_static(kind))
}

/// A single `bytes=` range of a `size`-byte file: `Ok(None)` to send all of it, `Err` when the
/// range cannot be satisfied. Several ranges are answered with the whole file, as HTTP allows.
fn byte_range(headers: &HeaderMap, size: u64) -> Result<Option<(u64, u64)>, ()> {
    // Without validators of ours to compare, a conditional range cannot be honoured.
    if headers.contains_key(header::IF_RANGE) {
        return Ok(None);
    }
    let Some(spec) = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().strip_prefix("bytes="))
    else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let Some((start, end)) = spec.trim().split_once('-') else {
        return Ok(None);
    };
    let (start, end) = (start.trim(), end.trim());
    let range = if start.is_empty() {
        let Ok(suffix) = end.parse::<u64>() else {
            return Ok(None);
        };
        if suffix == 0 || size == 0 {
            return Err(());
        }
        (size.saturating_sub(suffix), size - 1)
    } else {
        let Ok(first) = start.parse::<u64>() else {
            return Ok(None);
        };
        let last = if end.is_empty() {
            size.saturating_sub(1)
        } else {
            match end.parse::<u64>() {
                Ok(l) if l >= first => l.min(size.saturating_sub(1)),
                _ => return Ok(None),
            }
        };
        if first >= size {
            return Err(());
        }
        (first, last)
    };
    Ok(Some(range))
}

async fn serve_file(
    media: MediaFile,
    name_override: Option<String>,
    req_headers: &HeaderMap,
) -> ApiResult<Response> {
    let MediaFile {
        content_type,
        filename,
        size,
        mut file,
    } = media;
    let content_type = content_type.unwrap_or_else(|| "application/octet-stream".into());
    let filename = name_override.or(filename);
    let (status, start, len) = match byte_range(req_headers, size) {
        Ok(None) => (StatusCode::OK, 0, size),
        Ok(Some((first, last))) => (StatusCode::PARTIAL_CONTENT, first, last - first + 1),
        Err(()) => {
            let mut resp = StatusCode::RANGE_NOT_SATISFIABLE.into_response();
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
                resp.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            protect(resp.headers_mut());
            return Ok(resp);
        }
    };
    if start > 0 {
        file.seek(std::io::SeekFrom::Start(start))
            .await
            .map_err(|e| Error::internal(format!("seeking media: {e}")))?;
    }
    let mut resp = Response::new(file_body(file.take(len)));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(&content_type)
            .unwrap_or_else(|_| HeaderValue::from_static("application/octet-stream")),
    );
    h.insert(
        header::CONTENT_DISPOSITION,
        disposition(&content_type, filename.as_deref()),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if status == StatusCode::PARTIAL_CONTENT
        && let Ok(v) = HeaderValue::from_str(&format!(
            "bytes {start}-{}/{size}",
            start + len.saturating_sub(1)
        ))
    {
        h.insert(header::CONTENT_RANGE, v);
    }
    protect(h);
    Ok(resp)
}

/// Streams a file in chunks rather than reading it into memory; stops at the first error.
fn file_body<R>(reader: R) -> Body
where
    R: tokio::io::AsyncRead + Unpin + Send + 'static,
{
    let chunks = futures::stream::unfold(Some(reader), |reader| async move {
        let mut reader = reader?;
        let mut buf = BytesMut::with_capacity(CHUNK);
        match reader.read_buf(&mut buf).await {
            Ok(0) => None,
            Ok(_) => Some((Ok(buf.freeze()), Some(reader))),
            Err(e) => Some((Err(e), None)),
        }
    });
    Body::from_stream(chunks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disposition_is_inline_only_for_safe_types() {
        assert_eq!(disposition("image/png", None), "inline");
        assert_eq!(disposition("Text/Plain; charset=utf-8", None), "inline");
        assert_eq!(
            disposition("text/html", Some("a.html")),
            "attachment; filename=\"a.html\""
        );
        assert_eq!(disposition("image/svg+xml", None), "attachment");
        assert_eq!(
            disposition("application/pdf", Some("Bericht \"Ä\".pdf")),
            "attachment; filename=\"Bericht ___.pdf\"; filename*=utf-8''Bericht%20%22%C3%84%22.pdf"
        );
    }

    #[test]
    fn ranges() {
        let h = |r: &str| {
            let mut m = HeaderMap::new();
            m.insert(header::RANGE, HeaderValue::from_str(r).unwrap());
            m
        };
        assert_eq!(byte_range(&HeaderMap::new(), 10), Ok(None));
        assert_eq!(byte_range(&h("bytes=2-4"), 10), Ok(Some((2, 4))));
        assert_eq!(byte_range(&h("bytes=2-"), 10), Ok(Some((2, 9))));
        assert_eq!(byte_range(&h("bytes=-3"), 10), Ok(Some((7, 9))));
        assert_eq!(byte_range(&h("bytes=5-100"), 10), Ok(Some((5, 9))));
        assert_eq!(byte_range(&h("bytes=10-"), 10), Err(()));
        assert_eq!(byte_range(&h("bytes=0-1,3-4"), 10), Ok(None));
        assert_eq!(byte_range(&h("items=0-1"), 10), Ok(None));
    }
}
