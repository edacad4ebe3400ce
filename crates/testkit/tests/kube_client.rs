//! The fake API server against kube-rs over real HTTP on 127.0.0.1.

use std::time::Duration;

use aviary_testkit::apiserver::{GATEWAY_CONTROLLER_NAME, Options, SimulatorConfig};
use aviary_testkit::{FakeApiServer, NEVER_READY_ANNOTATION};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Event as CoreEvent, Namespace};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams,
    PostParams, WatchEvent, WatchParams,
};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(10);

async fn server_without_simulators() -> FakeApiServer {
    FakeApiServer::start_with(Options {
        simulators: SimulatorConfig::disabled(),
        ..Options::default()
    })
    .await
    .expect("fake API server starts")
}

fn fixture(name: &str) -> Value {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"));
    serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("parsing {path}: {e}"))
}

fn deployment(name: &str, image: &str) -> Deployment {
    serde_json::from_value(json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": image, "ports": [{"containerPort": 9898}]}]},
            },
        },
    }))
    .expect("valid Deployment")
}

fn api_status(err: kube::Error) -> (u16, String) {
    match err {
        kube::Error::Api(s) => (s.code, s.reason.clone()),
        other => panic!("expected an API error, got {other:?}"),
    }
}

async fn install_canary_crd(client: &Client) -> ApiResource {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd: CustomResourceDefinition =
        serde_json::from_value(fixture("canary-crd.yaml")).expect("CRD parses");
    crds.create(&PostParams::default(), &crd)
        .await
        .expect("CRD created");
    let established = crds.get("canaries.flagger.app").await.expect("CRD readable");
    let conditions = established.status.and_then(|s| s.conditions).unwrap_or_default();
    assert!(
        conditions
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True"),
        "{conditions:?}"
    );
    let gvk = GroupVersionKind::gvk("flagger.app", "v1beta1", "Canary");
    ApiResource::from_gvk_with_plural(&gvk, "canaries")
}

#[tokio::test]
async fn typed_crud_conflicts_and_generation() {
    let server = server_without_simulators().await;
    let client = server.client().unwrap();
    let api: Api<Deployment> = Api::namespaced(client.clone(), "test");

    let created = api
        .create(&PostParams::default(), &deployment("podinfo", "podinfo:6.0.0"))
        .await
        .unwrap();
    assert_eq!(created.metadata.generation, Some(1));
    assert!(created.metadata.uid.is_some() && created.metadata.creation_timestamp.is_some());
    let spec = created.spec.clone();
    assert_eq!(
        spec.progress_deadline_seconds,
        Some(600),
        "API server defaults are applied"
    );

    let err = api
        .create(&PostParams::default(), &deployment("podinfo", "x"))
        .await
        .unwrap_err();
    assert_eq!(api_status(err), (409, "AlreadyExists".into()));

    api.create(&PostParams::default(), &deployment("other", "other:1"))
        .await
        .unwrap();
    let listed = api
        .list(&ListParams::default().labels("app=podinfo"))
        .await
        .unwrap();
    assert_eq!(
        listed.items.iter().map(|d| d.name_any()).collect::<Vec<_>>(),
        ["podinfo"]
    );
    let by_field = api
        .list(&ListParams::default().fields("metadata.name=other"))
        .await
        .unwrap();
    assert_eq!(by_field.items.len(), 1);
    let meta = api.list_metadata(&ListParams::default()).await.unwrap();
    assert_eq!(
        meta.items.iter().map(|m| m.name_any()).collect::<Vec<_>>(),
        ["other", "podinfo"]
    );
    assert_eq!(
        api.get_metadata("podinfo").await.unwrap().metadata.generation,
        Some(1)
    );
    let all: Api<Deployment> = Api::all(client.clone());
    assert_eq!(
        all.list(&ListParams::default().fields("metadata.namespace=test"))
            .await
            .unwrap()
            .items
            .len(),
        2
    );

    // A label change is metadata only: no new generation.
    let mut labelled = created.clone();
    labelled.labels_mut().insert("team".into(), "a".into());
    let labelled = api
        .replace("podinfo", &PostParams::default(), &labelled)
        .await
        .unwrap();
    assert_eq!(labelled.metadata.generation, Some(1));
    assert_ne!(labelled.resource_version(), created.resource_version());

    // Replacing from the stale copy conflicts.
    let mut stale = created.clone();
    stale.spec.replicas = Some(5);
    let err = api
        .replace("podinfo", &PostParams::default(), &stale)
        .await
        .unwrap_err();
    assert_eq!(api_status(err), (409, "Conflict".into()));

    let mut fresh = labelled.clone();
    fresh.spec.replicas = Some(5);
    let replaced = api
        .replace("podinfo", &PostParams::default(), &fresh)
        .await
        .unwrap();
    assert_eq!(replaced.metadata.generation, Some(2));

    let err = api.get("missing").await.unwrap_err();
    assert_eq!(api_status(err), (404, "NotFound".into()));
    api.delete("podinfo", &DeleteParams::default()).await.unwrap();
    assert!(api.get_opt("podinfo").await.unwrap().is_none());
    server.shutdown().await;
}

