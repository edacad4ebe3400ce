//! Route configuration and the per-request routing decision.
//!
//! The semantics are those of Flagger's Istio router (reference §6.4):
//! - Without match rules, every request is split by the primary/canary weights.
//! - With match rules (A/B), a request matching at least one rule is split by the weights and every
//!   other request goes to the primary. Flagger's A/B analysis sets the weights to 0/100, so
//!   matching requests reach the canary; at promotion or rollback it sets 100/0 and they come back.
//! - Session affinity: while the canary weight is above 0, a request that the weights send to the
//!   canary gets `Set-Cookie: <cookieName>=<value>; Max-Age=<maxAge>`, and any request carrying that
//!   cookie goes to the canary whatever the weights. With a primary cookie name, requests the
//!   weights send to the primary get that cookie (Max-Age = the primary max age, Flagger uses the
//!   analysis interval) and requests carrying it stay on the primary. Once the canary weight is back
//!   to 0, a request carrying the canary cookie goes to the primary and the cookie is expired with
//!   `Max-Age=-1`. The sticky rules come first, as Flagger's leading routes do.
//! - Mirroring: a request routed to the primary is also sent to the canary (for `mirror_weight`
//!   percent of them), the copy's response is discarded.

use std::borrow::Cow;
use std::fmt::Write as _;

use http::header::{COOKIE, HeaderName};
use http::{HeaderMap, HeaderValue};
use rand::Rng;
use regex::Regex;

use super::Backend;
use crate::error::{Error, Result};

/// The routes of one service: the equivalent of Flagger's `SetRoutes(primaryWeight, canaryWeight,
/// mirrored)` plus what the canary spec adds (match, mirror weight, session affinity).
#[derive(Clone, Debug, PartialEq)]
pub struct Routes {
    /// Percent of the (matching) traffic sent to the primary; with `canary_weight` it sums to 100.
    pub primary_weight: u32,
    /// Percent of the (matching) traffic sent to the canary.
    pub canary_weight: u32,
    /// A/B rules (Flagger `analysis.match`); empty means every request is split by weight.
    pub matches: Vec<MatchRule>,
    /// Copy the requests routed to the primary to the canary and discard the copies' responses.
    pub mirror: bool,
    /// Percent of the primary's requests mirrored (Flagger `mirrorWeight`); `None` means all of
    /// them, as Flagger does when `mirrorWeight` is 0 or unset.
    pub mirror_weight: Option<u32>,
    /// Sticky sessions (Flagger `analysis.sessionAffinity`).
    pub session_affinity: Option<SessionAffinity>,
}

impl Default for Routes {
    /// Everything to the primary.
    fn default() -> Self {
        Routes::weighted(100, 0)
    }
}

impl Routes {
    /// A plain weighted split.
    pub fn weighted(primary_weight: u32, canary_weight: u32) -> Routes {
        Routes {
            primary_weight,
            canary_weight,
            matches: Vec::new(),
            mirror: false,
            mirror_weight: None,
            session_affinity: None,
        }
    }
}

/// One A/B rule: it matches when all of its header conditions match (an Istio HTTPMatchRequest
/// with only `headers`).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct MatchRule {
    pub headers: Vec<HeaderMatch>,
}

/// A condition on one request header. The header is absent → no match. Several values of the
/// same header are joined with `,` (`; ` for `cookie`, whose raw header is matched as Istio
/// does, so `regex: "^(.*?;)?(canary=always)(;.*)?$"` works unchanged).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeaderMatch {
    pub name: String,
    pub value: StringMatch,
}

/// Istio's StringMatch. `Regex` must match the whole value (RE2 full match, as Envoy does).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StringMatch {
    Exact(String),
    Prefix(String),
    Suffix(String),
    Regex(String),
}

