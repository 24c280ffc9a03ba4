//! Events and webhooks.
//!
//! ```text
//! push / delete ─► the change and its events (and one delivery row per endpoint that wants
//!                  each) in one transaction ─► wake the deliverers
//! per endpoint, on every replica: claim due deliveries (a lease) ─► POST each, signed
//!                  ─► delivered | retry after a backoff | dead after max_attempts
//! ```
//! Delivery is at least once: an event is never lost (it commits with its change, and a claim
//! that dies with its replica expires), and may arrive twice (a replica that sent it died before
//! it settled): receivers drop duplicates by the event's id. The events also are the audit log
//! of changes, kept for `notifications.keep`.

pub mod audit;
pub mod body;
pub mod deliver;
pub mod metrics;

use std::sync::Arc;

use berth_core::config::notifications::{EventKind, NotificationsConfig};
use berth_core::config::replication::Deletes;
use berth_core::config::ReplicationConfig;
use berth_core::glob::Glob;
use berth_core::oci::{Digest, RepoName, Tag};

use crate::meta::NewEvent;

/// Who made a change, from where, in which request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Origin {
    /// The user or robot (empty: anonymous).
    pub actor: String,
    pub address: String,
    pub request_id: String,
}

/// A manifest push, as its events describe it.
pub struct Pushed<'a> {
    pub repo: &'a RepoName,
    pub digest: &'a Digest,
    pub media_type: &'a str,
    pub artifact_type: Option<&'a str>,
    pub size: u64,
    pub subject: Option<&'a Digest>,
    pub tags: &'a [Tag],
}

struct Route {
    name: String,
    kinds: Vec<EventKind>,
    repositories: Vec<Glob>,
}

/// An event of `kind` in `repo` (empty: in none) by `origin`, now, for no endpoint, with nothing
/// else said yet.
pub fn event(kind: EventKind, repo: &str, origin: &Origin) -> NewEvent {
    NewEvent {
        id: uuid::Uuid::new_v4().to_string(),
        at: crate::meta::now_millis(),
        kind,
        repository: repo.to_owned(),
        digest: None,
        tag: None,
        media_type: None,
        artifact_type: None,
        size: None,
        subject: None,
        actor: origin.actor.clone(),
        address: origin.address.clone(),
        request_id: origin.request_id.clone(),
        count: 1,
        detail: None,
        endpoints: Vec::new(),
    }
}

/// Which endpoints want which events, and a bell rung when new ones are recorded.
#[derive(Default)]
pub struct Events {
    routes: Vec<Route>,
    pub(crate) recorded: Arc<tokio::sync::Notify>,
}

impl Events {
    /// Routes to webhook endpoints, and to the replication policies that copy pushes as they
    /// happen (their pushes and referrers).
    pub fn new(notifications: &NotificationsConfig, replication: &ReplicationConfig) -> Events {
        let globs = |g: &[String]| g.iter().map(|g| Glob::new(g)).collect();
        let webhooks = notifications.endpoints.iter().map(|e| Route {
            name: e.name.clone(),
            kinds: e.events.clone(),
            repositories: globs(&e.repositories),
        });
        let copies = replication.on_push.iter().map(|p| Route {
            name: p.delivery_name(),
            kinds: match p.deletes {
                Deletes::None => vec![EventKind::Push, EventKind::Referrer],
                _ => vec![EventKind::Push, EventKind::Referrer, EventKind::TagDelete, EventKind::Delete],
            },
            repositories: globs(&p.repositories),
        });
        Events { routes: webhooks.chain(copies).collect(), recorded: Default::default() }
    }