#[tokio::test]
async fn dynamic_objects_of_a_crd_and_crd_removal() {
    let server = server_without_simulators().await;
    let client = server.client().unwrap();
    let ar = install_canary_crd(&client).await;

    let discovery = kube::Discovery::new(client.clone())
        .run()
        .await
        .expect("legacy discovery");
    let (found, caps) = discovery
        .resolve_gvk(&GroupVersionKind::gvk("flagger.app", "v1beta1", "Canary"))
        .expect("Canary discovered");
    assert_eq!(found.plural, "canaries");
    assert!(
        caps.subresources
            .iter()
            .any(|(r, _)| r.plural == "canaries/status" || r.plural == "status")
    );
    let aggregated = kube::Discovery::new(client.clone())
        .run_aggregated()
        .await
        .expect("aggregated discovery");
    assert!(aggregated.has_group("flagger.app") && aggregated.has_group("serving.knative.dev"));

    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), "test", &ar);
    let mut canary: DynamicObject = serde_json::from_value(fixture("canary.yaml")).unwrap();
    canary.data["status"] = json!({"phase": "Succeeded"});
    let created = api.create(&PostParams::default(), &canary).await.unwrap();
    assert!(
        created.data.get("status").is_none(),
        "status is ignored on create with a status subresource"
    );
    assert_eq!(api.list(&ListParams::default()).await.unwrap().items.len(), 1);

    // Strategic merge is refused for custom resources, as in a real cluster; apply too.
    let err = api
        .patch(
            "podinfo",
            &PatchParams::default(),
            &Patch::Strategic(json!({"spec": {"provider": "istio"}})),
        )
        .await
        .unwrap_err();
    assert_eq!(api_status(err), (415, "UnsupportedMediaType".into()));
    let err = api
        .patch(
            "podinfo",
            &PatchParams::apply("test"),
            &Patch::Apply(json!({"apiVersion": "flagger.app/v1beta1", "kind": "Canary"})),
        )
        .await
        .unwrap_err();
    assert_eq!(api_status(err), (415, "UnsupportedMediaType".into()));

    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.delete("canaries.flagger.app", &DeleteParams::default())
        .await
        .unwrap();
    let err = api.list(&ListParams::default()).await.unwrap_err();
    assert_eq!(api_status(err).0, 404);
    assert!(
        server
            .store()
            .list("flagger.app/v1beta1", "Canary", None)
            .is_empty()
    );
    server.shutdown().await;
}

