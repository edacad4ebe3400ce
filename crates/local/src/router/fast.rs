//! The HTTP/1.1 fast path: a client connection is proxied by one task that parses request and
//! response heads itself (httparse), copies bodies through unchanged, and keeps its own
//! keep-alive connection to each backend.
//!
//! This is what nginx does per request: one read and one write on each side, no task hops, no
//! channels, no per-request allocation in the common case. It handles the ordinary HTTP/1.1
//! exchange: bodies framed by Content-Length or chunked (passed through as they are), keep-alive,
//! pipelining, `Connection: close`, HEAD/204/304 and interim 1xx responses. Anything else (h2c,
//! HTTP/1.0, Upgrade, CONNECT, `Expect`, a head it cannot parse, mirroring a body it would have
//! to decode) hands the connection, with the bytes already read, to the general hyper path,
//! which serves it from then on.
//!
//! Bodies pass through as received, so the router must frame them exactly as any backend would:
//! a request that a lenient backend could read differently (Content-Length together with
//! Transfer-Encoding; a chunk size without digits; a control character, bare LF included, in a
//! chunk extension or a trailer; a line not ended by CRLF) is answered 400 and its connection
//! closed, before its body reaches a backend ([`ChunkScanner`]). Heads are parsed by httparse
//! (no obs-fold, no space before the colon: those go to hyper, which refuses them) and sent to
//! the backend re-serialized. A response with conflicting or unreadable `Content-Length`s is
//! answered 502 instead of being passed on.

#[cfg(any(test, feature = "fuzzing"))]
pub(crate) mod fuzz;

use std::io;
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::ops::Range;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::matching::RequestHeaders;
use super::{Backend, Worker};

/// Largest request or response head; a larger request goes to hyper (which answers 431).
const MAX_HEAD: usize = 64 * 1024;
const MAX_HEADERS: usize = 100;
/// A mirrored request body is buffered; larger ones take the general path.
const MIRROR_BODY_LIMIT: u64 = 1 << 20;
/// Idle backend connections kept per client connection.
const MAX_IDLE_BACKENDS: usize = 4;
const READ_CHUNK: usize = 16 * 1024;

/// Headers the router never forwards (RFC 9110 §7.6.1). `transfer-encoding` is handled apart:
/// chunked bodies are passed through with their header.
fn hop_by_hop(name: &[u8]) -> bool {
    const NAMES: [&[u8]; 6] = [
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"upgrade",
    ];
    NAMES.iter().any(|n| n.eq_ignore_ascii_case(name))
}

/// How a message body is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Framing {
    Empty,
    Length(u64),
    Chunked,
    /// Until the backend closes the connection (responses only).
    UntilClose,
}

/// Why the fast path stops serving a connection.
enum Exit {
    /// Hand the connection to the general path.
    Fallback,
    /// Close it (peer gone, protocol error, or `Connection: close`).
    Close,
    /// Answer 400 with this reason, then close: a request whose framing a backend could read
    /// differently (request smuggling).
    Reject(&'static str),
}

impl From<io::Error> for Exit {
    fn from(_: io::Error) -> Self {
        Exit::Close
    }
}

/// A parsed head, as offsets into its bytes.
#[derive(Default)]
struct Head {
    method: Range<usize>,
    target: Range<usize>,
    reason: Range<usize>,
    status: u16,
    /// HTTP/1.x minor version.
    minor: u8,
    headers: Vec<(Range<usize>, Range<usize>)>,
}

/// Where `part` (a slice httparse returned for `base`) lies in `base`. An empty part may point
/// anywhere (httparse uses a static "" for a missing reason): it becomes an empty range.
fn offset(base: &[u8], part: &[u8]) -> Range<usize> {
    let start = (part.as_ptr() as usize).wrapping_sub(base.as_ptr() as usize);
    if part.is_empty() || start.checked_add(part.len()).is_none_or(|end| end > base.len()) {
        return 0..0;
    }
    start..start + part.len()
}

impl Head {
    /// Records where each header's name and value lie in `buf`.
    fn set_headers(&mut self, buf: &[u8], headers: &[httparse::Header<'_>]) {
        self.headers.clear();
        let ranges = headers
            .iter()
            .map(|h| (offset(buf, h.name.as_bytes()), offset(buf, h.value)));
        self.headers.extend(ranges);
    }

    fn parse_request(&mut self, buf: &[u8]) -> Result<Option<usize>, Exit> {
        let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
        let mut request = httparse::Request::new(&mut []);
        match httparse::ParserConfig::default().parse_request_with_uninit_headers(
            &mut request,
            buf,
            &mut slots,
        ) {
            Ok(httparse::Status::Partial) => Ok(None),
            Ok(httparse::Status::Complete(len)) => {
                // HTTP/1.0 (different keep-alive and framing rules) takes the general path.
                let (Some(method), Some(path), Some(minor @ 1)) =
                    (request.method, request.path, request.version)
                else {
                    return Err(Exit::Fallback);
                };
                self.method = offset(buf, method.as_bytes());
                self.target = offset(buf, path.as_bytes());
                self.minor = minor;
                self.set_headers(buf, request.headers);
                Ok(Some(len))
            }
            // Including an h2c preface and too many headers: hyper answers those properly.
            Err(_) => Err(Exit::Fallback),
        }
    }

    fn parse_response(&mut self, buf: &[u8]) -> io::Result<Option<usize>> {
        let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
        let mut response = httparse::Response::new(&mut []);
        match httparse::ParserConfig::default().parse_response_with_uninit_headers(
            &mut response,
            buf,
            &mut slots,
        ) {
            Ok(httparse::Status::Partial) => Ok(None),
            Ok(httparse::Status::Complete(len)) => {
                let (Some(status), Some(minor)) = (response.code, response.version) else {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "incomplete status line",
                    ));
                };
                self.status = status;
                self.minor = minor;
                self.reason = offset(buf, response.reason.unwrap_or("").as_bytes());
                self.set_headers(buf, response.headers);
                Ok(Some(len))
            }
            Err(e) => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("invalid response head: {e}"),
            )),
        }
    }
}

