//! `lbx demo --exit` runs the whole show and ends by itself.

mod common;
use common::*;
use std::time::Duration;

#[test]
fn demo_runs_to_completion() {
    let out = run_lbx(&["demo", "--exit", "-p", "0"], Duration::from_secs(90));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(stdout.contains("[3]"), "{stdout}");
    assert!(stdout.contains("back in rotation"), "{stdout}");
    // Every step's load, the failure included, ends with no failed request.
    assert_eq!(stdout.matches(" 0 failed)").count(), 3, "{stdout}");
    assert!(stdout.contains("Spread over x-server-id"), "{stdout}");
}
