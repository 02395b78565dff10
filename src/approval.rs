//! Approval by signed commits: every commit between the last applied one and a new head must
//! carry a valid signature from a key trusted before it.
