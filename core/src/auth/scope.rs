//! What a caller may do to a repository (`Actions`), and the scopes token requests ask for.

use crate::config::auth::Action;

/// A set of actions on one repository.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Actions(u8);

impl Actions {
    pub const NONE: Actions = Actions(0);
    pub const PULL: Actions = Actions(1);
    pub const PUSH: Actions = Actions(2);
    pub const DELETE: Actions = Actions(4);
    /// Every action on a repository (not `ADMIN`, which is not one).
    pub const ALL: Actions = Actions(7);
    /// The admin API: granted registry-wide only, never by a token's repository scopes.
    pub const ADMIN: Actions = Actions(8);

    pub fn contains(self, other: Actions) -> bool {
        self.0 & other.0 == other.0
    }

    pub fn union(self, other: Actions) -> Actions {
        Actions(self.0 | other.0)
    }

    pub fn intersect(self, other: Actions) -> Actions {
        Actions(self.0 & other.0)
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn of(list: &[Action]) -> Actions {
        list.iter().fold(Actions::NONE, |a, x| {
            a.union(match x {
                Action::Pull => Actions::PULL,
                Action::Push => Actions::PUSH,
                Action::Delete => Actions::DELETE,
                Action::Admin => Actions::ADMIN,
            })
        })
    }

    /// `pull,push` as in a token scope; unknown words (`*` is everything) are ignored.
    pub fn parse(list: &str) -> Actions {
        list.split(',').fold(Actions::NONE, |a, w| {
            a.union(match w.trim() {
                "pull" => Actions::PULL,
                "push" => Actions::PUSH,
                "delete" => Actions::DELETE,
                "*" => Actions::ALL,
                _ => Actions::NONE,
            })
        })
    }

    pub fn names(self) -> Vec<&'static str> {
        [(Actions::PULL, "pull"), (Actions::PUSH, "push"), (Actions::DELETE, "delete")]
            .into_iter()
            .filter(|(a, _)| self.contains(*a))
            .map(|(_, n)| n)
            .collect()
    }
}

/// One `scope` of a token request: `repository:<name>:<actions>`. Other resource types (such as
/// `registry:catalog:*`) are accepted and granted nothing: the catalog filters by pull access.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    pub repository: String,
    pub actions: Actions,
}

pub fn parse_scope(s: &str) -> Option<Scope> {
    let (kind, rest) = s.split_once(':')?;
    let kind = kind.split('(').next().unwrap_or(kind);
    let (name, actions) = rest.rsplit_once(':')?;
    (kind == "repository" && !name.is_empty())
        .then(|| Scope { repository: name.to_owned(), actions: Actions::parse(actions) })
}
