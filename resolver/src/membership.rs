//! Who is in which group now: the configured groups, with the operator's
//! runtime changes over them, persisted.
//!
//! # Precedence
//!
//! The config file is the **base**. Every runtime change (admin API,
//! `anycastctl`, an agent's self-registration) is recorded as an
//! **override** of one whole group: either its full spec (created or changed
//! at runtime) or a tombstone (deleted at runtime). The groups answered are the
//! base with the overrides laid over it, so:
//!
//! * a group changed at runtime keeps its runtime form across restarts and
//!   config reloads; edits to that group in the config file do not show until
//!   the override is dropped (`anycastctl group reset NAME`);
//! * a group deleted at runtime stays deleted even though the config still
//!   defines it, until reset;
//! * groups never touched at runtime follow the config file, reload by reload;
//! * an override of a group whose zone is no longer configured is kept in the
//!   state file but not answered (and logged).
//!
//! # Durability
//!
//! Overrides live in the state file (JSON). A change is acknowledged only after
//! the new state file is on disk: written to a temporary file in the same
//! directory, fsynced, renamed over the old one, and the directory fsynced.
//! A crash at any point leaves either the old file or the new one, never a
//! mix, and never loses an acknowledged change. If the file cannot be written
//! (read-only, full disk) the change is refused and nothing changes.
//! Changes are applied one at a time, in the order they arrive.
//!
//! # Revisions
//!
//! Every override carries the revision of the change that wrote it (0: the
//! group follows the config file). A change may name the revision it was
//! based on (the admin API's `If-Match`); if the group has changed since, the
//! change is refused ([`ChangeError::Conflict`]) and nothing changes.
//!
//! # The etcd store
//!
//! With `[membership] store = "etcd"`, the overrides live in etcd, one key
//! per group (`<prefix>groups/<name>`, the spec's JSON or `null` for a
//! tombstone), shared by every resolver on that etcd. A change is written
//! with a compare-and-swap on the revision this resolver last saw of each key
//! it touches: if another resolver changed the group meanwhile, the change is
//! refused with [`ChangeError::Conflict`], never merged. It is acknowledged
//! once etcd has committed it, and it is in this resolver's answers at once.
//! Every resolver watches the prefix ([`Membership::keep_in_step`]): at start
//! and after every lost connection it reads the whole prefix, then watches
//! from the revision it read at, so changes made through any resolver reach
//! its answers within a round trip. While etcd cannot be reached, answers go
//! on from the last membership, changes are refused with
//! [`ChangeError::StoreUnavailable`], and `/v1/status` and the metric
//! `anycast_membership_store_up` say so. The state file, if configured, is
//! then a cache of etcd's content, so a restart while etcd is down answers
//! from the last membership too.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anycast_proto::{AnycastName, NameError, name};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, trace, warn};

use crate::estimate::{Calibration, LoadModel};
use crate::etcd::{Etcd, EtcdConfig, Event, Expect, Outcome, StoreError, Watched, Write};
use crate::groups::{
    AnswerMode, Directory, Group, GroupSpec, Member, SpecError, ZoneConfig, ZoneRole,
};
use crate::select::Pick;

/// Version of the state file's format.
const STATE_VERSION: u32 = 1;

/// The state file's content.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StateFile {
    version: u32,
    /// Group name → its runtime spec, or `null` for deleted at runtime.
    groups: BTreeMap<String, Option<GroupSpec>>,
    /// Group name → the revision of the change that wrote its override.
    #[serde(default)]
    revisions: BTreeMap<String, i64>,
    /// The latest revision.
    #[serde(default)]
    revision: i64,
    /// Written as a cache of the etcd store's content, not by the file store.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    etcd_cache: bool,
}

/// The runtime changes over the config, with their revisions.
#[derive(Debug, Clone, Default, PartialEq)]
struct Overrides {
    /// Group name → its runtime spec, or `None` for deleted at runtime.
    groups: BTreeMap<String, Option<GroupSpec>>,
    /// Group name → the revision that wrote its override.
    revisions: BTreeMap<String, i64>,
    /// The latest revision known: the file store's count of changes, or the
    /// etcd revision this resolver has caught up to.
    revision: i64,
}

impl Overrides {
    fn from_state(state: StateFile) -> Overrides {
        Overrides {
            groups: state.groups,
            revisions: state.revisions,
            revision: state.revision,
        }
    }

    fn to_state(&self, etcd_cache: bool) -> StateFile {
        StateFile {
            version: STATE_VERSION,
            groups: self.groups.clone(),
            revisions: self.revisions.clone(),
            revision: self.revision,
            etcd_cache,
        }
    }

    /// The revision of a group's override; 0 when it follows the config.
    fn revision_of(&self, group: &str) -> i64 {
        self.revisions.get(group).copied().unwrap_or(0)
    }

    /// Sets one group's override as written at `revision` (`Ok(None)`: a
    /// tombstone; `Err(())`: dropped, the config's form again).
    fn set(&mut self, group: &str, spec: Result<Option<GroupSpec>, ()>, revision: i64) {
        match spec {
            Ok(spec) => {
                self.groups.insert(group.to_owned(), spec);
                self.revisions.insert(group.to_owned(), revision);
            }
            // The revision stays: a change the watch brings late, older
            // than the drop, must not bring the override back.
            Err(()) => {
                self.groups.remove(group);
                self.revisions.insert(group.to_owned(), revision);
            }
        }
        self.revision = self.revision.max(revision);
    }
}

/// Where the overrides are kept.
#[derive(Debug)]
enum Store {
    /// In memory only (no `[admin]`: nothing can change them anyway).
    Memory,
    /// The state file.
    File(PathBuf),
    /// etcd, with the state file (if any) as a local cache.
    Etcd {
        etcd: Box<Etcd>,
        cache: Option<Cache>,
    },
}

/// The state file as a cache of etcd's content. Written in the background,
/// the latest state only: a burst of changes costs a few writes, not one
/// each (nothing acknowledged depends on it: etcd holds the changes).
#[derive(Debug)]
struct Cache {
    path: PathBuf,
    pending: Mutex<Option<StateFile>>,
    changed: tokio::sync::Notify,
}

impl Cache {
    fn offer(&self, state: StateFile) {
        *self.pending.lock().unwrap_or_else(|p| p.into_inner()) = Some(state);
        self.changed.notify_one();
    }

