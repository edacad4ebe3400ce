//! HTTP/1.1 details of the router's proxying (bodies, framing, keep-alive, pipelining, and what
//! takes the general path), against an echo backend on 127.0.0.1.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use aviary_local::router::{Backend, Backends, HttpRouter, RouterConfig, Routes};
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A body sent in several frames without a length: hyper sends it chunked.
struct Frames(VecDeque<Bytes>);

impl Body for Frames {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.0.pop_front().map(|b| Ok(Frame::data(b))))
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

type EchoBody = http_body_util::Either<Full<Bytes>, Frames>;

/// Echoes the request: method, target, host and header names in `x-echo-*` headers, the body
/// as the body. `/chunked` answers in three chunks, `/nocontent` with 204, `/close` closes.
async fn echo(req: Request<Incoming>) -> Result<Response<EchoBody>, Infallible> {
    let method = req.method().to_string();
    let target = req
        .uri()
        .path_and_query()
        .map(ToString::to_string)
        .unwrap_or_default();
    let host = req
        .headers()
        .get("host")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let names: Vec<_> = req.headers().keys().map(|k| k.as_str().to_owned()).collect();
    let body = received_body(req.into_body()).await;
    let mut response = if target.starts_with("/chunked") {
        Response::new(EchoBody::Right(Frames(VecDeque::from([
            Bytes::from_static(b"one,"),
            Bytes::from_static(b"two,"),
            Bytes::from_static(b"three"),
        ]))))
    } else if target.starts_with("/nocontent") {
        let mut r = Response::new(EchoBody::Left(Full::new(Bytes::new())));
        *r.status_mut() = StatusCode::NO_CONTENT;
        r
    } else {
        Response::new(EchoBody::Left(Full::new(body)))
    };
    if target.starts_with("/close") {
        response
            .headers_mut()
            .insert("connection", "close".parse().unwrap());
    }
    let headers = response.headers_mut();
    headers.insert("x-echo-method", method.parse().unwrap());
    headers.insert("x-echo-target", target.parse().unwrap());
    headers.insert("x-echo-host", host.parse().unwrap());
    headers.insert("x-echo-headers", names.join(",").parse().unwrap());
    Ok(response)
}

/// A request body as received (empty when it broke off).
async fn received_body(body: Incoming) -> Bytes {
    body.collect().await.map(|c| c.to_bytes()).unwrap_or_default()
}

/// A backend on 127.0.0.1 running `on_connection` for each connection it accepts.
async fn serve<F, Fut>(on_connection: F) -> SocketAddr
where
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let (listener, addr) = aviary_testkit::net::bind_loopback("backend").await.unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(on_connection(stream));
        }
    });
    addr
}

async fn echo_backend() -> SocketAddr {
    serve(|stream| async move {
        let _ = hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(stream), service_fn(echo))
            .await;
    })
    .await
}

/// A backend that reads a request and writes `answer` as it is, whatever was asked.
async fn canned_backend(answer: &'static [u8]) -> SocketAddr {
    serve(move |mut stream| async move {
        let mut buf = [0u8; 4096];
        let _ = stream.read(&mut buf).await;
        let _ = stream.write_all(answer).await;
    })
    .await
}

