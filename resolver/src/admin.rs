//! The admin API: operators change membership at runtime (`anycastctl` is
//! its client). On its own listener, loopback by default; every request
//! carries `Authorization: Bearer <token>`, and a missing or wrong token is
//! 401 with nothing changed.
//!
//! | method and path | change |
//! |---|---|
//! | `GET /v1/admin/groups` | every group, with its origin and member count |
//! | `GET /v1/admin/groups/{adn}` | one group's spec and origin |
//! | `PUT /v1/admin/groups/{adn}` | create a group (body: a spec; 409 if it exists) |
//! | `PATCH /v1/admin/groups/{adn}` | set a group's TTL, answer mode, thresholds... |
//! | `DELETE /v1/admin/groups/{adn}` | delete a group |
//! | `POST /v1/admin/groups/{adn}/reset` | drop the runtime change: the config's form again |
//! | `POST /v1/admin/groups/{adn}/members` | add a member (409 if it is there) |
//! | `PATCH /v1/admin/groups/{adn}/members/{addr:port}` | set a member's probe URL, cost, weight |
//! | `DELETE /v1/admin/groups/{adn}/members/{addr:port}` | remove a member |
//! | `POST /v1/admin/groups/{adn}/members/{addr:port}/drain` | take it out of answers |
//! | `POST /v1/admin/groups/{adn}/members/{addr:port}/undrain` | put it back |
//! | `POST /v1/admin/reload` | re-read the config file |
//!
//! Answers are JSON; errors are `{"error": "...", "detail": "..."}` with 400
//! (bad input), 401, 404, 409 (exists, or a conflict), 500 (the state file
//! could not be written: nothing changed) or 503 (the etcd store cannot be
//! reached: nothing changed).
//!
//! Every group has a revision: that of the change that last wrote its
//! runtime form (0: never changed at runtime). `GET` of a group gives it in
//! the body and as an `ETag`; a change sent with `If-Match: "<revision>"` is
//! made only if the group is still at that revision, else refused with 409
//! `conflict` (an edit based on a stale read never overwrites another). A
//! change's answer gives the revision it was written at.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use axum::Json;
use axum::extract::{FromRequestParts, Path, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::groups::{GroupSpec, Member, default_probe_url};
use crate::membership::{Change, ChangeError, GroupPatch, MemberPatch, Membership};

/// A config reload in progress; `Err(reason)` when the new config was refused.
pub type ReloadFuture = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

/// Re-reads the config file and applies it.
pub type Reload = Arc<dyn Fn() -> ReloadFuture + Send + Sync>;

/// What the admin handlers share.
#[derive(Clone)]
pub struct AdminState {
    /// Membership and its persistence.
    pub membership: Arc<Membership>,
    /// The token, as its SHA-256 (compared in constant time).
    token_hash: [u8; 32],
    /// Config reload.
    pub reload: Reload,
}

impl std::fmt::Debug for AdminState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminState").finish_non_exhaustive()
    }
}

impl AdminState {
    /// State for the admin routes.
    pub fn new(membership: Arc<Membership>, token: &str, reload: Reload) -> Self {
        Self {
            membership,
            token_hash: token_hash(token),
            reload,
        }
    }
}

/// The SHA-256 of a token, the form tokens are kept in.
pub(crate) fn token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// The token of an `Authorization: Bearer <token>` header; the scheme is
/// case-insensitive (RFC 9110, 11.1).
pub(crate) fn bearer(headers: &axum::http::HeaderMap) -> Option<&str> {
    let value = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Whether `presented` is the token: both are hashed, then compared without
/// early exit, so the time taken says nothing about how much matched.
pub(crate) fn token_matches(expected_hash: &[u8; 32], presented: &str) -> bool {
    let presented = token_hash(presented);
    expected_hash
        .iter()
        .zip(presented.iter())
        .fold(0u8, |diff, (a, b)| diff | (a ^ b))
        == 0
}

/// The admin routes, behind the bearer check.
pub fn router(state: AdminState) -> axum::Router {
    axum::Router::new()
        .route("/v1/admin/groups", get(list_groups))
        .route(
            "/v1/admin/groups/{adn}",
            get(show_group)
                .put(create_group)
                .patch(update_group)
                .delete(delete_group),
        )
        .route("/v1/admin/groups/{adn}/reset", post(reset_group))
        .route("/v1/admin/groups/{adn}/members", post(add_member))
        .route(
            "/v1/admin/groups/{adn}/members/{endpoint}",
            axum::routing::patch(update_member).delete(remove_member),
        )
        .route(
            "/v1/admin/groups/{adn}/members/{endpoint}/drain",
            post(drain),
        )
        .route(
            "/v1/admin/groups/{adn}/members/{endpoint}/undrain",
            post(undrain),
        )
        .route("/v1/admin/reload", post(reload))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            require_token,
        ))
        .with_state(state)
}