    async fn write_pending(&self) {
        let state = self
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(state) = state
            && let Err(error) = write_state_async(self.path.clone(), state).await
        {
            warn!(file = %self.path.display(), %error, "cannot write the cache of etcd's membership");
        }
    }

    async fn keep_writing(&self) {
        loop {
            self.changed.notified().await;
            self.write_pending().await;
        }
    }
}

/// The etcd key of a group's override.
fn group_key(group: &str) -> String {
    format!("groups/{group}")
}

/// Whether the membership store can be reached, as `/v1/status` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StoreHealth {
    /// `file`, `memory`, or `etcd at <endpoints>`.
    pub store: String,
    /// Whether the last exchange with the store went through.
    pub reachable: bool,
    /// The revision this resolver has caught up to.
    pub revision: i64,
    /// Why it cannot be reached.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Settings of a group that a change may set; `None` keeps the current one.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GroupPatch {
    pub ttl: Option<u32>,
    pub answer: Option<AnswerMode>,
    pub probe_interval_ms: Option<u64>,
    pub probe_timeout_ms: Option<u64>,
    pub fail_after: Option<u32>,
    pub recover_after: Option<u32>,
    pub calibration: Option<Calibration>,
    pub load_model: Option<LoadModel>,
    pub resolvers: Option<u32>,
    pub tufr_floor_ms: Option<f64>,
    pub heartbeat_ms: Option<u64>,
    pub threshold: Option<f64>,
    pub slack_ms: Option<f64>,
    pub pick: Option<Pick>,
}

impl GroupPatch {
    /// Sets the fields this patch names.
    pub fn apply(&self, spec: &mut GroupSpec) {
        macro_rules! set {
            ($($field:ident),*) => {
                $( if let Some(v) = self.$field { spec.$field = v; } )*
            };
        }
        set!(
            ttl,
            answer,
            probe_interval_ms,
            probe_timeout_ms,
            fail_after,
            recover_after,
            calibration,
            load_model,
            resolvers,
            tufr_floor_ms,
            heartbeat_ms,
            threshold,
            slack_ms,
            pick
        );
    }
}

/// Fields of a member that a change may set.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MemberPatch {
    pub probe: Option<String>,
    pub cost: Option<u32>,
    pub weight: Option<u32>,
}

/// A runtime change to membership.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// A new group (refused if it exists).
    CreateGroup { name: String, spec: GroupSpec },
    /// Remove a group.
    DeleteGroup { name: String },
    /// Change a group's settings.
    UpdateGroup { name: String, patch: GroupPatch },
    /// Drop the runtime override: the group follows the config file again.
    ResetGroup { name: String },
    /// A new member (refused if its endpoint is there).
    AddMember { group: String, member: Member },
    /// Change a member.
    UpdateMember {
        group: String,
        endpoint: SocketAddr,
        patch: MemberPatch,
    },
    /// Remove a member.
    RemoveMember { group: String, endpoint: SocketAddr },
    /// Take a member out of answers, or put it back.
    SetDrained {
        group: String,
        endpoint: SocketAddr,
        drained: bool,
    },
    /// An agent's self-registration: add the member to each group unless it
    /// is there already (idempotent, so an agent may join at every start).
    Join { groups: Vec<String>, member: Member },
}

impl Change {
    /// The one group the change is about (`None` for a join, which may name
    /// several).
    pub fn group(&self) -> Option<&str> {
        match self {
            Change::CreateGroup { name, .. }
            | Change::DeleteGroup { name }
            | Change::UpdateGroup { name, .. }
            | Change::ResetGroup { name } => Some(name),
            Change::AddMember { group, .. }
            | Change::UpdateMember { group, .. }
            | Change::RemoveMember { group, .. }
            | Change::SetDrained { group, .. } => Some(group),
            Change::Join { .. } => None,
        }
    }
}

/// Why a change was refused. Nothing changed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ChangeError {
    /// The group name is not an anycast name under a configured zone.
    #[error("{0}")]
    BadName(String),
    /// No such group.
    #[error("no group {0}")]
    NoSuchGroup(String),
    /// The group exists already.
    #[error("group {0} exists")]
    GroupExists(String),
    /// No such member.
    #[error("no member {endpoint} in {group}")]
    NoSuchMember { group: String, endpoint: SocketAddr },
    /// The member exists already.
    #[error("member {endpoint} is already in {group}")]
    MemberExists { group: String, endpoint: SocketAddr },
    /// The result would be invalid.
    #[error("invalid group: {0}")]
    Invalid(#[from] SpecError),
    /// `reset` of a group that has no runtime override.
    #[error("group {0} has no runtime change to reset")]
    NotOverridden(String),
    /// The state file could not be written.
    #[error("cannot persist the change to {}: {source}; nothing was changed", path.display())]
    Persist {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The group changed since the revision the change was based on.
    #[error(
        "group {group} was changed by someone else since revision {based_on}, which the change was based on; read it again and retry: nothing was changed"
    )]
    Conflict { group: String, based_on: i64 },
    /// The shared store could not be reached.
    #[error("the membership store ({store}) cannot take the change: {cause}; nothing was changed")]
    StoreUnavailable { store: String, cause: String },
}

/// Why membership could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    /// The state file exists but cannot be read.
    #[error("cannot read the state file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The etcd client could not be set up.
    #[error("{0}")]
    Store(String),
    /// The state file is not valid.
    #[error(
        "the state file {} is not valid ({message}); move it away to start from the config alone",
        path.display()
    )]
    Corrupt { path: PathBuf, message: String },
}

/// Where a group comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// The config file, untouched at runtime.
    Config,
    /// Created at runtime (not in the config file).
    Runtime,
    /// In the config file, changed at runtime (the runtime form wins).
    ConfigOverridden,
}

/// The base (from the config file).
#[derive(Debug, Clone, Default)]
struct Base {
    zones: Vec<ZoneConfig>,
    groups: BTreeMap<AnycastName, GroupSpec>,
}