#[tokio::test]
async fn watcher_sees_added_modified_deleted_across_stream_ends() {
    let server = server_without_simulators().await;
    let client = server.client().unwrap();
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "test");
    let cm = |v: &str| -> ConfigMap {
        serde_json::from_value(json!({"metadata": {"name": "cfg", "labels": {"app": "x"}}, "data": {"v": v}}))
            .unwrap()
    };
    // A one-second server-side timeout makes the watcher re-watch while the test runs.
    let cfg = watcher::Config::default().labels("app=x").timeout(1);
    let mut events = watcher(api.clone(), cfg).boxed();
    let mut next = async || {
        tokio::time::timeout(WAIT, events.try_next())
            .await
            .expect("event in time")
            .unwrap()
            .unwrap()
    };
    assert!(matches!(next().await, watcher::Event::Init));
    assert!(matches!(next().await, watcher::Event::InitDone));

    api.create(&PostParams::default(), &cm("1")).await.unwrap();
    match next().await {
        watcher::Event::Apply(o) => assert_eq!(o.data.unwrap()["v"], "1"),
        other => panic!("expected Apply, got {other:?}"),
    }
    // Keep changing the object until the server has served a second watch (the first stream
    // ended by its timeout); every change must still arrive.
    let mut i = 2;
    while server.watch_requests() < 2 {
        assert!(i < 200, "the watcher never re-watched");
        api.patch(
            "cfg",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"v": i.to_string()}})),
        )
        .await
        .unwrap();
        match next().await {
            watcher::Event::Apply(o) => assert_eq!(o.data.unwrap()["v"], i.to_string()),
            other => panic!("expected Apply, got {other:?}"),
        }
        i += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A label change that stops matching is a deletion for this watcher.
    api.patch(
        "cfg",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"app": "y"}}})),
    )
    .await
    .unwrap();
    assert!(matches!(next().await, watcher::Event::Delete(_)));
    api.patch(
        "cfg",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"app": "x"}}})),
    )
    .await
    .unwrap();
    assert!(matches!(next().await, watcher::Event::Apply(_)));
    api.delete("cfg", &DeleteParams::default()).await.unwrap();
    assert!(matches!(next().await, watcher::Event::Delete(_)));
    server.shutdown().await;
}

#[tokio::test]
async fn raw_watch_resumes_from_resource_version_and_reports_gone() {
    let server = FakeApiServer::start_with(Options {
        simulators: SimulatorConfig::disabled(),
        watch_history: 3,
        ..Options::default()
    })
    .await
    .unwrap();
    let client = server.client().unwrap();
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "test");
    let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "a"}})).unwrap();
    let created = api.create(&PostParams::default(), &cm).await.unwrap();
    let start_rv = created.resource_version().unwrap();

    // The stream ends by itself at timeoutSeconds, with a closing bookmark.
    let stream = api
        .watch(&WatchParams::default().timeout(1), &start_rv)
        .await
        .unwrap();
    let events: Vec<_> = tokio::time::timeout(WAIT, stream.collect::<Vec<_>>())
        .await
        .expect("stream ends");
    assert!(
        matches!(events.last(), Some(Ok(WatchEvent::Bookmark(_)))),
        "{events:?}"
    );

    // Changes made while nobody watched are replayed from the resourceVersion.
    api.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"k": "v"}})),
    )
    .await
    .unwrap();
    let mut stream = api
        .watch(&WatchParams::default().timeout(5), &start_rv)
        .await
        .unwrap()
        .boxed();
    match tokio::time::timeout(WAIT, stream.next()).await.unwrap() {
        Some(Ok(WatchEvent::Modified(o))) => assert_eq!(o.data.unwrap()["k"], "v"),
        other => panic!("expected MODIFIED, got {other:?}"),
    }
    drop(stream);

    for i in 0..5 {
        api.patch(
            "a",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"k": i.to_string()}})),
        )
        .await
        .unwrap();
    }
    let mut stream = api
        .watch(&WatchParams::default().timeout(5), &start_rv)
        .await
        .unwrap()
        .boxed();
    match tokio::time::timeout(WAIT, stream.next()).await.unwrap() {
        Some(Ok(WatchEvent::Error(e))) => assert_eq!((e.code, e.reason.as_str()), (410, "Expired")),
        other => panic!("expected a 410 ERROR event, got {other:?}"),
    }
    server.shutdown().await;
}

