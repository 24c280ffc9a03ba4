//! The `ReplicationPolicy` controller: a policy becomes `berth replicate` runs — a CronJob for
//! its schedule, a Job for each new value of its run annotation — and its status reports
//! whether it can run (its ends exist and answer) and how its last run went.

pub mod cron;
pub mod reconcile;
pub mod render;
pub mod status;

#[cfg(test)]
mod tests;
