//! The web console: static files of the JS SDK package served under `/console/`.
//!
//! `sealbus serve --console DIR` mounts these routes, with `DIR` the built npm package
//! (`bindings/wasm`, after `cargo xtask wasm`): `/console/` is `DIR/console.html`, and
//! `/console/<path>` is `DIR/<path>` (so the page loads `./web.js` and the `.wasm` beside it).
//! The server only hands out files; the console is a Sealbus client like any other.

use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path as UrlPath, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;

/// The console routes serving files from `dir`.
pub fn routes(dir: PathBuf) -> Router {
    Router::new()
        .route(
            "/console",
            get(|| async { Redirect::permanent("/console/") }),
        )
        .route("/console/", get(index))
        .route("/console/{*path}", get(file))
        .with_state(Arc::new(dir))
}

async fn index(State(dir): State<Arc<PathBuf>>) -> Response {
    send(&dir.join("console.html")).await
}

async fn file(State(dir): State<Arc<PathBuf>>, UrlPath(path): UrlPath<String>) -> Response {
    match safe_join(&dir, &path) {
        Some(full) => send(&full).await,
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// `dir/path` when `path` is relative and stays inside `dir` (no `..`, no root, no prefix).
fn safe_join(dir: &Path, path: &str) -> Option<PathBuf> {
    let relative = Path::new(path);
    let plain = relative
        .components()
        .all(|c| matches!(c, Component::Normal(_)));
    (plain && !path.is_empty()).then(|| dir.join(relative))
}

fn content_type(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()) {
        Some("html") => "text/html; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("wasm") => "application/wasm",
        Some("json") => "application/json",
        Some("css") => "text/css; charset=utf-8",
        _ => "application/octet-stream",
    }
}

async fn send(path: &Path) -> Response {
    let owned = path.to_path_buf();
    let read = tokio::task::spawn_blocking(move || std::fs::read(owned)).await;
    match read {
        Ok(Ok(body)) => ([(header::CONTENT_TYPE, content_type(path))], body).into_response(),
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_stay_inside_the_directory() {
        let dir = Path::new("/pkg");
        assert_eq!(safe_join(dir, "web.js"), Some(PathBuf::from("/pkg/web.js")));
        assert_eq!(
            safe_join(dir, "dist/web/a.wasm"),
            Some(PathBuf::from("/pkg/dist/web/a.wasm"))
        );
        assert_eq!(safe_join(dir, "../secret"), None);
        assert_eq!(safe_join(dir, "a/../../b"), None);
        assert_eq!(safe_join(dir, "/etc/passwd"), None);
        assert_eq!(safe_join(dir, ""), None);
    }

    #[test]
    fn wasm_gets_its_mime_type() {
        assert_eq!(content_type(Path::new("x.wasm")), "application/wasm");
        assert_eq!(
            content_type(Path::new("x.js")),
            "text/javascript; charset=utf-8"
        );
    }
}