#[tokio::test]
async fn merge_json_and_strategic_patches() {
    let server = server_without_simulators().await;
    let api: Api<Deployment> = Api::namespaced(server.client().unwrap(), "test");
    api.create(&PostParams::default(), &deployment("podinfo", "podinfo:6.0.0"))
        .await
        .unwrap();
    let pp = PatchParams::default();

    let d = api
        .patch(
            "podinfo",
            &pp,
            &Patch::Merge(json!({"metadata": {"annotations": {"a": "1"}}})),
        )
        .await
        .unwrap();
    assert_eq!(d.annotations()["a"], "1");
    assert_eq!(d.metadata.generation, Some(1));

    let op = json!([{"op": "replace", "path": "/spec/template/spec/containers/0/image", "value": "podinfo:6.0.1"}]);
    let d = api
        .patch(
            "podinfo",
            &pp,
            &Patch::Json::<()>(serde_json::from_value(op).unwrap()),
        )
        .await
        .unwrap();
    assert_eq!(
        d.spec.template.spec.as_ref().unwrap().containers[0]
            .image
            .as_deref(),
        Some("podinfo:6.0.1")
    );
    assert_eq!(d.metadata.generation, Some(2));

    let failing = json!([{"op": "test", "path": "/spec/replicas", "value": 7}]);
    let err = api
        .patch(
            "podinfo",
            &pp,
            &Patch::Json::<()>(serde_json::from_value(failing).unwrap()),
        )
        .await
        .unwrap_err();
    assert_eq!(api_status(err), (422, "Invalid".into()));

    // Strategic merge: containers merge by name, env by name, ports by containerPort.
    let smp = json!({"spec": {"template": {"spec": {"containers": [
        {"name": "app", "env": [{"name": "A", "value": "1"}], "ports": [{"containerPort": 8080}]},
        {"name": "sidecar", "image": "envoy:1"},
    ]}}}});
    let d = api.patch("podinfo", &pp, &Patch::Strategic(smp)).await.unwrap();
    let containers = d.spec.template.spec.unwrap().containers;
    assert_eq!(containers.len(), 2);
    assert_eq!(
        containers[0].image.as_deref(),
        Some("podinfo:6.0.1"),
        "the merged container keeps its image"
    );
    assert_eq!(containers[0].env.as_ref().unwrap()[0].name, "A");
    assert_eq!(containers[0].ports.as_ref().unwrap().len(), 2);

    // A resourceVersion inside a patch is a precondition.
    let err = api
        .patch(
            "podinfo",
            &pp,
            &Patch::Merge(json!({"metadata": {"resourceVersion": "1"}, "spec": {"replicas": 1}})),
        )
        .await
        .unwrap_err();
    assert_eq!(api_status(err), (409, "Conflict".into()));
    server.shutdown().await;
}

#[tokio::test]
async fn status_subresource_is_separate_from_the_main_endpoint() {
    let server = server_without_simulators().await;
    let client = server.client().unwrap();
    let api: Api<Deployment> = Api::namespaced(client.clone(), "test");
    api.create(&PostParams::default(), &deployment("podinfo", "podinfo:6.0.0"))
        .await
        .unwrap();

    let d = api
        .patch_status(
            "podinfo",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"readyReplicas": 2}, "spec": {"replicas": 9}})),
        )
        .await
        .unwrap();
    assert_eq!(d.status.as_ref().unwrap().ready_replicas, Some(2));
    assert_eq!(d.spec.replicas, Some(2), "/status ignores spec");
    assert_eq!(
        d.metadata.generation,
        Some(1),
        "status changes keep the generation"
    );

    let mut main = d.clone();
    main.status.as_mut().unwrap().ready_replicas = Some(0);
    main.spec.replicas = Some(3);
    let d = api
        .replace("podinfo", &PostParams::default(), &main)
        .await
        .unwrap();
    assert_eq!(
        d.status.as_ref().unwrap().ready_replicas,
        Some(2),
        "the main endpoint ignores status"
    );
    assert_eq!(d.metadata.generation, Some(2));

    let mut st = d.clone();
    st.status.as_mut().unwrap().observed_generation = Some(2);
    let d = api
        .replace_status("podinfo", &PostParams::default(), &st)
        .await
        .unwrap();
    assert_eq!(d.status.unwrap().observed_generation, Some(2));

    // A CRD declaring the subresource behaves the same.
    let ar = install_canary_crd(&client).await;
    let canaries: Api<DynamicObject> = Api::namespaced_with(client.clone(), "test", &ar);
    canaries
        .create(
            &PostParams::default(),
            &serde_json::from_value(fixture("canary.yaml")).unwrap(),
        )
        .await
        .unwrap();
    let c = canaries
        .patch_status(
            "podinfo",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Progressing", "canaryWeight": 10}})),
        )
        .await
        .unwrap();
    assert_eq!(c.data["status"]["phase"], "Progressing");
    let c = canaries
        .patch(
            "podinfo",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Failed"}})),
        )
        .await
        .unwrap();
    assert_eq!(c.data["status"]["phase"], "Progressing");
    assert_eq!(c.metadata.generation, Some(1));

    // Scale subresource (kubectl scale, HPA).
    let scale = api.get_scale("podinfo").await.unwrap();
    assert_eq!(scale.spec.unwrap().replicas, Some(3));
    api.patch_scale(
        "podinfo",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"replicas": 4}})),
    )
    .await
    .unwrap();
    assert_eq!(api.get("podinfo").await.unwrap().spec.replicas, Some(4));
    server.shutdown().await;
}

