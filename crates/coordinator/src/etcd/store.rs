//! The fleet state in etcd.
//!
//! Values are JSON envelopes `{"fence": N, "writer": "host:port", "record": {...}}`: the term
//! and the replica that wrote them, for the audit of who wrote what (see
//! [`EtcdStore::rollout_writes`]). A record's revision is its etcd `mod_revision`.
//!
//! Every write is one transaction:
//! `If(create_revision(election key) == fence [, mod_revision(record) == expected])
//!  Then(put) Else(get election key, get record)`.
//! The election key exists only while its lease lives, and a later term has a later key, so a
//! deposed leader's write fails whatever it believes; the `Else` reads tell a fenced write
//! (`Error::Fenced`, and the replica steps down) from a concurrent change (`Error::Conflict`).
//! A write retried after a lost answer finds its own value stored and succeeds.

use std::sync::Arc;

use async_trait::async_trait;
use etcd_client::{Compare, CompareOp, GetOptions, KeyValue, Txn, TxnOp, TxnOpResponse};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::election::Shared;
use super::{EtcdConfig, EtcdLeadership, REQUEST_BUDGET};
use crate::error::{Error, Result};
use crate::leader::Fence;
use crate::store::{ClusterRecord, Listing, RolloutRecord, Store, Unreadable, Versioned, encode_checked};

/// Lists of many rollouts are larger than tonic's default 4 MiB.
const MAX_RESPONSE: usize = 256 * 1024 * 1024;

#[derive(Serialize, Deserialize)]
struct Envelope<T> {
    fence: u64,
    writer: String,
    record: T,
}

/// One stored version of a rollout.
#[derive(Debug, Clone)]
pub struct RolloutWrite {
    /// The etcd revision of this write.
    pub revision: u64,
    /// The term that wrote it.
    pub fence: u64,
    /// The advertised address of the replica that wrote it.
    pub writer: String,
    pub record: RolloutRecord,
}

/// The fleet state of one replica, fenced by its [`EtcdLeadership`].
pub struct EtcdStore {
    shared: Arc<Shared>,
    rollouts: String,
    clusters: String,
}

enum Expect {
    /// Create: the key must not exist.
    Absent,
    /// Update: the key's mod_revision (0: absent).
    Revision(u64),
    /// No condition besides the fence.
    Any,
}

impl EtcdStore {
    /// The store under `config.prefix`, writing with the terms of `leadership`.
    pub fn new(config: &EtcdConfig, leadership: &EtcdLeadership) -> Self {
        let prefix = config.prefix.trim_end_matches('/');
        Self {
            shared: leadership.shared(),
            rollouts: format!("{prefix}/rollouts/"),
            clusters: format!("{prefix}/clusters/"),
        }
    }

    fn rollout_key(&self, name: &str) -> String {
        format!("{}{name}", self.rollouts)
    }

    /// Every stored version of a rollout, oldest first, as far back as etcd keeps history
    /// (until it is compacted): which term wrote which state.
    pub async fn rollout_writes(&self, name: &str) -> Result<Vec<RolloutWrite>> {
        let key = self.rollout_key(name);
        let mut out = Vec::new();
        let mut at = 0i64;
        loop {
            let options = (at > 0).then(|| GetOptions::new().with_revision(at));
            let got = self
                .shared
                .etcd
                .call(REQUEST_BUDGET, |mut c| {
                    let key = key.clone();
                    let options = options.clone();
                    async move { c.get(key, options).await }
                })
                .await;
            let resp = match got {
                Ok(r) => r,
                // "required revision has been compacted": that is as far back as it goes.
                Err(e) if e.message.contains("compacted") => break,
                Err(e) => return Err(self.shared.etcd.store_error("read the rollout history", e)),
            };
            let Some(kv) = resp.kvs().first() else { break };
            let env: Envelope<RolloutRecord> = decode(kv).map_err(Error::Unreadable)?;
            out.push(RolloutWrite {
                revision: kv.mod_revision() as u64,
                fence: env.fence,
                writer: env.writer,
                record: env.record,
            });
            if kv.version() <= 1 {
                break;
            }
            at = kv.mod_revision() - 1;
        }
        out.reverse();
        Ok(out)
    }

    async fn get_prefix(&self, prefix: &str, what: &str) -> Result<Vec<KeyValue>> {
        let etcd = &self.shared.etcd;
        let mut resp = etcd
            .call(REQUEST_BUDGET, |c| {
                let prefix = prefix.to_string();
                async move {
                    c.kv_client()
                        .max_decoding_message_size(MAX_RESPONSE)
                        .get(prefix, Some(GetOptions::new().with_prefix()))
                        .await
                }
            })
            .await
            .map_err(|e| etcd.store_error(what, e))?;
        Ok(resp.take_kvs())
    }

