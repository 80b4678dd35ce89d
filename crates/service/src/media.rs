//! The content repository: uploads stored once per SHA-256 under `<data_dir>/media`, media ids
//! reserved before their content arrives, downloads, and thumbnails cached on disk.

use std::collections::HashMap;
use std::fs;
use std::io::{BufReader, Cursor, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use feldpost_storage::MediaRecord;
use feldpost_storage::Store;
use futures::{Stream, StreamExt};
use image::codecs::jpeg::JpegEncoder;
use image::error::ImageError;
use image::imageops::FilterType;
use image::metadata::Orientation;
use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, Limits};
use parking_lot::Mutex;
use ruma::{OwnedServerName, OwnedUserId, UserId};
use sha2::{Digest, Sha256};
use tokio::sync::{Notify, Semaphore};

use crate::accounts::random_id;
use crate::rooms::append::now_ms;
use crate::{Error, ErrorKind, Result};

/// How long a media id from `/create` stays reserved for its upload (the spec's suggestion).
pub const PENDING_EXPIRY_MS: i64 = 24 * 60 * 60 * 1000;
/// Reserved, not yet uploaded media ids one user may hold at once.
const MAX_PENDING_PER_USER: usize = 16;
/// Longest a download may wait for content that has not been uploaded yet.
pub const MAX_WAIT: Duration = Duration::from_secs(60);
/// The wait a client gets when it names none (the spec's default).
pub const DEFAULT_WAIT: Duration = Duration::from_secs(20);
/// Images above this many pixels are not decoded: a few kilobytes of PNG can claim gigapixels.
const MAX_THUMBNAIL_PIXELS: u64 = 64 * 1024 * 1024;
/// Memory one decode may take for its pixel buffer.
const MAX_DECODE_BYTES: u64 = 256 * 1024 * 1024;
const MAX_FILENAME_BYTES: usize = 1024;
const MAX_CONTENT_TYPE_BYTES: usize = 255;
const JPEG_QUALITY: u8 = 85;
/// Bytes gathered from the network before one trip to the blocking pool writes them.
const WRITE_BATCH: usize = 256 * 1024;

/// What an uploader says about a file.
#[derive(Debug, Clone, Default)]
pub struct UploadMeta {
    pub content_type: Option<String>,
    pub filename: Option<String>,
}

/// Stored content, ready to stream to a client.
#[derive(Debug)]
pub struct MediaFile {
    pub content_type: Option<String>,
    pub filename: Option<String>,
    pub size: u64,
    pub file: tokio::fs::File,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThumbnailMethod {
    Scale,
    Crop,
}

impl ThumbnailMethod {
    fn as_str(self) -> &'static str {
        match self {
            ThumbnailMethod::Scale => "scale",
            ThumbnailMethod::Crop => "crop",
        }
    }
}

/// What a client asked for: the minimum size it wants.
#[derive(Debug, Clone, Copy)]
pub struct ThumbnailSpec {
    pub width: u32,
    pub height: u32,
    pub method: ThumbnailMethod,
    pub animated: Option<bool>,
}

#[derive(Debug)]
pub struct Thumbnail {
    pub content_type: &'static str,
    pub data: Vec<u8>,
}

pub struct Media {
    store: Arc<dyn Store>,
    server_name: OwnedServerName,
    root: PathBuf,
    max_upload_size: u64,
    /// Woken whenever reserved media gets its content, for downloads that wait for it.
    uploaded: Notify,
    /// Reserved media ids per user with their expiry. Only bounds reservations; a restart
    /// forgets it, which merely resets the bound.
    pending: Mutex<HashMap<OwnedUserId, Vec<(String, i64)>>>,
    /// Decoding is CPU- and memory-heavy: bound how many run at once.
    thumbnailing: Semaphore,
}