/// Current membership, its overrides and their persistence.
#[derive(Debug)]
pub struct Membership {
    base: Mutex<Base>,
    /// Groups of local zones, as learned from their authorities (not
    /// persisted: they are fetched again after a restart).
    learned: Mutex<BTreeMap<AnycastName, GroupSpec>>,
    /// Held across the whole of a change, so changes apply one at a time.
    overrides: tokio::sync::Mutex<Overrides>,
    store: Store,
    /// The file store's runtime changes, to write into an empty etcd.
    migrate: Mutex<Option<BTreeMap<String, Option<GroupSpec>>>>,
    current: watch::Sender<Arc<Directory>>,
    health: watch::Sender<StoreHealth>,
}

impl Membership {
    /// Membership from the config's zones and groups and, if given, the state
    /// file's overrides (a missing state file is an empty one).
    pub fn new(
        zones: Vec<ZoneConfig>,
        groups: impl IntoIterator<Item = (AnycastName, GroupSpec)>,
        state_file: Option<PathBuf>,
    ) -> Result<Membership, StateError> {
        let overrides = match &state_file {
            Some(path) => Overrides::from_state(read_state(path)?),
            None => Overrides::default(),
        };
        if !overrides.groups.is_empty() {
            info!(
                overrides = overrides.groups.len(),
                "runtime changes restored from the state file"
            );
        }
        let store = match state_file {
            Some(path) => Store::File(path),
            None => Store::Memory,
        };
        Ok(Self::build(zones, groups, store, overrides, None))
    }

    /// Membership kept in etcd. Until [`Membership::keep_in_step`] has read
    /// the store, it answers from the cache (the state file as etcd last had
    /// it), or from the config alone. A state file written by the file store
    /// holds runtime changes to migrate: they are written into etcd at the
    /// first read if etcd has none yet, and otherwise give way to etcd's.
    pub fn with_etcd(
        zones: Vec<ZoneConfig>,
        groups: impl IntoIterator<Item = (AnycastName, GroupSpec)>,
        etcd: EtcdConfig,
        cache: Option<PathBuf>,
    ) -> Result<Membership, StateError> {
        let state = match &cache {
            Some(path) => read_state(path)?,
            None => StateFile::default(),
        };
        let migrate = (!state.etcd_cache && !state.groups.is_empty()).then(|| state.groups.clone());
        let etcd = Etcd::new(etcd).map_err(|e| StateError::Store(e.to_string()))?;
        let cache = cache.map(|path| Cache {
            path,
            pending: Mutex::new(None),
            changed: tokio::sync::Notify::new(),
        });
        let store = Store::Etcd {
            etcd: Box::new(etcd),
            cache,
        };
        Ok(Self::build(
            zones,
            groups,
            store,
            Overrides::from_state(state),
            migrate,
        ))
    }

    fn build(
        zones: Vec<ZoneConfig>,
        groups: impl IntoIterator<Item = (AnycastName, GroupSpec)>,
        store: Store,
        overrides: Overrides,
        migrate: Option<BTreeMap<String, Option<GroupSpec>>>,
    ) -> Membership {
        let base = Base {
            zones,
            groups: groups.into_iter().collect(),
        };
        let directory = compose(
            &base,
            &BTreeMap::new(),
            &overrides.groups,
            &Directory::default(),
        );
        let health = StoreHealth {
            store: match &store {
                Store::Memory => "memory".to_owned(),
                Store::File(_) => "file".to_owned(),
                Store::Etcd { etcd, .. } => etcd.describe(),
            },
            // Until the first read, an etcd store is not known to be there.
            reachable: !matches!(store, Store::Etcd { .. }),
            revision: overrides.revision,
            error: None,
        };
        Membership {
            base: Mutex::new(base),
            learned: Mutex::new(BTreeMap::new()),
            overrides: tokio::sync::Mutex::new(overrides),
            store,
            migrate: Mutex::new(migrate),
            current: watch::channel(Arc::new(directory)).0,
            health: watch::channel(health).0,
        }
    }

    /// The membership now.
    pub fn directory(&self) -> Arc<Directory> {
        self.current.borrow().clone()
    }