    /// One fenced write of `record` in its envelope (see the module docs). Returns the record's
    /// new revision.
    async fn write<T: Serialize + DeserializeOwned + Clone>(
        &self,
        fence: Fence,
        key: String,
        record: &T,
        expect: Expect,
        what: &str,
    ) -> Result<u64> {
        let value = self.envelope(what, fence, record)?;
        let guard = match expect {
            Expect::Absent => Some(Compare::create_revision(key.clone(), CompareOp::Equal, 0)),
            Expect::Revision(r) => Some(Compare::mod_revision(key.clone(), CompareOp::Equal, r as i64)),
            Expect::Any => None,
        };
        let put = TxnOp::put(key.clone(), value.clone(), None);
        let (leader, current) = match self.fenced_txn(fence, &key, guard, put, what).await? {
            Ok(revision) => return Ok(revision as u64),
            Err(read) => read,
        };
        if leader.is_none_or(|kv| kv.create_revision() != fence.0 as i64) {
            self.shared.lose(
                fence,
                "etcd refused a write: this term's election key is gone (the lease expired or was revoked)",
            );
            return Err(Error::Fenced { token: fence.0 });
        }
        match (current, expect) {
            // An earlier attempt whose answer was lost went through.
            (Some(kv), _) if kv.value() == value.as_slice() => Ok(kv.mod_revision() as u64),
            (Some(_), Expect::Absent) => Err(Error::AlreadyExists(format!(
                "{what}: {key} already exists; pick another metadata.name"
            ))),
            (current, Expect::Revision(expected)) => Err(Error::Conflict {
                name: key.rsplit('/').next().unwrap_or_default().to_string(),
                expected,
                actual: current.map_or(0, |kv| kv.mod_revision() as u64),
            }),
            _ => Err(Error::Store(format!(
                "{what}: etcd refused the transaction for an unknown reason"
            ))),
        }
    }

    /// Runs `op` on `key` if this term's election key still stands and `guard` (if any) holds:
    /// `Ok(revision)` when it ran, else what etcd read instead (the election key, the key).
    async fn fenced_txn(
        &self,
        fence: Fence,
        key: &str,
        guard: Option<Compare>,
        op: TxnOp,
        what: &str,
    ) -> Result<std::result::Result<i64, (Option<KeyValue>, Option<KeyValue>)>> {
        let etcd = &self.shared.etcd;
        let election_key = self.shared.fence_key(fence)?;
        let mut when = vec![Compare::create_revision(
            election_key.clone(),
            CompareOp::Equal,
            fence.0 as i64,
        )];
        when.extend(guard);
        let txn = Txn::new()
            .when(when)
            .and_then([op])
            .or_else([TxnOp::get(election_key, None), TxnOp::get(key, None)]);
        let resp = etcd
            .call(REQUEST_BUDGET, |mut c| {
                let txn = txn.clone();
                async move { c.txn(txn).await }
            })
            .await
            .map_err(|e| etcd.store_error(what, e))?;
        if resp.succeeded() {
            return Ok(Ok(resp.header().map_or(0, |h| h.revision())));
        }
        let mut gets = resp.op_responses().into_iter().map(|r| match r {
            TxnOpResponse::Get(g) => g.kvs().first().cloned(),
            _ => None,
        });
        Ok(Err((gets.next().flatten(), gets.next().flatten())))
    }

    /// A delete fenced like [`write`](Self::write): only the leader of `fence` removes `key`,
    /// and only at revision `expected` when given.
    async fn fenced_delete(
        &self,
        fence: Fence,
        key: String,
        expected: Option<u64>,
        what: &str,
    ) -> Result<()> {
        let guard = expected.map(|r| Compare::mod_revision(key.clone(), CompareOp::Equal, r as i64));
        let delete = TxnOp::delete(key.clone(), None);
        let (leader, current) = match self.fenced_txn(fence, &key, guard, delete, what).await? {
            Ok(_) => return Ok(()),
            Err(read) => read,
        };
        if leader.is_some_and(|kv| kv.create_revision() == fence.0 as i64)
            && let Some(expected) = expected
        {
            return Err(Error::Conflict {
                name: key.rsplit('/').next().unwrap_or_default().to_string(),
                expected,
                actual: current.map_or(0, |kv| kv.mod_revision() as u64),
            });
        }
        self.shared.lose(
            fence,
            "etcd refused a delete: this term's election key is gone (the lease expired or was revoked)",
        );
        Err(Error::Fenced { token: fence.0 })
    }