impl Media {
    /// Prepares `root` (removing temporary files a crash left behind).
    pub fn open(
        store: Arc<dyn Store>,
        server_name: OwnedServerName,
        root: PathBuf,
        max_upload_size: u64,
    ) -> Result<Self> {
        let tmp = root.join("tmp");
        if tmp.exists() {
            fs::remove_dir_all(&tmp).map_err(|e| io_error("clearing media temp directory", e))?;
        }
        fs::create_dir_all(&tmp).map_err(|e| io_error("creating media directory", e))?;
        let workers = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)
            .min(4);
        Ok(Self {
            store,
            server_name,
            root,
            max_upload_size,
            uploaded: Notify::new(),
            pending: Mutex::new(HashMap::new()),
            thumbnailing: Semaphore::new(workers),
        })
    }

    pub fn max_upload_size(&self) -> u64 {
        self.max_upload_size
    }

    /// `M_TOO_LARGE` when a declared body length is over the limit, before reading any of it.
    pub fn check_size(&self, len: u64) -> Result<()> {
        if len > self.max_upload_size {
            return Err(too_large(self.max_upload_size));
        }
        Ok(())
    }

    /// Stores an upload and returns its `mxc://` URI.
    pub async fn upload<S>(&self, uploader: &UserId, meta: UploadMeta, body: S) -> Result<String>
    where
        S: Stream<Item = Result<Vec<u8>>> + Unpin,
    {
        let meta = clean_meta(meta)?;
        let (hash, size) = self.store_content(body).await?;
        let media_id = random_id(24);
        self.store
            .insert_media(MediaRecord {
                media_id: media_id.clone(),
                content_hash: hash,
                content_type: meta.content_type,
                filename: meta.filename,
                size,
                uploader: uploader.to_string(),
                created_ms: now_ms(),
            })
            .await?;
        Ok(self.mxc(&media_id))
    }

    /// Reserves a media id for a later upload: its `mxc://` URI and when the reservation lapses.
    pub async fn create(&self, uploader: &UserId) -> Result<(String, i64)> {
        let now = now_ms();
        let media_id = random_id(24);
        let expires = now + PENDING_EXPIRY_MS;
        {
            let mut pending = self.pending.lock();
            let mine = pending.entry(uploader.to_owned()).or_default();
            mine.retain(|(_, exp)| *exp > now);
            if mine.len() >= MAX_PENDING_PER_USER {
                let soonest = mine.iter().map(|(_, exp)| *exp).min().unwrap_or(expires);
                return Err(Error::new(
                    ErrorKind::LimitExceeded {
                        retry_after_ms: u64::try_from(soonest - now).unwrap_or(0),
                    },
                    "Too many pending uploads",
                ));
            }
            mine.push((media_id.clone(), expires));
        }
        let inserted = self
            .store
            .insert_media(MediaRecord {
                media_id: media_id.clone(),
                content_hash: String::new(),
                content_type: None,
                filename: None,
                size: 0,
                uploader: uploader.to_string(),
                created_ms: now,
            })
            .await;
        if let Err(e) = inserted {
            self.forget_pending(uploader, &media_id);
            return Err(e.into());
        }
        Ok((self.mxc(&media_id), expires))
    }

    /// Uploads the content of a media id reserved by `create`.
    pub async fn upload_to<S>(
        &self,
        uploader: &UserId,
        server_name: &str,
        media_id: &str,
        meta: UploadMeta,
        body: S,
    ) -> Result<()>
    where
        S: Stream<Item = Result<Vec<u8>>> + Unpin,
    {
        self.check_local(server_name, media_id)?;
        let meta = clean_meta(meta)?;
        // Refuse before reading a byte of the body.
        let rec = self
            .store
            .get_media(media_id)
            .await?
            .ok_or_else(unknown_media)?;
        if rec.uploader != uploader.as_str() {
            return Err(Error::forbidden(
                "This media id was created by another user",
            ));
        }
        if !rec.content_hash.is_empty() {
            return Err(already_uploaded());
        }
        if expired(&rec) {
            return Err(unknown_media());
        }
        let (hash, size) = self.store_content(body).await?;
        let done = self
            .store
            .complete_media(MediaRecord {
                media_id: media_id.to_owned(),
                content_hash: hash,
                content_type: meta.content_type,
                filename: meta.filename,
                size,
                uploader: uploader.to_string(),
                created_ms: rec.created_ms,
            })
            .await?;
        if !done {
            // A concurrent upload to the same id won.
            return Err(already_uploaded());
        }
        self.forget_pending(uploader, media_id);
        self.uploaded.notify_waiters();
        Ok(())
    }

    /// Opens stored content for streaming.
    pub async fn open_content(&self, rec: MediaRecord) -> Result<MediaFile> {
        let path = self.content_path(&rec.content_hash)?;
        let file = tokio::fs::File::open(&path)
            .await
            .map_err(|e| io_error("opening media content", e))?;
        let size = file
            .metadata()
            .await
            .map_err(|e| io_error("reading media metadata", e))?
            .len();
        Ok(MediaFile {
            content_type: rec.content_type,
            filename: rec.filename,
            size,
            file,
        })
    }

    /// A thumbnail of image content, generated once per size and method and then cached.
    pub async fn thumbnail(&self, rec: &MediaRecord, spec: ThumbnailSpec) -> Result<Thumbnail> {
        if spec.width == 0 || spec.height == 0 {
            return Err(Error::invalid_param("width and height must be positive"));
        }
        let original = self.content_path(&rec.content_hash)?;
        let cache_dir = self.root.join("thumbnails").join(shard(&rec.content_hash));
        let hash = rec.content_hash.clone();
        let _permit = self
            .thumbnailing
            .acquire()
            .await
            .map_err(|_| Error::internal("thumbnailer closed"))?;
        blocking(move || render_thumbnail(&original, &cache_dir, &hash, spec)).await
    }

    fn mxc(&self, media_id: &str) -> String {
        format!("mxc://{}/{media_id}", self.server_name)
    }

    fn forget_pending(&self, uploader: &UserId, media_id: &str) {
        let mut pending = self.pending.lock();
        if let Some(mine) = pending.get_mut(uploader) {
            mine.retain(|(id, _)| id != media_id);
            if mine.is_empty() {
                pending.remove(uploader);
            }
        }
    }

    /// Only our own media exists here (there is no federation to fetch from), and only ids of
    /// the spec's alphabet: nothing else can reach the file system.
    fn check_local(&self, server_name: &str, media_id: &str) -> Result<()> {
        if server_name != self.server_name.as_str() || !valid_media_id(media_id) {
            return Err(unknown_media());
        }
        Ok(())
    }

    /// Local media with its content, waiting up to `wait` (capped) for a reserved id's upload:
    /// `M_NOT_YET_UPLOADED` when it does not arrive in time.
    pub async fn content(
        &self,
        server_name: &str,
        media_id: &str,
        wait: Duration,
    ) -> Result<MediaRecord> {
        self.check_local(server_name, media_id)?;
        let deadline = tokio::time::Instant::now() + wait.min(MAX_WAIT);
        loop {
            // Registered before the lookup so that an upload between the two still wakes us.
            let notified = self.uploaded.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let rec = self
                .store
                .get_media(media_id)
                .await?
                .ok_or_else(unknown_media)?;
            if !rec.content_hash.is_empty() {
                // Quarantined by an operator: gone, as far as anyone downloading can tell.
                if self.store.media_quarantined_by(media_id).await?.is_some() {
                    return Err(unknown_media());
                }
                return Ok(rec);
            }
            if expired(&rec) {
                return Err(unknown_media());
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Err(Error::new(
                    ErrorKind::NotYetUploaded,
                    "Content has not yet been uploaded",
                ));
            }
        }
    }

    fn content_path(&self, hash: &str) -> Result<PathBuf> {
        if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Error::internal(format!("malformed content hash {hash:?}")));
        }
        Ok(self.root.join(shard(hash)).join(hash))
    }

    /// Streams a body to a temporary file while hashing it, then moves it to its content
    /// address (or drops it when that content is already stored). Returns hash and size.
    ///
    /// Writes go to the blocking pool a batch at a time, so a slow client holds no thread
    /// while its bytes trickle in.
    async fn store_content<S>(&self, mut body: S) -> Result<(String, i64)>
    where
        S: Stream<Item = Result<Vec<u8>>> + Unpin,
    {
        let tmp = self.root.join("tmp").join(random_id(32));
        let mut sink = blocking(move || Sink::create(tmp)).await?;
        let mut batch = Vec::with_capacity(WRITE_BATCH);
        let mut size = 0u64;
        while let Some(chunk) = body.next().await {
            // An early return drops the sink, and with it the temporary file.
            let chunk = chunk?;
            size += chunk.len() as u64;
            if size > self.max_upload_size {
                return Err(too_large(self.max_upload_size));
            }
            batch.extend_from_slice(&chunk);
            if batch.len() >= WRITE_BATCH {
                let data = std::mem::replace(&mut batch, Vec::with_capacity(WRITE_BATCH));
                sink = blocking(move || sink.write(&data).map(|()| sink)).await?;
            }
        }
        let staged = blocking(move || {
            sink.write(&batch)?;
            sink.finish()
        })
        .await?;
        let hash = staged.hash.clone();
        let dest = self.content_path(&hash)?;
        let size = i64::try_from(staged.size).map_err(|_| too_large(self.max_upload_size))?;
        blocking(move || staged.commit(&dest)).await?;
        Ok((hash, size))
    }
}

