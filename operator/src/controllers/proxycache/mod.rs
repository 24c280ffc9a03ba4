//! The `ProxyCache` controller. The Registry controller renders caches into berth's config;
//! this one reports on each cache: whether its upstream answers and accepts its credentials
//! (checked by the operator with berth's own upstream client), whether the Registry serves it
//! yet, and what nodes and users should pull through.

pub mod reconcile;
pub mod status;

#[cfg(test)]
mod tests;
