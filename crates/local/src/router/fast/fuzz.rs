//! The local router's fuzz target (`fuzz/`, feature `fuzzing`; its corpus replays in this
//! crate's tests): hostile routing rules and a hostile request through what the router does
//! before any I/O — compiling the rules, parsing the head on the fast path, its framing
//! decision, the chunked-body scanner, and the routing decision, which must be the same on the
//! fast path's raw headers as on the general path's `HeaderMap`.

use http::{HeaderMap, HeaderName, HeaderValue};
use rand::SeedableRng;
use rand::rngs::StdRng;

use super::{ChunkScanner, Framing, Head, View, mirror_parts};
use crate::router::matching::CompiledRoutes;
use crate::router::{HeaderMatch, MatchRule, Routes, SessionAffinity, StringMatch};

/// Rules (text lines, up to the first NUL byte), then the raw request (head and body).
///
/// Rule lines: `w N` canary weight (the primary gets the rest), `m` mirroring, `mw N` mirror
/// weight, `r` a new A/B rule, `h NAME exact|prefix|suffix|regex VALUE` a header condition of
/// the last rule, `c NAME` session affinity, `pc NAME` its primary cookie. Others are ignored.
pub fn router_request(data: &[u8]) {
    let (rules, raw) = match data.iter().position(|b| *b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let Ok(compiled) = CompiledRoutes::compile("fuzz", routes(&String::from_utf8_lossy(rules))) else {
        return;
    };
    let mut head = Head::default();
    let Ok(Some(len)) = head.parse_request(raw) else {
        return;
    };
    let view = View {
        raw: &raw[..len],
        head: &head,
    };
    let Ok((framing, _close)) = view.request_semantics() else {
        return;
    };
    let fast = compiled.decide(&view, &mut StdRng::seed_from_u64(7));
    if let Some(map) = header_map(&view) {
        let general = compiled.decide(&map, &mut StdRng::seed_from_u64(7));
        assert_eq!(fast, general, "the fast and the general path route differently");
    }
    let _ = mirror_parts(&view);
    if framing == Framing::Chunked {
        let body = &raw[len..];
        if let Ok(n) = ChunkScanner::default().scan(body) {
            assert!(
                n <= body.len(),
                "the scanner consumed {n} of {} bytes",
                body.len()
            );
        }
    }
}

/// The head's headers as hyper would hold them (`None` when hyper would refuse one).
fn header_map(view: &View<'_>) -> Option<HeaderMap> {
    let mut map = HeaderMap::new();
    for (name, value) in view.headers() {
        map.append(
            HeaderName::from_bytes(name).ok()?,
            HeaderValue::from_bytes(value).ok()?,
        );
    }
    Some(map)
}

fn routes(text: &str) -> Routes {
    let mut r = Routes::default();
    for line in text.lines() {
        let mut words = line.splitn(4, ' ');
        match (words.next(), words.next(), words.next(), words.next()) {
            (Some("w"), Some(n), _, _) => {
                let w = n.parse().unwrap_or(0);
                r.canary_weight = w;
                r.primary_weight = 100u32.saturating_sub(w);
            }
            (Some("m"), _, _, _) => r.mirror = true,
            (Some("mw"), Some(n), _, _) => r.mirror_weight = n.parse().ok(),
            (Some("r"), _, _, _) => r.matches.push(MatchRule::default()),
            (Some("h"), Some(name), Some(kind), value) => {
                let v = value.unwrap_or("").to_string();
                let value = match kind {
                    "exact" => StringMatch::Exact(v),
                    "prefix" => StringMatch::Prefix(v),
                    "suffix" => StringMatch::Suffix(v),
                    _ => StringMatch::Regex(v),
                };
                if r.matches.is_empty() {
                    r.matches.push(MatchRule::default());
                }
                if let Some(rule) = r.matches.last_mut() {
                    rule.headers.push(HeaderMatch {
                        name: name.to_string(),
                        value,
                    });
                }
            }
            (Some("c"), Some(name), _, _) => r.session_affinity = Some(SessionAffinity::new(name)),
            (Some("pc"), Some(name), _, _) => {
                if let Some(sa) = &mut r.session_affinity {
                    sa.primary_cookie_name = Some(name.to_string());
                }
            }
            _ => {}
        }
    }
    r
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_fuzz_corpus_replays_without_a_panic() {
        assert!(aviary_testkit::fuzz::replay("router_request", super::router_request) > 0);
    }
}