/// A fully written, fsynced temporary file; removed unless committed.
struct Staged {
    path: PathBuf,
    hash: String,
    size: u64,
    committed: bool,
}

impl Staged {
    fn commit(mut self, dest: &Path) -> Result<()> {
        if dest.exists() {
            // Same hash, same bytes: keep the copy we have.
            return Ok(());
        }
        let dir = dest
            .parent()
            .ok_or_else(|| Error::internal("content path without a directory"))?;
        fs::create_dir_all(dir).map_err(|e| io_error("creating media directory", e))?;
        fs::rename(&self.path, dest).map_err(|e| io_error("storing media", e))?;
        self.committed = true;
        // The rename is durable only once the directory entry is.
        fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io_error("syncing media directory", e))?;
        Ok(())
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// A temporary file being written and hashed.
struct Sink {
    // Declared first so that the file is closed before `staged` removes it on failure.
    file: fs::File,
    hasher: Sha256,
    staged: Staged,
}

impl Sink {
    fn create(path: PathBuf) -> Result<Self> {
        let file = fs::File::create(&path).map_err(|e| io_error("creating media temp file", e))?;
        Ok(Self {
            file,
            hasher: Sha256::new(),
            staged: Staged {
                path,
                hash: String::new(),
                size: 0,
                committed: false,
            },
        })
    }

