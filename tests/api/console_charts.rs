//! The Today page's charts over HTTP: outcomes by hour against the day
//! before, and time to EMR by location, each an SVG image with its numbers
//! in a table, on days of 24 and 25 hours.

use serde_json::{Value, json};

use crate::helpers::console::*;
use crate::helpers::*;

/// A created outcome at `location`, dated `created`.
fn created_at(job: &str, location: &str, created: &str) -> Value {
    let mut event = created_event(&format!("evt_{job}"), job, &format!("pn-{job}"), created);
    event["data"]["location_id"] = json!(location);
    event
}

async fn register(app: &TestApp, job: &str, submitted_at: &str) {
    let (status, body) = app
        .register(
            job,
            json!({ "patient_note_id": format!("pn-{job}"), "submitted_at": submitted_at }),
        )
        .await;
    assert_eq!(status, 201, "{body}");
}

/// The row of the table whose header cell is `header`, up to its end.
fn row<'a>(page: &'a str, header: &str) -> &'a str {
    let at = page
        .find(header)
        .unwrap_or_else(|| panic!("{header} in {page}"));
    let rest = &page[at..];
    &rest[..rest.find("</tr>").unwrap()]
}

fn numbers(cells: &[&str]) -> String {
    cells
        .iter()
        .map(|cell| format!("<td class=\"number\">{cell}</td>"))
        .collect()
}

#[tokio::test]
async fn today_charts_outcomes_by_hour_and_time_to_emr_by_location() {
    let app = console_app().await;
    let day = "2026-11-20";
    // Submitted at 10:00; notes in the EMR 1, 2 and 10 minutes later at
    // loc-east, 30 seconds later at loc-west.
    for (job, location, created) in [
        ("8101", "loc-east", "10:01:00"),
        ("8102", "loc-east", "10:02:00"),
        ("8103", "loc-east", "10:10:00"),
        ("8104", "loc-west", "10:00:30"),
    ] {
        register(&app, job, &format!("{day}T10:00:00Z")).await;
        deliver(
            &app,
            &created_at(job, location, &format!("{day}T{created}Z")),
        )
        .await;
    }
    // Outcomes with no time to EMR: a note never registered here, and a
    // registered job that failed.
    deliver(
        &app,
        &created_at("8105", "loc-east", &format!("{day}T10:20:00Z")),
    )
    .await;
    register(&app, "8106", &format!("{day}T09:00:00Z")).await;
    deliver(
        &app,
        &failure("evt_8106", "8106", "EMR down", &format!("{day}T11:30:00Z")),
    )
    .await;
    // The day before: one failure at 10:15.
    deliver(
        &app,
        &failure("evt_8107", "8107", "EMR down", "2026-11-19T10:15:00Z"),
    )
    .await;

    let browser = Browser::signed_in(&app, TOKEN).await;
    let page = browser.get(&format!("/ui?day={day}")).await;
    assert_eq!(page.status, 200);
    let page = page.body;
    assert_eq!(page.matches("<svg class=\"chart\"").count(), 2, "{page}");
    assert_eq!(page.matches("role=\"img\"").count(), 2, "{page}");
    assert!(page.contains(
        "<title id=\"hours-title\">Outcomes by hour, 2026-11-20 against 2026-11-19</title>"
    ));
    assert!(page.contains("<title id=\"emr-title\">"));
    assert!(!page.contains(" style="), "the CSP allows no inline style");

    // Hours: created, failed on the day; created, failed the day before.
    assert_eq!(
        row(&page, "<th scope=\"row\">10:00</th>"),
        format!(
            "<th scope=\"row\">10:00</th>{}",
            numbers(&["5", "0", "0", "1"])
        )
    );
    assert_eq!(
        row(&page, "<th scope=\"row\">11:00</th>"),
        format!(
            "<th scope=\"row\">11:00</th>{}",
            numbers(&["0", "1", "0", "0"])
        )
    );
    // 24 hours, two locations and all of them.
    assert_eq!(page.matches("<th scope=\"row\">").count(), 24 + 2 + 1);

    // Time to EMR: 60, 120 and 600 s at loc-east (p50 120 s, p95 interpolated
    // 120 + 0.9 × 480 = 552 s), 30 s at loc-west; 90 s and 528 s over all.
    let east = row(&page, "location=loc-east");
    assert!(
        east.ends_with(&numbers(&["3", "2m 00s", "9m 12s"])),
        "{east}"
    );
    assert!(page.contains(&format!(
        "/ui/jobs?status=created&amp;location=loc-east&amp;from={day}&amp;to={day}"
    )));
    let west = row(&page, "location=loc-west");
    assert!(west.ends_with(&numbers(&["1", "30s", "30s"])), "{west}");
    assert_eq!(
        row(&page, "<tfoot>"),
        format!(
            "<tfoot><tr><th scope=\"row\">All locations</th>{}",
            numbers(&["4", "1m 30s", "8m 48s"])
        )
    );
    // Busiest location first.
    assert!(page.find("location=loc-east") < page.find("location=loc-west"));

    // A day with nothing on it or the day before: sentences, no drawing.
    let empty = browser.get("/ui?day=2026-11-17").await.body;
    assert!(!empty.contains("<svg"), "{empty}");
    assert!(empty.contains("No outcomes yet on 2026-11-17 or the day before."));
    assert!(empty.contains("No registered job's note reached the EMR on 2026-11-17."));
    // The day after: this day is its day before.
    let after = browser.get("/ui?day=2026-11-21").await.body;
    assert_eq!(
        row(&after, "<th scope=\"row\">10:00</th>"),
        format!(
            "<th scope=\"row\">10:00</th>{}",
            numbers(&["0", "0", "5", "0"])
        )
    );
}

#[tokio::test]
async fn the_hours_of_a_day_follow_the_clinic_s_clock_when_it_changes() {
    let app = spawn_app_with(|config| {
        console_on(config);
        config.console_time_zone = "America/New_York".into();
    })
    .await;
    // 2026-11-01 in New York has 25 hours: 01:00 EDT, then 01:00 EST.
    deliver(
        &app,
        &created_at("8201", "loc-east", "2026-11-01T05:30:00Z"),
    )
    .await;
    for job in ["8202", "8203"] {
        deliver(&app, &created_at(job, "loc-east", "2026-11-01T06:30:00Z")).await;
    }
    deliver(
        &app,
        &created_at("8204", "loc-east", "2026-11-02T04:59:59Z"),
    )
    .await;
    let browser = Browser::signed_in(&app, TOKEN).await;
    let page = browser.get("/ui?day=2026-11-01").await.body;
    assert_eq!(page.matches("<th scope=\"row\">").count(), 25, "{page}");
    for (hour, created) in [("01:00 EDT", "1"), ("23:00", "1")] {
        let header = format!("<th scope=\"row\">{hour}</th>");
        assert_eq!(
            row(&page, &header),
            format!("{header}{}", numbers(&[created, "0", "0", "0"]))
        );
    }
    // The day before had one 01:00: its second is missing, not none.
    assert!(
        row(&page, "<th scope=\"row\">01:00 EST</th>").ends_with(&format!(
            "{}{}",
            numbers(&["2", "0"]),
            numbers(&[
                "<span aria-hidden=\"true\">—</span><span class=\"visually-hidden\">no such hour</span>";
                2
            ])
        ))
    );
}