#[tokio::test]
async fn finalizers_delay_deletion_until_removed() {
    let server = server_without_simulators().await;
    let api: Api<ConfigMap> = Api::namespaced(server.client().unwrap(), "test");
    let cm: ConfigMap = serde_json::from_value(
        json!({"metadata": {"name": "guarded", "finalizers": ["aviary.dev/finalizer"]}}),
    )
    .unwrap();
    api.create(&PostParams::default(), &cm).await.unwrap();
    let mut events = api
        .watch(&WatchParams::default().timeout(10), "0")
        .await
        .unwrap()
        .boxed();
    assert!(matches!(events.next().await, Some(Ok(WatchEvent::Added(_)))));

    let deleted = api.delete("guarded", &DeleteParams::default()).await.unwrap();
    let terminating = deleted
        .left()
        .expect("the object comes back while finalizers remain");
    assert!(terminating.metadata.deletion_timestamp.is_some());
    assert!(matches!(events.next().await, Some(Ok(WatchEvent::Modified(_)))));
    assert!(
        api.get("guarded")
            .await
            .unwrap()
            .metadata
            .deletion_timestamp
            .is_some()
    );

    // A second delete changes nothing; removing the last finalizer removes the object.
    api.delete("guarded", &DeleteParams::default()).await.unwrap();
    api.patch(
        "guarded",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    assert!(matches!(events.next().await, Some(Ok(WatchEvent::Modified(_)))));
    assert!(matches!(events.next().await, Some(Ok(WatchEvent::Deleted(_)))));
    assert!(api.get_opt("guarded").await.unwrap().is_none());
    server.shutdown().await;
}

#[tokio::test]
async fn kube_runtime_finalizer_helper_works() {
    use kube::runtime::controller::Action;
    use kube::runtime::finalizer::{Event as Finalizer, finalizer};
    use std::sync::Arc;

    let server = server_without_simulators().await;
    let api: Api<ConfigMap> = Api::namespaced(server.client().unwrap(), "test");
    api.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "c"}})).unwrap(),
    )
    .await
    .unwrap();
    let run = async |obj: ConfigMap| {
        finalizer(&api, "aviary.dev/cleanup", Arc::new(obj), async |ev| {
            Ok::<_, std::convert::Infallible>(match ev {
                Finalizer::Apply(_) => Action::await_change(),
                Finalizer::Cleanup(_) => Action::await_change(),
            })
        })
        .await
    };
    // First pass adds the finalizer (JSON patch with a `test` of a missing path against null).
    run(api.get("c").await.unwrap()).await.expect("finalizer added");
    assert_eq!(api.get("c").await.unwrap().finalizers(), ["aviary.dev/cleanup"]);
    run(api.get("c").await.unwrap()).await.expect("apply runs");
    api.delete("c", &DeleteParams::default()).await.unwrap();
    run(api.get("c").await.unwrap())
        .await
        .expect("cleanup runs and removes the finalizer");
    assert!(api.get_opt("c").await.unwrap().is_none());
    server.shutdown().await;
}

