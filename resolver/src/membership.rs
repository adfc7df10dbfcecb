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

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anycast_proto::{AnycastName, NameError, name};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::estimate::{Calibration, LoadModel};
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
    overrides: tokio::sync::Mutex<BTreeMap<String, Option<GroupSpec>>>,
    state_file: Option<PathBuf>,
    current: watch::Sender<Arc<Directory>>,
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
            Some(path) => {
                remove_leftover_temp_files(path);
                read_state(path)?.groups
            }
            None => BTreeMap::new(),
        };
        let base = Base {
            zones,
            groups: groups.into_iter().collect(),
        };
        let directory = compose(&base, &BTreeMap::new(), &overrides, &Directory::default());
        if !overrides.is_empty() {
            info!(
                overrides = overrides.len(),
                "runtime changes restored from the state file"
            );
        }
        Ok(Membership {
            base: Mutex::new(base),
            learned: Mutex::new(BTreeMap::new()),
            overrides: tokio::sync::Mutex::new(overrides),
            state_file,
            current: watch::channel(Arc::new(directory)).0,
        })
    }

    /// The membership now.
    pub fn directory(&self) -> Arc<Directory> {
        self.current.borrow().clone()
    }

    /// A receiver that sees every new membership.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Directory>> {
        self.current.subscribe()
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
        let directory = compose(&base, &self.learned(), &overrides, &self.directory());
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
        let directory = compose(&base, &learned, &overrides, &self.directory());
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
        let overridden = self.overrides.lock().await.contains_key(&name.to_string());
        match (in_config, overridden) {
            (true, false) => Origin::Config,
            (true, true) => Origin::ConfigOverridden,
            (false, _) => Origin::Runtime,
        }
    }

    /// Applies a change: checks it, persists it, then makes it current.
    /// Returns only once the change is durable.
    pub async fn change(&self, change: Change) -> Result<(), ChangeError> {
        let mut overrides = self.overrides.lock().await;
        let current = self.directory();
        let mut next = overrides.clone();
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
                let mut changed = false;
                for group in groups {
                    let name = group_name(&group)?;
                    let mut spec = existing(&name)
                        .ok_or_else(|| ChangeError::NoSuchGroup(name.to_string()))?;
                    if spec.member_mut(member.endpoint()).is_none() {
                        spec.members.push(member.clone());
                        put(&name, Some(spec))?;
                        changed = true;
                    }
                }
                if !changed {
                    return Ok(());
                }
            }
        }

        if let Some(path) = &self.state_file {
            let state = StateFile {
                version: STATE_VERSION,
                groups: next.clone(),
            };
            let path = path.clone();
            let written = tokio::task::spawn_blocking(move || write_state(&path, &state)).await;
            let written = written.unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())));
            if let Err(source) = written {
                return Err(ChangeError::Persist {
                    path: self.state_file.clone().unwrap_or_default(),
                    source,
                });
            }
        }
        let base = self.base.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let directory = compose(&base, &self.learned(), &next, &current);
        *overrides = next;
        self.current.send_replace(Arc::new(directory));
        Ok(())
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
