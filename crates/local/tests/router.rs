//! The router over real HTTP on 127.0.0.1, with in-process sample apps as backends.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use aviary_local::router::{
    Backend, Backends, HeaderMatch, HttpRouter, MatchRule, RouterConfig, RouterMetrics, Routes,
    SessionAffinity, StringMatch,
};
use aviary_local::sample_app::SampleApp;
use common::{HttpClient, client, eventually, get, h2c_client, request_count, sample_app};
use http::{StatusCode, Version};

struct Setup {
    router: HttpRouter,
    primary: SampleApp,
    canary: SampleApp,
    client: HttpClient,
}

impl Setup {
    async fn new(routes: Routes) -> Setup {
        Setup::with_apps(
            sample_app("1.0.0", 0.0, 0).await,
            sample_app("2.0.0", 0.0, 0).await,
            routes,
        )
        .await
    }

    async fn with_apps(primary: SampleApp, canary: SampleApp, routes: Routes) -> Setup {
        let listen: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let router = HttpRouter::start(RouterConfig::new("test", "podinfo", listen))
            .await
            .unwrap();
        router.set_backends(Backends {
            primary: vec![primary.local_addr()],
            canary: vec![canary.local_addr()],
        });
        router.set_routes(routes).unwrap();
        Setup {
            router,
            primary,
            canary,
            client: client(),
        }
    }

    async fn get(&self, headers: &[(&str, &str)]) -> common::Reply {
        get(&self.client, self.router.local_addr(), "/", headers).await
    }

    /// Sends a request and checks that the body comes from the backend named in the header.
    async fn backend_of(&self, headers: &[(&str, &str)]) -> Backend {
        let reply = self.get(headers).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        let version = reply.json()["version"].as_str().unwrap().to_owned();
        match (reply.backend(), version.as_str()) {
            ("primary", "1.0.0") => Backend::Primary,
            ("canary", "2.0.0") => Backend::Canary,
            other => panic!("inconsistent answer {other:?}"),
        }
    }

    async fn stop(self) {
        self.router.shutdown().await;
        self.primary.stop().await;
        self.canary.stop().await;
    }
}

fn ab(rule: MatchRule) -> Routes {
    // Flagger's A/B analysis routes 0/100 with the match: only matching requests reach the canary.
    Routes {
        matches: vec![rule],
        ..Routes::weighted(0, 100)
    }
}

fn header(name: &str, value: StringMatch) -> MatchRule {
    MatchRule {
        headers: vec![HeaderMatch {
            name: name.to_owned(),
            value,
        }],
    }
}

#[tokio::test]
async fn weights_split_traffic_within_tolerance() {
    let setup = Setup::new(Routes::weighted(90, 10)).await;
    let mut canary = 0;
    for _ in 0..2_000 {
        if setup.backend_of(&[]).await == Backend::Canary {
            canary += 1;
        }
    }
    // 10% of 2,000 is 200 ± 13.4 (one standard deviation).
    assert!(
        (150..=250).contains(&canary),
        "{canary} of 2000 went to the canary at 90/10"
    );
    assert_eq!(
        setup
            .router
            .stats(Backend::Canary, Duration::from_secs(60))
            .requests,
        canary
    );

    setup.router.set_routes(Routes::weighted(0, 100)).unwrap();
    assert_eq!(setup.backend_of(&[]).await, Backend::Canary);
    setup.router.set_routes(Routes::weighted(100, 0)).unwrap();
    assert_eq!(setup.backend_of(&[]).await, Backend::Primary);
    // A bad update is rejected and the previous routes stay.
    assert!(setup.router.set_routes(Routes::weighted(50, 60)).is_err());
    assert_eq!(setup.router.routes(), Routes::weighted(100, 0));
    setup.stop().await;
}