    /// The envelope of `record`, checked: it fits and decodes back (see [`encode_checked`]).
    fn envelope<T: Serialize + DeserializeOwned + Clone>(
        &self,
        what: &str,
        fence: Fence,
        record: &T,
    ) -> Result<Vec<u8>> {
        encode_checked(
            what,
            &Envelope {
                fence: fence.0,
                writer: self.shared.advertise(),
                record: record.clone(),
            },
        )
    }
}

/// A stored value, or why it cannot be read.
fn decode<T: DeserializeOwned>(kv: &KeyValue) -> Result<Envelope<T>, Unreadable> {
    serde_json::from_slice(kv.value()).map_err(|e| {
        let key = String::from_utf8_lossy(kv.key()).into_owned();
        Unreadable {
            name: key.rsplit('/').next().unwrap_or_default().to_string(),
            key,
            error: format!("{e}; written by another aviary version or by hand?"),
        }
    })
}

/// Decodes every value of a listing; the ones that do not decode are quarantined and logged.
fn decode_all<T: DeserializeOwned>(kvs: &[KeyValue]) -> Listing<(Envelope<T>, u64)> {
    let mut out = Listing::default();
    for kv in kvs {
        match decode::<T>(kv) {
            Ok(env) => out.records.push((env, kv.mod_revision() as u64)),
            Err(u) => {
                tracing::error!(key = %u.key, error = %u.error, "{u}");
                out.unreadable.push(u);
            }
        }
    }
    out
}

#[async_trait]
impl Store for EtcdStore {
    async fn list_rollouts(&self) -> Result<Listing<Versioned<RolloutRecord>>> {
        let kvs = self.get_prefix(&self.rollouts, "list rollouts").await?;
        let found = decode_all::<RolloutRecord>(&kvs);
        Ok(Listing {
            records: found
                .records
                .into_iter()
                .map(|(e, revision)| Versioned {
                    value: e.record,
                    revision,
                })
                .collect(),
            unreadable: found.unreadable,
        })
    }

    async fn get_rollout(&self, name: &str) -> Result<Option<Versioned<RolloutRecord>>> {
        let etcd = &self.shared.etcd;
        let key = self.rollout_key(name);
        let resp = etcd
            .call(REQUEST_BUDGET, |mut c| {
                let key = key.clone();
                async move { c.get(key, None).await }
            })
            .await
            .map_err(|e| etcd.store_error("read a rollout", e))?;
        resp.kvs()
            .first()
            .map(|kv| {
                decode::<RolloutRecord>(kv)
                    .map(|e| Versioned {
                        value: e.record,
                        revision: kv.mod_revision() as u64,
                    })
                    .map_err(Error::Unreadable)
            })
            .transpose()
    }

    async fn create_rollout(&self, fence: Fence, record: &RolloutRecord) -> Result<u64> {
        let what = format!("create rollout {}", record.name);
        self.write(
            fence,
            self.rollout_key(&record.name),
            record,
            Expect::Absent,
            &what,
        )
        .await
    }

    async fn update_rollout(&self, fence: Fence, record: &RolloutRecord, expected: u64) -> Result<u64> {
        let what = format!("update rollout {}", record.name);
        let expect = Expect::Revision(expected);
        self.write(fence, self.rollout_key(&record.name), record, expect, &what)
            .await
    }

    async fn delete_rollout(&self, fence: Fence, name: &str, expected: Option<u64>) -> Result<()> {
        let what = format!("delete rollout {name}");
        self.fenced_delete(fence, self.rollout_key(name), expected, &what)
            .await
    }

    async fn list_clusters(&self) -> Result<Listing<ClusterRecord>> {
        let kvs = self.get_prefix(&self.clusters, "list clusters").await?;
        let found = decode_all::<ClusterRecord>(&kvs);
        Ok(Listing {
            records: found.records.into_iter().map(|(e, _)| e.record).collect(),
            unreadable: found.unreadable,
        })
    }

    async fn put_cluster(&self, fence: Fence, record: &ClusterRecord) -> Result<()> {
        let what = format!("register cluster {}", record.name);
        let key = format!("{}{}", self.clusters, record.name);
        self.write(fence, key, record, Expect::Any, &what)
            .await
            .map(|_| ())
    }

    async fn delete_cluster(&self, fence: Fence, name: &str) -> Result<()> {
        let key = format!("{}{name}", self.clusters);
        let what = format!("deregister cluster {name}");
        self.fenced_delete(fence, key, None, &what).await
    }
}