/// Flagger's `analysis.sessionAffinity`, with the cookie values Flagger keeps in the canary status
/// (`status.sessionAffinityCookie`, `status.primarySessionAffinityCookie`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionAffinity {
    pub cookie_name: String,
    /// The canary cookie's value; a new canary run should use a new one
    /// ([`random_cookie_value`]) so that old sessions are not pinned to the new canary.
    pub cookie_value: String,
    /// Max-Age of the canary cookie in seconds (Flagger's default is 86400).
    pub max_age: u64,
    pub primary_cookie_name: Option<String>,
    pub primary_cookie_value: String,
    /// Max-Age of the primary cookie in seconds (Flagger uses the analysis interval).
    pub primary_max_age: u64,
    pub domain: Option<String>,
    pub path: Option<String>,
    pub secure: bool,
    pub http_only: bool,
    pub same_site: Option<SameSite>,
    pub partitioned: bool,
}

impl SessionAffinity {
    /// A canary cookie named `cookie_name` with a fresh random value and Flagger's defaults.
    pub fn new(cookie_name: impl Into<String>) -> SessionAffinity {
        SessionAffinity {
            cookie_name: cookie_name.into(),
            cookie_value: random_cookie_value(),
            max_age: 86_400,
            primary_cookie_name: None,
            primary_cookie_value: random_cookie_value(),
            primary_max_age: 60,
            domain: None,
            path: None,
            secure: false,
            http_only: false,
            same_site: None,
            partitioned: false,
        }
    }
}

/// `SameSite` cookie attribute.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SameSite {
    Strict,
    Lax,
    None,
}

/// Ten random ASCII letters, like Flagger's session cookie values.
pub fn random_cookie_value() -> String {
    const LETTERS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
    let mut rng = rand::rng();
    (0..10)
        .map(|_| LETTERS[rng.random_range(0..LETTERS.len())] as char)
        .collect()
}

/// Read access to a request's headers, so that decisions work on hyper's `HeaderMap` and on the
/// fast path's raw header lines alike.
pub(crate) trait RequestHeaders {
    /// The values of header `name` (lowercase), in order.
    fn values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a;
}

impl RequestHeaders for HeaderMap {
    fn values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.get_all(name).into_iter().map(HeaderValue::as_bytes)
    }
}

/// What to do with one request.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Decision {
    pub(crate) backend: Backend,
    /// A `Set-Cookie` to add to the response.
    pub(crate) set_cookie: Option<HeaderValue>,
    /// Also send a copy to the canary.
    pub(crate) mirror: bool,
}

/// [`Routes`] validated and prepared once (regexes compiled, header names parsed, cookies
/// rendered) so that the per-request decision allocates nothing in the common cases.
#[derive(Debug)]
pub(crate) struct CompiledRoutes {
    source: Routes,
    rules: Vec<Vec<Condition>>,
    /// 0 when mirroring is off.
    mirror_percent: u32,
    affinity: Option<Affinity>,
}

#[derive(Debug)]
struct Condition {
    name: HeaderName,
    matcher: Matcher,
}

#[derive(Debug)]
enum Matcher {
    Exact(String),
    Prefix(String),
    Suffix(String),
    Regex(Regex),
}

#[derive(Debug)]
struct Affinity {
    canary_name: String,
    canary_value: String,
    set_canary: HeaderValue,
    expire_canary: HeaderValue,
    primary: Option<PrimaryCookie>,
}

#[derive(Debug)]
struct PrimaryCookie {
    name: String,
    value: String,
    set: HeaderValue,
}