#[tokio::test]
async fn header_rules_of_each_kind_route_to_the_canary() {
    let setup = Setup::new(Routes::default()).await;
    type Header<'a> = (&'a str, &'a str);
    let cases: [(MatchRule, Header<'_>, Header<'_>); 5] = [
        (
            header("x-canary", StringMatch::Exact("insider".into())),
            ("x-canary", "insider"),
            ("x-canary", "outsider"),
        ),
        (
            header("user-agent", StringMatch::Prefix("Mozilla/5.0 (X11".into())),
            ("user-agent", "Mozilla/5.0 (X11; Linux x86_64)"),
            ("user-agent", "curl/8.5"),
        ),
        (
            header("x-user", StringMatch::Suffix("@example.com".into())),
            ("x-user", "ann@example.com"),
            ("x-user", "ann@example.org"),
        ),
        (
            header("user-agent", StringMatch::Regex(".*Firefox.*".into())),
            ("user-agent", "Mozilla/5.0 Gecko/20100101 Firefox/120.0"),
            ("user-agent", "Mozilla/5.0 Chrome/120.0"),
        ),
        (
            header(
                "cookie",
                StringMatch::Regex("^(.*?;)?(canary=always)(;.*)?$".into()),
            ),
            ("cookie", "session=1;canary=always"),
            ("cookie", "session=1;canary=never"),
        ),
    ];
    for (rule, hit, miss) in cases {
        setup.router.set_routes(ab(rule.clone())).unwrap();
        assert_eq!(
            setup.backend_of(&[hit]).await,
            Backend::Canary,
            "{rule:?} with {hit:?}"
        );
        assert_eq!(
            setup.backend_of(&[miss]).await,
            Backend::Primary,
            "{rule:?} with {miss:?}"
        );
        assert_eq!(
            setup.backend_of(&[]).await,
            Backend::Primary,
            "{rule:?} without the header"
        );
    }
    setup.stop().await;
}

