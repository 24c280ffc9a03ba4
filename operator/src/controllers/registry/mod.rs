//! The `Registry` controller.

pub mod auth;
pub mod desired;
pub mod effective;
pub mod proxies;
pub mod pullsecrets;
pub mod reconcile;
pub mod status;
pub mod tls;

#[cfg(test)]
mod scenario;
#[cfg(test)]
mod tests;