impl CompiledRoutes {
    /// Validates `routes`; `what` names the router in errors.
    pub(crate) fn compile(what: &str, routes: Routes) -> Result<CompiledRoutes> {
        let invalid = |field: &str, message: String| Error::invalid(what, field, message);
        if routes.primary_weight > 100
            || routes.canary_weight > 100
            || routes.primary_weight + routes.canary_weight != 100
        {
            return Err(invalid(
                "weights",
                format!(
                    "primary {} + canary {} must sum to 100",
                    routes.primary_weight, routes.canary_weight
                ),
            ));
        }
        if let Some(weight) = routes.mirror_weight.filter(|w| *w > 100) {
            return Err(invalid(
                "mirrorWeight",
                format!("{weight} is not a percentage (0-100)"),
            ));
        }
        let mut rules = Vec::with_capacity(routes.matches.len());
        for (i, rule) in routes.matches.iter().enumerate() {
            let mut conditions = Vec::with_capacity(rule.headers.len());
            for header in &rule.headers {
                let field = format!("match[{i}].headers.{}", header.name);
                let name = HeaderName::from_bytes(header.name.as_bytes())
                    .map_err(|_| invalid(&field, "not a valid HTTP header name".to_owned()))?;
                let matcher = match &header.value {
                    StringMatch::Exact(v) => Matcher::Exact(v.clone()),
                    StringMatch::Prefix(v) => Matcher::Prefix(v.clone()),
                    StringMatch::Suffix(v) => Matcher::Suffix(v.clone()),
                    StringMatch::Regex(v) => Matcher::Regex(
                        Regex::new(&format!("^(?:{v})$"))
                            .map_err(|e| invalid(&format!("{field}.regex"), e.to_string()))?,
                    ),
                };
                conditions.push(Condition { name, matcher });
            }
            rules.push(conditions);
        }
        let affinity = match &routes.session_affinity {
            Some(sa) => Some(Affinity::compile(sa).map_err(|(field, message)| invalid(&field, message))?),
            None => None,
        };
        let mirror_percent = if routes.mirror {
            routes.mirror_weight.unwrap_or(100)
        } else {
            0
        };
        Ok(CompiledRoutes {
            source: routes,
            rules,
            mirror_percent,
            affinity,
        })
    }

    pub(crate) fn source(&self) -> &Routes {
        &self.source
    }

    /// Decides where `headers`' request goes; `rng` supplies the weighted rolls.
    pub(crate) fn decide<H: RequestHeaders, R: Rng + ?Sized>(&self, headers: &H, rng: &mut R) -> Decision {
        let canary_weight = self.source.canary_weight;
        if let Some(affinity) = &self.affinity
            && let Some(decision) = affinity.sticky(headers, canary_weight)
        {
            return self.with_mirror(decision, rng);
        }
        if !self.rules.is_empty()
            && !self
                .rules
                .iter()
                .any(|rule| rule.iter().all(|c| c.matches(headers)))
        {
            return self.with_mirror(
                Decision {
                    backend: Backend::Primary,
                    set_cookie: None,
                    mirror: false,
                },
                rng,
            );
        }
        let backend = match canary_weight {
            0 => Backend::Primary,
            100 => Backend::Canary,
            w => {
                if rng.random_range(0..100) < w {
                    Backend::Canary
                } else {
                    Backend::Primary
                }
            }
        };
        let set_cookie = match (&self.affinity, backend) {
            (Some(a), Backend::Canary) if canary_weight > 0 => Some(a.set_canary.clone()),
            (Some(Affinity { primary: Some(p), .. }), Backend::Primary) if canary_weight > 0 => {
                Some(p.set.clone())
            }
            _ => None,
        };
        self.with_mirror(
            Decision {
                backend,
                set_cookie,
                mirror: false,
            },
            rng,
        )
    }

    fn with_mirror<R: Rng + ?Sized>(&self, mut decision: Decision, rng: &mut R) -> Decision {
        decision.mirror = decision.backend == Backend::Primary
            && match self.mirror_percent {
                0 => false,
                100 => true,
                p => rng.random_range(0..100) < p,
            };
        decision
    }
}

impl Condition {
    fn matches<H: RequestHeaders>(&self, headers: &H) -> bool {
        let separator = if self.name == COOKIE { "; " } else { "," };
        let Some(value) = joined_value(headers, self.name.as_str(), separator) else {
            return false;
        };
        match &self.matcher {
            Matcher::Exact(v) => value == v.as_str(),
            Matcher::Prefix(v) => value.starts_with(v.as_str()),
            Matcher::Suffix(v) => value.ends_with(v.as_str()),
            Matcher::Regex(re) => re.is_match(&value),
        }
    }
}

