//! The watch loop's HTTP side: the read-only status API, `/metrics`, and the push webhook.