#[tokio::test]
async fn mirroring_copies_requests_to_the_canary() {
    let setup = Setup::new(Routes {
        mirror: true,
        ..Routes::weighted(100, 0)
    })
    .await;
    let metrics = RouterMetrics::new();
    metrics.register(&setup.router);
    for _ in 0..50 {
        // The client only ever sees the primary's answers.
        assert_eq!(setup.backend_of(&[]).await, Backend::Primary);
    }
    let canary = setup.canary.local_addr();
    let client = setup.client.clone();
    // Mirrored copies count as canary traffic (for the analysis) and apart. The copies are
    // answered in the background: wait for them.
    let router = &setup.router;
    let mirrored = eventually(Duration::from_secs(10), || {
        let client = client.clone();
        async move {
            request_count(&client, canary, "/", 200).await == 50
                && router.stats(Backend::Canary, Duration::from_secs(60)).requests == 50
        }
    })
    .await;
    assert!(
        mirrored,
        "the canary saw {} of 50 mirrored requests",
        request_count(&client, canary, "/", 200).await
    );
    assert_eq!(
        request_count(&client, setup.primary.local_addr(), "/", 200).await,
        50
    );
    let text = metrics.encode();
    assert!(
        text.contains(r#"aviary_router_mirrored_requests_total{namespace="test",service="podinfo"} 50"#),
        "{text}"
    );

    // Half of the requests with mirrorWeight 50.
    setup
        .router
        .set_routes(Routes {
            mirror: true,
            mirror_weight: Some(50),
            ..Routes::weighted(100, 0)
        })
        .unwrap();
    for _ in 0..200 {
        setup.backend_of(&[]).await;
    }
    // Wait until the copies in flight have been answered: the router records a copy once the
    // canary has counted it.
    let settled = eventually(Duration::from_secs(10), || {
        let client = client.clone();
        async move {
            request_count(&client, canary, "/", 200).await
                == router.stats(Backend::Canary, Duration::from_secs(60)).requests
        }
    })
    .await;
    assert!(settled);
    let copies = request_count(&client, canary, "/", 200).await - 50;
    assert!((60..=140).contains(&copies), "{copies} of 200 mirrored at 50%");
    setup.stop().await;
}

#[tokio::test]
async fn session_affinity_cookie_is_set_honoured_and_expired() {
    let affinity = SessionAffinity {
        path: Some("/".into()),
        ..SessionAffinity::new("flagger-cookie")
    };
    let cookie = format!("flagger-cookie={}", affinity.cookie_value);
    let routes = |p, c| Routes {
        session_affinity: Some(affinity.clone()),
        ..Routes::weighted(p, c)
    };
    let setup = Setup::new(routes(50, 50)).await;

    // Requests the weights send to the canary get the cookie, the others do not.
    let mut set = None;
    for _ in 0..100 {
        let reply = setup.get(&[]).await;
        let set_cookie = reply
            .headers
            .get("set-cookie")
            .map(|v| v.to_str().unwrap().to_owned());
        match reply.backend() {
            "canary" => set = set_cookie,
            _ => assert_eq!(set_cookie, None),
        }
        if set.is_some() {
            break;
        }
    }
    assert_eq!(
        set.as_deref(),
        Some(format!("{cookie}; Max-Age=86400; Path=/").as_str())
    );

    // With the cookie every request stays on the canary, whatever the weights.
    setup.router.set_routes(routes(95, 5)).unwrap();
    for _ in 0..50 {
        let reply = setup.get(&[("cookie", &format!("theme=dark; {cookie}"))]).await;
        assert_eq!(
            (reply.backend(), reply.headers.get("set-cookie")),
            ("canary", None)
        );
    }

    // Back to 0: the sticky client returns to the primary and its cookie is expired.
    setup.router.set_routes(routes(100, 0)).unwrap();
    let reply = setup.get(&[("cookie", &cookie)]).await;
    assert_eq!(reply.backend(), "primary");
    assert_eq!(
        reply.headers["set-cookie"],
        format!("{cookie}; Max-Age=-1; Path=/").as_str()
    );
    setup.stop().await;
}

#[tokio::test]
async fn dead_or_missing_backends_answer_5xx_and_count_as_errors() {
    let setup = Setup::new(Routes::weighted(0, 100)).await;
    // A port that nobody listens on.
    let dead = SocketAddr::from(([127, 0, 0, 1], aviary_testkit::net::free_port()));
    setup.router.set_pool(Backend::Canary, vec![dead]);
    let reply = setup.get(&[]).await;
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY);
    assert_eq!(reply.backend(), "canary");
    assert!(
        reply.body.contains(&format!("canary backend {dead}")),
        "{}",
        reply.body
    );
    let stats = setup.router.stats(Backend::Canary, Duration::from_secs(60));
    assert_eq!(
        (stats.requests, stats.errors, stats.success_rate),
        (1, 1, Some(0.0))
    );

    setup.router.set_pool(Backend::Canary, vec![]);
    assert_eq!(setup.get(&[]).await.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        setup
            .router
            .stats(Backend::Canary, Duration::from_secs(60))
            .errors,
        2
    );

    // Pools are replaced at runtime and used round robin.
    let other = sample_app("2.0.0", 0.0, 0).await;
    setup.router.set_pool(
        Backend::Canary,
        vec![setup.canary.local_addr(), other.local_addr()],
    );
    for _ in 0..10 {
        assert_eq!(setup.backend_of(&[]).await, Backend::Canary);
    }
    assert_eq!(
        request_count(&setup.client, other.local_addr(), "/", 200).await,
        5
    );
    assert_eq!(
        setup.router.backends(),
        Backends {
            primary: vec![setup.primary.local_addr()],
            canary: vec![setup.canary.local_addr(), other.local_addr()]
        }
    );
    other.stop().await;
    setup.stop().await;
}