    fn write(&mut self, data: &[u8]) -> Result<()> {
        self.hasher.update(data);
        self.file
            .write_all(data)
            .map_err(|e| io_error("writing media", e))?;
        self.staged.size += data.len() as u64;
        Ok(())
    }

    fn finish(self) -> Result<Staged> {
        let Sink {
            file,
            hasher,
            mut staged,
        } = self;
        file.sync_all().map_err(|e| io_error("syncing media", e))?;
        drop(file);
        staged.hash = hex::encode(hasher.finalize());
        Ok(staged)
    }
}

/// `ab/cd` for a hash starting `abcd`: keeps directories small.
fn shard(hash: &str) -> PathBuf {
    let a = hash.get(0..2).unwrap_or("00");
    let b = hash.get(2..4).unwrap_or("00");
    Path::new(a).join(b)
}

fn valid_media_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 255
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn expired(rec: &MediaRecord) -> bool {
    rec.content_hash.is_empty() && rec.created_ms + PENDING_EXPIRY_MS <= now_ms()
}

/// Drops what cannot be served back safely: a content type that is not a valid header value
/// is treated as unknown; a file name must be printable.
fn clean_meta(meta: UploadMeta) -> Result<UploadMeta> {
    let content_type = meta.content_type.map(|c| c.trim().to_owned()).filter(|c| {
        !c.is_empty()
            && c.len() <= MAX_CONTENT_TYPE_BYTES
            && c.bytes().all(|b| (0x20..0x7f).contains(&b))
    });
    let filename = match meta.filename {
        Some(f) if f.is_empty() => None,
        Some(f) if f.len() > MAX_FILENAME_BYTES || f.chars().any(char::is_control) => {
            return Err(Error::invalid_param("Invalid filename"));
        }
        other => other,
    };
    Ok(UploadMeta {
        content_type,
        filename,
    })
}

fn unknown_media() -> Error {
    Error::not_found("Media not found")
}

fn already_uploaded() -> Error {
    Error::new(ErrorKind::CannotOverwriteMedia, "Media already uploaded")
}

fn too_large(limit: u64) -> Error {
    Error::new(
        ErrorKind::TooLarge,
        format!("Cannot upload files larger than {limit} bytes"),
    )
}

fn cannot_thumbnail() -> Error {
    Error::new(
        ErrorKind::Unknown,
        "Cannot generate thumbnails for the requested content",
    )
}

fn io_error(what: &str, e: std::io::Error) -> Error {
    Error::internal(format!("{what}: {e}"))
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::internal(format!("media task failed: {e}")))?
}

