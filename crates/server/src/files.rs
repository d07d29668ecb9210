//! Published files: where they are stored (object_store: a local directory by default, S3, GCS
//! or Azure with the `cloud` feature) and how `confidant serve` serves them to phones.
//!
//! Files are immutable: a path is written once (`PutMode::Create`), and a re-run that finds a
//! file already there keeps it. Indices are the only objects that change. Serving keeps
//! immutable files in memory with a strong ETag, so a download or a 304 costs no disk access;
//! a CDN in front can cache them forever, while indices are `no-cache`.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use axum::Router;
use axum::body::Body;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get};
use bytes::Bytes;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use sha2::{Digest as _, Sha256};

use crate::AppState;
use crate::problem::Problem;

#[derive(Debug, thiserror::Error)]
#[error("the file store failed at {path}: {source}")]
pub struct FileStoreError {
    path: String,
    source: object_store::Error,
}

/// Names the path in an object store error.
fn failed_at(path: &str) -> impl FnOnce(object_store::Error) -> FileStoreError + '_ {
    move |source| FileStoreError {
        path: path.to_owned(),
        source,
    }
}

/// Published files, under a root that mirrors the URL space (`exports/…`, `feed/…`).
#[derive(Clone)]
pub struct FileStore {
    inner: Arc<dyn ObjectStore>,
}

impl FileStore {
    pub fn new(inner: Arc<dyn ObjectStore>) -> Self {
        Self { inner }
    }

    /// A local directory, created if missing; every write is fsynced before it counts.
    pub fn local(dir: &std::path::Path) -> Result<Self, String> {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let local = object_store::local::LocalFileSystem::new_with_prefix(dir)
            .map_err(|e| format!("cannot use {} for published files: {e}", dir.display()))?
            .with_fsync(true);
        Ok(Self::new(Arc::new(local)))
    }

    /// A directory, or (with the `cloud` feature) an `s3://`, `gs://` or `az://` URL whose
    /// credentials come from the environment.
    pub fn open(location: &str) -> Result<Self, String> {
        if !location.contains("://") {
            return Self::local(std::path::Path::new(location));
        }
        #[cfg(feature = "cloud")]
        {
            let url = url_of(location)?;
            let (store, prefix) = object_store::parse_url_opts(&url, std::env::vars())
                .map_err(|e| format!("cannot use {location} for published files: {e}"))?;
            let store: Arc<dyn ObjectStore> = if prefix.as_ref().is_empty() {
                Arc::from(store)
            } else {
                Arc::new(object_store::prefix::PrefixStore::new(store, prefix))
            };
            Ok(Self::new(store))
        }
        #[cfg(not(feature = "cloud"))]
        Err(format!(
            "{location} names object storage, but this build has no cloud support: \
             rebuild with `--features cloud`, or publish to a directory"
        ))
    }

    fn path(path: &str) -> Result<Path, FileStoreError> {
        Path::parse(path).map_err(|e| FileStoreError {
            path: path.to_owned(),
            source: e.into(),
        })
    }

    /// Writes an immutable file. If the path exists (a run that crashed before recording it),
    /// the existing file is kept and returned: a published path never changes.
    pub async fn put_immutable(&self, path: &str, bytes: Vec<u8>) -> Result<Bytes, FileStoreError> {
        let location = Self::path(path)?;
        let bytes = Bytes::from(bytes);
        let options = PutOptions::from(PutMode::Create);
        match self
            .inner
            .put_opts(&location, PutPayload::from_bytes(bytes.clone()), options)
            .await
        {
            Ok(_) => Ok(bytes),
            Err(object_store::Error::AlreadyExists { .. }) => {
                self.get(path).await?.ok_or_else(|| FileStoreError {
                    path: path.to_owned(),
                    source: object_store::Error::NotFound {
                        path: path.to_owned(),
                        source: "vanished after reporting that it exists".into(),
                    },
                })
            }
            Err(source) => Err(failed_at(path)(source)),
        }
    }

    /// Writes (or replaces) an index.
    pub async fn put_index(&self, path: &str, bytes: Vec<u8>) -> Result<(), FileStoreError> {
        let location = Self::path(path)?;
        self.inner
            .put(&location, PutPayload::from(bytes))
            .await
            .map(drop)
            .map_err(failed_at(path))
    }

    pub async fn get(&self, path: &str) -> Result<Option<Bytes>, FileStoreError> {
        let location = Self::path(path)?;
        let result = match self.inner.get(&location).await {
            Ok(result) => result.bytes().await,
            Err(e) => Err(e),
        };
        match result {
            Ok(bytes) => Ok(Some(bytes)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(source) => Err(failed_at(path)(source)),
        }
    }

    /// Deletes a file; one that is already gone is fine.
    pub async fn delete(&self, path: &str) -> Result<(), FileStoreError> {
        let location = Self::path(path)?;
        match self.inner.delete(&location).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(source) => Err(failed_at(path)(source)),
        }
    }
}

#[cfg(feature = "cloud")]
fn url_of(location: &str) -> Result<url::Url, String> {
    url::Url::parse(location).map_err(|e| format!("{location} is not a valid URL: {e}"))
}

/// Clients and CDNs may keep an immutable file as long as it can be listed: 14 days.
const IMMUTABLE_CACHE_CONTROL: &str = "public, max-age=1209600, immutable";

/// Indices change with every publication; everything else never changes.
pub fn is_index(path: &str) -> bool {
    path.ends_with("index.txt") || path.ends_with("index.json")
}

/// An immutable file held for serving.
#[derive(Clone)]
struct Cached {
    bytes: Bytes,
    etag: HeaderValue,
}