/// `GET /` through a router to [`canned_backend`]`(answer)`, as [`raw_exchange`].
async fn get_from_canned(answer: &'static [u8]) -> String {
    let router = router_to(canned_backend(answer).await).await;
    let text = raw_exchange(router.local_addr(), b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").await;
    router.shutdown().await;
    text
}

/// GET `path` through `router` with `client`.
async fn get(
    client: &Client<HttpConnector, Full<Bytes>>,
    router: &HttpRouter,
    path: &str,
) -> Response<Incoming> {
    let request = Request::get(format!("http://{}{path}", router.local_addr()))
        .body(Full::default())
        .unwrap();
    client.request(request).await.unwrap()
}

/// The whole body of `response`.
async fn body_of(response: Response<Incoming>) -> Bytes {
    response.into_body().collect().await.unwrap().to_bytes()
}

/// Sends `chunks` as a chunked request body to `method path` through `router`; returns the
/// response body.
async fn send_chunked(router: &HttpRouter, method: Method, path: &str, chunks: &[&'static [u8]]) -> Bytes {
    let client: Client<_, Frames> = Client::builder(TokioExecutor::new()).build_http();
    let frames = Frames(chunks.iter().copied().map(Bytes::from_static).collect());
    let request = Request::builder()
        .method(method)
        .uri(format!("http://{}{path}", router.local_addr()))
        .body(frames)
        .unwrap();
    body_of(client.request(request).await.unwrap()).await
}

async fn router_to(backend: SocketAddr) -> HttpRouter {
    let router = HttpRouter::start(RouterConfig::new("test", "echo", "127.0.0.1:0".parse().unwrap()))
        .await
        .unwrap();
    router.set_backends(Backends {
        primary: vec![backend],
        canary: vec![],
    });
    router.set_routes(Routes::default()).unwrap();
    router
}

/// Writes `request` on a new connection and reads until the router closes it.
async fn raw_exchange(addr: SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut out))
        .await
        .expect("the router closes the connection")
        .unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

/// The raw HTTP/1.1 answer `text` starts with the status line `HTTP/1.1 {status}`.
#[track_caller]
fn assert_status(text: &str, status: &str) {
    assert!(text.starts_with(&format!("HTTP/1.1 {status}")), "{text}");
}

/// Writes `request` through a router to the echo backend, as [`raw_exchange`].
async fn raw_exchange_with_echo(request: &[u8]) -> String {
    let router = router_to(echo_backend().await).await;
    let text = raw_exchange(router.local_addr(), request).await;
    router.shutdown().await;
    text
}

#[tokio::test]
async fn bodies_of_every_framing_pass_through() {
    let router = router_to(echo_backend().await).await;
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    // A 1 MiB body with a length: streamed in several reads and writes.
    let big: Bytes = (0..1_048_576u32)
        .map(|i| (i % 251) as u8)
        .collect::<Vec<_>>()
        .into();
    let request = Request::post(format!("http://{}/upload?x=1", router.local_addr()))
        .body(Full::new(big.clone()))
        .unwrap();
    let response = client.request(request).await.unwrap();
    assert_eq!(response.headers()["x-echo-method"], "POST");
    assert_eq!(response.headers()["x-echo-target"], "/upload?x=1");
    assert_eq!(
        response.headers()["x-echo-host"],
        router.local_addr().to_string().as_str()
    );
    assert_eq!(response.headers()["x-aviary-backend"], "primary");
    assert_eq!(body_of(response).await, big);

    // A chunked request body.
    let echoed = send_chunked(&router, Method::PUT, "/chunks", &[b"a", b"bc", b"def"]).await;
    assert_eq!(echoed, "abcdef");

    // A chunked response, then HEAD and 204 without bodies, all on one keep-alive connection.
    let response = get(&client, &router, "/chunked").await;
    assert_eq!(response.headers()["transfer-encoding"], "chunked");
    assert_eq!(body_of(response).await, "one,two,three");
    let head = Request::head(format!("http://{}/x", router.local_addr()))
        .body(Full::new(Bytes::from_static(b"")))
        .unwrap();
    let response = client.request(head).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["x-echo-method"], "HEAD");
    assert!(body_of(response).await.is_empty());
    let response = get(&client, &router, "/nocontent").await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let response = get(&client, &router, "/again").await;
    assert_eq!(response.headers()["x-echo-target"], "/again");
    router.shutdown().await;
}