#[tokio::test]
async fn events_field_selectors_and_pagination() {
    let server = server_without_simulators().await;
    let client = server.client().unwrap();
    let events: Api<CoreEvent> = Api::namespaced(client.clone(), "test");
    for (i, (kind, name)) in [
        ("Canary", "podinfo"),
        ("Canary", "other"),
        ("Deployment", "podinfo"),
    ]
    .iter()
    .enumerate()
    {
        let ev: CoreEvent = serde_json::from_value(json!({
            "metadata": {"name": format!("ev-{i}")},
            "involvedObject": {"kind": kind, "name": name, "namespace": "test", "uid": format!("uid-{i}")},
            "reason": "Synced", "message": "m", "type": "Normal",
        }))
        .unwrap();
        events.create(&PostParams::default(), &ev).await.unwrap();
    }
    let sel = "involvedObject.name=podinfo,involvedObject.namespace=test,involvedObject.kind=Canary,involvedObject.uid=uid-0";
    let found = events.list(&ListParams::default().fields(sel)).await.unwrap();
    assert_eq!(
        found.items.iter().map(|e| e.name_any()).collect::<Vec<_>>(),
        ["ev-0"]
    );
    let found = events
        .list(&ListParams::default().fields("involvedObject.kind!=Canary"))
        .await
        .unwrap();
    assert_eq!(found.items.len(), 1);
    let err = events
        .list(&ListParams::default().fields("spec.nodeName=x"))
        .await
        .unwrap_err();
    assert_eq!(api_status(err), (400, "BadRequest".into()));

    let page = events.list(&ListParams::default().limit(2)).await.unwrap();
    assert_eq!(page.items.len(), 2);
    let token = page.metadata.continue_.clone().expect("a continue token");
    let rest = events
        .list(&ListParams::default().limit(2).continue_token(&token))
        .await
        .unwrap();
    assert_eq!(
        rest.items.iter().map(|e| e.name_any()).collect::<Vec<_>>(),
        ["ev-2"]
    );
    assert!(rest.metadata.continue_.is_none_or(|c| c.is_empty()));
    server.shutdown().await;
}

#[tokio::test]
async fn namespaces_and_owner_references_cascade() {
    let server = FakeApiServer::start().await.unwrap();
    let client = server.client().unwrap();
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": "test"}})).unwrap();
    let ns = namespaces.create(&PostParams::default(), &ns).await.unwrap();
    assert_eq!(ns.status.unwrap().phase.as_deref(), Some("Active"));

    let ksvc = fixture("podinfo-ksvc.yaml");
    server.store().create(ksvc).unwrap();
    let store = server.store().clone();
    store
        .wait_for(
            "serving.knative.dev/v1",
            "Revision",
            Some("test"),
            "podinfo-00001",
            WAIT,
            |_| true,
        )
        .await
        .unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "test");
    cms.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "c"}})).unwrap(),
    )
    .await
    .unwrap();

    // Deleting the Service garbage-collects its revisions; deleting the namespace its contents.
    store
        .delete("serving.knative.dev/v1", "Service", Some("test"), "podinfo")
        .unwrap();
    assert!(
        store
            .list("serving.knative.dev/v1", "Revision", Some("test"))
            .is_empty()
    );
    namespaces.delete("test", &DeleteParams::default()).await.unwrap();
    assert!(cms.get_opt("c").await.unwrap().is_none());
    server.shutdown().await;
}

#[tokio::test]
async fn deployment_simulator_ready_never_ready_and_toggle() {
    let server = FakeApiServer::start().await.unwrap();
    let api: Api<Deployment> = Api::namespaced(server.client().unwrap(), "test");
    let store = server.store().clone();
    let status_of = |d: &Value| d["status"].clone();

    api.create(&PostParams::default(), &deployment("ready", "app:1"))
        .await
        .unwrap();
    let d = store
        .wait_for("apps/v1", "Deployment", Some("test"), "ready", WAIT, |d| {
            d["status"]["availableReplicas"] == 2
        })
        .await
        .unwrap();
    let st = status_of(&d);
    assert_eq!(
        (
            st["updatedReplicas"].clone(),
            st["readyReplicas"].clone(),
            st["observedGeneration"].clone()
        ),
        (json!(2), json!(2), json!(1))
    );
    let progressing = st["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Progressing")
        .unwrap();
    assert_eq!(progressing["reason"], "NewReplicaSetAvailable");

    let mut never = deployment("stuck", "app:1");
    never
        .annotations_mut()
        .insert(NEVER_READY_ANNOTATION.into(), "true".into());
    api.create(&PostParams::default(), &never).await.unwrap();
    let d = store
        .wait_for("apps/v1", "Deployment", Some("test"), "stuck", WAIT, |d| {
            d["status"]["conditions"]
                .as_array()
                .is_some_and(|c| c.iter().any(|c| c["reason"] == "MinimumReplicasUnavailable"))
                && d["status"]["observedGeneration"] == 1
        })
        .await
        .unwrap();
    assert!(d["status"]["updatedReplicas"].is_null());
    assert!(!d.to_string().contains("ProgressDeadlineExceeded"));

    let mut zero = deployment("zero", "app:1");
    zero.spec.replicas = Some(0);
    api.create(&PostParams::default(), &zero).await.unwrap();
    store
        .wait_for("apps/v1", "Deployment", Some("test"), "zero", WAIT, |d| {
            d["status"]["observedGeneration"] == 1
        })
        .await
        .unwrap();

    // Off: nothing happens; on again: existing objects are reconciled.
    server.simulators().set_deployments(false);
    api.create(&PostParams::default(), &deployment("later", "app:1"))
        .await
        .unwrap();
    assert!(store.get("apps/v1", "Deployment", Some("test"), "later").unwrap()["status"].is_null());
    server.simulators().set_deployments(true);
    store
        .wait_for("apps/v1", "Deployment", Some("test"), "later", WAIT, |d| {
            d["status"]["readyReplicas"] == 2
        })
        .await
        .unwrap();
    server.shutdown().await;
}

