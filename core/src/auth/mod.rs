//! Credentials as they travel: Basic credentials, the scopes of token requests, the tokens Berth
//! signs and checks, and the `WWW-Authenticate` challenges registries send. Who may do what is
//! the registry's (`berth_registry::auth`); the only I/O here is the token signing key's file.

pub mod challenge;
pub mod scope;
pub mod token;

pub use scope::{parse_scope, Actions, Scope};

/// `user:password` from a Basic credential.
pub fn decode_basic(b64: &str) -> Option<(String, String)> {
    use base64::Engine as _;
    let raw = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}