/// A head together with its bytes, for header look-ups.
pub(crate) struct View<'a> {
    raw: &'a [u8],
    head: &'a Head,
}

impl View<'_> {
    fn headers(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.head
            .headers
            .iter()
            .map(|(n, v)| (&self.raw[n.clone()], &self.raw[v.clone()]))
    }

    fn method(&self) -> &[u8] {
        &self.raw[self.head.method.clone()]
    }

    /// Body framing, `Connection: close`, and whether anything needs the general path.
    fn request_semantics(&self) -> Result<(Framing, bool), Exit> {
        let mut length = None;
        let mut chunked = false;
        let mut close = false;
        for (name, value) in self.headers() {
            if name.eq_ignore_ascii_case(b"content-length") {
                let n = parse_length(value).ok_or(Exit::Fallback)?;
                if length.is_some_and(|l| l != n) {
                    return Err(Exit::Fallback);
                }
                length = Some(n);
            } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
                if chunked || !value.trim_ascii().eq_ignore_ascii_case(b"chunked") {
                    return Err(Exit::Fallback);
                }
                chunked = true;
            } else if name.eq_ignore_ascii_case(b"connection") {
                for token in value.split(|b| *b == b',').map(<[u8]>::trim_ascii) {
                    if token.eq_ignore_ascii_case(b"close") {
                        close = true;
                    } else if !token.eq_ignore_ascii_case(b"keep-alive") && !token.is_empty() {
                        // Extra hop-by-hop headers named by Connection: rare, leave them to hyper.
                        return Err(Exit::Fallback);
                    }
                }
            } else if name.eq_ignore_ascii_case(b"upgrade") || name.eq_ignore_ascii_case(b"expect") {
                return Err(Exit::Fallback);
            }
        }
        if self.method().eq_ignore_ascii_case(b"CONNECT") {
            return Err(Exit::Fallback);
        }
        let framing = match (chunked, length) {
            // RFC 9112 §6.3 lets a server go by Transfer-Encoding here; refusing is safer
            // than hoping every backend does the same.
            (true, Some(_)) => {
                return Err(Exit::Reject("Content-Length and Transfer-Encoding together"));
            }
            (true, None) => Framing::Chunked,
            (false, Some(0) | None) => Framing::Empty,
            (false, Some(n)) => Framing::Length(n),
        };
        Ok((framing, close))
    }
}

impl RequestHeaders for View<'_> {
    fn values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.headers()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| v)
    }
}

fn parse_length(value: &[u8]) -> Option<u64> {
    let value = value.trim_ascii();
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(value).ok()?.parse().ok()
}

/// Finds the end of a chunked body while its bytes are passed through unchanged.
///
/// The bytes go to the backend as they are, so the scanner must read them exactly as any
/// backend would, or a request could hide another one in what one side takes for a chunk and the
/// other for a new message (request smuggling). It is therefore strict (RFC 9112 §7.1): a chunk
/// size is at least one hex digit, optionally followed by spaces or tabs; an extension holds no
/// control character but tab (a bare LF, NUL, DEL, …); every line ends with CRLF; a trailer
/// line is `name:value` with a token name (no obs-fold). Extensions and trailers are bounded.
#[derive(Debug, Default)]
struct ChunkScanner {
    state: ChunkState,
    size: u64,
    /// Hex digits of the current size line.
    digits: u32,
    /// Extension and trailer bytes of the whole body.
    extra: usize,
}

/// Most extension and trailer bytes a chunked body may carry (hyper allows 16 KiB of
/// extensions).
const MAX_CHUNK_EXTRA: usize = 16 * 1024;

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    #[default]
    Size,
    /// Spaces or tabs after the size.
    SizeWhitespace,
    Extension,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    TrailerStart,
    TrailerName,
    TrailerValue,
    TrailerLf,
    FinalLf,
    Done,
}

/// RFC 9110 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// A byte of a chunk extension or a field value: tab, visible ASCII, space, or obs-text.
fn is_field_byte(b: u8) -> bool {
    b == b'\t' || (b' '..=b'~').contains(&b) || b >= 0x80
}