async fn require_token(State(state): State<AdminState>, request: Request, next: Next) -> Response {
    match bearer(request.headers()) {
        Some(token) if token_matches(&state.token_hash, token) => next.run(request).await,
        _ => {
            tracing::warn!("admin request refused: missing or wrong bearer token");
            error(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "missing or wrong bearer token",
            )
        }
    }
}

fn error(status: StatusCode, error: &str, detail: impl Into<String>) -> Response {
    (
        status,
        Json(json!({ "error": error, "detail": detail.into() })),
    )
        .into_response()
}

/// The HTTP answer for a refused change.
pub fn refused(e: &ChangeError) -> Response {
    let (status, code) = match e {
        ChangeError::BadName(_) | ChangeError::Invalid(_) => (StatusCode::BAD_REQUEST, "invalid"),
        ChangeError::NoSuchGroup(_)
        | ChangeError::NoSuchMember { .. }
        | ChangeError::NotOverridden(_) => (StatusCode::NOT_FOUND, "not_found"),
        ChangeError::GroupExists(_) | ChangeError::MemberExists { .. } => {
            (StatusCode::CONFLICT, "exists")
        }
        ChangeError::Conflict { .. } => (StatusCode::CONFLICT, "conflict"),
        ChangeError::Persist { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "not_persisted"),
        ChangeError::StoreUnavailable { .. } => {
            (StatusCode::SERVICE_UNAVAILABLE, "store_unavailable")
        }
    };
    error(status, code, e.to_string())
}

/// The revision a change was based on: the request's `If-Match`, if any.
#[derive(Debug, Clone, Copy)]
struct BasedOn(Option<i64>);

impl<S: Send + Sync> FromRequestParts<S> for BasedOn {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        let Some(value) = parts.headers.get(axum::http::header::IF_MATCH) else {
            return Ok(BasedOn(None));
        };
        let text = value.to_str().unwrap_or_default().trim();
        if text == "*" {
            return Ok(BasedOn(None));
        }
        text.trim_start_matches("W/")
            .trim_matches('"')
            .parse()
            .map(|revision| BasedOn(Some(revision)))
            .map_err(|_| {
                error(
                    StatusCode::BAD_REQUEST,
                    "invalid",
                    format!("If-Match {text:?} is not a group revision such as \"12\""),
                )
            })
    }
}

async fn apply(state: &AdminState, change: Change, what: String, based_on: BasedOn) -> Response {
    match state.membership.change_based_on(change, based_on.0).await {
        Ok(revision) => {
            tracing::info!(change = %what, revision, "admin change applied");
            Json(json!({ "ok": true, "change": what, "revision": revision })).into_response()
        }
        Err(e) => {
            tracing::warn!(change = %what, error = %e, "admin change refused");
            refused(&e)
        }
    }
}

/// Applies a change about one member, named `address:port` in the path.
async fn member_change(
    state: &AdminState,
    endpoint: &str,
    based_on: BasedOn,
    make: impl FnOnce(SocketAddr) -> (Change, String),
) -> Response {
    match endpoint.parse() {
        Ok(endpoint) => {
            let (change, what) = make(endpoint);
            apply(state, change, what, based_on).await
        }
        Err(_) => error(
            StatusCode::BAD_REQUEST,
            "invalid",
            format!("{endpoint:?} is not address:port"),
        ),
    }
}

async fn list_groups(State(state): State<AdminState>) -> Response {
    let directory = state.membership.directory();
    let mut groups = Vec::new();
    for g in directory.groups() {
        groups.push(json!({
            "name": g.name.to_string(),
            "origin": state.membership.origin(&g.name).await,
            "members": g.members.len(),
            "drained": g.members.iter().filter(|m| m.drained).count(),
            "ttl": g.ttl,
            "answer": g.answer,
        }));
    }
    groups.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    Json(json!({ "groups": groups })).into_response()
}

async fn show_group(State(state): State<AdminState>, Path(adn): Path<String>) -> Response {
    let directory = state.membership.directory();
    let found = anycast_proto::name::parse(&adn, directory.zones())
        .ok()
        .and_then(|name| directory.group(&name).cloned());
    match found {
        Some(g) => {
            let revision = state.membership.revision(&g.name).await;
            (
                [(axum::http::header::ETAG, format!("\"{revision}\""))],
                Json(json!({
                    "name": g.name.to_string(),
                    "origin": state.membership.origin(&g.name).await,
                    "revision": revision,
                    "spec": g.spec,
                })),
            )
                .into_response()
        }
        None => error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no group {adn}"),
        ),
    }
}

