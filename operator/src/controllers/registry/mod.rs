//! The `Registry` controller.

pub mod backends;
pub mod credentials;
pub mod desired;
pub mod effective;
pub mod gc;
pub mod nodemirror;
pub mod pullsecrets;
pub mod reconcile;
pub mod refused_pods;
pub mod status;
pub mod tls;

#[cfg(test)]
mod gc_tests;
#[cfg(test)]
mod scenario;
#[cfg(test)]
mod tests;