    /// The routes that want an event of `kind` in `repo`: a change where its kinds are all or
    /// include it, an opt-in kind (pulls) only where they name it.
    fn wanting<'a>(&'a self, kind: EventKind, repo: &'a str) -> impl Iterator<Item = &'a Route> + 'a {
        self.routes
            .iter()
            .filter(move |r| {
                let listed = r.kinds.contains(&kind);
                (kind.is_change() && (r.kinds.is_empty() || listed)) || (kind.is_opt_in() && listed)
            })
            .filter(move |r| r.repositories.is_empty() || r.repositories.iter().any(|g| g.matches(repo)))
    }

    /// The endpoints that want an event of `kind` in `repo`.
    fn endpoints(&self, kind: EventKind, repo: &str) -> Vec<String> {
        self.wanting(kind, repo).map(|r| r.name.clone()).collect()
    }

    /// Whether any endpoint wants an event of `kind` in `repo` (cheap: nothing is built).
    pub fn wants(&self, kind: EventKind, repo: &str) -> bool {
        self.wanting(kind, repo).next().is_some()
    }

    /// [`event`], for the endpoints that want it.
    pub fn event(&self, kind: EventKind, repo: &str, origin: &Origin) -> NewEvent {
        NewEvent { endpoints: self.endpoints(kind, repo), ..event(kind, repo, origin) }
    }

    /// A push's events: one per tag it set (one untagged when it set none), and one more when
    /// the manifest refers to a subject.
    pub fn pushed(&self, p: &Pushed<'_>, origin: &Origin) -> Vec<NewEvent> {
        let described = |kind, tag: Option<&Tag>| NewEvent {
            digest: Some(p.digest.clone()),
            tag: tag.map(|t| t.to_string()),
            media_type: Some(p.media_type.to_owned()),
            artifact_type: p.artifact_type.map(str::to_owned),
            size: Some(p.size),
            subject: p.subject.cloned(),
            ..self.event(kind, p.repo.as_str(), origin)
        };
        let mut events: Vec<NewEvent> = if p.tags.is_empty() {
            vec![described(EventKind::Push, None)]
        } else {
            p.tags.iter().map(|t| described(EventKind::Push, Some(t))).collect()
        };
        if p.subject.is_some() {
            events.push(described(EventKind::Referrer, None));
        }
        events
    }

    /// New events are recorded: deliverers look now rather than at their next poll.
    pub fn ring(&self) {
        self.recorded.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(yaml: &str) -> Events {
        let c = berth_core::config::Config::from_yaml(yaml, "t").unwrap();
        Events::new(&c.notifications, &c.replication)
    }

    #[test]
    fn endpoints_filter_on_kind_and_repository() {
        let events = events(
            "notifications:\n  endpoints:\n    - {name: all, url: 'http://x'}\n    \
             - {name: pushes, url: 'http://x', events: [push], repositories: ['team/**']}\n    \
             - {name: pulls, url: 'http://x', events: [pull, push], repositories: ['team/**']}\n\
             replication:\n  on_push:\n    - {name: edge, destination: 'http://y', repositories: ['team/*']}\n",
        );
        let team: RepoName = "team/app".parse().unwrap();
        let other: RepoName = "other/app".parse().unwrap();
        assert_eq!(
            events.endpoints(EventKind::Push, team.as_str()),
            ["all", "pushes", "pulls", "replicate:edge"]
        );
        assert_eq!(events.endpoints(EventKind::Pull, team.as_str()), ["pulls"], "pulls only where listed");
        assert!(
            events.wants(EventKind::Pull, team.as_str()) && !events.wants(EventKind::Pull, other.as_str())
        );
        assert_eq!(events.endpoints(EventKind::Referrer, team.as_str()), ["all", "replicate:edge"]);
        assert_eq!(events.endpoints(EventKind::Delete, team.as_str()), ["all"]);
        assert_eq!(events.endpoints(EventKind::Push, other.as_str()), ["all"]);
        assert!(events.endpoints(EventKind::Denied, team.as_str()).is_empty(), "the audit log's own");
    }

    #[test]
    fn a_push_is_an_event_per_tag_and_one_for_its_subject() {
        let events = Events::default();
        let repo: RepoName = "a/b".parse().unwrap();
        let digest = Digest::of(berth_core::oci::Algorithm::Sha256, b"m");
        let tags: Vec<Tag> = vec!["v1".parse().unwrap(), "latest".parse().unwrap()];
        let p = Pushed {
            repo: &repo,
            digest: &digest,
            media_type: "application/vnd.oci.image.manifest.v1+json",
            artifact_type: None,
            size: 10,
            subject: Some(&digest),
            tags: &tags,
        };
        let origin = Origin { actor: "ci".into(), address: "127.0.0.1".into(), request_id: "r".into() };
        let e = events.pushed(&p, &origin);
        let kinds: Vec<_> = e.iter().map(|e| (e.kind, e.tag.as_deref())).collect();
        assert_eq!(
            kinds,
            [(EventKind::Push, Some("v1")), (EventKind::Push, Some("latest")), (EventKind::Referrer, None)]
        );
        assert_ne!(e[0].id, e[1].id, "each event has an id of its own");
        assert_eq!(e[2].actor, "ci");
    }
}