/// All values of `name` as one string; borrowed in the usual single-value case. Values that are
/// not UTF-8 are skipped (they cannot match a textual condition).
fn joined_value<'h, H: RequestHeaders>(
    headers: &'h H,
    name: &'h str,
    separator: &str,
) -> Option<Cow<'h, str>> {
    let mut values = headers.values(name).filter_map(|v| std::str::from_utf8(v).ok());
    let first = values.next()?;
    match values.next() {
        None => Some(Cow::Borrowed(first)),
        Some(second) => {
            let mut joined = format!("{first}{separator}{second}");
            for v in values {
                joined.push_str(separator);
                joined.push_str(v);
            }
            Some(Cow::Owned(joined))
        }
    }
}

/// Whether a `Cookie` header of `headers` carries `name=value`.
fn has_cookie<H: RequestHeaders>(headers: &H, name: &str, value: &str) -> bool {
    headers.values("cookie").any(|header| {
        std::str::from_utf8(header).is_ok_and(|h| {
            h.split(';').any(|pair| {
                pair.trim()
                    .split_once('=')
                    .is_some_and(|(n, v)| n == name && v == value)
            })
        })
    })
}

impl Affinity {
    fn compile(sa: &SessionAffinity) -> std::result::Result<Affinity, (String, String)> {
        check_cookie_name("sessionAffinity.cookieName", &sa.cookie_name)?;
        check_cookie_value("status.sessionAffinityCookie", &sa.cookie_value)?;
        let attributes = cookie_attributes(sa)?;
        let header = |name: &str, value: &str, max_age: &str| {
            HeaderValue::from_str(&format!("{name}={value}; Max-Age={max_age}{attributes}")).map_err(|_| {
                (
                    "sessionAffinity".to_owned(),
                    "the cookie attributes are not valid header text".to_owned(),
                )
            })
        };
        let primary = match &sa.primary_cookie_name {
            Some(name) => {
                check_cookie_name("sessionAffinity.primaryCookieName", name)?;
                check_cookie_value("status.primarySessionAffinityCookie", &sa.primary_cookie_value)?;
                if *name == sa.cookie_name {
                    return Err((
                        "sessionAffinity.primaryCookieName".to_owned(),
                        "must differ from cookieName".to_owned(),
                    ));
                }
                Some(PrimaryCookie {
                    name: name.clone(),
                    value: sa.primary_cookie_value.clone(),
                    set: header(name, &sa.primary_cookie_value, &sa.primary_max_age.to_string())?,
                })
            }
            None => None,
        };
        Ok(Affinity {
            canary_name: sa.cookie_name.clone(),
            canary_value: sa.cookie_value.clone(),
            set_canary: header(&sa.cookie_name, &sa.cookie_value, &sa.max_age.to_string())?,
            expire_canary: header(&sa.cookie_name, &sa.cookie_value, "-1")?,
            primary,
        })
    }

    /// The sticky routes that come before the weighted one.
    fn sticky<H: RequestHeaders>(&self, headers: &H, canary_weight: u32) -> Option<Decision> {
        // Without any cookie there is nothing to be sticky about.
        headers.values("cookie").next()?;
        if has_cookie(headers, &self.canary_name, &self.canary_value) {
            return Some(if canary_weight > 0 {
                Decision {
                    backend: Backend::Canary,
                    set_cookie: None,
                    mirror: false,
                }
            } else {
                Decision {
                    backend: Backend::Primary,
                    set_cookie: Some(self.expire_canary.clone()),
                    mirror: false,
                }
            });
        }
        match &self.primary {
            Some(p) if has_cookie(headers, &p.name, &p.value) => Some(Decision {
                backend: Backend::Primary,
                set_cookie: None,
                mirror: false,
            }),
            _ => None,
        }
    }
}

fn check_cookie_name(field: &str, name: &str) -> std::result::Result<(), (String, String)> {
    let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if name.is_empty() || !name.bytes().all(token) {
        return Err((field.to_owned(), format!("`{name}` is not a valid cookie name")));
    }
    Ok(())
}

fn check_cookie_value(field: &str, value: &str) -> std::result::Result<(), (String, String)> {
    let octet = |b: u8| b.is_ascii_graphic() && !b",;\\\"".contains(&b);
    if value.is_empty() || !value.bytes().all(octet) {
        return Err((field.to_owned(), format!("`{value}` is not a valid cookie value")));
    }
    Ok(())
}

