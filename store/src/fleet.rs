//! Fleet state that is not a certificate: agent registrations imported from the management
//! server, the admin's approve/block decisions on agents, a few settings (the deny-list
//! path), and tracked artifacts (enrollment bundles and other files that expire).
//!
//! Keys (see the layout table in `keys.rs`):
//! - `G` + lowercase resource GUID → [`Registration`];
//! - `V` `d` + lowercase agent name → [`AgentDecision`]; `V` `s` + name → a setting (UTF-8);
//! - `X` + artifact id (SHA-256 of the file) → [`TrackedArtifact`];
//!   `X` + artifact id + `N` + recipient + `\0` + threshold (8) → a [`SentReminder`] about
//!   the artifact (what `N` keys are for certificates; kept under the artifact so that an
//!   artifact id equal to a certificate fingerprint — a DER certificate tracked as a file —
//!   never shares its reminders, and forgetting the artifact forgets them). Only the 33-byte
//!   keys are artifact records.
//!
//! [`SentReminder`]: crate::SentReminder

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::keys;
use crate::model::{Fingerprint, Sha256, UnixTime};
use crate::store::{decode, encode, Store};

/// An agent the management server knows (one row of its registration export).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registration {
    /// The agent's name: the subject CN of its certificates.
    pub agent: String,
    /// The resource GUID the management server gave the agent.
    pub guid: String,
    /// The SHA-256 of the agent's registered public key (SubjectPublicKeyInfo), if exported.
    pub spki_sha256: Option<Sha256>,
    /// The SHA-256 fingerprint of the agent's registered certificate, if exported.
    pub fingerprint: Option<Fingerprint>,
    pub imported_at: UnixTime,
}

/// What the admin decided about an agent that was not registered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AgentVerdict {
    Approved,
    Blocked,
}

impl AgentVerdict {
    pub fn as_str(self) -> &'static str {
        match self {
            AgentVerdict::Approved => "approved",
            AgentVerdict::Blocked => "blocked",
        }
    }
}

/// The latest decision about one agent (the history is in the audit log).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentDecision {
    pub agent: String,
    /// The GUID the admin named, or the one of the agent's registration, if any.
    pub guid: Option<String>,
    pub verdict: AgentVerdict,
    pub at: UnixTime,
    pub actor: String,
    /// The agent's certificates known when the decision was taken.
    pub fingerprints: Vec<Fingerprint>,
}

/// The kinds of [`TrackedArtifact`] (`certctl track --kind`, a policy's `artifacts`).
pub const ARTIFACT_KINDS: [&str; 4] = [
    "enrollment-bundle",
    "agent-package",
    "gateway-backup",
    "other",
];

/// A file that expires like a certificate without being one (an enrollment bundle, an
/// offline agent package, a gateway configuration backup).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrackedArtifact {
    /// SHA-256 of the file's bytes when it was tracked: the artifact's identity.
    pub id: Sha256,
    /// One of [`ARTIFACT_KINDS`].
    pub kind: String,
    /// A name for people (the bundle's own name, else the file name).
    pub name: String,
    /// Absolute path of the file.
    pub path: String,
    pub issued: UnixTime,
    pub expires: UnixTime,
    /// Where the expiry came from: `bundle` (the file says) or `default` (issued + lifetime).
    pub expiry_from: String,
    pub tracked_at: UnixTime,
    pub tracked_by: String,
}

fn registration_key(guid: &str) -> Vec<u8> {
    let mut k = vec![keys::REGISTRATION];
    k.extend_from_slice(guid.to_lowercase().as_bytes());
    k
}

fn decision_key(agent: &str) -> Vec<u8> {
    let mut k = vec![keys::AGENT_DECISION, b'd'];
    k.extend_from_slice(agent.to_lowercase().as_bytes());
    k
}

fn setting_key(name: &str) -> Vec<u8> {
    let mut k = vec![keys::AGENT_DECISION, b's'];
    k.extend_from_slice(name.as_bytes());
    k
}

fn artifact_key(id: &Sha256) -> Vec<u8> {
    let mut k = vec![keys::ARTIFACT];
    k.extend_from_slice(&id.0);
    k
}

/// Length of an artifact record's key (`X` + id); longer `X` keys are its sent reminders.
const ARTIFACT_KEY_LEN: usize = 33;

/// The marker after the artifact id of its sent-reminder keys.
const ARTIFACT_SENT: u8 = b'N';

/// The marker after the artifact id of its "file gone" key (`X` + id + `G`: since when).
const ARTIFACT_GONE: u8 = b'G';