#[tokio::test]
async fn pipelined_requests_and_connection_close() {
    let text = raw_exchange_with_echo(
        b"GET /first HTTP/1.1\r\nHost: a\r\n\r\nPOST /second HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nxyzGET /third HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await;
    let first = text.find("x-echo-target: /first").expect(&text);
    let second = text.find("x-echo-target: /second").expect(&text);
    let third = text.find("x-echo-target: /third").expect(&text);
    assert!(first < second && second < third, "{text}");
    assert!(text.contains("\r\n\r\nxyz"), "{text}");
    assert_eq!(text.matches("HTTP/1.1 200 OK").count(), 3, "{text}");
    // The last answer tells the client the connection closes, and it does (read_to_end ended).
    assert!(text[third..].contains("connection: close"), "{text}");
}

#[tokio::test]
async fn hop_by_hop_headers_are_not_forwarded() {
    let text = raw_exchange_with_echo(
        b"GET / HTTP/1.1\r\nHost: a\r\nKeep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nTE: trailers\r\nX-Kept: 1\r\nConnection: close\r\n\r\n",
    )
    .await;
    let names = text
        .lines()
        .find_map(|l| l.strip_prefix("x-echo-headers: "))
        .expect(&text);
    assert!(names.contains("x-kept"), "{names}");
    for hop in ["keep-alive", "proxy-connection", "te", "connection"] {
        assert!(
            !names.split(',').any(|n| n == hop),
            "{hop} was forwarded: {names}"
        );
    }
}

#[tokio::test]
async fn a_backend_closing_its_connection_does_not_break_the_next_request() {
    let router = router_to(echo_backend().await).await;
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    for path in ["/close", "/after-close", "/close", "/again"] {
        let response = get(&client, &router, path).await;
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        assert_eq!(response.headers()["x-echo-target"], path);
        // The backend's `connection: close` is its own business, not the client's.
        assert!(!response.headers().contains_key("connection"), "{path}");
    }
    router.shutdown().await;
}

#[tokio::test]
async fn unusual_requests_take_the_general_path() {
    let router = router_to(echo_backend().await).await;
    // HTTP/1.0.
    let text = raw_exchange(router.local_addr(), b"GET /old HTTP/1.0\r\nHost: a\r\n\r\n").await;
    assert!(
        text.starts_with("HTTP/1.0 200 OK\r\n") || text.starts_with("HTTP/1.1 200 OK\r\n"),
        "{text}"
    );
    assert!(text.contains("x-echo-target: /old"), "{text}");
    // Expect: 100-continue gets its interim answer and the body goes through.
    let text = raw_exchange(
        router.local_addr(),
        b"POST /expect HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
    )
    .await;
    assert!(
        text.contains("x-echo-target: /expect") && text.ends_with("ok"),
        "{text}"
    );
    // After a fast-path request, a request needing the general path on the same connection.
    let text = raw_exchange(
        router.local_addr(),
        b"GET /fast HTTP/1.1\r\nHost: a\r\n\r\nGET /general HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(
        text.contains("x-echo-target: /fast") && text.contains("x-echo-target: /general"),
        "{text}"
    );
    // A malformed request gets hyper's 400.
    let text = raw_exchange(router.local_addr(), b"NOT HTTP AT ALL\r\n\r\n").await;
    assert_status(&text, "400");
    router.shutdown().await;
}

#[tokio::test]
async fn a_response_delimited_by_close_is_passed_on() {
    // A backend that answers without a length and closes.
    let text = get_from_canned(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nuntil the end").await;
    assert_status(&text, "200 OK\r\n");
    assert!(
        text.contains("connection: close") && text.ends_with("\r\n\r\nuntil the end"),
        "{text}"
    );
}

/// A backend that reports each request's target and body.
async fn recording_backend() -> (SocketAddr, tokio::sync::mpsc::UnboundedReceiver<(String, Bytes)>) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let addr = serve(move |stream| {
        let tx = tx.clone();
        let service = service_fn(move |req: Request<Incoming>| {
            let tx = tx.clone();
            async move {
                let target = req.uri().to_string();
                let body = received_body(req.into_body()).await;
                let _ = tx.send((target, body));
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"from the canary"))))
            }
        });
        async move {
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        }
    })
    .await;
    (addr, rx)
}

/// The next request the recording backend saw (within 10 s).
async fn next(copies: &mut tokio::sync::mpsc::UnboundedReceiver<(String, Bytes)>) -> (String, Bytes) {
    tokio::time::timeout(Duration::from_secs(10), copies.recv())
        .await
        .expect("a mirrored copy within 10 s")
        .unwrap()
}

#[tokio::test]
async fn request_bodies_are_mirrored_on_both_paths() {
    let router = router_to(echo_backend().await).await;
    let (canary, mut copies) = recording_backend().await;
    router.set_pool(Backend::Canary, vec![canary]);
    router
        .set_routes(Routes {
            mirror: true,
            ..Routes::weighted(100, 0)
        })
        .unwrap();
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let request = Request::post(format!("http://{}/with-length", router.local_addr()))
        .body(Full::new(Bytes::from_static(b"payload")))
        .unwrap();
    let response = client.request(request).await.unwrap();
    assert_eq!(response.headers()["x-aviary-backend"], "primary");
    assert_eq!(body_of(response).await, "payload");
    let copy = next(&mut copies).await;
    assert_eq!(copy, ("/with-length".to_owned(), Bytes::from_static(b"payload")));

    // A chunked body is decoded by the general path, which mirrors it too.
    let echoed = send_chunked(&router, Method::POST, "/upload-in-chunks", &[b"chun", b"ked"]).await;
    assert_eq!(echoed, "chunked");
    let copy = next(&mut copies).await;
    assert_eq!(
        copy,
        ("/upload-in-chunks".to_owned(), Bytes::from_static(b"chunked"))
    );
    router.shutdown().await;
}