#[tokio::test]
async fn knative_and_httproute_simulators() {
    let server = FakeApiServer::start().await.unwrap();
    let client = server.client().unwrap();
    let store = server.store().clone();
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("serving.knative.dev", "v1", "Service"),
        "services",
    );
    let ksvcs: Api<DynamicObject> = Api::namespaced_with(client.clone(), "test", &ar);
    ksvcs
        .create(
            &PostParams::default(),
            &serde_json::from_value(fixture("podinfo-ksvc.yaml")).unwrap(),
        )
        .await
        .unwrap();
    let svc = store
        .wait_for(
            "serving.knative.dev/v1",
            "Service",
            Some("test"),
            "podinfo",
            WAIT,
            |s| s["status"]["latestReadyRevisionName"] == "podinfo-00001",
        )
        .await
        .unwrap();
    assert_eq!(
        svc["status"]["traffic"],
        json!([{"latestRevision": true, "revisionName": "podinfo-00001", "percent": 100}])
    );
    assert_eq!(svc["status"]["url"], "http://podinfo.test.example.com");
    let rev = store
        .get(
            "serving.knative.dev/v1",
            "Revision",
            Some("test"),
            "podinfo-00001",
        )
        .unwrap();
    assert_eq!(
        rev["metadata"]["labels"]["serving.knative.dev/service"],
        "podinfo"
    );
    assert_eq!(
        rev["metadata"]["ownerReferences"][0]["uid"],
        svc["metadata"]["uid"]
    );

    // A new template makes revision 2; traffic split between a pinned and the latest revision.
    let patch = json!({"spec": {
        "template": {"spec": {"containers": [{"image": "ghcr.io/stefanprodan/podinfo:6.0.1"}]}},
        "traffic": [{"revisionName": "podinfo-00001", "percent": 90}, {"latestRevision": true, "percent": 10}],
    }});
    ksvcs
        .patch("podinfo", &PatchParams::default(), &Patch::Merge(patch))
        .await
        .unwrap();
    let svc = store
        .wait_for(
            "serving.knative.dev/v1",
            "Service",
            Some("test"),
            "podinfo",
            WAIT,
            |s| {
                s["status"]["latestReadyRevisionName"] == "podinfo-00002"
                    && s["status"]["observedGeneration"] == 2
            },
        )
        .await
        .unwrap();
    assert_eq!(
        svc["status"]["traffic"],
        json!([{"revisionName": "podinfo-00001", "latestRevision": false, "percent": 90},
               {"revisionName": "podinfo-00002", "latestRevision": true, "percent": 10}])
    );

    let route = json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": "podinfo", "namespace": "test"},
        "spec": {"parentRefs": [{"name": "public", "namespace": "gateways"}],
                 "rules": [{"backendRefs": [{"name": "podinfo-primary", "port": 80, "weight": 100}]}]},
    });
    store.create(route).unwrap();
    let r = store
        .wait_for(
            "gateway.networking.k8s.io/v1",
            "HTTPRoute",
            Some("test"),
            "podinfo",
            WAIT,
            |r| !r["status"]["parents"].is_null(),
        )
        .await
        .unwrap();
    let parent = &r["status"]["parents"][0];
    assert_eq!(
        parent["parentRef"],
        json!({"name": "public", "namespace": "gateways"})
    );
    assert_eq!(parent["controllerName"], GATEWAY_CONTROLLER_NAME);
    for (i, t) in ["Accepted", "ResolvedRefs"].iter().enumerate() {
        assert_eq!(
            (
                parent["conditions"][i]["type"].as_str(),
                parent["conditions"][i]["status"].as_str()
            ),
            (Some(*t), Some("True"))
        );
        assert_eq!(parent["conditions"][i]["observedGeneration"], 1);
    }
    server.shutdown().await;
}