#[tokio::test]
async fn stats_window_reports_success_rate_and_p99() {
    // The primary answers in 40 ms; a quarter of the canary's answers are 500s.
    let setup = Setup::with_apps(
        sample_app("1.0.0", 0.0, 40).await,
        sample_app("2.0.0", 0.25, 0).await,
        Routes::weighted(100, 0),
    )
    .await;
    assert_eq!(
        setup
            .router
            .stats(Backend::Primary, Duration::from_secs(60))
            .success_rate,
        None
    );
    for _ in 0..20 {
        setup.get(&[]).await;
    }
    setup.router.set_routes(Routes::weighted(0, 100)).unwrap();
    for _ in 0..400 {
        setup.get(&[]).await;
    }
    let primary = setup.router.stats(Backend::Primary, Duration::from_secs(60));
    assert_eq!((primary.requests, primary.success_rate), (20, Some(100.0)));
    let p99 = primary.p99_ms.unwrap();
    assert!(
        (40.0..250.0).contains(&p99),
        "primary p99 {p99} ms with 40 ms latency"
    );
    let canary = setup.router.stats(Backend::Canary, Duration::from_secs(60));
    assert_eq!(canary.requests, 400);
    let rate = canary.success_rate.unwrap();
    assert!(
        (65.0..=85.0).contains(&rate),
        "canary success rate {rate}% with a 25% error rate"
    );
    assert!(canary.p99_ms.unwrap() < 40.0);

    let metrics = RouterMetrics::new();
    metrics.register(&setup.router);
    let text = metrics.encode();
    let ok = format!(
        r#"aviary_router_requests_total{{namespace="test",service="podinfo",backend="canary",code="2xx"}} {}"#,
        canary.requests - canary.errors
    );
    assert!(text.contains(&ok), "{text}");
    assert!(text.contains(r#"aviary_router_request_duration_seconds_count{namespace="test",service="podinfo",backend="primary"} 20"#));
    // 40 ms answers: none within 25 ms, all within 250 ms.
    for (le, count) in [("0.025", 0), ("0.25", 20)] {
        let bucket = format!(
            r#"aviary_router_request_duration_seconds_bucket{{le="{le}",namespace="test",service="podinfo",backend="primary"}} {count}"#
        );
        assert!(text.contains(&bucket), "{bucket} missing from\n{text}");
    }
    assert!(text.ends_with("# EOF\n"));

    // The window moves with the clock: a minute later these requests are out of a 60 s window
    // but still inside a 10 minute one.
    tokio::time::pause();
    tokio::time::advance(Duration::from_secs(61)).await;
    assert_eq!(
        setup
            .router
            .stats(Backend::Canary, Duration::from_secs(60))
            .requests,
        0
    );
    assert_eq!(
        setup
            .router
            .stats(Backend::Canary, Duration::from_secs(600))
            .requests,
        400
    );
    tokio::time::resume();
    setup.stop().await;
}

#[tokio::test]
async fn h2c_clients_are_routed_too() {
    let setup = Setup::new(Routes::weighted(50, 50)).await;
    let h2 = h2c_client();
    let mut seen = [false, false];
    for _ in 0..40 {
        let reply = get(&h2, setup.router.local_addr(), "/version", &[]).await;
        assert_eq!((reply.status, reply.version), (StatusCode::OK, Version::HTTP_2));
        match (reply.backend(), reply.json()["version"].as_str().unwrap()) {
            ("primary", "1.0.0") => seen[0] = true,
            ("canary", "2.0.0") => seen[1] = true,
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(seen, [true, true]);
    setup.stop().await;
}

#[tokio::test]
async fn shutdown_stops_listening() {
    let setup = Setup::new(Routes::default()).await;
    let addr = setup.router.local_addr();
    assert_eq!(setup.backend_of(&[]).await, Backend::Primary);
    setup.router.shutdown().await;
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "still accepting after shutdown"
    );
    // The port is free again: a new router can take it.
    let again = HttpRouter::start(RouterConfig::new("test", "podinfo", addr))
        .await
        .unwrap();
    let err = HttpRouter::start(RouterConfig::new("test", "podinfo", addr))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with(&format!("router test/podinfo: cannot listen on {addr}")),
        "{err}"
    );
    again.shutdown().await;
    setup.primary.stop().await;
    setup.canary.stop().await;
}