    /// A receiver that sees every new membership.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Directory>> {
        self.current.subscribe()
    }

    /// Whether the store can be reached, and the revision caught up to.
    pub fn health(&self) -> StoreHealth {
        self.health.borrow().clone()
    }

    /// The revision of the change that last wrote a group's override; 0 for
    /// a group that has only ever followed the config file.
    pub async fn revision(&self, name: &AnycastName) -> i64 {
        self.overrides.lock().await.revision_of(&name.to_string())
    }

    /// Replaces the base with a reloaded config's zones and groups; the
    /// overrides stay over it.
    pub async fn reload(
        &self,
        zones: Vec<ZoneConfig>,
        groups: impl IntoIterator<Item = (AnycastName, GroupSpec)>,
    ) {
        let overrides = self.overrides.lock().await;
        let base = Base {
            zones,
            groups: groups.into_iter().collect(),
        };
        let directory = compose(&base, &self.learned(), &overrides.groups, &self.directory());
        *self.base.lock().unwrap_or_else(|p| p.into_inner()) = base;
        self.current.send_replace(Arc::new(directory));
    }

    fn learned(&self) -> BTreeMap<AnycastName, GroupSpec> {
        self.learned
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Records what a local zone's authority says of a group (`None`: it has
    /// no such group). Returns whether membership changed.
    pub async fn learn(&self, name: &AnycastName, spec: Option<GroupSpec>) -> bool {
        let overrides = self.overrides.lock().await;
        let learned = {
            let mut learned = self.learned.lock().unwrap_or_else(|p| p.into_inner());
            let changed = match &spec {
                Some(spec) => learned.get(name) != Some(spec),
                None => learned.contains_key(name),
            };
            if !changed {
                return false;
            }
            match spec {
                Some(spec) => learned.insert(name.clone(), spec),
                None => learned.remove(name),
            };
            learned.clone()
        };
        let base = self.base.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let directory = compose(&base, &learned, &overrides.groups, &self.directory());
        self.current.send_replace(Arc::new(directory));
        true
    }

    /// Where a group comes from.
    pub async fn origin(&self, name: &AnycastName) -> Origin {
        let in_config = self
            .base
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .groups
            .contains_key(name);
        let overridden = self
            .overrides
            .lock()
            .await
            .groups
            .contains_key(&name.to_string());
        match (in_config, overridden) {
            (true, false) => Origin::Config,
            (true, true) => Origin::ConfigOverridden,
            (false, _) => Origin::Runtime,
        }
    }

    /// Applies a change: checks it, persists it, then makes it current.
    /// Returns only once the change is durable.
    pub async fn change(&self, change: Change) -> Result<(), ChangeError> {
        self.change_based_on(change, None).await.map(|_| ())
    }

    /// Applies a change made on the view of `based_on`, the revision of the
    /// group it names (`None`: whatever it is now). Returns the revision the
    /// change was written at (unchanged if the change changed nothing).
    pub async fn change_based_on(
        &self,
        change: Change,
        based_on: Option<i64>,
    ) -> Result<i64, ChangeError> {
        let mut overrides = self.overrides.lock().await;
        let current = self.directory();
        let mut next = overrides.groups.clone();
        let zones: Vec<_> = current.zones().to_vec();
        let group_name = |text: &str| -> Result<AnycastName, ChangeError> {
            let name = name::parse(text, &zones)
                .map_err(|e: NameError| ChangeError::BadName(e.to_string()))?;
            if name.explicit_metric().is_some() {
                return Err(ChangeError::BadName(format!(
                    "{text:?} names a metric; a group is named <service>.<zone>"
                )));
            }
            if current
                .zone_configs()
                .iter()
                .any(|z| &z.name == name.zone() && matches!(z.role, ZoneRole::Local(_)))
            {
                return Err(ChangeError::BadName(format!(
                    "{} is a local zone: change its groups at its authority",
                    name.zone()
                )));
            }
            if let Some(zone) = name.shadowing_zone(&zones) {
                return Err(ChangeError::BadName(crate::config::shadowed(&name, zone)));
            }
            Ok(name)
        };
        let existing = |name: &AnycastName| current.group(name).map(|g| g.spec.clone());
        let mut put = |name: &AnycastName, spec: Option<GroupSpec>| -> Result<(), ChangeError> {
            if let Some(spec) = &spec {
                spec.validate()?;
            }
            next.insert(name.to_string(), spec);
            Ok(())
        };

        if let (Some(based_on), Some(group)) = (based_on, change.group()) {
            let group = group_name(group)?.to_string();
            if overrides.revision_of(&group) != based_on {
                return Err(ChangeError::Conflict { group, based_on });
            }
        }
        match change {
            Change::CreateGroup { name, spec } => {
                let name = group_name(&name)?;
                if existing(&name).is_some() {
                    return Err(ChangeError::GroupExists(name.to_string()));
                }
                put(&name, Some(spec))?;
            }
            Change::DeleteGroup { name } => {
                let name = group_name(&name)?;
                existing(&name).ok_or_else(|| ChangeError::NoSuchGroup(name.to_string()))?;
                put(&name, None)?;
            }
            Change::UpdateGroup { name, patch } => {
                let name = group_name(&name)?;
                let mut spec =
                    existing(&name).ok_or_else(|| ChangeError::NoSuchGroup(name.to_string()))?;
                patch.apply(&mut spec);
                put(&name, Some(spec))?;
            }
            Change::ResetGroup { name } => {
                let name = group_name(&name)?;
                if next.remove(&name.to_string()).is_none() {
                    return Err(ChangeError::NotOverridden(name.to_string()));
                }
            }
            Change::AddMember { group, member } => {
                let name = group_name(&group)?;
                let mut spec =
                    existing(&name).ok_or_else(|| ChangeError::NoSuchGroup(name.to_string()))?;
                if spec.member_mut(member.endpoint()).is_some() {
                    return Err(ChangeError::MemberExists {
                        group: name.to_string(),
                        endpoint: member.endpoint(),
                    });
                }
                spec.members.push(member);
                put(&name, Some(spec))?;
            }
            Change::UpdateMember {
                group,
                endpoint,
                patch,
            } => {
                let name = group_name(&group)?;
                let mut spec =
                    existing(&name).ok_or_else(|| ChangeError::NoSuchGroup(name.to_string()))?;
                let member =
                    spec.member_mut(endpoint)
                        .ok_or_else(|| ChangeError::NoSuchMember {
                            group: name.to_string(),
                            endpoint,
                        })?;
                if let Some(probe) = patch.probe {
                    member.probe = probe;
                }
                if let Some(cost) = patch.cost {
                    member.cost = cost;
                }
                if let Some(weight) = patch.weight {
                    member.weight = weight;
                }
                put(&name, Some(spec))?;
            }
            Change::RemoveMember { group, endpoint } => {
                let name = group_name(&group)?;
                let mut spec =
                    existing(&name).ok_or_else(|| ChangeError::NoSuchGroup(name.to_string()))?;
                let before = spec.members.len();
                spec.members.retain(|m| m.endpoint() != endpoint);
                if spec.members.len() == before {
                    return Err(ChangeError::NoSuchMember {
                        group: name.to_string(),
                        endpoint,
                    });
                }
                put(&name, Some(spec))?;
            }
            Change::SetDrained {
                group,
                endpoint,
                drained,
            } => {
                let name = group_name(&group)?;
                let mut spec =
                    existing(&name).ok_or_else(|| ChangeError::NoSuchGroup(name.to_string()))?;
                spec.member_mut(endpoint)
                    .ok_or_else(|| ChangeError::NoSuchMember {
                        group: name.to_string(),
                        endpoint,
                    })?
                    .drained = drained;
                put(&name, Some(spec))?;
            }
            Change::Join { groups, member } => {
                // Idempotent: a group that has the member already is left
                // as it is, and a join that adds nothing writes nothing.
                for group in groups {
                    let name = group_name(&group)?;
                    let mut spec = existing(&name)
                        .ok_or_else(|| ChangeError::NoSuchGroup(name.to_string()))?;
                    if spec.member_mut(member.endpoint()).is_none() {
                        spec.members.push(member.clone());
                        put(&name, Some(spec))?;
                    }
                }
            }
        }

        let changed: Vec<String> = overrides
            .groups
            .keys()
            .chain(next.keys())
            .filter(|k| overrides.groups.get(*k) != next.get(*k))
            .cloned()
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        if changed.is_empty() {
            return Ok(overrides.revision);
        }
        let revision = self.persist(&overrides, &next, &changed).await?;
        let mut written = overrides.clone();
        for group in &changed {
            written.set(group, next.get(group).cloned().ok_or(()), revision);
        }
        self.install(written, &mut overrides, &current);
        Ok(revision)
    }

    /// Makes `changed` groups' overrides durable as `next` has them; returns
    /// the revision they were written at.
    async fn persist(
        &self,
        overrides: &Overrides,
        next: &BTreeMap<String, Option<GroupSpec>>,
        changed: &[String],
    ) -> Result<i64, ChangeError> {
        match &self.store {
            Store::Memory => Ok(overrides.revision + 1),
            Store::File(path) => {
                let revision = overrides.revision + 1;
                let mut written = overrides.clone();
                for group in changed {
                    written.set(group, next.get(group).cloned().ok_or(()), revision);
                }
                write_state_async(path.clone(), written.to_state(false))
                    .await
                    .map_err(|source| ChangeError::Persist {
                        path: path.clone(),
                        source,
                    })?;
                Ok(revision)
            }
            Store::Etcd { etcd, .. } => {
                let expect: Vec<Expect> = changed
                    .iter()
                    .map(|group| Expect {
                        key: group_key(group),
                        mod_revision: if overrides.groups.contains_key(group) {
                            overrides.revision_of(group)
                        } else {
                            0
                        },
                    })
                    .collect();
                let writes: Vec<Write> = changed
                    .iter()
                    .map(|group| match next.get(group) {
                        Some(spec) => Write::Put {
                            key: group_key(group),
                            value: spec_json(spec),
                        },
                        None => Write::Delete {
                            key: group_key(group),
                        },
                    })
                    .collect();
                match etcd.transact(&expect, &writes).await {
                    Ok(Outcome::Written(revision)) => {
                        // Written: the store is there, whether or not the
                        // watch has read it yet (as at a resolver's start).
                        self.reachable(revision);
                        Ok(revision)
                    }
                    Ok(Outcome::Conflict) => Err(ChangeError::Conflict {
                        group: changed.join(", "),
                        based_on: changed
                            .iter()
                            .map(|g| overrides.revision_of(g))
                            .max()
                            .unwrap_or(0),
                    }),
                    Err(e) => {
                        self.unreachable(&e.to_string());
                        Err(ChangeError::StoreUnavailable {
                            store: etcd.describe(),
                            cause: e.to_string(),
                        })
                    }
                }
            }
        }
    }

    /// Makes `next` the overrides in force and answered, and refreshes the
    /// etcd cache.
    fn install(&self, next: Overrides, overrides: &mut Overrides, previous: &Directory) {
        let base = self.base.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let directory = compose(&base, &self.learned(), &next.groups, previous);
        if let Store::Etcd {
            cache: Some(cache), ..
        } = &self.store
        {
            cache.offer(next.to_state(true));
        }
        self.health
            .send_modify(|h| h.revision = h.revision.max(next.revision));
        *overrides = next;
        self.current.send_replace(Arc::new(directory));
    }

    /// Keeps this resolver's membership in step with the etcd store until
    /// `shutdown`: reads the whole prefix, then watches it from there; after
    /// a lost connection, reads it again. Returns at once for other stores.
    pub async fn keep_in_step(&self, shutdown: CancellationToken) {
        let Store::Etcd { etcd, cache } = &self.store else {
            return;
        };
        let Some(cache) = cache else {
            return self.follow(etcd, shutdown).await;
        };
        tokio::select! {
            () = self.follow(etcd, shutdown) => {}
            () = cache.keep_writing() => {}
        }
        cache.write_pending().await;
    }

    /// Reads the store, then watches it, until `shutdown`.
    async fn follow(&self, etcd: &Etcd, shutdown: CancellationToken) {
        let mut wait = RETRY_FIRST;
        loop {
            let round = async {
                let (revision, entries): (i64, _) = etcd.read_prefix().await?;
                if self.migrate(etcd, &entries).await? {
                    // Written: read again, to see it as etcd has it.
                    return Ok(());
                }
                self.adopt_all(revision, entries).await;
                self.reachable(revision);
                let mut watch = etcd.watch(revision + 1).await?;
                debug!(from = revision + 1, "watching the membership store");
                let mut check = tokio::time::interval_at(
                    tokio::time::Instant::now() + ALIVE_EVERY,
                    ALIVE_EVERY,
                );
                loop {
                    let next = tokio::select! {
                        next = watch.next() => next,
                        _ = check.tick() => {
                            if let Err(error) = watch.alive().await {
                                info!(%error, "the membership store's watch went quiet; reading it again");
                                return Ok(());
                            }
                            // Reads go through: the store is there, whatever
                            // a change that failed on its way said.
                            self.reachable(revision);
                            continue;
                        }
                    };
                    match next {
                        Ok(Watched::Events(events)) => {
                            // A change that failed on its way (and marked
                            // the store away) is behind us: etcd answers.
                            let newest = events.iter().map(Event::revision).max();
                            self.adopt(events).await;
                            self.reachable(newest.unwrap_or(revision));
                        }
                        Ok(Watched::Compacted) => return Ok(()),
                        Err(error) => {
                            info!(%error, "the watch of the membership store ended; reading it again");
                            return Ok(());
                        }
                    }
                }
            };
            let outcome: Result<(), StoreError> = tokio::select! {
                _ = shutdown.cancelled() => return,
                outcome = round => outcome,
            };
            match outcome {
                Ok(()) => wait = RETRY_FIRST,
                Err(error) => {
                    self.unreachable(&error.to_string());
                    wait = (wait * 2).min(RETRY_MAX);
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Writes the file store's runtime changes into an etcd that has none.
    /// Returns whether it wrote.
    async fn migrate(
        &self,
        etcd: &Etcd,
        entries: &[crate::etcd::Entry],
    ) -> Result<bool, StoreError> {
        let Some(groups) = self
            .migrate
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        else {
            return Ok(false);
        };
        if entries.iter().any(|e| e.key.starts_with("groups/")) {
            warn!(
                overrides = groups.len(),
                "the state file holds runtime changes from the file store, but etcd has membership already: etcd's wins"
            );
            return Ok(false);
        }
        let expect: Vec<Expect> = groups
            .keys()
            .map(|g| Expect {
                key: group_key(g),
                mod_revision: 0,
            })
            .collect();
        let writes: Vec<Write> = groups
            .iter()
            .map(|(g, spec)| Write::Put {
                key: group_key(g),
                value: spec_json(spec),
            })
            .collect();
        match etcd.transact(&expect, &writes).await {
            Ok(Outcome::Written(revision)) => {
                info!(
                    overrides = groups.len(),
                    revision, "runtime changes of the file store migrated into etcd"
                );
                Ok(true)
            }
            Ok(Outcome::Conflict) => {
                warn!(
                    "another resolver wrote membership into etcd first; its wins over this state file"
                );
                Ok(true)
            }
            Err(e) => {
                *self.migrate.lock().unwrap_or_else(|p| p.into_inner()) = Some(groups);
                Err(e)
            }
        }
    }

    /// Adopts the whole prefix as read at `revision`: etcd's word wins,
    /// except for groups this resolver wrote after that revision.
    async fn adopt_all(&self, revision: i64, entries: Vec<crate::etcd::Entry>) {
        let mut overrides = self.overrides.lock().await;
        let mut next = overrides.clone();
        let mut present = std::collections::BTreeSet::new();
        for entry in entries {
            let Some(group) = entry.key.strip_prefix("groups/") else {
                continue;
            };
            present.insert(group.to_owned());
            if next.revision_of(group) > revision {
                continue;
            }
            if let Some(spec) = parse_spec(group, &entry.value) {
                next.set(group, Ok(spec), entry.mod_revision);
            }
        }
        let gone: Vec<String> = next
            .groups
            .keys()
            .filter(|g| !present.contains(*g) && next.revision_of(g) <= revision)
            .cloned()
            .collect();
        for group in gone {
            next.set(&group, Err(()), revision);
        }
        next.revision = next.revision.max(revision);
        if next != *overrides {
            let current = self.directory();
            self.install(next, &mut overrides, &current);
        }
    }

    /// Adopts changes a watch brought: each key's change newer than what
    /// this resolver has of it.
    async fn adopt(&self, events: Vec<Event>) {
        debug!(events = events.len(), "changes from the membership store");
        // Events come in revision order: of several to one group, only the
        // last counts (and only its value need be parsed).
        let mut last = BTreeMap::new();
        for event in events {
            let key = match &event {
                Event::Put(entry) => entry.key.clone(),
                Event::Delete { key, .. } => key.clone(),
            };
            last.insert(key, event);
        }
        let mut overrides = self.overrides.lock().await;
        let mut next = overrides.clone();
        for event in last.into_values() {
            let (key, revision, spec) = match event {
                Event::Put(entry) => (entry.key, entry.mod_revision, Some(entry.value)),
                Event::Delete { key, mod_revision } => (key, mod_revision, None),
            };
            let Some(group) = key.strip_prefix("groups/") else {
                continue;
            };
            if revision <= next.revision_of(group) {
                trace!(
                    group,
                    revision,
                    known = next.revision_of(group),
                    "an older change skipped"
                );
                continue;
            }
            match spec {
                Some(value) => {
                    if let Some(spec) = parse_spec(group, &value) {
                        next.set(group, Ok(spec), revision);
                    }
                }
                None => next.set(group, Err(()), revision),
            }
            next.revision = next.revision.max(revision);
        }
        if next != *overrides {
            let current = self.directory();
            self.install(next, &mut overrides, &current);
        }
    }

    fn reachable(&self, revision: i64) {
        let was = self.health.borrow().reachable;
        self.health.send_modify(|h| {
            h.reachable = true;
            h.error = None;
            h.revision = h.revision.max(revision);
        });
        crate::telemetry::membership_store(true);
        if !was {
            info!(store = %self.health.borrow().store, revision, "membership store reached; membership is in step with it");
        }
    }

    fn unreachable(&self, error: &str) {
        let was = self.health.borrow().reachable;
        self.health.send_modify(|h| {
            h.reachable = false;
            h.error = Some(error.to_owned());
        });
        crate::telemetry::membership_store(false);
        if was {
            warn!(%error, revision = self.health.borrow().revision, "membership store unreachable: answering from the last membership, refusing changes");
        }
    }
}

/// First wait before reading the store again after a failure; doubles up to
/// [`RETRY_MAX`].
const RETRY_FIRST: Duration = Duration::from_millis(100);

/// How often the member a watch streams from is asked whether it still
/// serves (see `Watch::alive`).
const ALIVE_EVERY: Duration = Duration::from_secs(2);

/// Longest wait between attempts to reach the store.
const RETRY_MAX: Duration = Duration::from_secs(2);

/// A group's override as etcd keeps it.
fn spec_json(spec: &Option<GroupSpec>) -> Vec<u8> {
    serde_json::to_vec(spec).unwrap_or_else(|_| b"null".to_vec())
}

/// A group's override read from etcd, if it is valid (else logged, and the
/// resolver keeps what it had).
fn parse_spec(group: &str, value: &[u8]) -> Option<Option<GroupSpec>> {
    let spec = serde_json::from_slice::<Option<GroupSpec>>(value)
        .map_err(|e| e.to_string())
        .and_then(|spec| match &spec {
            Some(s) => s.validate().map(|()| spec).map_err(|e| e.to_string()),
            None => Ok(spec),
        });
    match spec {
        Ok(spec) => Some(spec),
        Err(error) => {
            warn!(group, %error, "etcd holds an invalid override for this group; kept the previous one");
            None
        }
    }
}

/// The base with the overrides laid over it. Groups whose spec did not
/// change are carried over from `previous` as they are (same `Arc`), so
/// their round-robin position and their probing tasks continue undisturbed.
fn compose(
    base: &Base,
    learned: &BTreeMap<AnycastName, GroupSpec>,
    overrides: &BTreeMap<String, Option<GroupSpec>>,
    previous: &Directory,
) -> Directory {
    let zones: Vec<_> = base.zones.iter().map(|z| z.name.clone()).collect();
    let local = |name: &AnycastName| {
        base.zones
            .iter()
            .any(|z| &z.name == name.zone() && matches!(z.role, ZoneRole::Local(_)))
    };
    let mut specs: BTreeMap<AnycastName, GroupSpec> = base.groups.clone();
    specs.extend(
        learned
            .iter()
            .filter(|(name, _)| local(name))
            .map(|(n, s)| (n.clone(), s.clone())),
    );
    for (text, spec) in overrides {
        let name = match name::parse(text, &zones) {
            Ok(name) => name,
            Err(error) => {
                warn!(group = %text, %error, "a runtime group is outside the configured zones; not answered");
                continue;
            }
        };
        if local(&name) {
            warn!(group = %text, "a runtime change to a group of a local zone is ignored");
            continue;
        }
        if local(&name) {
            warn!(group = %text, "a runtime change to a group of a local zone is ignored");
            continue;
        }
        match spec {
            Some(spec) => {
                specs.insert(name, spec.clone());
            }
            None => {
                specs.remove(&name);
            }
        }
    }
    let groups = specs
        .into_iter()
        .map(|(name, spec)| match previous.group(&name) {
            Some(old) if old.spec == spec => old.clone(),
            _ => Arc::new(Group::from_spec(name, spec)),
        });
    Directory::from_shared(base.zones.clone(), groups)
}

/// Removes temporary files a crash left beside the state file (the
/// `.<name>.<pid>.<n>.tmp` of an atomic write that never reached its rename):
/// the state file itself is always whole, so they hold nothing acknowledged.
fn remove_leftover_temp_files(path: &Path) {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return;
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let prefix = format!(".{}.", name.to_string_lossy());
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let file = entry.file_name();
        let file = file.to_string_lossy();
        if file.starts_with(&prefix) && file.ends_with(".tmp") {
            match std::fs::remove_file(entry.path()) {
                Ok(()) => {
                    info!(file = %entry.path().display(), "removed a temporary file left by a crash")
                }
                Err(error) => {
                    warn!(file = %entry.path().display(), %error, "cannot remove a leftover temporary file")
                }
            }
        }
    }
}

fn read_state(path: &Path) -> Result<StateFile, StateError> {
    remove_leftover_temp_files(path);
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(StateFile::default()),
        Err(source) => {
            return Err(StateError::Read {
                path: path.to_owned(),
                source,
            });
        }
    };
    let corrupt = |message: String| StateError::Corrupt {
        path: path.to_owned(),
        message,
    };
    let state: StateFile = serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
    if state.version != STATE_VERSION {
        return Err(corrupt(format!(
            "version {} (this resolver reads {STATE_VERSION})",
            state.version
        )));
    }
    for (name, spec) in &state.groups {
        if let Some(spec) = spec {
            spec.validate()
                .map_err(|e| corrupt(format!("group {name}: {e}")))?;
        }
    }
    Ok(state)
}

async fn write_state_async(path: PathBuf, state: StateFile) -> std::io::Result<()> {
    let written = tokio::task::spawn_blocking(move || write_state(&path, &state)).await;
    written.unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())))
}