async fn create_group(
    State(state): State<AdminState>,
    based_on: BasedOn,
    Path(adn): Path<String>,
    body: Option<Json<GroupSpec>>,
) -> Response {
    let spec = body.map(|Json(s)| s).unwrap_or_default();
    apply(
        &state,
        Change::CreateGroup {
            name: adn.clone(),
            spec,
        },
        format!("create group {adn}"),
        based_on,
    )
    .await
}

async fn update_group(
    State(state): State<AdminState>,
    based_on: BasedOn,
    Path(adn): Path<String>,
    Json(patch): Json<GroupPatch>,
) -> Response {
    apply(
        &state,
        Change::UpdateGroup {
            name: adn.clone(),
            patch,
        },
        format!("update group {adn}"),
        based_on,
    )
    .await
}

async fn delete_group(
    State(state): State<AdminState>,
    based_on: BasedOn,
    Path(adn): Path<String>,
) -> Response {
    apply(
        &state,
        Change::DeleteGroup { name: adn.clone() },
        format!("delete group {adn}"),
        based_on,
    )
    .await
}

async fn reset_group(
    State(state): State<AdminState>,
    based_on: BasedOn,
    Path(adn): Path<String>,
) -> Response {
    apply(
        &state,
        Change::ResetGroup { name: adn.clone() },
        format!("reset group {adn}"),
        based_on,
    )
    .await
}

/// A member as the admin API takes it: only the address is required.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewMember {
    address: std::net::IpAddr,
    #[serde(default = "default_port")]
    port: u16,
    probe: Option<String>,
    #[serde(default)]
    cost: u32,
    #[serde(default = "default_weight")]
    weight: u32,
}

fn default_port() -> u16 {
    80
}

fn default_weight() -> u32 {
    1
}

impl NewMember {
    fn into_member(self) -> Member {
        let endpoint = SocketAddr::new(self.address, self.port);
        Member {
            address: self.address,
            port: self.port,
            probe: self.probe.unwrap_or_else(|| default_probe_url(endpoint)),
            cost: self.cost,
            weight: self.weight,
            drained: false,
        }
    }
}

async fn add_member(
    State(state): State<AdminState>,
    based_on: BasedOn,
    Path(adn): Path<String>,
    Json(member): Json<NewMember>,
) -> Response {
    let member = member.into_member();
    let what = format!("add member {} to {adn}", member.endpoint());
    apply(
        &state,
        Change::AddMember { group: adn, member },
        what,
        based_on,
    )
    .await
}

async fn update_member(
    State(state): State<AdminState>,
    based_on: BasedOn,
    Path((adn, endpoint)): Path<(String, String)>,
    Json(patch): Json<MemberPatch>,
) -> Response {
    member_change(&state, &endpoint, based_on, |endpoint| {
        let what = format!("update member {endpoint} of {adn}");
        (
            Change::UpdateMember {
                group: adn,
                endpoint,
                patch,
            },
            what,
        )
    })
    .await
}

async fn remove_member(
    State(state): State<AdminState>,
    based_on: BasedOn,
    Path((adn, endpoint)): Path<(String, String)>,
) -> Response {
    member_change(&state, &endpoint, based_on, |endpoint| {
        let what = format!("remove member {endpoint} from {adn}");
        (
            Change::RemoveMember {
                group: adn,
                endpoint,
            },
            what,
        )
    })
    .await
}

async fn set_drained(
    state: AdminState,
    based_on: BasedOn,
    adn: String,
    endpoint: String,
    drained: bool,
) -> Response {
    member_change(&state, &endpoint, based_on, |endpoint| {
        let verb = if drained { "drain" } else { "undrain" };
        let what = format!("{verb} member {endpoint} of {adn}");
        (
            Change::SetDrained {
                group: adn,
                endpoint,
                drained,
            },
            what,
        )
    })
    .await
}

async fn drain(
    State(state): State<AdminState>,
    based_on: BasedOn,
    Path((adn, endpoint)): Path<(String, String)>,
) -> Response {
    set_drained(state, based_on, adn, endpoint, true).await
}

async fn undrain(
    State(state): State<AdminState>,
    based_on: BasedOn,
    Path((adn, endpoint)): Path<(String, String)>,
) -> Response {
    set_drained(state, based_on, adn, endpoint, false).await
}

async fn reload(State(state): State<AdminState>) -> Response {
    match (state.reload)().await {
        Ok(()) => Json(json!({ "ok": true, "change": "reload" })).into_response(),
        Err(reason) => error(StatusCode::BAD_REQUEST, "config_refused", reason),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_compared_whole() {
        let hash: [u8; 32] = Sha256::digest(b"the-right-token-123").into();
        assert!(token_matches(&hash, "the-right-token-123"));
        assert!(!token_matches(&hash, "the-right-token-12"));
        assert!(!token_matches(&hash, ""));
    }
}
