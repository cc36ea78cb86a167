//! The console in a real browser: `ci/console-browser.py` drives Debian's
//! Chromium through an operator's round (sign in, Today with its charts, filtered Jobs, a
//! job, search, CSV export, Overdue and recovery, Audit, sign out) under
//! the console's real CSP, runs axe-core on every main page in light and
//! dark, and leaves screenshots in `target/console-screenshots/<engine>/`.
//!
//! `ci/browser-tools.sh` installs what it needs (Chromium, a venv with
//! Playwright, axe-core); the variables `COBALT_TEST_BROWSER_PYTHON`,
//! `COBALT_TEST_AXE` and `COBALT_TEST_CHROMIUM` point elsewhere. Without
//! them the test is skipped, loudly, except in CI (CI=true), where that is
//! a failure.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::fake_cobalt::*;
use crate::helpers::console::{aged_event, numbered_failure, rfc3339_ago};
use crate::helpers::*;

/// The whole round, screenshots and axe included, takes well under this.
const DRIVER_LIMIT: Duration = Duration::from_secs(180);

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

struct Tools {
    python: PathBuf,
    axe: PathBuf,
    chromium: PathBuf,
}

/// The browser tools, or why they cannot be used.
fn tools() -> Result<Tools, String> {
    let setting = |name: &str, default: &str| {
        std::env::var_os(name).map_or_else(|| Path::new(ROOT).join(default), PathBuf::from)
    };
    let tools = Tools {
        python: setting(
            "COBALT_TEST_BROWSER_PYTHON",
            "target/browser-tools/venv/bin/python",
        ),
        axe: setting(
            "COBALT_TEST_AXE",
            "target/browser-tools/node_modules/axe-core/axe.min.js",
        ),
        chromium: setting("COBALT_TEST_CHROMIUM", "/usr/bin/chromium"),
    };
    for (what, path) in [
        ("Python (COBALT_TEST_BROWSER_PYTHON)", &tools.python),
        ("axe-core (COBALT_TEST_AXE)", &tools.axe),
        ("Chromium (COBALT_TEST_CHROMIUM)", &tools.chromium),
    ] {
        if !path.is_file() {
            return Err(format!("no {what} at {}", path.display()));
        }
    }
    let playwright = Command::new(&tools.python)
        .args(["-c", "import playwright.sync_api"])
        .stdin(Stdio::null())
        .output();
    if !playwright.is_ok_and(|out| out.status.success()) {
        return Err(format!(
            "{} cannot import playwright",
            tools.python.display()
        ));
    }
    Ok(tools)
}