/// A malformed chunked body.
fn bad_chunk(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("invalid chunked encoding: {what}"),
    )
}

/// `b` must be `want`; else the error `what`.
fn expect(b: u8, want: u8, what: &str) -> io::Result<()> {
    if b == want { Ok(()) } else { Err(bad_chunk(what)) }
}

impl ChunkScanner {
    fn done(&self) -> bool {
        self.state == ChunkState::Done
    }

    /// Counts an extension or trailer byte against [`MAX_CHUNK_EXTRA`]; past it, the error
    /// `too_long`.
    fn extra_byte(&mut self, too_long: &str) -> io::Result<()> {
        self.extra += 1;
        if self.extra <= MAX_CHUNK_EXTRA {
            Ok(())
        } else {
            Err(bad_chunk(too_long))
        }
    }

    /// A byte of a chunk extension or a trailer value: CR ends it (on to `on_cr`); anything else
    /// must be a field byte, counted against [`MAX_CHUNK_EXTRA`].
    fn value_byte(&mut self, b: u8, on_cr: ChunkState, control: &str, too_long: &str) -> io::Result<()> {
        if b == b'\r' {
            self.state = on_cr;
            Ok(())
        } else if !is_field_byte(b) {
            Err(bad_chunk(control))
        } else {
            self.extra_byte(too_long)
        }
    }

    /// Consumes the body's bytes at the start of `input` and returns how many there were (the
    /// rest belongs to the next message once [`ChunkScanner::done`]).
    fn scan(&mut self, input: &[u8]) -> io::Result<usize> {
        let mut i = 0;
        while i < input.len() && self.state != ChunkState::Done {
            let b = input[i];
            match self.state {
                ChunkState::Size => match b {
                    b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                        let digit = u64::from((b as char).to_digit(16).unwrap_or(0) as u8);
                        self.digits += 1;
                        self.size = self
                            .size
                            .checked_mul(16)
                            .and_then(|s| s.checked_add(digit))
                            .ok_or_else(|| bad_chunk("chunk size too large"))?;
                    }
                    _ if self.digits == 0 => return Err(bad_chunk("chunk size missing")),
                    b' ' | b'\t' => self.state = ChunkState::SizeWhitespace,
                    b';' => self.state = ChunkState::Extension,
                    b'\r' => self.state = ChunkState::SizeLf,
                    _ => return Err(bad_chunk("unexpected byte in chunk size")),
                },
                ChunkState::SizeWhitespace => match b {
                    b' ' | b'\t' => {}
                    b';' => self.state = ChunkState::Extension,
                    b'\r' => self.state = ChunkState::SizeLf,
                    _ => return Err(bad_chunk("unexpected byte after chunk size")),
                },
                ChunkState::Extension => self.value_byte(
                    b,
                    ChunkState::SizeLf,
                    "control character in chunk extension",
                    "chunk extensions too long",
                )?,
                ChunkState::SizeLf => {
                    expect(b, b'\n', "chunk size line not ended by CRLF")?;
                    self.digits = 0;
                    self.state = if self.size == 0 {
                        ChunkState::TrailerStart
                    } else {
                        ChunkState::Data
                    };
                }
                ChunkState::Data => {
                    let take = self.size.min((input.len() - i) as u64);
                    self.size -= take;
                    i += take as usize;
                    if self.size == 0 {
                        self.state = ChunkState::DataCr;
                    }
                    continue;
                }
                ChunkState::DataCr => {
                    expect(b, b'\r', "chunk data not followed by CRLF")?;
                    self.state = ChunkState::DataLf;
                }
                ChunkState::DataLf => {
                    expect(b, b'\n', "chunk data not followed by CRLF")?;
                    self.state = ChunkState::Size;
                }
                ChunkState::TrailerStart => {
                    self.state = match b {
                        b'\r' => ChunkState::FinalLf,
                        b if is_tchar(b) => ChunkState::TrailerName,
                        _ => return Err(bad_chunk("invalid trailer line")),
                    };
                    if self.state == ChunkState::TrailerName {
                        self.extra_byte("trailers too long")?;
                    }
                }
                ChunkState::TrailerName => {
                    match b {
                        b':' => self.state = ChunkState::TrailerValue,
                        b if is_tchar(b) => {}
                        _ => return Err(bad_chunk("invalid trailer name")),
                    }
                    self.extra_byte("trailers too long")?;
                }
                ChunkState::TrailerValue => self.value_byte(
                    b,
                    ChunkState::TrailerLf,
                    "control character in a trailer",
                    "trailers too long",
                )?,
                ChunkState::TrailerLf => {
                    expect(b, b'\n', "trailer line not ended by CRLF")?;
                    self.state = ChunkState::TrailerStart;
                }
                ChunkState::FinalLf => {
                    expect(b, b'\n', "chunked body not ended by CRLF")?;
                    self.state = ChunkState::Done;
                }
                ChunkState::Done => {}
            }
            i += 1;
        }
        Ok(i)
    }
}