/// Immutable files in memory, up to a byte budget (then they are served from the store).
pub struct ServeCache {
    files: RwLock<HashMap<String, Cached>>,
    budget: usize,
    used: std::sync::atomic::AtomicUsize,
}

impl ServeCache {
    pub fn new(budget: usize) -> Self {
        Self {
            files: RwLock::new(HashMap::new()),
            budget,
            used: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    fn get(&self, path: &str) -> Option<Cached> {
        self.files.read().expect("cache lock").get(path).cloned()
    }

    fn insert(&self, path: &str, cached: Cached) {
        use std::sync::atomic::Ordering;
        let size = cached.bytes.len();
        if self.used.load(Ordering::Relaxed) + size > self.budget {
            return;
        }
        let mut files = self.files.write().expect("cache lock");
        if files.insert(path.to_owned(), cached).is_none() {
            self.used.fetch_add(size, Ordering::Relaxed);
        }
    }

    /// Forgets a file that retention removed.
    pub fn evict(&self, path: &str) {
        use std::sync::atomic::Ordering;
        if let Some(old) = self.files.write().expect("cache lock").remove(path) {
            self.used.fetch_sub(old.bytes.len(), Ordering::Relaxed);
        }
    }
}

fn etag_of(bytes: &[u8]) -> HeaderValue {
    let digest = Sha256::digest(bytes);
    HeaderValue::from_str(&format!("\"{}\"", hex::encode(&digest[..16])))
        .expect("hex is a valid header value")
}

/// Only names the publisher writes: lowercase letters, digits, `-`, `_` and `.` per segment,
/// and no segment starting with a dot.
fn valid_path(path: &str) -> bool {
    !path.is_empty()
        && path.len() <= 200
        && path.split('/').all(|segment| {
            !segment.is_empty()
                && !segment.starts_with('.')
                && segment
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        })
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit('.').next() {
        Some("zip") => "application/zip",
        Some("json") => "application/json",
        Some("txt") => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

fn not_modified(headers: &HeaderMap, etag: &HeaderValue) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|v| v.trim().trim_start_matches("W/"))
        .any(|candidate| candidate == "*" || candidate.as_bytes() == etag.as_bytes())
}

/// A file that is not (yet) there: the next feed delta, for instance. Never cached, so a
/// client polling for it sees it as soon as it is published.
fn not_found() -> Response {
    let mut response = Problem::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "There is no published file at this path.",
    )
    .into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

async fn serve(state: &AppState, method: &Method, headers: &HeaderMap, path: String) -> Response {
    if !valid_path(&path) {
        return not_found();
    }
    let index = is_index(&path);
    let cached = match state.serve_cache.get(&path) {
        Some(hit) => hit,
        None => match state.files.get(&path).await {
            Ok(Some(bytes)) => {
                let cached = Cached {
                    etag: etag_of(&bytes),
                    bytes,
                };
                if !index {
                    state.serve_cache.insert(&path, cached.clone());
                }
                cached
            }
            Ok(None) => return not_found(),
            Err(e) => {
                tracing::error!(error = %e, "reading a published file failed");
                return Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "files_unavailable",
                    "Published files cannot be read right now; retry later.",
                )
                .into_response();
            }
        },
    };
    let cache_control = HeaderValue::from_static(if index {
        "no-cache"
    } else {
        IMMUTABLE_CACHE_CONTROL
    });
    let mut response_headers = HeaderMap::new();
    response_headers.insert(header::ETAG, cached.etag.clone());
    response_headers.insert(header::CACHE_CONTROL, cache_control);
    if not_modified(headers, &cached.etag) {
        return (StatusCode::NOT_MODIFIED, response_headers).into_response();
    }
    response_headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(content_type(&path)),
    );
    response_headers.insert(
        header::CONTENT_LENGTH,
        HeaderValue::from(cached.bytes.len()),
    );
    let body = if method == Method::HEAD {
        Body::empty()
    } else {
        Body::from(cached.bytes)
    };
    (StatusCode::OK, response_headers, body).into_response()
}

/// `GET` (and so `HEAD`) of the file store's folder `name`.
fn folder(name: &'static str) -> MethodRouter<AppState> {
    get(
        move |State(state): State<AppState>,
              method: Method,
              headers: HeaderMap,
              UrlPath(rest): UrlPath<String>| async move {
            serve(&state, &method, &headers, format!("{name}/{rest}")).await
        },
    )
}

/// `GET`/`HEAD /exports/…`, `/feed/…` and `/tokens/…` (axum answers HEAD through the GET
/// route).
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/exports/{*path}", folder("exports"))
        .route("/feed/{*path}", folder("feed"))
        .route("/tokens/{*path}", folder("tokens"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_publisher_names_are_served() {
        assert!(valid_path("exports/302/1700000000-1700003600-00001.zip"));
        assert!(valid_path("feed/302/delta-0000000001.cfeed"));
        assert!(!valid_path("exports/../secret.key"));
        assert!(!valid_path("exports/302/.hidden"));
        assert!(!valid_path("exports//x"));
        assert!(!valid_path("exports/302/a b"));
    }

    #[test]
    fn if_none_match_accepts_lists_weak_tags_and_star() {
        let etag = HeaderValue::from_static("\"abc\"");
        let mut headers = HeaderMap::new();
        headers.insert(
            header::IF_NONE_MATCH,
            HeaderValue::from_static("\"x\", W/\"abc\""),
        );
        assert!(not_modified(&headers, &etag));
        headers.insert(header::IF_NONE_MATCH, HeaderValue::from_static("\"x\""));
        assert!(!not_modified(&headers, &etag));
        headers.insert(header::IF_NONE_MATCH, HeaderValue::from_static("*"));
        assert!(not_modified(&headers, &etag));
    }
}