#[tokio::test]
async fn an_operator_s_round_in_a_real_browser_passes_csp_and_axe_in_light_and_dark() {
    let test = "an_operator_s_round_in_a_real_browser_passes_csp_and_axe_in_light_and_dark";
    let tools = match tools() {
        Ok(tools) => tools,
        Err(why) if std::env::var("CI").as_deref() == Ok("true") => {
            panic!(
                "{test}: {why}; ci/browser-tools.sh installs the browser tools, and CI must run this test"
            )
        }
        Err(why) => {
            eprintln!("######################################################################");
            skipped(&format!(
                "{test}: {why}; run ci/browser-tools.sh to install the browser tools"
            ));
            eprintln!("######################################################################");
            return;
        }
    };

    let cobalt = FakeCobalt::start(None).await;
    let point = point_at(&cobalt);
    let app = spawn_app_with(move |config| {
        point(config);
        config.console_listen = Some("127.0.0.1:0".parse().unwrap());
        config.overdue_after_secs = 600;
        // An app that never answers (nothing listens on the discard port):
        // the Outbound page shows a failing endpoint and its messages.
        send_outbound_to(config, "http://127.0.0.1:9/hooks", &[1]);
    })
    .await;
    let console = app.console.clone().expect("the console listens");

    // Delivered outcomes: created and failed notes, for several patients,
    // locations and failure reasons.
    let mrns = [MRN, "MRN-PHI-552210", "MRN-PHI-117734"];
    let mut delivered = Vec::new();
    for n in 1..=3 {
        let base = created_event(
            &format!("evt_bc{n}"),
            &format!("{}", 41_000 + n),
            &format!("pn-bc{n}"),
            "",
        );
        let location = LOCATIONS[n % 2];
        delivered.push(aged_event(base, 10 + n as i64, mrns[n % 3], location));
    }
    delivered.push(numbered_failure(
        1,
        FAILURE_REASON,
        "emr_rejected",
        mrns[0],
        "loc-1",
    ));
    delivered.push(numbered_failure(
        2,
        "Patient not found in the EMR",
        "patient_not_found",
        mrns[1],
        "loc-2",
    ));
    delivered.push(numbered_failure(
        3,
        FAILURE_REASON,
        "emr_rejected",
        mrns[2],
        "loc-2",
    ));
    delivered.push(numbered_failure(
        4,
        "EMR unavailable",
        "emr_unavailable",
        mrns[1],
        "loc-1",
    ));
    for event in &delivered {
        let response = app.post_webhook(&event.to_string()).await;
        assert_eq!(response.status(), 200, "{event}");
    }

    // For the Today page's charts: registered jobs whose notes reached the
    // EMR today (10, 20 and 30 minutes after submission; never before
    // midnight, whenever the test runs), and an outcome of the day before.
    let now = time::OffsetDateTime::now_utc();
    let today_start = now.replace_time(time::Time::MIDNIGHT);
    let rfc3339 = |at: time::OffsetDateTime| {
        at.format(&time::format_description::well_known::Rfc3339)
            .unwrap()
    };
    for n in 1..=3_i64 {
        let job = format!("{}", 41_020 + n);
        let created = (now - time::Duration::minutes(n)).max(today_start);
        let (status, body) = app
            .register(
                &job,
                json!({
                    "patient_note_id": format!("pn-be{n}"),
                    "submitted_at": rfc3339(created - time::Duration::minutes(10 * n)),
                }),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        let mut event = created_event(
            &format!("evt_be{n}"),
            &job,
            &format!("pn-be{n}"),
            &rfc3339(created),
        );
        event["data"]["patient_mrn"] = json!(mrns[n as usize % 3]);
        event["data"]["location_id"] = json!(LOCATIONS[n as usize % 2]);
        let response = app.post_webhook(&event.to_string()).await;
        assert_eq!(response.status(), 200, "{event}");
    }
    let mut yesterday = created_event(
        "evt_by1",
        "41031",
        "pn-by1",
        &rfc3339(now - time::Duration::days(1)),
    );
    yesterday["data"]["patient_mrn"] = json!(mrns[0]);
    let response = app.post_webhook(&yesterday.to_string()).await;
    assert_eq!(response.status(), 200, "{yesterday}");

    // Overdue jobs, registered two hours ago; Cobalt has the outcomes of
    // the first two (delivered elsewhere, and failed to deliver), none of
    // the third. A lost outcome of a job never registered here, too.
    for n in 1..=3 {
        let (status, body) = app
            .register(
                &format!("{}", 42_000 + n),
                json!({
                    "patient_note_id": format!("pn-bo{n}"),
                    "submitted_at": rfc3339_ago(time::Duration::hours(2)),
                }),
            )
            .await;
        assert_eq!(status, 201, "{body}");
    }
    cobalt.add_event(
        aged_event(
            created_event("evt_bo1", "42001", "pn-bo1", ""),
            30,
            mrns[2],
            "loc-1",
        ),
        "success",
    );
    cobalt.add_event(
        aged_event(
            failed_event("evt_bo2", "42002", "pn-bo2", ""),
            30,
            mrns[0],
            "loc-2",
        ),
        "failed",
    );
    cobalt.add_event(
        aged_event(
            created_event("evt_bl1", "42100", "pn-bl1", ""),
            40,
            mrns[1],
            "loc-2",
        ),
        "failed",
    );

    let engine = match engine() {
        Engine::Sqlite => "sqlite",
        Engine::Postgres => "postgres",
    };
    let out = Path::new(ROOT)
        .join("target/console-screenshots")
        .join(engine);
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out).unwrap();
    let log_path = out.join("driver.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut driver = Command::new(&tools.python);
    driver
        .arg(Path::new(ROOT).join("ci/console-browser.py"))
        .args(["--base-url", &console])
        .args(["--token", OPS_TOKEN])
        .args(["--job", "41011"])
        .args(["--search", "emr-evt_bc2", "--search-job", "41002"])
        .arg("--out")
        .arg(&out)
        .arg("--axe")
        .arg(&tools.axe)
        .arg("--chromium")
        .arg(&tools.chromium)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log);
    // A group of its own, so that a timeout ends Chromium too.
    std::os::unix::process::CommandExt::process_group(&mut driver, 0);
    let mut child = driver.spawn().expect("the driver starts");
    let started = Instant::now();
    let status = loop {
        // The server runs on this test's runtime: wait without blocking it.
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if started.elapsed() > DRIVER_LIMIT {
            let _ = Command::new("kill")
                .args(["-KILL", &format!("-{}", child.id())])
                .status();
            let _ = child.wait();
            break None;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    println!("{}", std::fs::read_to_string(&log_path).unwrap_or_default());
    let log = log_path.display();
    match status {
        None => panic!(
            "the browser round took over {DRIVER_LIMIT:?}; its output is above, and in {log}"
        ),
        Some(status) => assert!(
            status.success(),
            "the browser round failed ({status}); its output is above, and in {log}"
        ),
    }

    // The recovery started by a click recorded the lost outcomes.
    for (job, expected) in [
        ("42001", "created"),
        ("42002", "failed"),
        ("42003", "pending"),
        ("42100", "created"),
    ] {
        let (status, body) = app
            .call(
                reqwest::Method::GET,
                &format!("/v1/jobs/{job}"),
                Some(OPS_TOKEN),
                None,
                &[],
            )
            .await;
        assert_eq!(status, 200, "job {job}: {body}");
        assert_eq!(body["status"], expected, "job {job}: {body}");
    }

    // The Today page the browser was shown drew both charts, as images
    // with their tables.
    let today = std::fs::read_to_string(out.join("today.html")).unwrap();
    assert_eq!(today.matches("role=\"img\"").count(), 2, "{today}");
    for table in ["hours-table", "emr-table"] {
        assert!(today.contains(&format!("<table id=\"{table}\"")), "{today}");
    }

    // What the browser was shown and downloaded holds no note text, no
    // subject and no whole MRN.
    let mut seen = 0;
    for entry in std::fs::read_dir(&out).unwrap() {
        let path = entry.unwrap().path();
        if !matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("html" | "csv")
        ) {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        for secret in [NOTE_TEXT, SUBJECT].iter().chain(mrns.iter()) {
            assert!(!text.contains(secret), "{} shows {secret}", path.display());
        }
        seen += 1;
    }
    assert_eq!(seen, 9, "eight pages and the export were saved");
}