/// Moves as much of a body as has arrived (up to [`READ_CHUNK`]) from `buf` to `out`, so that it
/// goes out with the head; returns how much of a `Length` body is still to come. A chunked body
/// is checked by `scanner` as it goes; a body read until close is not taken here.
fn take_buffered(
    buf: &mut BytesMut,
    out: &mut Vec<u8>,
    framing: Framing,
    scanner: &mut ChunkScanner,
) -> io::Result<u64> {
    let (now, remaining) = match framing {
        Framing::Empty | Framing::UntilClose => return Ok(0),
        Framing::Length(n) => {
            let now = (n as usize).min(buf.len()).min(READ_CHUNK);
            (now, n - now as u64)
        }
        Framing::Chunked => (scanner.scan(&buf[..buf.len().min(READ_CHUNK)])?, 0),
    };
    out.extend_from_slice(&buf[..now]);
    buf.advance(now);
    Ok(remaining)
}

/// A keep-alive connection to one backend.
struct BackendConn {
    addr: SocketAddr,
    stream: TcpStream,
    buf: BytesMut,
}

/// The state of one client connection.
struct ClientConn {
    stream: TcpStream,
    buf: BytesMut,
    idle: Vec<BackendConn>,
    head: Head,
    response_head: Head,
    out: Vec<u8>,
}

/// Serves one client connection on the fast path (and hands it over when needed).
pub(crate) async fn serve(worker: Arc<Worker>, stream: TcpStream, shutdown: CancellationToken) {
    let mut conn = ClientConn {
        stream,
        buf: BytesMut::with_capacity(READ_CHUNK),
        idle: Vec::new(),
        head: Head::default(),
        response_head: Head::default(),
        out: Vec::with_capacity(1024),
    };
    if let Err(Exit::Fallback) = conn.run(&worker, &shutdown).await {
        let io = Rewound {
            prefix: conn.buf.freeze(),
            inner: conn.stream,
        };
        worker.serve_general(io, shutdown).await;
    }
}

async fn fill(stream: &mut TcpStream, buf: &mut BytesMut) -> io::Result<usize> {
    if buf.capacity() - buf.len() < 1024 {
        buf.reserve(READ_CHUNK);
    }
    stream.read_buf(buf).await
}