fn artifact_gone_key(id: &Sha256) -> Vec<u8> {
    let mut k = artifact_key(id);
    k.push(ARTIFACT_GONE);
    k
}

pub(crate) fn artifact_sent_prefix(id: &Sha256) -> Vec<u8> {
    let mut k = artifact_key(id);
    k.push(ARTIFACT_SENT);
    k
}

/// `X` + artifact id + `N` + recipient + `\0` + threshold: one reminder sent about an
/// artifact (its `fingerprint` field holds the artifact id).
pub(crate) fn artifact_sent_key(s: &crate::SentReminder) -> Vec<u8> {
    let mut k = artifact_sent_prefix(&s.fingerprint);
    k.extend_from_slice(s.recipient.as_bytes());
    k.push(0);
    k.extend_from_slice(&keys::time_bytes(s.threshold_secs));
    k
}

impl Store {
    // ---- registrations ---------------------------------------------------------------

    /// Saves registrations. With `replace`, every registration not in `registrations` is
    /// removed first (the export is the whole truth). The lookups of what they cover and
    /// the counts of the live agent credentials they do not cover (the pending queue's
    /// size, see `coverage`) are rewritten with them; all in one atomic batch, under the
    /// count lock (a commit of records waits for it).
    pub fn import_registrations(
        &self,
        registrations: &[Registration],
        replace: bool,
    ) -> Result<()> {
        let _held = self.count_lock();
        let mut batch = crate::batch::Batch::default();
        let mut all: std::collections::BTreeMap<String, Registration> =
            std::collections::BTreeMap::new();
        for kv in self.tree().scan_prefix([keys::REGISTRATION]) {
            let (key, value) = kv?;
            if replace {
                batch.remove(key);
            } else {
                let r: Registration = decode(&value, "agent registration")?;
                all.insert(r.guid.clone(), r);
            }
        }
        for r in registrations {
            batch.insert(registration_key(&r.guid), encode(r)?);
            all.insert(r.guid.clone(), r.clone());
        }
        let registered = crate::coverage::Registered::of(all.values());
        crate::coverage::rewrite(self.tree(), &registered, &mut batch)?;
        self.tree().apply_batch(batch.into_sled())?;
        self.flush()
    }

    /// Every registration, by GUID.
    pub fn registrations(&self) -> Result<Vec<Registration>> {
        self.tree()
            .scan_prefix([keys::REGISTRATION])
            .map(|kv| decode(&kv?.1, "agent registration"))
            .collect()
    }

    // ---- agent decisions -------------------------------------------------------------

    /// Records the latest decision about an agent (replacing an earlier one).
    pub fn put_agent_decision(&self, decision: &AgentDecision) -> Result<()> {
        self.tree()
            .insert(decision_key(&decision.agent), encode(decision)?)?;
        self.flush()
    }

    /// Every agent decision, by lowercase agent name.
    pub fn agent_decisions(&self) -> Result<Vec<AgentDecision>> {
        self.tree()
            .scan_prefix([keys::AGENT_DECISION, b'd'])
            .map(|kv| decode(&kv?.1, "agent decision"))
            .collect()
    }

    /// A fleet setting (e.g. `deny-list`), if set.
    pub fn fleet_setting(&self, name: &str) -> Result<Option<String>> {
        match self.tree().get(setting_key(name))? {
            Some(v) => Ok(Some(decode(&v, "fleet setting")?)),
            None => Ok(None),
        }
    }

    pub fn set_fleet_setting(&self, name: &str, value: &str) -> Result<()> {
        self.tree()
            .insert(setting_key(name), encode(&value.to_string())?)?;
        self.flush()
    }

    // ---- tracked artifacts -----------------------------------------------------------

    /// Saves a tracked artifact (replacing one with the same id).
    pub fn put_artifact(&self, artifact: &TrackedArtifact) -> Result<()> {
        self.tree()
            .insert(artifact_key(&artifact.id), encode(artifact)?)?;
        self.flush()
    }

    /// Every tracked artifact, in id order.
    pub fn artifacts(&self) -> Result<Vec<TrackedArtifact>> {
        let mut out = Vec::new();
        for kv in self.tree().scan_prefix([keys::ARTIFACT]) {
            let (k, v) = kv?;
            if k.len() == ARTIFACT_KEY_LEN {
                out.push(decode(&v, "tracked artifact")?);
            }
        }
        Ok(out)
    }

    /// Forgets a tracked artifact and the reminders sent about it; returns whether it was
    /// there.
    pub fn remove_artifact(&self, id: &Sha256) -> Result<bool> {
        let was = self.tree().get(artifact_key(id))?.is_some();
        let mut batch = sled::Batch::default();
        for kv in self.tree().scan_prefix(artifact_key(id)) {
            batch.remove(kv?.0);
        }
        self.tree().apply_batch(batch)?;
        self.flush()?;
        Ok(was)
    }

