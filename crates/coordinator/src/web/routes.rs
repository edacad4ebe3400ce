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
use tonic::{Code, Request};

use super::{Caller, Role, WebError, WebState};
use crate::leader::LeaderState;

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
        .route("/api/session", get(session))
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

/// `GET /api/session`: who the caller is and whether this replica leads.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Session {
    caller: Caller,
    /// The caller may act (the page shows the buttons).
    can_act: bool,
    leading: bool,
    /// The leader's gRPC address, when this replica follows and knows it.
    leader: Option<String>,
}

async fn session(State(s): State<WebState>, caller: Caller) -> Json<Session> {
    let (leading, leader) = match &*s.leadership.watch().borrow() {
        LeaderState::Leader { .. } => (true, None),
        LeaderState::Follower { leader } => (false, leader.clone()),
    };
    Json(Session {
        can_act: caller.role >= Role::Operator,
        caller,
        leading,
        leader,
    })
}

async fn list(State(s): State<WebState>, caller: Caller) -> Result<Json<v1::ListRolloutsResponse>, WebError> {
    caller.require(Role::Viewer, "list rollouts")?;
    let r = s
        .api
        .list_rollouts(Request::new(v1::ListRolloutsRequest::default()))
        .await?;
    Ok(Json(r.into_inner()))
}

async fn rollout(
    State(s): State<WebState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<v1::Rollout>, WebError> {
    caller.require(Role::Viewer, "get rollout")?;
    let r = s
        .api
        .get_rollout(Request::new(v1::GetRolloutRequest { name }))
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
/// the Fleet service as the caller.
async fn act(
    State(s): State<WebState>,
    caller: Caller,
    Path((name, action)): Path<(String, String)>,
    Json(body): Json<ActionBody>,
) -> Result<Json<v1::Rollout>, WebError> {
    caller.require(Role::Operator, &format!("{action} rollout {name}"))?;
    let actor = caller.name.clone();
    let rollout_verb = || {
        Request::new(v1::RolloutVerbRequest {
            name: name.clone(),
            actor: actor.clone(),
            reason: body.reason.clone(),
        })
    };
    let cluster_verb = || {
        Request::new(v1::ClusterVerbRequest {
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
                .approve_wave(Request::new(v1::WaveVerbRequest {
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
/// - `problem`: `{"error": "...", "code": "..."}` (an unknown rollout);
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
    caller.require(Role::Viewer, "watch rollout")?;
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(async move {
        let stop = s.shutdown.clone();
        tokio::select! {
            _ = feed(&s, &name, &tx) => {}
            _ = stop.cancelled() => {}
            _ = tx.closed() => {}
        }
    });
    Ok(Sse::new(ReceiverStream::new(rx).map(Ok)).keep_alive(KeepAlive::default()))
}

/// Feeds one event stream until the rollout is over or the page goes away.
async fn feed(s: &WebState, name: &str, tx: &mpsc::Sender<Event>) {
    let mut last: Option<v1::Rollout> = None;
    let mut replica: Option<(bool, Option<String>)> = None;
    loop {
        let watched = s
            .api
            .watch_rollout(Request::new(v1::GetRolloutRequest { name: name.into() }))
            .await;
        match watched {
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
            Err(e) if e.code() == Code::NotFound => {
                problem(tx, e).await;
                return;
            }
            Err(_) => {
                let leader = match &*s.leadership.watch().borrow() {
                    LeaderState::Follower { leader } => leader.clone(),
                    LeaderState::Leader { .. } => None,
                };
                if !announce(tx, &mut replica, (false, leader)).await {
                    return;
                }
                match s
                    .api
                    .get_rollout(Request::new(v1::GetRolloutRequest { name: name.into() }))
                    .await
                {
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
                    Err(e) if e.code() == Code::NotFound => {
                        problem(tx, e).await;
                        return;
                    }
                    Err(_) => {}
                }
                tokio::time::sleep(FOLLOWER_REFRESH).await;
            }
        }
    }
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
    let data = serde_json::json!({"error": e.message(), "code": "NOT_FOUND"});
    let _ = tx
        .send(Event::default().event("problem").data(data.to_string()))
        .await;
    let _ = tx.send(Event::default().event("end").data("{}")).await;
}