impl ClientConn {
    async fn run(&mut self, worker: &Arc<Worker>, shutdown: &CancellationToken) -> Result<(), Exit> {
        // One registration for the connection's life, not one per request.
        let cancelled = shutdown.cancelled();
        tokio::pin!(cancelled);
        loop {
            // Read a whole request head; between requests, a shutdown closes the connection.
            let head_len = loop {
                if !self.buf.is_empty()
                    && let Some(len) = self.head.parse_request(&self.buf)?
                {
                    break len;
                }
                if self.buf.len() > MAX_HEAD {
                    return Err(Exit::Fallback);
                }
                let read = if self.buf.is_empty() {
                    tokio::select! {
                        read = fill(&mut self.stream, &mut self.buf) => read,
                        () = &mut cancelled => return Err(Exit::Close),
                    }
                } else {
                    fill(&mut self.stream, &mut self.buf).await
                };
                if read? == 0 {
                    return Err(Exit::Close);
                }
            };
            let start = Instant::now();
            let view = View {
                raw: &self.buf[..head_len],
                head: &self.head,
            };
            let (framing, client_close) = match view.request_semantics() {
                Ok(semantics) => semantics,
                Err(Exit::Reject(why)) => {
                    let error = io::Error::new(io::ErrorKind::InvalidData, why);
                    return Err(self.reject_body(worker, Backend::Primary, &error).await);
                }
                Err(exit) => return Err(exit),
            };
            let decision = {
                let routes = worker.shared.routes.load();
                routes.decide(&view, &mut rand::rng())
            };
            let mirror_body = decision.mirror
                && match framing {
                    Framing::Empty => true,
                    Framing::Length(n) => n <= MIRROR_BODY_LIMIT,
                    _ => false,
                };
            if decision.mirror && !mirror_body {
                return Err(Exit::Fallback);
            }
            let backend = decision.backend;
            let Some(addr) = worker.shared.pool(backend).load().pick_addr() else {
                worker
                    .shared
                    .record(backend, StatusCode::SERVICE_UNAVAILABLE, start, false);
                let message = format!("{}: no {backend} backend is ready\n", worker.shared.what);
                let close = client_close || framing != Framing::Empty;
                self.buf.advance(head_len);
                self.respond_error(StatusCode::SERVICE_UNAVAILABLE, backend, &message, close)
                    .await?;
                if close {
                    return Err(Exit::Close);
                }
                continue;
            };

            // The request head for the backend: as received, less the hop-by-hop headers.
            self.out.clear();
            let view = View {
                raw: &self.buf[..head_len],
                head: &self.head,
            };
            self.out.extend_from_slice(view.method());
            self.out.push(b' ');
            self.out.extend_from_slice(&view.raw[self.head.target.clone()]);
            self.out.extend_from_slice(b" HTTP/1.1\r\n");
            for (name, value) in view.headers() {
                if !hop_by_hop(name) {
                    push_header(&mut self.out, name, value);
                }
            }
            self.out.extend_from_slice(b"\r\n");
            let method_head = view.method().eq_ignore_ascii_case(b"HEAD");
            if mirror_body {
                let length = match framing {
                    Framing::Length(n) => n as usize,
                    _ => 0,
                };
                while self.buf.len() < head_len + length {
                    if fill(&mut self.stream, &mut self.buf).await? == 0 {
                        return Err(Exit::Close);
                    }
                }
                let view = View {
                    raw: &self.buf[..head_len],
                    head: &self.head,
                };
                let body = Bytes::copy_from_slice(&self.buf[head_len..head_len + length]);
                worker.mirror_raw(&view, body);
            }
            self.buf.advance(head_len);

            // As much of the body as has arrived goes out with the head.
            let mut scanner = ChunkScanner::default();
            let remaining = match take_buffered(&mut self.buf, &mut self.out, framing, &mut scanner) {
                Ok(remaining) => remaining,
                Err(error) => return Err(self.reject_body(worker, backend, &error).await),
            };
            let body_sent_with_head = remaining == 0 && (framing != Framing::Chunked || scanner.done());

            let mut backend_conn = match self.exchange_head(addr, body_sent_with_head).await {
                Ok(conn) => conn,
                Err(error) => {
                    worker
                        .shared
                        .record(backend, StatusCode::BAD_GATEWAY, start, false);
                    let message = format!("{}: {backend} backend {addr}: {error}\n", worker.shared.what);
                    let close = client_close || !body_sent_with_head;
                    self.respond_error(StatusCode::BAD_GATEWAY, backend, &message, close)
                        .await?;
                    if close {
                        return Err(Exit::Close);
                    }
                    continue;
                }
            };
            // The rest of the request body, if it is still arriving.
            if !body_sent_with_head {
                let (from, to) = (&mut self.stream, &mut backend_conn.stream);
                let copied = copy_body(from, &mut self.buf, to, framing, remaining, &mut scanner).await;
                if let Err(error) = copied {
                    if error.kind() == io::ErrorKind::InvalidData {
                        return Err(self.reject_body(worker, backend, &error).await);
                    }
                    return Err(Exit::Close);
                }
            }

            // The response: interim 1xx heads are passed on, then the final head and body.
            let (status, response_framing, backend_close, head_len) = loop {
                let len = match read_response_head(&mut backend_conn, &mut self.response_head).await {
                    Ok(len) => len,
                    Err(error) => return Err(self.bad_gateway(worker, backend, addr, start, &error).await),
                };
                let status = self.response_head.status;
                if (100..200).contains(&status) {
                    // 101 cannot happen (no Upgrade on this path); others are informational.
                    self.stream.write_all(&backend_conn.buf[..len]).await?;
                    backend_conn.buf.advance(len);
                    continue;
                }
                let view = View {
                    raw: &backend_conn.buf[..len],
                    head: &self.response_head,
                };
                let (framing, close) = match response_semantics(&view, status, method_head) {
                    Ok(semantics) => semantics,
                    Err(error) => return Err(self.bad_gateway(worker, backend, addr, start, &error).await),
                };
                break (status, framing, close, len);
            };
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
            worker.shared.record(backend, status, start, false);
            let close = client_close || response_framing == Framing::UntilClose;

            self.out.clear();
            {
                let view = View {
                    raw: &backend_conn.buf[..head_len],
                    head: &self.response_head,
                };
                self.out.extend_from_slice(b"HTTP/1.1 ");
                self.out.extend_from_slice(status.as_str().as_bytes());
                self.out.push(b' ');
                self.out
                    .extend_from_slice(&view.raw[self.response_head.reason.clone()]);
                self.out.extend_from_slice(b"\r\n");
                for (name, value) in view.headers() {
                    let chunked_header = name.eq_ignore_ascii_case(b"transfer-encoding");
                    if !hop_by_hop(name) && (!chunked_header || response_framing == Framing::Chunked) {
                        push_header(&mut self.out, name, value);
                    }
                }
            }
            push_header(&mut self.out, b"x-aviary-backend", backend.as_str().as_bytes());
            if let Some(cookie) = &decision.set_cookie {
                push_header(&mut self.out, b"set-cookie", cookie.as_bytes());
            }
            if close {
                push_header(&mut self.out, b"connection", b"close");
            }
            self.out.extend_from_slice(b"\r\n");
            backend_conn.buf.advance(head_len);

            let mut scanner = ChunkScanner::default();
            let remaining = take_buffered(
                &mut backend_conn.buf,
                &mut self.out,
                response_framing,
                &mut scanner,
            )?;
            self.stream.write_all(&self.out).await?;
            let (from, to) = (&mut backend_conn.stream, &mut self.stream);
            copy_body(
                from,
                &mut backend_conn.buf,
                to,
                response_framing,
                remaining,
                &mut scanner,
            )
            .await?;
            if !backend_close && response_framing != Framing::UntilClose && backend_conn.buf.is_empty() {
                if self.idle.len() >= MAX_IDLE_BACKENDS {
                    self.idle.remove(0);
                }
                self.idle.push(backend_conn);
            }
            if close {
                let _ = self.stream.shutdown().await;
                return Err(Exit::Close);
            }
        }
    }

