//! The HTTP API on the resolver's HTTP listener.
//!
//! | method and path | what |
//! |---|---|
//! | `POST /v1/push` | a member's signed load report (see [`crate::push`]); rate-limited per source address |
//! | `GET /v1/groups` | the names of every group |
//! | `GET /v1/groups/{adn}` | one group explained (either name form; `?metric=` optional; with `If-None-Match`, `?wait_ms=` holds the request until the view changes) |
//! | `GET /v1/pushes` | push counters: accepted, and rejected by reason |
//! | `GET /v1/status` | every group explained (metric `rt`), and whether the membership store can be reached, as one JSON document |
//! | `GET /metrics` | Prometheus metrics (text format) |
//! | `GET /` | the dashboard: one self-contained page polling `/v1/status` |
//! | `POST /v1/join` | an agent adds its own server to groups (self-registration; off unless `[admin] join_token_file` is set) |
//!
//! Errors are JSON `{"error": "...", "detail": "..."}` with a fitting status.
//!
//! The handlers need the peer's address ([`ConnectInfo`]): serve the router
//! with `into_make_service_with_connect_info::<SocketAddr>()`.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anycast_proto::push::{MAX_PUSH_BYTES, SIGNATURE_HEADER};
use anycast_proto::{Metric, name};
use axum::Json;
use axum::extract::{ConnectInfo, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;

use crate::admin::{bearer, refused, token_matches};
use crate::groups::{Directory, Group, Member, default_probe_url};
use crate::membership::{Change, Membership};
use crate::observe::{Observations, Observed};
use crate::push::{Refused, Rejection};
use crate::select::{self, Family};
use crate::view::GroupView;
use metrics_exporter_prometheus::PrometheusHandle;

/// What the handlers share.
#[derive(Debug, Clone)]
pub struct ApiState {
    /// The groups, as they are now.
    pub membership: Arc<Membership>,
    /// Pushes, probes, answers.
    pub observations: Observations,
    /// The Prometheus recorder, if metrics are on.
    pub metrics: Option<PrometheusHandle>,
    /// SHA-256 of the token agents present to join a group; `None`: joining
    /// is off.
    pub join_token: Option<[u8; 32]>,
}

impl ApiState {
    fn observed(&self) -> Observed<'_> {
        self.observations.at(Instant::now())
    }
}

/// The dashboard, embedded in the binary (no CDN, no internet).
const DASHBOARD: &str = include_str!("dashboard.html");

async fn dashboard() -> Response {
    (
        [(axum::http::header::CONTENT_TYPE, "text/html; charset=utf-8")],
        DASHBOARD,
    )
        .into_response()
}

async fn status(State(state): State<ApiState>) -> Response {
    let directory = state.membership.directory();
    let observed = state.observed();
    let mut groups: Vec<GroupView> = directory
        .groups()
        .map(|g| {
            let set = select::equivalent_set(g, Metric::Rt, Family::Any, &observed);
            GroupView::build(g, Metric::Rt, set.as_ref(), &observed)
        })
        .collect();
    groups.sort_by(|a, b| a.name.cmp(&b.name));
    Json(json!({ "groups": groups, "membership": state.membership.health() })).into_response()
}

async fn metrics(State(state): State<ApiState>) -> Response {
    let Some(handle) = &state.metrics else {
        return error(
            StatusCode::NOT_FOUND,
            "metrics_off",
            "no metrics recorder in this process",
        );
    };
    let directory = state.membership.directory();
    state.observed().record_metrics(&directory);
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        handle.render(),
    )
        .into_response()
}

/// The API's routes.
pub fn router(state: ApiState) -> axum::Router {
    axum::Router::new()
        .route("/v1/push", post(receive_push))
        .route("/v1/pushes", get(push_counters))
        .route("/v1/groups", get(list_groups))
        .route("/v1/groups/{adn}", get(show_group))
        .route("/v1/join", post(join))
        .route("/v1/status", get(status))
        .route("/metrics", get(metrics))
        .route("/", get(dashboard))
        .with_state(state)
}

fn error(status: StatusCode, error: &str, detail: impl Into<String>) -> Response {
    (
        status,
        Json(json!({ "error": error, "detail": detail.into() })),
    )
        .into_response()
}

async fn receive_push(State(state): State<ApiState>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    // Served without the peer's address (a test calling the router
    // directly), every request counts as one source.
    let source = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(Ipv4Addr::UNSPECIFIED.into(), |c| c.0.ip());
    // The rate limit first: a flood is refused before its body is read or
    // its signature checked.
    if let Err(throttled) = state
        .observations
        .pushes
        .admit(source, tokio::time::Instant::now())
    {
        let retry_after = throttled.retry_after.as_secs_f64().ceil().max(1.0);
        let mut response = error(
            StatusCode::TOO_MANY_REQUESTS,
            throttled.refused.rejection.reason(),
            throttled.refused.detail,
        );
        response.headers_mut().insert(
            axum::http::header::RETRY_AFTER,
            axum::http::HeaderValue::from(retry_after as u64),
        );
        return response;
    }
    let headers = parts.headers;
    let now = Instant::now();
    let now_unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    // Read one byte past the cap, so "too large" is told apart from "at the cap".
    let result = match axum::body::to_bytes(body, MAX_PUSH_BYTES + 1).await {
        Err(e) => Err(state.observations.pushes.refuse(
            Refused {
                rejection: Rejection::TooLarge,
                detail: format!("body unreadable or over {MAX_PUSH_BYTES} bytes: {e}"),
            },
            now,
        )),
        Ok(bytes) => {
            let signature = headers.get(SIGNATURE_HEADER).and_then(|v| v.to_str().ok());
            state.observations.pushes.receive(
                signature,
                &bytes,
                &state.membership.directory(),
                now,
                now_unix,
            )
        }
    };
    match result {
        Ok(push) => Json(json!({ "accepted": true, "seq": push.seq })).into_response(),
        Err(refused) => error(
            StatusCode::from_u16(refused.rejection.status()).unwrap_or(StatusCode::BAD_REQUEST),
            refused.rejection.reason(),
            refused.detail,
        ),
    }
}

