//! The dashboard's routes: the embedded page, the JSON API over the Fleet service, the event
//! stream of one rollout.

use std::convert::Infallible;
use std::time::Duration;

use aviary_proto::v1;
use aviary_proto::v1::fleet_server::Fleet as FleetApi;
use axum::Json;
use axum::extract::{Path, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::Stream;
use http::header;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;

use super::caller::{Credentials, TOKEN_COOKIE};
use super::{Caller, WebError, WebState};
use crate::leader::LeaderState;
use crate::security::Role;

const INDEX_HTML: &str = include_str!("../../web/index.html");
const APP_JS: &str = include_str!("../../web/app.js");
const APP_CSS: &str = include_str!("../../web/app.css");

/// How long a follower waits between reads of a watched rollout from the store (a follower
/// holds no live state; the watch moves to the live one as soon as this replica leads).
const FOLLOWER_REFRESH: Duration = Duration::from_secs(1);

pub(super) fn router() -> axum::Router<WebState> {
    axum::Router::new()
        .route("/", get(|| asset("text/html; charset=utf-8", INDEX_HTML)))
        .route("/app.js", get(|| asset("text/javascript; charset=utf-8", APP_JS)))
        .route("/app.css", get(|| asset("text/css; charset=utf-8", APP_CSS)))
        .route("/api/session", get(session).post(sign_in).delete(sign_out))
        .route("/api/rollouts", get(list))
        .route("/api/rollouts/{name}", get(rollout))
        .route("/api/rollouts/{name}/events", get(events))
        .route("/api/rollouts/{name}/{action}", post(act))
}

async fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// `GET /api/session`: who the caller is and whether this replica leads (401 when the
/// request names nobody: the page then shows its sign-in form).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Session {
    caller: SessionCaller,
    /// The caller may act (the page shows the buttons; abort needs admin).
    can_act: bool,
    /// Signed in with the page's form (the page offers to sign out).
    signed_in: bool,
    leading: bool,
    /// The leader's gRPC address, when this replica follows and knows it.
    leader: Option<String>,
}

#[derive(Serialize)]
struct SessionCaller {
    name: String,
    role: &'static str,
}

fn session_of(s: &WebState, caller: &Caller) -> Session {
    let (leading, leader) = match &*s.leadership.watch().borrow() {
        LeaderState::Leader { .. } => (true, None),
        LeaderState::Follower { leader } => (false, leader.clone()),
    };
    Session {
        can_act: caller.role >= Role::Operator,
        caller: SessionCaller {
            name: caller.name.clone(),
            role: caller.role.as_str(),
        },
        signed_in: caller.credentials.cookie,
        leading,
        leader,
    }
}

async fn session(State(s): State<WebState>, caller: Caller) -> Json<Session> {
    Json(session_of(&s, &caller))
}

#[derive(Deserialize)]
struct SignIn {
    token: String,
}

/// `POST /api/session {"token": "..."}`: checks a bearer token of the token file and keeps it
/// in an HttpOnly, Secure, SameSite=Strict cookie, so the page's requests and its event stream
/// carry it.
async fn sign_in(State(s): State<WebState>, Json(body): Json<SignIn>) -> Result<Response, WebError> {
    if !s.secure {
        return Err(WebError::bad_request(
            "this dashboard has no sign-in: the coordinator runs without TLS (--insecure) and every caller is the anonymous admin".into(),
        ));
    }
    let token = body.token.trim();
    // What a cookie can carry unquoted; `aviary certs token-line` asks for random characters.
    let cookie_safe = !token.is_empty()
        && token.len() <= 4096
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~+/=".contains(&b));
    if !cookie_safe {
        return Err(WebError::bad_request(
            "token: letters, digits and -._~+/= only (as `openssl rand -hex 32` makes)".into(),
        ));
    }
    let caller = Caller::identify(Credentials::token(token), &s)?;
    tracing::info!(target: "aviary::audit", subject = %caller.name, "signed in to the dashboard");
    let cookie = format!("{TOKEN_COOKIE}={token}; Path=/; HttpOnly; Secure; SameSite=Strict");
    Ok(([(header::SET_COOKIE, cookie)], Json(session_of(&s, &caller))).into_response())
}