/// The size to scale to and the centred crop to take from it, or `None` when the image is no
/// larger than requested and is served at its own size. Never upscales.
fn plan(w0: u32, h0: u32, spec: &ThumbnailSpec) -> Option<(u32, u32, u32, u32)> {
    let (w, h) = (spec.width, spec.height);
    if w0 <= w && h0 <= h {
        return None;
    }
    let (w0l, h0l, wl, hl) = (u64::from(w0), u64::from(h0), u64::from(w), u64::from(h));
    let narrow = |v: u64| u32::try_from(v).unwrap_or(u32::MAX).max(1);
    match spec.method {
        // Fit inside the box, keeping the aspect ratio.
        ThumbnailMethod::Scale => {
            let (tw, th) = if wl * h0l <= hl * w0l {
                (w, narrow(h0l * wl / w0l))
            } else {
                (narrow(w0l * hl / h0l), h)
            };
            Some((tw, th, tw, th))
        }
        // Cover the box, then cut it out of the middle.
        ThumbnailMethod::Crop => {
            if w >= w0 || h >= h0 {
                return Some((w0, h0, w.min(w0), h.min(h0)));
            }
            let (sw, sh) = if wl * h0l >= hl * w0l {
                (w, narrow((h0l * wl).div_ceil(w0l)).clamp(h, h0))
            } else {
                (narrow((w0l * hl).div_ceil(h0l)).clamp(w, w0), h)
            };
            Some((sw, sh, w, h))
        }
    }
}

fn image_error(e: ImageError) -> Error {
    match e {
        ImageError::Limits(_) => {
            Error::new(ErrorKind::TooLarge, "Content is too large to thumbnail")
        }
        // A truncated or malformed file surfaces as an I/O error from the decoder.
        ImageError::IoError(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::InvalidData
            ) =>
        {
            cannot_thumbnail()
        }
        ImageError::IoError(e) => io_error("reading media", e),
        _ => cannot_thumbnail(),
    }
}

fn mime_of(format: ImageFormat) -> &'static str {
    match format {
        ImageFormat::Jpeg => "image/jpeg",
        ImageFormat::Gif => "image/gif",
        ImageFormat::WebP => "image/webp",
        _ => "image/png",
    }
}