    /// Marks a tracked artifact's file as gone since `since` (`None`: present again).
    /// Durable on return.
    pub fn set_artifact_gone(&self, id: &Sha256, since: Option<UnixTime>) -> Result<()> {
        match since {
            Some(t) => self.tree().insert(artifact_gone_key(id), encode(&t)?)?,
            None => self.tree().remove(artifact_gone_key(id))?,
        };
        self.flush()
    }

    /// The tracked artifacts whose file was found gone, and since when.
    pub fn artifacts_gone(&self) -> Result<std::collections::HashMap<Sha256, UnixTime>> {
        let mut out = std::collections::HashMap::new();
        for kv in self.tree().scan_prefix([keys::ARTIFACT]) {
            let (k, v) = kv?;
            if k.len() == ARTIFACT_KEY_LEN + 1 && k[ARTIFACT_KEY_LEN] == ARTIFACT_GONE {
                let mut id = [0u8; 32];
                id.copy_from_slice(&k[1..ARTIFACT_KEY_LEN]);
                out.insert(Sha256(id), decode(&v, "tracked artifact gone")?);
            }
        }
        Ok(out)
    }

    /// The reminders sent about one tracked artifact, to anyone (`fingerprint` = its id).
    pub fn sent_artifact_reminders(&self, id: &Sha256) -> Result<Vec<crate::SentReminder>> {
        self.tree()
            .scan_prefix(artifact_sent_prefix(id))
            .map(|kv| decode(&kv?.1, "sent reminder"))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reg(agent: &str, guid: &str) -> Registration {
        Registration {
            agent: agent.into(),
            guid: guid.into(),
            spki_sha256: None,
            fingerprint: None,
            imported_at: 1,
        }
    }

    #[test]
    fn replace_import_drops_missing_registrations() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(dir.path()).expect("open");
        store
            .import_registrations(&[reg("a", "G1"), reg("b", "G2")], true)
            .expect("import");
        store
            .import_registrations(&[reg("c", "g3")], false)
            .expect("merge");
        assert_eq!(store.registrations().expect("read").len(), 3);
        store
            .import_registrations(&[reg("a", "g1")], true)
            .expect("replace");
        let regs = store.registrations().expect("read");
        assert_eq!(regs, vec![reg("a", "g1")]);
    }

    #[test]
    fn decisions_and_settings_round_trip() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(dir.path()).expect("open");
        let d = AgentDecision {
            agent: "Agent-1".into(),
            guid: None,
            verdict: AgentVerdict::Blocked,
            at: 5,
            actor: "me".into(),
            fingerprints: vec![Sha256([7; 32])],
        };
        store.put_agent_decision(&d).expect("put");
        assert_eq!(store.agent_decisions().expect("read"), vec![d]);
        assert_eq!(store.fleet_setting("deny-list").expect("read"), None);
        store.set_fleet_setting("deny-list", "/x").expect("set");
        assert_eq!(
            store.fleet_setting("deny-list").expect("read").as_deref(),
            Some("/x")
        );
    }

    #[test]
    fn artifact_reminders_live_under_the_artifact_and_go_with_it() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(dir.path()).expect("open");
        let id = Sha256([9; 32]);
        let a = TrackedArtifact {
            id,
            kind: "enrollment-bundle".into(),
            name: "site-a.bundle".into(),
            path: "/b/site-a.bundle".into(),
            issued: 0,
            expires: 10 * 86_400,
            expiry_from: "default".into(),
            tracked_at: 0,
            tracked_by: "me".into(),
        };
        store.put_artifact(&a).expect("put");
        let sent = crate::SentReminder {
            fingerprint: id,
            recipient: "ops@example.org".into(),
            threshold_secs: 3 * 86_400,
            sent_at: 7 * 86_400,
        };
        store
            .record_delivery_with_artifacts(
                "ops@example.org",
                &[],
                std::slice::from_ref(&sent),
                7 * 86_400,
            )
            .expect("record");
        // A certificate with the same fingerprint has its own reminders.
        assert!(store.sent_reminders(&id).expect("read").is_empty());
        assert_eq!(
            store.sent_artifact_reminders(&id).expect("read"),
            vec![sent]
        );
        assert_eq!(store.artifacts().expect("read"), vec![a]);
        assert!(store.remove_artifact(&id).expect("remove"));
        assert!(store.artifacts().expect("read").is_empty());
        assert!(store.sent_artifact_reminders(&id).expect("read").is_empty());
    }
}