    /// Sends the request head prepared in `out` on an idle connection to `addr` or a new one,
    /// and waits for the first byte of the response. A reused connection that turns out to be
    /// closed is replaced once, when the whole request is in `out`.
    async fn exchange_head(&mut self, addr: SocketAddr, whole_request: bool) -> io::Result<BackendConn> {
        let reused = self
            .idle
            .iter()
            .position(|c| c.addr == addr)
            .map(|i| self.idle.swap_remove(i));
        if let Some(mut conn) = reused {
            match send_head(&mut conn, &self.out, whole_request).await {
                Ok(()) => return Ok(conn),
                Err(error) if !whole_request => return Err(error),
                Err(_) => {}
            }
        }
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let mut conn = BackendConn {
            addr,
            stream,
            buf: BytesMut::with_capacity(READ_CHUNK),
        };
        send_head(&mut conn, &self.out, whole_request).await?;
        Ok(conn)
    }

    /// Answers 502 for a backend that failed or answered something unusable, and closes.
    async fn bad_gateway(
        &mut self,
        worker: &Worker,
        backend: Backend,
        addr: SocketAddr,
        start: Instant,
        error: &io::Error,
    ) -> Exit {
        worker
            .shared
            .record(backend, StatusCode::BAD_GATEWAY, start, false);
        let message = format!("{}: {backend} backend {addr}: {error}\n", worker.shared.what);
        let _ = self
            .respond_error(StatusCode::BAD_GATEWAY, backend, &message, true)
            .await;
        Exit::Close
    }

    /// Answers 400 to a request whose chunked body the scanner refused, and closes: the
    /// connection cannot be read further with any certainty of where the next request starts.
    async fn reject_body(&mut self, worker: &Worker, backend: Backend, error: &io::Error) -> Exit {
        let message = format!("{}: bad request: {error}\n", worker.shared.what);
        let _ = self
            .respond_error(StatusCode::BAD_REQUEST, backend, &message, true)
            .await;
        let _ = self.stream.shutdown().await;
        Exit::Close
    }

    async fn respond_error(
        &mut self,
        status: StatusCode,
        backend: Backend,
        message: &str,
        close: bool,
    ) -> io::Result<()> {
        self.out.clear();
        self.out.extend_from_slice(b"HTTP/1.1 ");
        self.out.extend_from_slice(status.as_str().as_bytes());
        self.out.push(b' ');
        self.out
            .extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
        self.out
            .extend_from_slice(b"\r\ncontent-type: text/plain; charset=utf-8\r\n");
        push_header(
            &mut self.out,
            b"content-length",
            message.len().to_string().as_bytes(),
        );
        push_header(&mut self.out, b"x-aviary-backend", backend.as_str().as_bytes());
        if close {
            push_header(&mut self.out, b"connection", b"close");
        }
        self.out.extend_from_slice(b"\r\n");
        self.out.extend_from_slice(message.as_bytes());
        self.stream.write_all(&self.out).await
    }
}

/// Writes the head (and any body bytes) and, when that was the whole request, waits until the
/// backend starts answering so that a dead keep-alive connection is noticed before anything was
/// committed.
async fn send_head(conn: &mut BackendConn, out: &[u8], whole_request: bool) -> io::Result<()> {
    conn.stream.write_all(out).await?;
    if whole_request && conn.buf.is_empty() && fill(&mut conn.stream, &mut conn.buf).await? == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the backend closed the connection",
        ));
    }
    Ok(())
}

async fn read_response_head(conn: &mut BackendConn, head: &mut Head) -> io::Result<usize> {
    loop {
        if !conn.buf.is_empty()
            && let Some(len) = head.parse_response(&conn.buf)?
        {
            return Ok(len);
        }
        if conn.buf.len() > MAX_HEAD {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "response head too large",
            ));
        }
        if fill(&mut conn.stream, &mut conn.buf).await? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the backend closed the connection",
            ));
        }
    }
}

/// A response's framing and whether the backend closes. Conflicting or unreadable
/// `Content-Length`s are an error: the client (or a proxy in front, which may share the
/// connection between users) could frame the response differently.
fn response_semantics(view: &View<'_>, status: u16, head_request: bool) -> io::Result<(Framing, bool)> {
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_string());
    let mut length = None;
    let mut transfer = None;
    let mut close = view.head.minor == 0;
    for (name, value) in view.headers() {
        if name.eq_ignore_ascii_case(b"content-length") {
            let n = parse_length(value).ok_or_else(|| bad("invalid Content-Length in the response"))?;
            if length.is_some_and(|l| l != n) {
                return Err(bad("conflicting Content-Lengths in the response"));
            }
            length = Some(n);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            transfer = Some(value.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        } else if name.eq_ignore_ascii_case(b"connection") {
            for token in value.split(|b| *b == b',').map(<[u8]>::trim_ascii) {
                if token.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if token.eq_ignore_ascii_case(b"keep-alive") {
                    close = false;
                }
            }
        }
    }
    let framing = if head_request || status == 204 || status == 304 {
        Framing::Empty
    } else {
        match (transfer, length) {
            (Some(true), _) => Framing::Chunked,
            (Some(false), _) => Framing::UntilClose,
            (None, Some(0)) => Framing::Empty,
            (None, Some(n)) => Framing::Length(n),
            (None, None) => Framing::UntilClose,
        }
    };
    Ok((framing, close))
}