fn render_thumbnail(
    original: &Path,
    cache_dir: &Path,
    hash: &str,
    spec: ThumbnailSpec,
) -> Result<Thumbnail> {
    let file = fs::File::open(original).map_err(|e| io_error("opening media content", e))?;
    let reader = ImageReader::new(BufReader::new(file))
        .with_guessed_format()
        .map_err(|e| io_error("reading media", e))?;
    let format = match reader.format() {
        Some(f @ (ImageFormat::Jpeg | ImageFormat::Png | ImageFormat::Gif | ImageFormat::WebP)) => {
            f
        }
        _ => return Err(cannot_thumbnail()),
    };
    let mut limits = Limits::default();
    limits.max_image_width = Some(32 * 1024);
    limits.max_image_height = Some(32 * 1024);
    limits.max_alloc = Some(MAX_DECODE_BYTES);
    let mut reader = reader;
    reader.limits(limits);
    // Only the header is read here: the size is known before any pixel is.
    let mut decoder = reader.into_decoder().map_err(image_error)?;
    let (w0, h0) = decoder.dimensions();
    if w0 == 0 || h0 == 0 {
        return Err(cannot_thumbnail());
    }
    if u64::from(w0) * u64::from(h0) > MAX_THUMBNAIL_PIXELS
        || decoder.total_bytes() > MAX_DECODE_BYTES
    {
        return Err(Error::new(
            ErrorKind::TooLarge,
            "Content is too large to thumbnail",
        ));
    }
    let orientation = decoder.orientation().unwrap_or(Orientation::NoTransforms);
    let (dw, dh) = match orientation {
        Orientation::Rotate90
        | Orientation::Rotate270
        | Orientation::Rotate90FlipH
        | Orientation::Rotate270FlipH => (h0, w0),
        _ => (w0, h0),
    };
    let plan = plan(dw, dh, &spec);
    // Small enough already: the original itself, where its format is one a thumbnail may have
    // and it cannot be animated unless animation was asked for.
    if plan.is_none() && (format == ImageFormat::Jpeg || spec.animated == Some(true)) {
        drop(decoder);
        let data = fs::read(original).map_err(|e| io_error("reading media", e))?;
        return Ok(Thumbnail {
            content_type: mime_of(format),
            data,
        });
    }
    let (sw, sh, cw, ch) = plan.unwrap_or((dw, dh, dw, dh));
    let out_format = if format == ImageFormat::Jpeg {
        ImageFormat::Jpeg
    } else {
        ImageFormat::Png
    };
    let ext = if out_format == ImageFormat::Jpeg {
        "jpg"
    } else {
        "png"
    };
    let cached = cache_dir.join(format!("{hash}-{cw}x{ch}-{}.{ext}", spec.method.as_str()));
    if let Ok(data) = fs::read(&cached) {
        return Ok(Thumbnail {
            content_type: mime_of(out_format),
            data,
        });
    }
    let mut img = DynamicImage::from_decoder(decoder).map_err(image_error)?;
    img.apply_orientation(orientation);
    if (sw, sh) != (img.width(), img.height()) {
        img = img.resize_exact(sw, sh, FilterType::Triangle);
    }
    if (cw, ch) != (sw, sh) {
        img = img.crop_imm((sw - cw) / 2, (sh - ch) / 2, cw, ch);
    }
    let data = encode(&img, out_format)?;
    if let Err(e) = write_cache(cache_dir, &cached, &data) {
        tracing::warn!(error = %e.message, "could not cache thumbnail");
    }
    Ok(Thumbnail {
        content_type: mime_of(out_format),
        data,
    })
}

fn encode(img: &DynamicImage, format: ImageFormat) -> Result<Vec<u8>> {
    let mut buf = Vec::new();
    let failed = |e: ImageError| Error::internal(format!("encoding thumbnail: {e}"));
    if format == ImageFormat::Jpeg {
        JpegEncoder::new_with_quality(&mut buf, JPEG_QUALITY)
            .encode_image(&img.to_rgb8())
            .map_err(failed)?;
    } else {
        // Eight bits per channel is plenty for a thumbnail, and every PNG reader takes it.
        let img = if img.color().has_alpha() {
            DynamicImage::ImageRgba8(img.to_rgba8())
        } else {
            DynamicImage::ImageRgb8(img.to_rgb8())
        };
        img.write_to(&mut Cursor::new(&mut buf), ImageFormat::Png)
            .map_err(failed)?;
    }
    Ok(buf)
}