fn write_state(path: &Path, state: &StateFile) -> std::io::Result<()> {
    let json = serde_json::to_vec_pretty(state).map_err(std::io::Error::other)?;
    anycast_daemon::write_atomically(path, &json, anycast_daemon::Durability::Synced)
}

#[cfg(test)]
mod tests {
    use super::*;
    use anycast_proto::Zone;

    fn zones() -> Vec<ZoneConfig> {
        vec![ZoneConfig {
            name: Zone::new("any.example.net").unwrap(),
            negative_ttl: 5,
            role: ZoneRole::Authoritative,
        }]
    }

    fn web() -> (AnycastName, GroupSpec) {
        let name = name::parse(
            "web.any.example.net",
            &[Zone::new("any.example.net").unwrap()],
        )
        .unwrap();
        let spec = GroupSpec {
            members: vec![Member::new("127.0.0.1:80".parse().unwrap())],
            ..GroupSpec::default()
        };
        (name, spec)
    }

    fn member(endpoint: &str) -> Member {
        Member::new(endpoint.parse().unwrap())
    }

    fn endpoints(m: &Membership, group: &str) -> Vec<String> {
        let dir = m.directory();
        let name = name::parse(group, dir.zones()).unwrap();
        dir.group(&name)
            .map(|g| g.members.iter().map(|m| m.endpoint().to_string()).collect())
            .unwrap_or_default()
    }

