//! What answers a request no route takes: 405 with `Allow` when the path exists under other
//! methods, 404 otherwise. The route table is the OpenAPI document's (every real handler is in
//! it, and a test keeps the committed copy in step), plus the two document routes themselves.
use std::sync::OnceLock;

use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpRequest, HttpResponse};
use domain::Code;
use utoipa::OpenApi;

use crate::openapi::ApiDoc;
use crate::problem::ApiError;

/// One path template (`/v1/sources/{id}`) and the methods it answers.
struct Route {
    segments: Vec<Segment>,
    methods: Vec<&'static str>,
}

enum Segment {
    Literal(String),
    Parameter,
}

fn table() -> &'static [Route] {
    static TABLE: OnceLock<Vec<Route>> = OnceLock::new();
    TABLE.get_or_init(|| {
        let document = ApiDoc::openapi();
        let mut routes: Vec<Route> = document
            .paths
            .paths
            .iter()
            .map(|(path, item)| {
                let methods = [
                    ("GET", item.get.is_some()),
                    ("PUT", item.put.is_some()),
                    ("POST", item.post.is_some()),
                    ("DELETE", item.delete.is_some()),
                    ("PATCH", item.patch.is_some()),
                ]
                .into_iter()
                .filter_map(|(m, present)| present.then_some(m))
                .collect();
                Route {
                    segments: segments(path),
                    methods,
                }
            })
            .collect();
        for path in ["/openapi.json", "/docs"] {
            routes.push(Route {
                segments: segments(path),
                methods: vec!["GET"],
            });
        }
        routes
    })
}

fn segments(template: &str) -> Vec<Segment> {
    template
        .trim_matches('/')
        .split('/')
        .map(|s| {
            if s.starts_with('{') && s.ends_with('}') {
                Segment::Parameter
            } else {
                Segment::Literal(s.to_string())
            }
        })
        .collect()
}

/// The methods the route table has for `path`, sorted; empty when no template matches.
pub fn allowed_methods(path: &str) -> Vec<&'static str> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let mut methods: Vec<&'static str> = table()
        .iter()
        .filter(|r| {
            r.segments.len() == parts.len()
                && r.segments.iter().zip(&parts).all(|(s, p)| match s {
                    Segment::Literal(l) => l == p,
                    Segment::Parameter => !p.is_empty(),
                })
        })
        .flat_map(|r| r.methods.iter().copied())
        .collect();
    methods.sort_unstable();
    methods.dedup();
    methods
}

/// The default service.
pub async fn unmatched(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let allowed = allowed_methods(req.path());
    if allowed.is_empty() || allowed.contains(&req.method().as_str()) {
        return Err(ApiError::new(
            Code::RouteNotFound,
            "no route matches this method and path",
        ));
    }
    let allow = allowed.join(", ");
    let value = HeaderValue::from_str(&allow).unwrap_or(HeaderValue::from_static("GET"));
    Err(ApiError::new(
        Code::MethodNotAllowed,
        format!("{} is not allowed here; use {allow}", req.method()),
    )
    .with_header(header::ALLOW, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_match_their_templates_and_list_every_method() {
        assert_eq!(allowed_methods("/v1/sources"), ["GET", "POST"]);
        assert_eq!(
            allowed_methods("/v1/sources/0191e4c2-0000-7000-8000-000000000000"),
            ["DELETE", "GET", "PATCH"]
        );
        assert_eq!(allowed_methods("/openapi.json"), ["GET"]);
        assert!(allowed_methods("/v1/nothing-here").is_empty());
        assert!(allowed_methods("/v1/sources/a/b/c").is_empty());
    }
}