fn push_header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Copies the rest of a body, after what `buf` holds, from `src` to `dst` as `framing` delimits
/// it: `remaining` bytes of a length, the chunks `scanner` has not seen the end of, or all until
/// `src` closes.
async fn copy_body(
    src: &mut TcpStream,
    buf: &mut BytesMut,
    dst: &mut TcpStream,
    framing: Framing,
    remaining: u64,
    scanner: &mut ChunkScanner,
) -> io::Result<()> {
    match framing {
        Framing::Empty => Ok(()),
        Framing::Length(_) => copy_length(src, buf, dst, remaining).await,
        Framing::Chunked => copy_chunked(src, buf, dst, scanner).await,
        Framing::UntilClose => copy_until_close(src, buf, dst).await,
    }
}

async fn copy_length(
    src: &mut TcpStream,
    buf: &mut BytesMut,
    dst: &mut TcpStream,
    mut remaining: u64,
) -> io::Result<()> {
    while remaining > 0 {
        if buf.is_empty() && fill(src, buf).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let take = (remaining as usize).min(buf.len());
        dst.write_all(&buf[..take]).await?;
        buf.advance(take);
        remaining -= take as u64;
    }
    Ok(())
}

async fn copy_chunked(
    src: &mut TcpStream,
    buf: &mut BytesMut,
    dst: &mut TcpStream,
    scanner: &mut ChunkScanner,
) -> io::Result<()> {
    while !scanner.done() {
        if buf.is_empty() && fill(src, buf).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let take = scanner.scan(buf)?;
        dst.write_all(&buf[..take]).await?;
        buf.advance(take);
    }
    Ok(())
}

async fn copy_until_close(src: &mut TcpStream, buf: &mut BytesMut, dst: &mut TcpStream) -> io::Result<()> {
    loop {
        if !buf.is_empty() {
            dst.write_all(buf).await?;
            buf.clear();
        }
        if fill(src, buf).await? == 0 {
            return Ok(());
        }
    }
}

/// Builds hyper types for a mirrored copy (the rare path).
pub(crate) fn mirror_parts(view: &View<'_>) -> Option<(Method, http::uri::PathAndQuery, HeaderMap)> {
    let method = Method::from_bytes(view.method()).ok()?;
    let path = http::uri::PathAndQuery::try_from(&view.raw[view.head.target.clone()]).ok()?;
    let mut headers = HeaderMap::with_capacity(view.head.headers.len());
    for (name, value) in view.headers() {
        if hop_by_hop(name) || name.eq_ignore_ascii_case(b"transfer-encoding") {
            continue;
        }
        if let (Ok(name), Ok(value)) = (HeaderName::from_bytes(name), HeaderValue::from_bytes(value)) {
            headers.append(name, value);
        }
    }
    Some((method, path, headers))
}

/// A connection with bytes already read from it put back in front, for the hand-over to hyper.
pub(crate) struct Rewound {
    prefix: Bytes,
    inner: TcpStream,
}

impl AsyncRead for Rewound {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Rewound {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_scanner_finds_the_end() {
        let body = b"4\r\nWiki\r\n5;ext=1\r\npedia\r\n0\r\nTrailer: x\r\n\r\nGET /next";
        let mut scanner = ChunkScanner::default();
        let end = body.len() - b"GET /next".len();
        assert_eq!(scanner.scan(body).unwrap(), end);
        assert!(scanner.done());
        // Byte by byte gives the same result.
        let mut scanner = ChunkScanner::default();
        let mut consumed = 0;
        for b in body.chunks(1) {
            if scanner.done() {
                break;
            }
            consumed += scanner.scan(b).unwrap();
        }
        assert_eq!(consumed, end);
        let mut scanner = ChunkScanner::default();
        assert!(scanner.scan(b"zz\r\n").is_err());
        let mut scanner = ChunkScanner::default();
        assert!(scanner.scan(b"ffffffffffffffffff\r\n").is_err());
        // Whitespace after the size, an extension with a quoted value, trailers.
        let ok = b"4 \t;name=\"a b\";x\r\nWiki\r\n0\r\nX-Sum: 1\r\nY:\r\n\r\n";
        assert_eq!(ChunkScanner::default().scan(ok).unwrap(), ok.len());
    }