/// A lenient backend that reads bytes as they come (no HTTP parsing), answers each connection
/// once with `200 ok` and `Connection: close`, and records every byte it received.
async fn raw_backend() -> (SocketAddr, std::sync::Arc<std::sync::Mutex<Vec<u8>>>) {
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = std::sync::Arc::clone(&seen);
    let addr = serve(move |mut stream| {
        let record = std::sync::Arc::clone(&record);
        async move {
            let mut buf = [0u8; 4096];
            let mut answered = false;
            while let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(2), stream.read(&mut buf)).await {
                if n == 0 {
                    break;
                }
                record.lock().unwrap().extend_from_slice(&buf[..n]);
                if !answered {
                    answered = true;
                    let _ = stream
                        .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
                        .await;
                }
            }
        }
    })
    .await;
    (addr, seen)
}

/// Issue 15: requests a lenient backend could frame differently than the router are refused
/// with 400 before any of their body reaches a backend: control characters (a bare LF, NUL)
/// in chunk extensions, sizes without digits, Content-Length together with Transfer-Encoding,
/// folded headers, conflicting lengths. Each hides `GET /smuggled` in what the router would
/// otherwise take for the body.
#[tokio::test]
async fn requests_that_could_smuggle_another_are_refused() {
    let (backend, seen) = raw_backend().await;
    let router = router_to(backend).await;
    let smuggled = "GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n";
    let cases = [
        (
            "bare LF in a chunk extension",
            format!("Transfer-Encoding: chunked\r\n\r\n3;x\nZZ\r\n{smuggled}\r\n0\r\n\r\n"),
        ),
        (
            "NUL in a chunk extension",
            format!("Transfer-Encoding: chunked\r\n\r\n3;x\0\r\nabc\r\n0\r\n\r\n{smuggled}"),
        ),
        (
            "a chunk size without digits",
            format!("Transfer-Encoding: chunked\r\n\r\n;x\r\n\r\n{smuggled}"),
        ),
        (
            "a space inside the chunk size",
            format!("Transfer-Encoding: chunked\r\n\r\n0 5\r\n\r\n{smuggled}"),
        ),
        (
            "bare LF in a trailer",
            format!("Transfer-Encoding: chunked\r\n\r\n0\r\nX: 1\n{smuggled}\r\n\r\n"),
        ),
        (
            "Content-Length and Transfer-Encoding",
            format!("Content-Length: 40\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{smuggled}"),
        ),
        (
            "a folded Transfer-Encoding",
            format!(
                "Transfer-Encoding: identity\r\n chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n{smuggled}"
            ),
        ),
        (
            "conflicting lengths",
            format!("Content-Length: 5\r\nContent-Length: 40\r\n\r\nhello{smuggled}"),
        ),
        (
            "a space before the colon",
            format!("Transfer-Encoding : chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n{smuggled}"),
        ),
    ];
    for (what, rest) in cases {
        seen.lock().unwrap().clear();
        let request = format!("POST /upload HTTP/1.1\r\nHost: a\r\n{rest}");
        let answer = raw_exchange(router.local_addr(), request.as_bytes()).await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{what}: {answer}");
        assert!(!answer.contains("200 OK"), "{what}: {answer}");
        let received = String::from_utf8_lossy(&seen.lock().unwrap()).into_owned();
        assert!(
            !received.contains("/smuggled"),
            "{what}: the backend got {received:?}"
        );
    }
    // An ordinary chunked request still goes through, extensions and trailers included.
    seen.lock().unwrap().clear();
    let answer = raw_exchange(
        router.local_addr(),
        b"POST /upload HTTP/1.1\r\nHost: a\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n3;name=\"v 1\"\r\nabc\r\n0\r\nX-Sum: 1\r\n\r\n",
    )
    .await;
    assert_status(&answer, "200 OK");
    router.shutdown().await;
}

/// Issue 15: a response whose length a client (or a proxy in front, sharing connections between
/// users) could read differently is not passed on: 502, and the connection closes.
#[tokio::test]
async fn responses_with_conflicting_lengths_are_refused() {
    let text = get_from_canned(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 45\r\n\r\nokHTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nforged").await;
    assert_status(&text, "502");
    assert!(text.contains("conflicting Content-Lengths"), "{text}");
    assert!(!text.contains("forged"), "{text}");
}