async fn push_counters(State(state): State<ApiState>) -> Response {
    let rejected: BTreeMap<&str, u64> = state
        .observations
        .pushes
        .rejected()
        .into_iter()
        .map(|(r, n)| (r.reason(), n))
        .collect();
    Json(json!({ "accepted": state.observations.pushes.accepted(), "rejected": rejected }))
        .into_response()
}

async fn list_groups(State(state): State<ApiState>) -> Response {
    let directory = state.membership.directory();
    let mut names: Vec<String> = directory.groups().map(|g| g.name.to_string()).collect();
    names.sort();
    Json(json!({ "groups": names })).into_response()
}

#[derive(Debug, Deserialize)]
struct ShowQuery {
    metric: Option<String>,
    /// With `If-None-Match`: hold the request until the view changes (a
    /// push, a membership change) or this many milliseconds pass (at most
    /// [`MAX_WAIT_MS`]), so that a local resolver hears of a push when it
    /// lands instead of at its next poll.
    wait_ms: Option<u64>,
}

/// The longest a group view request may be held for a change.
pub const MAX_WAIT_MS: u64 = 30_000;

async fn show_group(
    State(state): State<ApiState>,
    Path(adn): Path<String>,
    Query(query): Query<ShowQuery>,
    headers: HeaderMap,
) -> Response {
    let wait = Duration::from_millis(query.wait_ms.unwrap_or(0).min(MAX_WAIT_MS));
    let deadline = tokio::time::Instant::now() + wait;
    // Subscribed before the first look, so that no change between the look
    // and the wait is missed.
    let mut pushes = state.observations.pushes.subscribe();
    let mut groups = state.membership.subscribe();
    // A closed channel (its sender gone) is no news: waited on no more.
    let (mut pushes_open, mut groups_open) = (true, true);
    loop {
        let directory = state.membership.directory();
        let (group, metric) = match find_group(&directory, &adn, query.metric.as_deref()) {
            Ok(found) => found,
            Err(response) => return *response,
        };
        // The tag alone first: a held request wakes at every push, and the
        // whole view (estimates, the set) is built only when it changed.
        let etag = GroupView::etag_of(group, &state.observations.pushes);
        let unchanged = headers
            .get(axum::http::header::IF_NONE_MATCH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
        if !unchanged {
            let observed = state.observed();
            let set = select::equivalent_set(group, metric, Family::Any, &observed);
            let view = GroupView::build(group, metric, set.as_ref(), &observed);
            return ([(axum::http::header::ETAG, view.etag())], Json(view)).into_response();
        }
        if tokio::time::Instant::now() >= deadline {
            return (StatusCode::NOT_MODIFIED, [(axum::http::header::ETAG, etag)]).into_response();
        }
        drop(directory);
        tokio::select! {
            changed = pushes.changed(), if pushes_open => pushes_open = changed.is_ok(),
            changed = groups.changed(), if groups_open => groups_open = changed.is_ok(),
            () = tokio::time::sleep_until(deadline) => {}
        }
    }
}

/// The group `adn` names in `directory`, and the metric to explain it for
/// (the name's own when `metric` is `None`), or the error response.
fn find_group<'a>(
    directory: &'a Directory,
    adn: &str,
    metric: Option<&str>,
) -> Result<(&'a Group, Metric), Box<Response>> {
    let name = name::parse(adn, directory.zones()).map_err(|e| {
        Box::new(error(
            StatusCode::NOT_FOUND,
            "not_an_anycast_name",
            e.to_string(),
        ))
    })?;
    let metric = match metric {
        None => name.metric(),
        Some(m) => m.parse::<Metric>().map_err(|e| {
            Box::new(error(
                StatusCode::BAD_REQUEST,
                "unknown_metric",
                e.to_string(),
            ))
        })?,
    };
    let group = directory.group(&name).ok_or_else(|| {
        Box::new(error(
            StatusCode::NOT_FOUND,
            "no_such_group",
            format!("no group {}", name.group_name()),
        ))
    })?;
    Ok((group, metric))
}

/// An agent's request to join groups.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct JoinRequest {
    /// `address:port` of the server.
    server: std::net::SocketAddr,
    /// The groups to join.
    groups: Vec<String>,
    /// Its probe file's URL (default: the standard path on the server).
    probe: Option<String>,
}

async fn join(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let Some(expected) = &state.join_token else {
        return error(
            StatusCode::FORBIDDEN,
            "join_disabled",
            "self-registration is off on this resolver",
        );
    };
    if !bearer(&headers).is_some_and(|t| token_matches(expected, t)) {
        tracing::warn!("join refused: missing or wrong join token");
        return error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or wrong join token",
        );
    }
    let request: JoinRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, "malformed", e.to_string()),
    };
    let mut member = Member::new(request.server);
    member.probe = request
        .probe
        .unwrap_or_else(|| default_probe_url(request.server));
    let groups = request.groups.clone();
    match state
        .membership
        .change(Change::Join { groups, member })
        .await
    {
        Ok(()) => {
            tracing::info!(server = %request.server, groups = ?request.groups, "agent joined");
            Json(json!({ "ok": true, "server": request.server.to_string(), "groups": request.groups }))
                .into_response()
        }
        Err(e) => refused(&e),
    }
}