fn cookie_attributes(sa: &SessionAffinity) -> std::result::Result<String, (String, String)> {
    let mut out = String::new();
    let plain = |field: &str, v: &str| {
        if v.bytes().all(|b| b.is_ascii_graphic() && b != b';') {
            Ok(())
        } else {
            Err((
                format!("sessionAffinity.{field}"),
                format!("`{v}` cannot be a cookie attribute"),
            ))
        }
    };
    if let Some(domain) = &sa.domain {
        plain("domain", domain)?;
        let _ = write!(out, "; Domain={domain}");
    }
    if let Some(path) = &sa.path {
        plain("path", path)?;
        let _ = write!(out, "; Path={path}");
    }
    if sa.secure {
        out.push_str("; Secure");
    }
    if sa.http_only {
        out.push_str("; HttpOnly");
    }
    if let Some(same_site) = sa.same_site {
        out.push_str(match same_site {
            SameSite::Strict => "; SameSite=Strict",
            SameSite::Lax => "; SameSite=Lax",
            SameSite::None => "; SameSite=None",
        });
    }
    if sa.partitioned {
        out.push_str("; Partitioned");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        map
    }

    fn compile(routes: Routes) -> CompiledRoutes {
        CompiledRoutes::compile("router test/podinfo", routes).unwrap()
    }

    fn ab(rules: Vec<MatchRule>) -> CompiledRoutes {
        compile(Routes {
            matches: rules,
            ..Routes::weighted(0, 100)
        })
    }

    fn rule(conds: &[(&str, StringMatch)]) -> MatchRule {
        MatchRule {
            headers: conds
                .iter()
                .map(|(n, v)| HeaderMatch {
                    name: (*n).to_owned(),
                    value: v.clone(),
                })
                .collect(),
        }
    }

    fn backend(routes: &CompiledRoutes, h: &[(&str, &str)]) -> Backend {
        routes.decide(&headers(h), &mut StdRng::seed_from_u64(1)).backend
    }

    #[test]
    fn weights_are_validated() {
        let err = CompiledRoutes::compile("router test/podinfo", Routes::weighted(90, 20))
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "router test/podinfo: weights: primary 90 + canary 20 must sum to 100"
        );
        let err = CompiledRoutes::compile(
            "r",
            Routes {
                mirror: true,
                mirror_weight: Some(101),
                ..Routes::default()
            },
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("mirrorWeight"), "{err}");
    }

    #[test]
    fn weighted_split_follows_the_weights() {
        let routes = compile(Routes::weighted(90, 10));
        let mut rng = StdRng::seed_from_u64(7);
        let canary = (0..10_000)
            .filter(|_| routes.decide(&HeaderMap::new(), &mut rng).backend == Backend::Canary)
            .count();
        assert!((800..1200).contains(&canary), "{canary}");
        assert_eq!(backend(&compile(Routes::weighted(100, 0)), &[]), Backend::Primary);
        assert_eq!(backend(&compile(Routes::weighted(0, 100)), &[]), Backend::Canary);
    }

    #[test]
    fn every_match_kind() {
        use StringMatch::{Exact, Prefix, Regex, Suffix};
        // A condition, a value it matches and one it does not.
        let cases = [
            ("x-canary", Exact("insider".into()), "insider", "insider2"),
            (
                "user-agent",
                Prefix("Mozilla/5.0 (X11".into()),
                "Mozilla/5.0 (X11; Linux)",
                "curl/8",
            ),
            (
                "x-user",
                Suffix("@example.com".into()),
                "ann@example.com",
                "ann@example.org",
            ),
            // Full match: `.*Firefox.*` is needed to match inside the value, as with Envoy.
            (
                "user-agent",
                Regex(".*Firefox.*".into()),
                "Mozilla/5.0 Firefox/120.0",
                "Chrome",
            ),
            ("x-v", Regex("v[0-9]".into()), "v1", "av1b"),
        ];
        for (name, condition, hit, miss) in cases {
            let routes = ab(vec![rule(&[(name, condition.clone())])]);
            assert_eq!(backend(&routes, &[(name, hit)]), Backend::Canary, "{condition:?}");
            assert_eq!(
                backend(&routes, &[(name, miss)]),
                Backend::Primary,
                "{condition:?}"
            );
        }
        let exact = ab(vec![rule(&[("x-canary", Exact("insider".into()))])]);
        assert_eq!(backend(&exact, &[]), Backend::Primary, "no header, no match");
    }

    #[test]
    fn cookie_conditions_apply_to_the_raw_header() {
        let routes = ab(vec![rule(&[(
            "cookie",
            StringMatch::Regex("^(.*?;)?(canary=always)(;.*)?$".into()),
        )])]);
        assert_eq!(backend(&routes, &[("cookie", "canary=always")]), Backend::Canary);
        assert_eq!(
            backend(&routes, &[("cookie", "a=1;canary=always;b=2")]),
            Backend::Canary
        );
        // The raw header is matched as it is: Flagger's documented regex does not allow the
        // space browsers put after `;`, exactly as with Envoy.
        assert_eq!(
            backend(&routes, &[("cookie", "a=1; canary=always")]),
            Backend::Primary
        );
        // Several Cookie headers (h2) are joined with "; " first.
        let any = ab(vec![rule(&[(
            "cookie",
            StringMatch::Regex(".*canary=always.*".into()),
        )])]);
        assert_eq!(
            backend(&any, &[("cookie", "a=1"), ("cookie", "canary=always")]),
            Backend::Canary
        );
        assert_eq!(backend(&routes, &[("cookie", "canary=never")]), Backend::Primary);
    }

    #[test]
    fn a_rule_needs_all_its_conditions_and_any_rule_matches() {
        let routes = ab(vec![
            rule(&[
                ("x-a", StringMatch::Exact("1".into())),
                ("x-b", StringMatch::Exact("2".into())),
            ]),
            rule(&[("x-c", StringMatch::Exact("3".into()))]),
        ]);
        assert_eq!(backend(&routes, &[("x-a", "1")]), Backend::Primary);
        assert_eq!(backend(&routes, &[("x-a", "1"), ("x-b", "2")]), Backend::Canary);
        assert_eq!(backend(&routes, &[("x-c", "3")]), Backend::Canary);
        // Flagger's rollback sets 100/0: matching requests come back to the primary.
        let rolled_back = compile(Routes {
            matches: routes.source().matches.clone(),
            ..Routes::weighted(100, 0)
        });
        assert_eq!(backend(&rolled_back, &[("x-c", "3")]), Backend::Primary);
    }

    #[test]
    fn bad_rules_are_rejected_with_their_field() {
        let err = CompiledRoutes::compile(
            "router test/podinfo",
            Routes {
                matches: vec![rule(&[("x-a", StringMatch::Regex("(".into()))])],
                ..Routes::weighted(0, 100)
            },
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("router test/podinfo: match[0].headers.x-a.regex: "),
            "{err}"
        );
        let err = CompiledRoutes::compile(
            "r",
            Routes {
                matches: vec![rule(&[("bad header", StringMatch::Exact("1".into()))])],
                ..Routes::default()
            },
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("not a valid HTTP header name"), "{err}");
    }

    fn affinity() -> SessionAffinity {
        SessionAffinity {
            cookie_value: "abcdefghij".into(),
            path: Some("/".into()),
            same_site: Some(SameSite::Lax),
            http_only: true,
            ..SessionAffinity::new("flagger-cookie")
        }
    }

    #[test]
    fn session_affinity_sets_honours_and_expires_the_cookie() {
        let on = compile(Routes {
            session_affinity: Some(affinity()),
            ..Routes::weighted(0, 100)
        });
        let d = on.decide(&HeaderMap::new(), &mut StdRng::seed_from_u64(1));
        assert_eq!(d.backend, Backend::Canary);
        assert_eq!(
            d.set_cookie.unwrap(),
            "flagger-cookie=abcdefghij; Max-Age=86400; Path=/; HttpOnly; SameSite=Lax"
        );

        // Even at 1% the cookie wins over the weights.
        let low = compile(Routes {
            session_affinity: Some(affinity()),
            ..Routes::weighted(99, 1)
        });
        let mut rng = StdRng::seed_from_u64(3);
        let sticky = headers(&[("cookie", "other=1; flagger-cookie=abcdefghij")]);
        for _ in 0..200 {
            let d = low.decide(&sticky, &mut rng);
            assert_eq!((d.backend, d.set_cookie), (Backend::Canary, None));
        }
        // A stale value from an earlier run is not honoured.
        let stale = headers(&[("cookie", "flagger-cookie=zzzzzzzzzz")]);
        let primary = (0..200)
            .filter(|_| low.decide(&stale, &mut rng).backend == Backend::Primary)
            .count();
        assert!(primary > 180, "{primary}");

        let off = compile(Routes {
            session_affinity: Some(affinity()),
            ..Routes::weighted(100, 0)
        });
        let d = off.decide(&sticky, &mut rng);
        assert_eq!(d.backend, Backend::Primary);
        assert_eq!(
            d.set_cookie.unwrap(),
            "flagger-cookie=abcdefghij; Max-Age=-1; Path=/; HttpOnly; SameSite=Lax"
        );
        // Without the cookie nothing is set once the canary is out of rotation.
        assert_eq!(off.decide(&HeaderMap::new(), &mut rng).set_cookie, None);
    }

    #[test]
    fn primary_cookie_pins_to_the_primary() {
        let sa = SessionAffinity {
            primary_cookie_name: Some("primary-cookie".into()),
            primary_cookie_value: "klmnopqrst".into(),
            primary_max_age: 60,
            ..affinity()
        };
        let routes = compile(Routes {
            session_affinity: Some(sa.clone()),
            ..Routes::weighted(50, 50)
        });
        let mut rng = StdRng::seed_from_u64(9);
        let mut saw_primary_cookie = false;
        for _ in 0..100 {
            let d = routes.decide(&HeaderMap::new(), &mut rng);
            if d.backend == Backend::Primary {
                assert_eq!(
                    d.set_cookie.as_ref().unwrap(),
                    "primary-cookie=klmnopqrst; Max-Age=60; Path=/; HttpOnly; SameSite=Lax"
                );
                saw_primary_cookie = true;
            }
        }
        assert!(saw_primary_cookie);
        let pinned = headers(&[("cookie", "primary-cookie=klmnopqrst")]);
        assert!((0..100).all(|_| routes.decide(&pinned, &mut rng).backend == Backend::Primary));

        let same = SessionAffinity {
            primary_cookie_name: Some("flagger-cookie".into()),
            ..sa
        };
        let err = CompiledRoutes::compile(
            "r",
            Routes {
                session_affinity: Some(same),
                ..Routes::weighted(50, 50)
            },
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("must differ from cookieName"), "{err}");
    }

    #[test]
    fn mirroring_copies_primary_requests_only() {
        let all = compile(Routes {
            mirror: true,
            ..Routes::weighted(100, 0)
        });
        assert!(
            all.decide(&HeaderMap::new(), &mut StdRng::seed_from_u64(1))
                .mirror
        );
        let to_canary = compile(Routes {
            mirror: true,
            ..Routes::weighted(0, 100)
        });
        assert!(
            !to_canary
                .decide(&HeaderMap::new(), &mut StdRng::seed_from_u64(1))
                .mirror
        );
        let half = compile(Routes {
            mirror: true,
            mirror_weight: Some(50),
            ..Routes::weighted(100, 0)
        });
        let mut rng = StdRng::seed_from_u64(5);
        let mirrored = (0..2_000)
            .filter(|_| half.decide(&HeaderMap::new(), &mut rng).mirror)
            .count();
        assert!((850..1150).contains(&mirrored), "{mirrored}");
        let off = compile(Routes {
            mirror: false,
            mirror_weight: Some(50),
            ..Routes::weighted(100, 0)
        });
        assert!(!off.decide(&HeaderMap::new(), &mut rng).mirror);
    }

    #[test]
    fn random_cookie_values_are_ten_letters() {
        let v = random_cookie_value();
        assert_eq!(v.len(), 10);
        assert!(v.bytes().all(|b| b.is_ascii_alphabetic()));
        assert_ne!(v, random_cookie_value());
    }
}
