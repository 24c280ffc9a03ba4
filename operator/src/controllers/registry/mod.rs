//! The `Registry` controller.

pub mod desired;
pub mod effective;
pub mod reconcile;
pub mod status;
pub mod tls;

#[cfg(test)]
mod tests;