fn write_cache(dir: &Path, dest: &Path, data: &[u8]) -> Result<()> {
    fs::create_dir_all(dir).map_err(|e| io_error("creating thumbnail directory", e))?;
    let tmp = dir.join(format!(".{}.tmp", random_id(16)));
    let written = fs::File::create(&tmp)
        .and_then(|mut f| {
            f.write_all(data)?;
            f.sync_all()
        })
        .and_then(|()| fs::rename(&tmp, dest));
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(io_error("writing thumbnail", e));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(width: u32, height: u32, method: ThumbnailMethod) -> ThumbnailSpec {
        ThumbnailSpec {
            width,
            height,
            method,
            animated: None,
        }
    }

    #[test]
    fn media_plan_scale_fits_inside_the_box() {
        let s = spec(100, 100, ThumbnailMethod::Scale);
        assert_eq!(plan(400, 200, &s), Some((100, 50, 100, 50)));
        assert_eq!(plan(200, 400, &s), Some((50, 100, 50, 100)));
        assert_eq!(plan(80, 60, &s), None);
        // A sliver never collapses to zero pixels.
        assert_eq!(plan(100_000, 1, &s), Some((100, 1, 100, 1)));
    }

    #[test]
    fn media_plan_crop_covers_then_cuts() {
        let s = spec(50, 80, ThumbnailMethod::Crop);
        assert_eq!(plan(400, 200, &s), Some((160, 80, 50, 80)));
        assert_eq!(plan(200, 400, &s), Some((50, 100, 50, 80)));
        // Smaller than requested on one side: cut, never enlarge.
        assert_eq!(plan(30, 200, &s), Some((30, 200, 30, 80)));
        assert_eq!(plan(40, 40, &s), None);
        let odd = spec(96, 96, ThumbnailMethod::Crop);
        assert_eq!(plan(1000, 333, &odd), Some((289, 96, 96, 96)));
    }

    #[test]
    fn media_ids_are_restricted() {
        assert!(valid_media_id("abcXYZ019_-"));
        assert!(!valid_media_id(""));
        assert!(!valid_media_id("../etc"));
        assert!(!valid_media_id("a/b"));
        assert!(!valid_media_id("a%2Fb"));
    }

    #[test]
    fn media_meta_is_cleaned() {
        let m = clean_meta(UploadMeta {
            content_type: Some("text/plain\u{e9}".into()),
            filename: Some(String::new()),
        })
        .unwrap();
        assert!(m.content_type.is_none() && m.filename.is_none());
        assert!(
            clean_meta(UploadMeta {
                content_type: None,
                filename: Some("a\nb".into()),
            })
            .is_err()
        );
    }

    fn png(w: u32, h: u32) -> Vec<u8> {
        let img = DynamicImage::ImageRgb8(image::RgbImage::from_pixel(w, h, image::Rgb([1, 2, 3])));
        encode(&img, ImageFormat::Png).unwrap()
    }

    #[test]
    fn media_thumbnails_render_and_cache() {
        let dir = tempfile::tempdir().unwrap();
        let original = dir.path().join("orig");
        fs::write(&original, png(300, 150)).unwrap();
        let cache = dir.path().join("cache");
        let t =
            render_thumbnail(&original, &cache, "h", spec(60, 60, ThumbnailMethod::Crop)).unwrap();
        assert_eq!(t.content_type, "image/png");
        let img = image::load_from_memory(&t.data).unwrap();
        assert_eq!((img.width(), img.height()), (60, 60));
        assert!(cache.join("h-60x60-crop.png").exists());
        // Served from the cache even with the original gone.
        fs::remove_file(&original).unwrap();
        fs::write(&original, png(300, 150)).unwrap();
        let again =
            render_thumbnail(&original, &cache, "h", spec(60, 60, ThumbnailMethod::Crop)).unwrap();
        assert_eq!(again.data, t.data);
    }

    #[test]
    fn media_refuses_bombs_and_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let original = dir.path().join("orig");
        // Valid PNG headers claiming gigapixels, with no pixel data at all: one over the side
        // limit, one within it but over the pixel budget.
        for side in [60_000u32, 20_000] {
            let mut bomb = png(1, 1);
            bomb[16..20].copy_from_slice(&side.to_be_bytes());
            bomb[20..24].copy_from_slice(&side.to_be_bytes());
            let crc = crc_of(&bomb[12..29]);
            bomb[29..33].copy_from_slice(&crc.to_be_bytes());
            fs::write(&original, &bomb).unwrap();
            let err = render_thumbnail(
                &original,
                dir.path(),
                "h",
                spec(32, 32, ThumbnailMethod::Scale),
            )
            .unwrap_err();
            assert_eq!(err.kind, ErrorKind::TooLarge, "{side}");
        }

        fs::write(&original, b"\x89PNG\r\n\x1a\nnot really").unwrap();
        let err = render_thumbnail(
            &original,
            dir.path(),
            "h",
            spec(32, 32, ThumbnailMethod::Scale),
        )
        .unwrap_err();
        assert_eq!(err.kind.status(), 400);
        fs::write(&original, b"plain text").unwrap();
        let err = render_thumbnail(
            &original,
            dir.path(),
            "h",
            spec(32, 32, ThumbnailMethod::Scale),
        )
        .unwrap_err();
        assert_eq!(err.kind.status(), 400);
    }

    fn crc_of(data: &[u8]) -> u32 {
        let mut crc = 0xffff_ffffu32;
        for &b in data {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0xedb8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }
}