    #[tokio::test]
    async fn a_group_spelled_like_a_zone_is_refused() {
        let mut zones = zones();
        zones.push(ZoneConfig {
            name: Zone::new("web2.any.example.net").unwrap(),
            negative_ttl: 5,
            role: ZoneRole::Authoritative,
        });
        let m = Membership::new(zones, [web()], None).unwrap();
        // The paper form reaches the group; its DNS form is the zone's apex.
        let e = m
            .change(Change::CreateGroup {
                name: "web2%any.example.net".into(),
                spec: GroupSpec::default(),
            })
            .await
            .unwrap_err();
        assert!(
            matches!(&e, ChangeError::BadName(why) if why.contains("spelled like the zone web2.any.example.net")),
            "{e}"
        );
        assert!(m.directory().groups().all(|g| g.name.service() != "web2"));
    }

    #[tokio::test]
    async fn changes_persist_and_survive_a_restart_over_the_config() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state.json");
        let m = Membership::new(zones(), [web()], Some(state.clone())).unwrap();
        m.change(Change::AddMember {
            group: "web.any.example.net".into(),
            member: member("127.0.0.2:80"),
        })
        .await
        .unwrap();
        m.change(Change::CreateGroup {
            name: "Mail%any.example.net".into(),
            spec: GroupSpec::default(),
        })
        .await
        .unwrap();
        assert!(matches!(
            m.change(Change::CreateGroup {
                name: "mail.any.example.net".into(),
                spec: GroupSpec::default()
            })
            .await,
            Err(ChangeError::GroupExists(_))
        ));

