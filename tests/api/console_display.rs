//! The console shows values that came from outside as what they are:
//! long ones cut in tables (whole, wrapping, on the job's page), invisible
//! and direction-changing characters made visible, CSV cells defused; and
//! what people type is kept out of the audit trail unless it is a known id.

use crate::helpers::console::{Browser, audit_rows, console_app, deliver, failure, minutes_ago};
use crate::helpers::*;

#[tokio::test]
async fn long_reversed_and_invisible_values_are_shown_as_they_are() {
    let app = console_app().await;
    let long = "x".repeat(100_000);
    deliver(&app, &failure("evt_d1", "9801", &long, &minutes_ago(3))).await;
    let mut bidi = failure("evt_d2", "9802", "EMR down", &minutes_ago(2));
    bidi["data"]["location_id"] = serde_json::json!("loc-\u{202e}gnp.exe");
    deliver(&app, &bidi).await;
    deliver(
        &app,
        &failure("evt_d3", "9803", "Patient not found", &minutes_ago(2)),
    )
    .await;
    deliver(
        &app,
        &failure(
            "evt_d4",
            "9804",
            "Patient not found\u{200b}",
            &minutes_ago(1),
        ),
    )
    .await;
    let browser = Browser::signed_in(&app, TOKEN).await;

    for path in ["/ui", "/ui/jobs?status=failed"] {
        let page = browser.get(path).await;
        assert_eq!(page.status, 200, "{path}");
        // Cut to 120 characters and an ellipsis, never the whole value.
        assert!(
            page.body.contains(&format!("{}…", "x".repeat(120))),
            "{path}"
        );
        assert!(!page.body.contains(&"x".repeat(121)), "{path}");
        // Two reasons that differ by a zero-width space look different.
        assert!(page.body.contains("Patient not found⟨U+200B⟩"), "{path}");
        assert!(!page.body.contains('\u{200b}'), "{path}");
    }
    let list = browser.get("/ui/jobs?status=failed").await;
    assert!(list.body.contains("loc-⟨U+202E⟩gnp.exe"), "{}", list.body);
    assert!(!list.body.contains('\u{202e}'));

    // The job's page shows the whole value.
    let job = browser.get("/ui/jobs/9801").await;
    assert!(job.body.contains(&long));
    let job = browser.get("/ui/jobs/9802").await;
    assert!(job.body.contains("loc-⟨U+202E⟩gnp.exe"));
}

#[tokio::test]
async fn csv_cells_a_spreadsheet_would_run_are_defused() {
    let app = console_app().await;
    let cases = [
        ("9811", "x;=1+1", "\"x;=1+1\""),
        ("9812", " =1+1", "\"' =1+1\""),
        ("9813", "＝4+4", "\"'＝4+4\""),
        ("9814", "@SUM(A1)", "\"'@SUM(A1)\""),
        ("9815", "-2+3", "\"'-2+3\""),
        ("9816", "\tx", "\"'\tx\""),
        ("9817", "plain reason", "\"plain reason\""),
    ];
    for (n, (job, reason, _)) in cases.iter().enumerate() {
        deliver(
            &app,
            &failure(&format!("evt_c{n}"), job, reason, &minutes_ago(5)),
        )
        .await;
    }
    let browser = Browser::signed_in(&app, TOKEN).await;
    let csv = browser.get("/ui/jobs.csv?status=failed").await;
    assert_eq!(csv.status, 200);
    for (job, _, cell) in cases {
        let row = csv
            .body
            .split("\r\n")
            .find(|line| line.starts_with(&format!("\"{job}\"")))
            .unwrap_or_else(|| panic!("{job} exported: {}", csv.body));
        assert!(row.contains(&format!(",{cell},")), "{job}: {row}");
    }
}

#[tokio::test]
async fn typed_text_reaches_the_audit_trail_only_as_a_known_id() {
    let app = console_app().await;
    deliver(
        &app,
        &failure("evt_t1", "9901", "EMR down", &minutes_ago(5)),
    )
    .await;
    let browser = Browser::signed_in(&app, TOKEN).await;
    let typed = "MRN-36853671";
    assert_eq!(browser.get(&format!("/ui/jobs/{typed}")).await.status, 404);
    browser
        .get(&format!("/ui/jobs?status=failed&location={typed}"))
        .await;
    browser.get(&format!("/ui/jobs.csv?reason={typed}")).await;
    browser.get(&format!("/ui/search?q={typed}")).await;
    // Known ids are recorded as typed.
    browser.get("/ui/jobs/9901").await;
    browser.get("/ui/jobs?location=loc-2").await;

    // Rows are written in the background: wait for all six.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let every = loop {
        let mut every = Vec::new();
        for action in [
            "console.job.view",
            "console.jobs.view",
            "console.export",
            "console.search",
        ] {
            every.extend(audit_rows(&app, action).await);
        }
        if every.len() >= 6 || std::time::Instant::now() > deadline {
            break every;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    for row in &every {
        assert!(!row["target"].as_str().unwrap().contains(typed), "{row}");
    }
    let targets: Vec<&str> = every
        .iter()
        .map(|r| r["target"].as_str().unwrap())
        .collect();
    for expected in [
        "(no match, 12 characters)",
        "status=failed&location=(no match, 12 characters)",
        "reason=(no match, 12 characters)",
        "9901",
        "location=loc-2",
    ] {
        assert!(targets.contains(&expected), "{expected} in {targets:?}");
    }
}
