//! Notifications: JSON webhooks for failed applies, rollbacks, drift and refusals, retried with
//! backoff on a thread of their own so they never hold up the watch loop.
