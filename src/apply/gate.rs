//! The promotion gate as a pure function: a version reaches a profile only after it ran
//! healthy, for the same client, on every host of the profile before it in `promotion`, for
//! the soak time. It is given the ledger's history of the previous profile and the time; it
//! reads nothing itself, so it is tested from values.

use crate::ledger::DeploymentHistoryEntry;
use crate::model::Settings;

/// The profile a version must have run healthy in before `profile`, if any.
pub fn previous_profile<'s>(settings: &'s Settings, profile: &str) -> Option<&'s str> {
    let promotion = &settings.promotion;
    let i = promotion.iter().position(|p| p == profile)?;
    (i > 0).then(|| promotion[i - 1].as_str())
}

/// Whether `version` of `deployment` may reach `profile` at `now` (Unix seconds), given the
/// apply history of `deployment` in the previous profile (newest first); `Err` says why not.
pub fn check(
    settings: &Settings,
    client: &str,
    deployment: &str,
    profile: &str,
    version: &str,
    history: &[DeploymentHistoryEntry],
    now: u64,
) -> Result<(), String> {
    let Some(previous) = previous_profile(settings, profile) else {
        return Ok(());
    };
    let runs: Vec<_> = history.iter().filter(|h| h.version == version).collect();
    let soak = u64::from(settings.promotion_soak_minutes) * 60;
    let healthy_since = runs
        .iter()
        .filter(|h| h.healthy_everywhere)
        .filter_map(|h| crate::clock::parse_rfc3339(&h.finished_at))
        .min();
    match (runs.first(), healthy_since) {
        (Some(latest), Some(since))
            if latest.healthy_everywhere && now.saturating_sub(since) >= soak =>
        {
            Ok(())
        }
        (Some(latest), Some(since)) if latest.healthy_everywhere => Err(format!(
            "promotion gate: {deployment} {version} has run healthy in {previous} for {} min, {} min are required",
            now.saturating_sub(since) / 60,
            soak / 60
        )),
        (Some(_), _) => Err(format!(
            "promotion gate: {deployment} {version} was not healthy on every {previous} host in its last run there"
        )),
        (None, _) => Err(format!(
            "promotion gate: {deployment} {version} has not been applied to {previous} for {client} yet"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings {
            promotion: vec!["staging".into(), "prod".into()],
            promotion_soak_minutes: 30,
            ..Settings::default()
        }
    }

    fn entry(version: &str, finished_at: &str, healthy: bool) -> DeploymentHistoryEntry {
        DeploymentHistoryEntry {
            version: version.into(),
            run_id: "r".into(),
            finished_at: finished_at.into(),
            healthy_everywhere: healthy,
            hosts: 1,
        }
    }

    #[test]
    fn a_version_passes_only_after_soaking_healthy_in_the_previous_profile() {
        let s = settings();
        let t0 = crate::clock::parse_rfc3339("2026-11-01T10:00:00Z").unwrap();
        let healthy = [entry("2.0", "2026-11-01T10:00:00Z", true)];
        assert!(check(&s, "acme", "web", "staging", "2.0", &[], t0).is_ok());
        let early = check(&s, "acme", "web", "prod", "2.0", &healthy, t0 + 60).unwrap_err();
        assert!(early.contains("for 1 min, 30 min are required"), "{early}");
        assert!(check(&s, "acme", "web", "prod", "2.0", &healthy, t0 + 1800).is_ok());
        let never = check(&s, "acme", "web", "prod", "3.0", &healthy, t0 + 9999).unwrap_err();
        assert!(never.contains("has not been applied to staging"), "{never}");
        let sick = [
            entry("2.0", "2026-11-01T11:00:00Z", false),
            entry("2.0", "2026-11-01T10:00:00Z", true),
        ];
        let e = check(&s, "acme", "web", "prod", "2.0", &sick, t0 + 9999).unwrap_err();
        assert!(e.contains("was not healthy on every staging host"), "{e}");
    }
}
