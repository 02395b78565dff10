//! The repository side of findings 5 and 6 of the security review, end to end with the real
//! binary: a version that is a path, and a second client's server declared with the first
//! client's sandbox root, are refused by the apply's validation at file:line:col before any
//! host is touched, checked on disk (the work directory holds no sandbox at all).

mod support;

use support::sandbox::Fixture;

fn refused_before_any_host(f: &Fixture, expected: &[&str]) {
    let o = f.run(&[], &[]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(o.status.code(), Some(1), "{text}");
    assert!(text.contains("errors; nothing was planned"), "{text}");
    for e in expected {
        assert!(text.contains(e), "expected `{e}` in:\n{text}");
    }
    assert!(
        !f.work.join("sandboxes").exists(),
        "a sandbox was created although validation failed:\n{text}"
    );
    assert!(!f.work.parent().unwrap().join("evil").exists());
}

#[test]
fn a_version_that_is_a_path_is_refused_before_any_host_is_touched() {
    let Some(f) = Fixture::new() else { return };
    let yml = std::fs::read_to_string(f.repo.join("artifacts/web.yml")).unwrap();
    f.write(
        "artifacts/web.yml",
        &yml.replace("version: \"1.0.0\"", "version: \"../../../../../evil\""),
    );
    f.set_deployment("../../../../../evil", "hello", "");
    f.commit("a version climbing out of the deployment");
    refused_before_any_host(
        &f,
        &[
            "artifacts/web.yml:5:14: error[invalid-format]: `versions[0].version`",
            "clients/acme/deployments/web/mock.yml:3:10: error[invalid-format]: `version`",
            "hint: a version names a directory on hosts",
        ],
    );
}

#[test]
fn another_clients_server_with_the_same_sandbox_root_is_refused_before_any_host_is_touched() {
    let Some(f) = Fixture::new() else { return };
    f.write(
        "clients/globex/client.yml",
        "id: globex\ncode: GLOBEX\nname: Globex\n",
    );
    f.write(
        "clients/globex/datacenters/lab2.yml",
        "code: lab2\nname: Lab 2\ntype: edge\n",
    );
    f.write(
        "clients/globex/servers/sbx-9.yml",
        "hostname: sbx-9\ndatacenter: lab2\nagent:\n  transport: local\n  root: sandboxes/./sbx-1\n  service_manager: process\n",
    );
    f.commit("globex takes over acme's sandbox");
    refused_before_any_host(
        &f,
        &[
            "clients/acme/servers/sbx-1.yml:5:9: error[shared-host]: server `sbx-1` has sandbox root `sandboxes/sbx-1`",
            "clients/globex/servers/sbx-9.yml:5:9: error[shared-host]: server `sbx-9`",
        ],
    );
}