        // A restart: the same config, the state file read back.
        let again = Membership::new(zones(), [web()], Some(state.clone())).unwrap();
        assert_eq!(
            endpoints(&again, "web.any.example.net"),
            ["127.0.0.1:80", "127.0.0.2:80"]
        );
        assert!(
            again
                .directory()
                .groups()
                .any(|g| g.name.to_string() == "mail.any.example.net")
        );
        let web_name = web().0;
        assert_eq!(again.origin(&web_name).await, Origin::ConfigOverridden);

        // Reset: the config's form again.
        again
            .change(Change::ResetGroup {
                name: "web.any.example.net".into(),
            })
            .await
            .unwrap();
        assert_eq!(endpoints(&again, "web.any.example.net"), ["127.0.0.1:80"]);
        assert_eq!(again.origin(&web_name).await, Origin::Config);
    }

    #[tokio::test]
    async fn a_change_based_on_a_stale_revision_is_refused_and_revisions_persist() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state.json");
        let m = Membership::new(zones(), [web()], Some(state.clone())).unwrap();
        let web_name = web().0;
        assert_eq!(m.revision(&web_name).await, 0, "never changed at runtime");
        let drain = |drained| Change::SetDrained {
            group: "web.any.example.net".into(),
            endpoint: "127.0.0.1:80".parse().unwrap(),
            drained,
        };
        let first = m.change_based_on(drain(true), Some(0)).await.unwrap();
        assert_eq!(m.revision(&web_name).await, first);
        // Another edit made on the view of revision 0 must not overwrite it.
        let stale = m.change_based_on(drain(false), Some(0)).await.unwrap_err();
        assert!(
            matches!(&stale, ChangeError::Conflict { based_on: 0, .. }),
            "{stale}"
        );
        assert!(m.directory().groups().next().unwrap().members[0].drained);
        let second = m.change_based_on(drain(false), Some(first)).await.unwrap();
        assert!(second > first);

        let again = Membership::new(zones(), [web()], Some(state)).unwrap();
        assert_eq!(again.revision(&web_name).await, second);
        let stale = again.change_based_on(drain(true), Some(first)).await;
        assert!(matches!(stale, Err(ChangeError::Conflict { .. })));
    }

    #[tokio::test]
    async fn deleting_a_config_group_outlives_reloads_until_reset() {
        let m = Membership::new(zones(), [web()], None).unwrap();
        m.change(Change::DeleteGroup {
            name: "web.any.example.net".into(),
        })
        .await
        .unwrap();
        assert_eq!(m.directory().groups().count(), 0);
        m.reload(zones(), [web()]).await;
        assert_eq!(
            m.directory().groups().count(),
            0,
            "the tombstone wins over the config"
        );
        m.change(Change::ResetGroup {
            name: "web.any.example.net".into(),
        })
        .await
        .unwrap();
        assert_eq!(m.directory().groups().count(), 1);
    }

    #[tokio::test]
    async fn refused_changes_change_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state.json");
        let m = Membership::new(zones(), [web()], Some(state.clone())).unwrap();
        let before = m.directory();
        for change in [
            Change::AddMember {
                group: "nope.any.example.net".into(),
                member: member("127.0.0.9:80"),
            },
            Change::AddMember {
                group: "web.any.example.net".into(),
                member: member("127.0.0.1:80"),
            },
            Change::RemoveMember {
                group: "web.any.example.net".into(),
                endpoint: "127.0.0.9:80".parse().unwrap(),
            },
            Change::UpdateGroup {
                name: "web.any.example.net".into(),
                patch: GroupPatch {
                    threshold: Some(-1.0),
                    ..GroupPatch::default()
                },
            },
            Change::CreateGroup {
                name: "rt.web.any.example.net".into(),
                spec: GroupSpec::default(),
            },
            Change::CreateGroup {
                name: "web.example.org".into(),
                spec: GroupSpec::default(),
            },
            Change::ResetGroup {
                name: "web.any.example.net".into(),
            },
        ] {
            assert!(m.change(change.clone()).await.is_err(), "{change:?}");
        }
        assert!(Arc::ptr_eq(&before, &m.directory()));
        assert!(!state.exists(), "nothing was written");
    }

    #[tokio::test]
    async fn an_unwritable_state_file_refuses_the_change() {
        let dir = tempfile::tempdir().unwrap();
        // A directory where the state file should be: the rename fails.
        let state = dir.path().join("state.json");
        std::fs::create_dir(&state).unwrap();
        std::fs::write(state.join("x"), b"").unwrap();
        let m = Membership::new(zones(), [web()], Some(state)).unwrap_err();
        assert!(matches!(m, StateError::Read { .. }), "{m}");

        let state = dir.path().join("sub").join("state.json");
        let m = Membership::new(zones(), [web()], Some(state)).unwrap();
        let error = m
            .change(Change::AddMember {
                group: "web.any.example.net".into(),
                member: member("127.0.0.2:80"),
            })
            .await
            .unwrap_err();
        assert!(matches!(error, ChangeError::Persist { .. }), "{error}");
        assert_eq!(endpoints(&m, "web.any.example.net"), ["127.0.0.1:80"]);
    }

    #[tokio::test]
    async fn join_is_idempotent_and_drain_marks_the_member() {
        let m = Membership::new(zones(), [web()], None).unwrap();
        let join = Change::Join {
            groups: vec!["web.any.example.net".into()],
            member: member("127.0.0.3:80"),
        };
        m.change(join.clone()).await.unwrap();
        let after_first = m.directory();
        m.change(join).await.unwrap();
        assert!(
            Arc::ptr_eq(&after_first, &m.directory()),
            "a second join changes nothing"
        );
        m.change(Change::SetDrained {
            group: "web.any.example.net".into(),
            endpoint: "127.0.0.3:80".parse().unwrap(),
            drained: true,
        })
        .await
        .unwrap();
        let dir = m.directory();
        let g = dir.groups().next().unwrap();
        assert!(g.members.iter().any(|m| m.drained));
    }

    #[test]
    fn temporary_files_left_by_a_crash_are_removed_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state.json");
        let leftover = dir.path().join(".state.json.1234.0.tmp");
        std::fs::write(&leftover, b"{\"version\": 1, \"gro").unwrap();
        let other = dir.path().join("unrelated.tmp");
        std::fs::write(&other, b"").unwrap();
        Membership::new(zones(), [web()], Some(state)).unwrap();
        assert!(!leftover.exists());
        assert!(other.exists(), "only the state file's own temporaries go");
    }

    #[test]
    fn a_corrupt_state_file_is_refused_with_its_name() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state.json");
        std::fs::write(&state, b"{\"version\": 1, \"groups\": {").unwrap();
        let error = Membership::new(zones(), [web()], Some(state))
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("state.json") && error.contains("move it away"),
            "{error}"
        );
    }
}