/// `DELETE /api/session`: forgets the sign-in cookie.
async fn sign_out() -> Response {
    let cookie = format!("{TOKEN_COOKIE}=; Path=/; HttpOnly; Secure; SameSite=Strict; Max-Age=0");
    ([(header::SET_COOKIE, cookie)], Json(serde_json::json!({}))).into_response()
}

async fn list(State(s): State<WebState>, caller: Caller) -> Result<Json<v1::ListRolloutsResponse>, WebError> {
    let r = s
        .api
        .list_rollouts(caller.request(v1::ListRolloutsRequest::default()))
        .await?;
    Ok(Json(r.into_inner()))
}

async fn rollout(
    State(s): State<WebState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<v1::Rollout>, WebError> {
    let r = s
        .api
        .get_rollout(caller.request(v1::GetRolloutRequest { name }))
        .await?;
    Ok(Json(r.into_inner()))
}

/// The body of an action: the wave (approve), the cluster (skip, retry), a reason (pause,
/// resume, abort).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ActionBody {
    wave: String,
    cluster: String,
    reason: String,
}

/// `POST /api/rollouts/{name}/{action}`: approve, pause, resume, abort, skip or retry, through
/// the Fleet service as the caller (its role check, refusals and audit log). The history
/// records the caller's identity with "dashboard" as the comment (without TLS: "dashboard").
async fn act(
    State(s): State<WebState>,
    caller: Caller,
    Path((name, action)): Path<(String, String)>,
    Json(body): Json<ActionBody>,
) -> Result<Json<v1::Rollout>, WebError> {
    caller.check_cap(Role::Operator, &format!("{action} rollout {name}"))?;
    let actor = "dashboard".to_string();
    let rollout_verb = || {
        caller.request(v1::RolloutVerbRequest {
            name: name.clone(),
            actor: actor.clone(),
            reason: body.reason.clone(),
        })
    };
    let cluster_verb = || {
        caller.request(v1::ClusterVerbRequest {
            name: name.clone(),
            cluster: body.cluster.clone(),
            actor: actor.clone(),
        })
    };
    let out = match action.as_str() {
        "pause" => s.api.pause_rollout(rollout_verb()).await,
        "resume" => s.api.resume_rollout(rollout_verb()).await,
        "abort" => s.api.abort_rollout(rollout_verb()).await,
        "approve" => {
            s.api
                .approve_wave(caller.request(v1::WaveVerbRequest {
                    name: name.clone(),
                    wave: body.wave.clone(),
                    actor: actor.clone(),
                }))
                .await
        }
        "skip" => s.api.skip_cluster(cluster_verb()).await,
        "retry" => s.api.retry_cluster(cluster_verb()).await,
        other => {
            return Err(WebError::bad_request(format!(
                "{other}: not an action; use approve, pause, resume, abort, skip or retry"
            )));
        }
    };
    Ok(Json(out?.into_inner()))
}

