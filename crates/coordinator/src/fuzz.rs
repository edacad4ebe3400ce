//! The agent link's fuzz target (`fuzz/`, feature `fuzzing`; its corpus replays in this
//! crate's tests): a stream of hostile `AgentMessage`s through what the coordinator does with
//! them before any I/O — the Hello and snapshot checks, the wire-to-domain conversions, the
//! fleet view they update, and the fleet's answers rendered back to the wire — or a stream of
//! hostile `CoordinatorMessage`s through the conversions the agent makes of them.

use aviary_core::fleet::{CanaryKey, GateAsk, Revision};
use aviary_proto::v1;
use aviary_proto::v1::agent_message::Msg as In;
use prost::Message;

use crate::agent_link::{checked_report, registration};
use crate::convert::{cluster_canary_to_proto, cluster_to_proto, report_to_proto};
use crate::fleet::{CanaryFilter, Fleet};
use crate::limits;

/// The first byte picks the direction: odd, messages to an agent; even, messages from one.
pub fn agent_link(data: &[u8]) {
    match data.split_first() {
        Some((b, rest)) if b & 1 == 1 => coordinator_messages(rest),
        Some((_, rest)) => agent_messages(rest),
        None => {}
    }
}

/// Length-delimited `CoordinatorMessage`s: each re-encodes, and a command's revision survives
/// the agent's conversion and back.
fn coordinator_messages(mut buf: &[u8]) {
    use aviary_proto::v1::coordinator_message::Msg as Out;
    while let Ok(m) = v1::CoordinatorMessage::decode_length_delimited(&mut buf) {
        reencodes(&m);
        let revision = match m.msg {
            Some(Out::StartRevision(s)) => s.revision,
            Some(Out::Revert(r)) => r.revision,
            _ => None,
        };
        if let Some(r) = revision {
            let domain = Revision::from(&r);
            assert_eq!(
                Revision::from(&v1::Revision::from(&domain)),
                domain,
                "a revision survives the wire"
            );
        }
    }
}

/// Length-delimited `AgentMessage`s as on one `AgentLink.Connect` stream: a Hello first (else
/// the stream is refused), then anything.
fn agent_messages(data: &[u8]) {
    let mut buf = data;
    let fleet = Fleet::default();
    let now = jiff::Timestamp::UNIX_EPOCH;
    let mut cluster: Option<String> = None;
    while !buf.is_empty() {
        let Ok(m) = v1::AgentMessage::decode_length_delimited(&mut buf) else {
            break;
        };
        reencodes(&m);
        let Some(msg) = m.msg else { continue };
        let Some(c) = cluster.clone() else {
            let In::Hello(hello) = msg else { return };
            if limits::check_hello(&hello).is_err() {
                return;
            }
            let (record, canaries) = registration(hello, now);
            cluster = Some(record.name.clone());
            fleet.hello(record, 1, canaries, now);
            continue;
        };
        match msg {
            In::Status(u) => {
                for s in u.canary.into_iter().chain(u.canaries) {
                    if let Ok(r) = checked_report(s) {
                        let _ = fleet.update(&c, r, now);
                    }
                }
            }
            In::GateRequest(g) => {
                if limits::check_gate_request(&g).is_ok() {
                    let ask = GateAsk {
                        fingerprint: g.fingerprint.clone(),
                        revision: g.revision.as_ref().map(Revision::from).unwrap_or_default(),
                    };
                    let back = v1::Revision::from(&ask.revision);
                    assert_eq!(
                        Revision::from(&back),
                        ask.revision,
                        "a revision survives the wire"
                    );
                    fleet.gate_request(&c, CanaryKey::new(g.namespace, g.name), ask);
                }
            }
            In::Ack(a) => {
                if let Some(r) = a.canary.and_then(|s| checked_report(s).ok()) {
                    let _ = fleet.update(&c, r, now);
                }
                let _ = limits::cut(&a.message, limits::MAX_MESSAGE);
                let _ = a.command_id.split('/').nth(1);
            }
            In::Evidence(e) => {
                let _ = e.to_report(&c);
            }
            In::Event(e) => {
                let _ = limits::cut(&e.message, limits::MAX_MESSAGE);
                let _ = limits::cut(&e.reason, 256);
            }
            In::Heartbeat(_) => fleet.seen(&c, now),
            In::Hello(_) => {}
        }
    }
    for s in fleet.list_clusters() {
        reencodes(&cluster_to_proto(&s));
    }
    for c in fleet.list_canaries(CanaryFilter::default()) {
        reencodes(&cluster_canary_to_proto(&c));
        reencodes(&report_to_proto(&c.report));
    }
}

/// A message encodes, and its encoding decodes to the same encoding.
fn reencodes<M: Message + Default>(m: &M) {
    let bytes = m.encode_to_vec();
    let again = M::decode(bytes.as_slice()).expect("an encoded message decodes");
    assert_eq!(again.encode_to_vec(), bytes, "re-encoding changes the message");
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_fuzz_corpus_replays_without_a_panic() {
        assert!(aviary_testkit::fuzz::replay("agent_link", super::agent_link) > 0);
    }
}