#[tokio::test]
async fn table_output_uses_printer_columns() {
    let server = server_without_simulators().await;
    let client = server.client().unwrap();
    let ar = install_canary_crd(&client).await;
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), "test", &ar);
    api.create(
        &PostParams::default(),
        &serde_json::from_value(fixture("canary.yaml")).unwrap(),
    )
    .await
    .unwrap();
    server
        .store()
        .set_status(
            "flagger.app/v1beta1",
            "Canary",
            Some("test"),
            "podinfo",
            json!({"phase": "Progressing", "canaryWeight": 20}),
        )
        .unwrap();

    let req = http::Request::get(format!(
        "{}/apis/flagger.app/v1beta1/namespaces/test/canaries",
        server.url()
    ))
    .header(
        "Accept",
        "application/json;as=Table;v=v1;g=meta.k8s.io,application/json",
    )
    .body(Vec::new())
    .unwrap();
    let table: Value = serde_json::from_str(&client.request_text(req).await.unwrap()).unwrap();
    assert_eq!(table["kind"], "Table");
    let names: Vec<&str> = table["columnDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["Name", "Status", "Weight", "StepWeight", "LastTransitionTime"]
    );
    assert_eq!(table["columnDefinitions"][3]["priority"], 1);
    assert_eq!(
        table["rows"][0]["cells"],
        json!(["podinfo", "Progressing", "20", "10", null])
    );
    assert_eq!(table["rows"][0]["object"]["kind"], "PartialObjectMetadata");
    server.shutdown().await;
}

#[tokio::test]
async fn kubeconfig_file_is_accepted_by_kube_rs() {
    let server = server_without_simulators().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kubeconfig");
    server.write_kubeconfig(&path).unwrap();
    let kubeconfig = kube::config::Kubeconfig::read_from(&path).unwrap();
    let config =
        kube::Config::from_custom_kubeconfig(kubeconfig, &kube::config::KubeConfigOptions::default())
            .await
            .unwrap();
    assert_eq!(config.cluster_url.to_string().trim_end_matches('/'), server.url());
    let client = Client::try_from(config).unwrap();
    let version = client.apiserver_version().await.unwrap();
    assert_eq!((version.major.as_str(), version.minor.as_str()), ("1", "32"));
    let api: Api<ConfigMap> = Api::default_namespaced(client);
    assert!(api.list(&ListParams::default()).await.unwrap().items.is_empty());
    server.shutdown().await;
}

#[tokio::test]
async fn binary_serves_until_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_fake-apiserver"))
        .args(["--port", "0", "--kubeconfig-out"])
        .arg(&kubeconfig)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stdout));
    let first = tokio::time::timeout(WAIT, lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let url = first.rsplit(' ').next().unwrap().to_string();
    assert!(url.starts_with("http://127.0.0.1:"), "{first}");
    let text = std::fs::read_to_string(&kubeconfig).unwrap();
    assert!(text.contains(&format!("server: {url}")), "{text}");

    let client = Client::try_from(kube::Config::new(url.parse().unwrap())).unwrap();
    let api: Api<Deployment> = Api::namespaced(client, "test");
    api.create(&PostParams::default(), &deployment("podinfo", "app:1"))
        .await
        .unwrap();

    let pid = child.id().unwrap().to_string();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = tokio::time::timeout(WAIT, child.wait())
        .await
        .expect("exits after SIGTERM")
        .unwrap();
    assert!(exit.success(), "{exit:?}");
}