/// `GET /api/rollouts/{name}/events`: Server-Sent Events of one rollout.
///
/// - `rollout`: the rollout as JSON (the same message as `GetRollout`), whenever it changes;
/// - `replica`: `{"leading": bool, "leader": "..."}` when the stream starts and when this
///   replica's role changes;
/// - `problem`: `{"error": "...", "code": "..."}` (an unknown rollout, a refused caller);
/// - `end`: the rollout is over (or unknown): nothing more will come, the page closes it.
///
/// On the leader it is fed by the Fleet service's WatchRollout (what `aviary rollout watch`
/// reads). On a follower, or between the end of one leader's term and the next, it reads the
/// rollout from the store every second and moves back to the watch as soon as this replica
/// leads, so a page kept open on any replica lives through a failover without reconnecting.
async fn events(
    State(s): State<WebState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, WebError> {
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(async move {
        let stop = s.shutdown.clone();
        tokio::select! {
            _ = feed(&s, &caller, &name, &tx) => {}
            _ = stop.cancelled() => {}
            _ = tx.closed() => {}
        }
    });
    Ok(Sse::new(ReceiverStream::new(rx).map(Ok)).keep_alive(KeepAlive::default()))
}

/// Feeds one event stream until the rollout is over or the page goes away.
async fn feed(s: &WebState, caller: &Caller, name: &str, tx: &mpsc::Sender<Event>) {
    let mut last: Option<v1::Rollout> = None;
    let mut replica: Option<(bool, Option<String>)> = None;
    let mut leadership = s.leadership.watch();
    let get = || caller.request(v1::GetRolloutRequest { name: name.into() });
    loop {
        leadership.borrow_and_update();
        match s.api.watch_rollout(get()).await {
            Ok(stream) => {
                if !announce(tx, &mut replica, (true, None)).await {
                    return;
                }
                let mut stream = stream.into_inner();
                while let Some(item) = stream.next().await {
                    match item {
                        Ok(r) => {
                            if !send_rollout(tx, &mut last, r).await {
                                return;
                            }
                        }
                        // The term ended: read the store until this replica leads again.
                        Err(_) => break,
                    }
                }
                if last.as_ref().is_some_and(is_over) {
                    let _ = tx.send(Event::default().event("end").data("{}")).await;
                    return;
                }
            }
            Err(e) if is_final(&e) => {
                problem(tx, e).await;
                return;
            }
            // Not the leader (or still loading): show the stored rollout.
            Err(_) => {
                let leader = match &*leadership.borrow_and_update() {
                    LeaderState::Follower { leader } => leader.clone(),
                    LeaderState::Leader { .. } => None,
                };
                if !announce(tx, &mut replica, (false, leader)).await {
                    return;
                }
                match s.api.get_rollout(get()).await {
                    Ok(r) => {
                        let r = r.into_inner();
                        let over = is_over(&r);
                        if !send_rollout(tx, &mut last, r).await {
                            return;
                        }
                        if over {
                            let _ = tx.send(Event::default().event("end").data("{}")).await;
                            return;
                        }
                    }
                    Err(e) if is_final(&e) => {
                        problem(tx, e).await;
                        return;
                    }
                    Err(_) => {}
                }
                // Read again in a second, or at once when this replica's role changes.
                tokio::select! {
                    _ = tokio::time::sleep(FOLLOWER_REFRESH) => {}
                    r = leadership.changed() => if r.is_err() { return },
                }
            }
        }
    }
}

/// Errors that no failover changes: the stream says why and ends.
fn is_final(e: &tonic::Status) -> bool {
    matches!(
        e.code(),
        Code::NotFound | Code::PermissionDenied | Code::Unauthenticated | Code::InvalidArgument
    )
}

fn is_over(r: &v1::Rollout) -> bool {
    matches!(r.phase.as_str(), "Succeeded" | "Failed" | "Aborted")
}

/// Sends the rollout if it changed; false when the page has gone.
async fn send_rollout(tx: &mpsc::Sender<Event>, last: &mut Option<v1::Rollout>, r: v1::Rollout) -> bool {
    if last.as_ref() == Some(&r) {
        return true;
    }
    let Ok(event) = Event::default().event("rollout").json_data(&r) else {
        return true;
    };
    *last = Some(r);
    tx.send(event).await.is_ok()
}

/// Sends the replica's role when it changed; false when the page has gone.
async fn announce(
    tx: &mpsc::Sender<Event>,
    sent: &mut Option<(bool, Option<String>)>,
    now: (bool, Option<String>),
) -> bool {
    if sent.as_ref() == Some(&now) {
        return true;
    }
    let data = serde_json::json!({"leading": now.0, "leader": now.1});
    *sent = Some(now);
    tx.send(Event::default().event("replica").data(data.to_string()))
        .await
        .is_ok()
}

async fn problem(tx: &mpsc::Sender<Event>, e: tonic::Status) {
    let data = WebError::from(e).body_json();
    let _ = tx.send(Event::default().event("problem").data(data)).await;
    let _ = tx.send(Event::default().event("end").data("{}")).await;
}