    /// Issue 15: what a lenient backend could read differently is refused (request smuggling).
    #[test]
    fn chunk_scanner_refuses_what_backends_could_read_differently() {
        let cases: [&[u8]; 16] = [
            b"1;a\nb\r\nX\r\n0\r\n\r\n",     // bare LF in an extension
            b"1;a\x00\r\nX\r\n0\r\n\r\n",    // NUL
            b"1;\x7f\r\nX\r\n0\r\n\r\n",     // DEL
            b"1;\x1b[31m\r\nX\r\n0\r\n\r\n", // ESC
            b"1;a\rb\r\nX\r\n0\r\n\r\n",     // bare CR
            b";a\r\nX\r\n0\r\n\r\n",         // no size
            b"\r\n0\r\n\r\n",                // empty size line
            b"1 2\r\nXY\r\n0\r\n\r\n",       // a space inside the size
            b"1\nX\r\n0\r\n\r\n",            // size line ended by LF only
            b"1\r\nX\n0\r\n\r\n",            // data ended by LF only
            b"0\r\nX: 1\nY: 2\r\n\r\n",      // bare LF in a trailer
            b"0\r\nX: 1\r\n folded\r\n\r\n", // obs-fold in the trailers
            b"0\r\nno colon\r\n\r\n",        // not a field line
            b"0\r\nX: a\x01b\r\n\r\n",       // control character in a trailer
            b"0\r\n\n",                      // final line ended by LF only
            b"-1\r\n",                       // a sign
        ];
        for case in cases {
            let mut whole = ChunkScanner::default();
            assert!(
                whole.scan(case).is_err(),
                "accepted {:?}",
                String::from_utf8_lossy(case)
            );
            // Byte by byte too.
            let mut bytewise = ChunkScanner::default();
            let failed = case.iter().any(|b| bytewise.scan(&[*b]).is_err());
            assert!(failed, "accepted bytewise {:?}", String::from_utf8_lossy(case));
        }
        let mut long = b"1;".to_vec();
        long.extend(std::iter::repeat_n(b'a', MAX_CHUNK_EXTRA + 1));
        assert!(ChunkScanner::default().scan(&long).is_err());
    }

    #[test]
    fn request_heads_are_parsed_with_their_framing() {
        let raw = b"POST /a?b=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nCookie: a=1\r\n\r\nhello";
        let mut head = Head::default();
        let len = head.parse_request(raw).ok().flatten().unwrap();
        assert_eq!(&raw[len..], b"hello");
        let view = View {
            raw: &raw[..len],
            head: &head,
        };
        assert_eq!(view.method(), b"POST");
        assert_eq!(&raw[head.target.clone()], b"/a?b=1");
        assert!(matches!(
            view.request_semantics(),
            Ok((Framing::Length(5), false))
        ));
        assert_eq!(view.values("cookie").collect::<Vec<_>>(), vec![&b"a=1"[..]]);
        assert!(
            head.parse_request(b"GET / HTTP/1.1\r\nHost: x\r\n")
                .ok()
                .unwrap()
                .is_none()
        );
        // h2c prior knowledge and HTTP/1.0 take the general path.
        assert!(matches!(
            head.parse_request(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
            Err(Exit::Fallback)
        ));
        assert!(matches!(
            head.parse_request(b"GET / HTTP/1.0\r\n\r\n"),
            Err(Exit::Fallback)
        ));
        let upgrade = b"GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n";
        let len = head.parse_request(upgrade).ok().flatten().unwrap();
        assert!(matches!(
            View {
                raw: &upgrade[..len],
                head: &head
            }
            .request_semantics(),
            Err(Exit::Fallback)
        ));
    }

    #[test]
    fn response_framing() {
        let mut head = Head::default();
        let cases: [(&[u8], bool, Framing, bool); 5] = [
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n",
                false,
                Framing::Length(3),
                false,
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                false,
                Framing::Chunked,
                false,
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n",
                true,
                Framing::Empty,
                false,
            ),
            (
                b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n",
                false,
                Framing::Empty,
                true,
            ),
            (b"HTTP/1.0 200 OK\r\n\r\n", false, Framing::UntilClose, true),
        ];
        // Issue 15: lengths a client could read differently are refused.
        for raw in [
            &b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 20\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nContent-Length: 2, 20\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: +2\r\n\r\n",
        ] {
            head.parse_response(raw).unwrap().unwrap();
            let view = View { raw, head: &head };
            assert!(
                response_semantics(&view, 200, false).is_err(),
                "{:?}",
                std::str::from_utf8(raw)
            );
        }
        let same = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\n";
        head.parse_response(same).unwrap().unwrap();
        let view = View {
            raw: same,
            head: &head,
        };
        assert_eq!(
            response_semantics(&view, 200, false).unwrap(),
            (Framing::Length(2), false)
        );
        let no_reason = b"HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(head.parse_response(no_reason).unwrap(), Some(no_reason.len()));
        assert_eq!(&no_reason[head.reason.clone()], b"");
        for (raw, head_request, framing, close) in cases {
            let len = head.parse_response(raw).unwrap().unwrap();
            assert_eq!(len, raw.len());
            let view = View { raw, head: &head };
            assert_eq!(
                response_semantics(&view, head.status, head_request).unwrap(),
                (framing, close),
                "{:?}",
                std::str::from_utf8(raw)
            );
        }
    }
}
