//! The Today page's charts, drawn on the server as inline SVG: no script,
//! no inline style (the CSP allows neither), colours from the stylesheet's
//! variables (so dark mode follows), and a `viewBox` that scales to the
//! width of a phone. Each chart is an image with a title for assistive
//! technology and its figures in a table beside it, so no number is only
//! in a picture.

use std::fmt::Write as _;

use maud::{Markup, html};

use super::display;
use super::emr_times::{EmrTimes, Place, PlaceTimes, READ_AT_MOST};
use super::hours::{Counts, HourRow};

/// The drawing's width in its own units; it is scaled to the page's.
const WIDTH: f64 = 480.0;
/// Ticks on a value axis, at most (plus zero).
const TICKS: i64 = 4;

/// Outcomes by hour: for each hour of the clock, the day before's bar on
/// the left and the day shown's on the right, each created below failed.
/// With no outcome on either day, a sentence instead of an empty chart.
pub fn outcomes_by_hour(rows: &[HourRow], shown: &str, before: &str) -> Markup {
    let total = |counts: Option<Counts>| counts.map_or(0, Counts::total);
    let highest = rows
        .iter()
        .map(|row| total(row.shown).max(total(row.before)))
        .max()
        .unwrap_or(0);
    if highest == 0 {
        return html! { p.note { "No outcomes yet on " (shown) " or the day before." } };
    }
    let sum = |pick: fn(&HourRow) -> Option<Counts>| {
        rows.iter()
            .filter_map(pick)
            .fold(Counts::default(), |a, b| Counts {
                created: a.created + b.created,
                failed: a.failed + b.failed,
            })
    };
    let (shown_sum, before_sum) = (sum(|r| r.shown), sum(|r| r.before));
    let busiest = rows
        .iter()
        .max_by_key(|row| (total(row.shown), std::cmp::Reverse(row.label.clone())))
        .filter(|row| total(row.shown) > 0);

    let (left, right, top, bottom) = (40.0, 8.0, 12.0, 28.0);
    let plot_height = 180.0;
    let height = top + plot_height + bottom;
    let step = count_step(highest);
    let axis_top = step * div_ceil(highest, step);
    let y = |count: i64| top + plot_height * (1.0 - count as f64 / axis_top as f64);
    let slot = (WIDTH - left - right) / rows.len() as f64;
    let bar = slot * 0.36;
    let title = format!("Outcomes by hour, {shown} against {before}");
    let mut summary = format!(
        "{shown}: {} created, {} failed; {before}: {} created, {} failed.",
        shown_sum.created, shown_sum.failed, before_sum.created, before_sum.failed
    );
    if let Some(row) = busiest {
        let _ = write!(
            summary,
            " Busiest hour on {shown}: {}, {} outcomes.",
            row.label,
            total(row.shown)
        );
    }
    let stack = |x: f64, counts: Counts, class: &str, day: &str, label: &str| {
        let (created_top, failed_top) = (y(counts.created), y(counts.total()));
        html! {
            g {
                title { (label) ", " (day) ": " (counts.created) " created, " (counts.failed) " failed" }
                @if counts.created > 0 {
                    rect class={ (class) " created" } x=(n(x)) y=(n(created_top)) width=(n(bar)) height=(n(y(0) - created_top)) {}
                }
                @if counts.failed > 0 {
                    rect class={ (class) " failed" } x=(n(x)) y=(n(failed_top)) width=(n(bar)) height=(n(created_top - failed_top)) {}
                }
            }
        }
    };
    let svg = html! {
        svg.chart viewBox={ "0 0 " (n(WIDTH)) " " (n(height)) } role="img"
            aria-labelledby="hours-title" aria-describedby="hours-desc" {
            title #hours-title { (title) }
            desc #hours-desc { (summary) }
            @for tick in (0..=axis_top).step_by(step as usize) {
                line.grid x1=(n(left)) x2=(n(WIDTH - right)) y1=(n(y(tick))) y2=(n(y(tick))) {}
                text.end x=(n(left - 6.0)) y=(n(y(tick))) dy="0.32em" { (tick) }
            }
            @for (i, row) in rows.iter().enumerate() {
                @let x = left + slot * i as f64;
                @if let Some(counts) = row.before {
                    (stack(x + slot * 0.1, counts, "before", before, &row.label))
                }
                @if let Some(counts) = row.shown {
                    (stack(x + slot * 0.54, counts, "shown", shown, &row.label))
                }
                @if i % 3 == 0 {
                    text.middle x=(n(x + slot / 2.0)) y=(n(height - 8.0)) { (hour_of(&row.label)) }
                }
            }
            line.axis x1=(n(left)) x2=(n(WIDTH - right)) y1=(n(y(0))) y2=(n(y(0))) {}
        }
    };
    let missing = rows
        .iter()
        .any(|row| row.shown.is_none() || row.before.is_none());
    let cell = |counts: Option<Counts>, pick: fn(Counts) -> i64| {
        html! {
            @match counts {
                Some(counts) => td.number { (pick(counts)) },
                None => td.number { span aria-hidden="true" { "—" } span.visually-hidden { "no such hour" } },
            }
        }
    };
    html! {
        figure.chart {
            (svg)
            figcaption {
                ul.legend {
                    li { span.swatch.shown.created aria-hidden="true" {} "Created, " (shown) }
                    li { span.swatch.shown.failed aria-hidden="true" {} "Failed, " (shown) }
                    li { span.swatch.before.created aria-hidden="true" {} "Created, " (before) " (left, lighter)" }
                    li { span.swatch.before.failed aria-hidden="true" {} "Failed, " (before) " (left, lighter)" }
                }
            }
        }
        details.chart-table {
            summary { "Outcomes by hour as a table" }
            div.table-wrap {
                table #hours-table {
                    thead {
                        tr {
                            th scope="col" { "Hour" }
                            th scope="col" { "Created " (shown) }
                            th scope="col" { "Failed " (shown) }
                            th scope="col" { "Created " (before) }
                            th scope="col" { "Failed " (before) }
                        }
                    }
                    tbody {
                        @for row in rows {
                            tr {
                                th scope="row" { (row.label) }
                                (cell(row.shown, |c| c.created))
                                (cell(row.shown, |c| c.failed))
                                (cell(row.before, |c| c.created))
                                (cell(row.before, |c| c.failed))
                            }
                        }
                    }
                }
            }
            @if missing {
                p.note { "— : the clocks skipped or repeated this hour on that day (daylight saving time)." }
            }
        }
    }
}

/// Time to the EMR by location: a bar to the p95, and over it a darker
/// one to the p50, with both written at the end of the row. `href` links a
/// location to its jobs. With no such job, a sentence instead.
pub fn times_to_emr(times: &EmrTimes, day: &str, href: &dyn Fn(&str) -> Option<String>) -> Markup {
    let Some(all) = &times.all else {
        return html! { p.note { "No registered job's note reached the EMR on " (day) "." } };
    };
    let places = &times.places;
    let (label_width, value_width, top, row_height, bottom) = (120.0, 132.0, 8.0, 26.0, 26.0);
    let plot_width = WIDTH - label_width - value_width;
    let height = top + row_height * places.len() as f64 + bottom;
    let highest = places.iter().map(|p| p.p95).fold(0.0, f64::max);
    let step = duration_step(highest);
    let axis_end = step * div_ceil((highest.ceil() as i64).max(1), step);
    let x = |seconds: f64| label_width + plot_width * (seconds / axis_end as f64).min(1.0);
    let axis_y = top + row_height * places.len() as f64;
    let summary = format!(
        "{} registered jobs; p50 {} and p95 {} over all locations.",
        all.jobs,
        duration(all.p50),
        duration(all.p95)
    );
    let svg = html! {
        svg.chart viewBox={ "0 0 " (n(WIDTH)) " " (n(height)) } role="img"
            aria-labelledby="emr-title" aria-describedby="emr-desc" {
            title #emr-title { "Time to EMR by location, " (day) ", p50 and p95" }
            desc #emr-desc { (summary) }
            @for tick in (0..=axis_end).step_by(step as usize) {
                line.grid x1=(n(x(tick as f64))) x2=(n(x(tick as f64))) y1=(n(top)) y2=(n(axis_y)) {}
                text.middle x=(n(x(tick as f64))) y=(n(height - 8.0)) { (tick_label(tick)) }
            }
            @for (i, place) in places.iter().enumerate() {
                @let row_y = top + row_height * i as f64;
                g {
                    title { (place_name(&place.place)) ": p50 " (duration(place.p50)) ", p95 " (duration(place.p95)) ", " (place.jobs) " jobs" }
                    text.end x=(n(label_width - 8.0)) y=(n(row_y + row_height / 2.0)) dy="0.32em" {
                        (place_label(&place.place))
                    }
                    rect.p95 x=(n(label_width)) y=(n(row_y + 5.0)) width=(n(x(place.p95) - label_width)) height=(n(row_height - 10.0)) {}
                    rect.p50 x=(n(label_width)) y=(n(row_y + 5.0)) width=(n(x(place.p50) - label_width)) height=(n(row_height - 10.0)) {}
                    text.value x=(n(WIDTH - value_width + 6.0)) y=(n(row_y + row_height / 2.0)) dy="0.32em" {
                        (duration(place.p50)) " · " (duration(place.p95))
                    }
                }
            }
            line.axis x1=(n(label_width)) x2=(n(label_width)) y1=(n(top)) y2=(n(axis_y)) {}
        }
    };
    let location_link = |place: &Place| match place {
        Place::Location(id) => href(id),
        _ => None,
    };
    let row = |place: &PlaceTimes| {
        html! {
            tr {
                th scope="row" {
                    @match (&place.place, location_link(&place.place)) {
                        (Place::Location(id), Some(link)) => a href=(link) { (display::cell(id)) },
                        (other, _) => (place_name(other)),
                    }
                }
                td.number { (place.jobs) }
                td.number { (duration(place.p50)) }
                td.number { (duration(place.p95)) }
            }
        }
    };
    html! {
        figure.chart {
            (svg)
            figcaption {
                ul.legend {
                    li { span.swatch.p50 aria-hidden="true" {} "p50 (median): half the jobs took less" }
                    li { span.swatch.p95 aria-hidden="true" {} "p95: all but one in twenty took less" }
                }
            }
        }
        details.chart-table {
            summary { "Time to EMR by location as a table" }
            div.table-wrap {
                table #emr-table {
                    thead {
                        tr {
                            th scope="col" { "Location" }
                            th scope="col" { "Jobs" }
                            th scope="col" { "p50" }
                            th scope="col" { "p95" }
                        }
                    }
                    tbody { @for place in places { (row(place)) } }
                    tfoot { (row(all)) }
                }
            }
        }
        @if times.cut {
            p.note { "These are the figures of the day's first " (thousands(READ_AT_MOST)) " registered jobs; there were more." }
        }
    }
}

/// A place's name in full (a table's cell, a tooltip).
fn place_name(place: &Place) -> String {
    match place {
        Place::Location(id) => display::cell(id).into_owned(),
        Place::Unnamed => "(no location)".into(),
        Place::Others(1) => "1 other location".into(),
        Place::Others(count) => format!("{count} other locations"),
        Place::All => "All locations".into(),
    }
}

/// A place's name as the chart's room allows.
fn place_label(place: &Place) -> String {
    match place {
        Place::Location(id) => display::cut(id, 14).into_owned(),
        other => place_name(other),
    }
}

/// `09` of `09:00` (`01:00 EST` too): the hour axis has room for no more.
fn hour_of(label: &str) -> &str {
    label.split(':').next().unwrap_or(label)
}

/// A coordinate, to a tenth of a unit.
fn n(value: f64) -> String {
    let mut text = format!("{value:.1}");
    if text.ends_with(".0") {
        text.truncate(text.len() - 2);
    }
    text
}

fn div_ceil(value: i64, step: i64) -> i64 {
    (value + step - 1) / step
}

/// The step between ticks of a count axis reaching `highest`: 1, 2 or 5
/// times a power of ten, so that at most [`TICKS`] steps cover it.
fn count_step(highest: i64) -> i64 {
    let mut power = 1_i64;
    loop {
        for step in [power, 2 * power, 5 * power] {
            if step * TICKS >= highest {
                return step;
            }
        }
        power = power.saturating_mul(10);
    }
}

/// The step between ticks of a time axis reaching `highest` seconds: a
/// step a clock reads easily, at most [`TICKS`] of them.
fn duration_step(highest: f64) -> i64 {
    const STEPS: [i64; 18] = [
        1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400,
    ];
    let highest = highest.ceil().max(1.0) as i64;
    STEPS
        .into_iter()
        .find(|step| step * TICKS >= highest)
        .unwrap_or_else(|| count_step(div_ceil(highest, 86400)) * 86400)
}

/// A tick of a time axis, in its largest whole unit.
fn tick_label(seconds: i64) -> String {
    match seconds {
        0 => "0".into(),
        s if s % 86400 == 0 => format!("{}d", s / 86400),
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// A duration to the second, in its two largest units: `42s`, `9m 12s`,
/// `2h 05m`, `3d 04h`.
pub fn duration(seconds: f64) -> String {
    let s = seconds.max(0.0).round() as i64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {:02}s", s / 60, s % 60),
        3600..86400 => format!("{}h {:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d {:02}h", s / 86400, s % 86400 / 3600),
    }
}

/// `100,000`.
fn thousands(value: u32) -> String {
    let digits = value.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::console::emr_times::by_place;
    use crate::console::hours::{compare, hours_of};
    use crate::store::{HourOutcomes, TimeToEmr};

    fn rows(day: &str, zone: &str, counts: &[HourOutcomes]) -> Vec<HourRow> {
        let zone = jiff::tz::TimeZone::get(zone).unwrap();
        let day: jiff::civil::Date = day.parse().unwrap();
        let shown = hours_of(day, &zone).unwrap();
        let before = hours_of(day.yesterday().unwrap(), &zone).unwrap();
        compare(&shown, counts, &before, &[])
    }

    fn hour(hour: i64, created: i64, failed: i64) -> HourOutcomes {
        HourOutcomes {
            hour,
            created,
            failed,
        }
    }

    #[test]
    fn count_axes_step_by_one_two_or_five() {
        let steps: Vec<i64> = [1, 4, 5, 8, 9, 20, 21, 41, 399, 401]
            .into_iter()
            .map(count_step)
            .collect();
        assert_eq!(steps, [1, 1, 2, 2, 5, 5, 10, 20, 100, 200]);
    }

    #[test]
    fn time_axes_step_as_a_clock_reads() {
        assert_eq!(duration_step(0.0), 1);
        assert_eq!(duration_step(40.0), 10);
        assert_eq!(duration_step(552.0), 300);
        assert_eq!(duration_step(5.0 * 3600.0), 7200);
        assert_eq!(duration_step(9.0 * 86400.0), 5 * 86400);
        assert_eq!(tick_label(900), "15m");
        assert_eq!(tick_label(7200), "2h");
        assert_eq!(tick_label(4500), "75m");
    }

    #[test]
    fn durations_read_in_two_units() {
        assert_eq!(duration(0.2), "0s");
        assert_eq!(duration(42.0), "42s");
        assert_eq!(duration(552.0), "9m 12s");
        assert_eq!(duration(2.0 * 3600.0 + 300.0), "2h 05m");
        assert_eq!(duration(3.0 * 86400.0 + 4.0 * 3600.0), "3d 04h");
        assert_eq!(thousands(100_000), "100,000");
        assert_eq!(thousands(999), "999");
    }

    #[test]
    fn an_empty_day_says_so_instead_of_drawing() {
        let page = outcomes_by_hour(&rows("2026-11-20", "UTC", &[]), "2026-11-20", "2026-11-19")
            .into_string();
        assert!(!page.contains("<svg"), "{page}");
        assert!(page.contains("No outcomes yet on 2026-11-20"), "{page}");
        let none = by_place(Vec::new(), READ_AT_MOST);
        let page = times_to_emr(&none, "2026-11-20", &|_| None).into_string();
        assert!(!page.contains("<svg"), "{page}");
        assert!(page.contains("No registered job"), "{page}");
    }

    #[test]
    fn the_hour_chart_is_an_image_with_its_numbers_in_a_table() {
        let rows = rows(
            "2026-11-20",
            "UTC",
            &[hour(10, 3, 1), hour(11, 0, 2), hour(23, 9, 0)],
        );
        let page = outcomes_by_hour(&rows, "2026-11-20", "2026-11-19").into_string();
        assert!(page.contains(r#"role="img" aria-labelledby="hours-title""#));
        assert!(page.contains(r#"<title id="hours-title">"#));
        assert!(page.contains("Busiest hour on 2026-11-20: 23:00, 9 outcomes."));
        assert!(
            page.contains(
                r#"<tr><th scope="row">10:00</th><td class="number">3</td><td class="number">1</td><td class="number">0</td><td class="number">0</td></tr>"#
            ),
            "{page}"
        );
        // Scaled to the width, no size of its own, no inline style.
        assert!(page.contains(r#"viewBox="0 0 480 220""#), "{page}");
        assert!(!page.contains("style="));
        assert!(!page.contains("width=\"100%\""));
        // The axis reaches 10 (9 at most, in steps of 5), and the bar of
        // 9 is nine tenths of it: 180 × 0.9 = 162 units high.
        assert!(page.contains(">10</text>"), "{page}");
        assert!(page.contains(r#"height="162""#), "{page}");
        assert_eq!(page.matches("<rect").count(), 4);
        closed(&page);
    }

    /// Every SVG element is closed: HTML's parser takes a `<rect>` without
    /// its end tag as the parent of what follows, and draws none of it.
    fn closed(page: &str) {
        for element in ["rect", "line", "text", "g", "title", "desc"] {
            assert_eq!(
                page.matches(&format!("<{element} ")).count()
                    + page.matches(&format!("<{element}>")).count(),
                page.matches(&format!("</{element}>")).count(),
                "{element} in {page}"
            );
        }
    }

    #[test]
    fn a_25_hour_day_draws_25_hours() {
        let rows = rows(
            "2026-11-01",
            "America/New_York",
            &[hour(1, 1, 0), hour(2, 2, 0)],
        );
        assert_eq!(rows.len(), 25);
        let page = outcomes_by_hour(&rows, "2026-11-01", "2026-10-31").into_string();
        assert!(page.contains(r#"<th scope="row">01:00 EDT</th><td class="number">1</td>"#));
        assert!(page.contains(r#"<th scope="row">01:00 EST</th><td class="number">2</td>"#));
        // The day before had one 01:00: the second is missing, not zero.
        assert!(page.contains("no such hour"), "{page}");
        assert_eq!(page.matches("<tr>").count(), 26);
        // A tick every third hour: 0, 3, ..., 24.
        assert_eq!(page.matches(r#"<text class="middle""#).count(), 9);
    }

    #[test]
    fn the_time_chart_bounds_its_axis_and_escapes_locations() {
        let at = |location: &str, seconds: i64| TimeToEmr {
            location_id: Some(location.to_owned()),
            nanos: seconds * 1_000_000_000,
        };
        let times = by_place(
            vec![
                at("east", 60),
                at("east", 120),
                at("east", 600),
                at("<b>west</b>\u{202E}", 30),
            ],
            READ_AT_MOST,
        );
        let page = times_to_emr(&times, "2026-11-20", &|id| Some(format!("/ui/jobs?l={id}")))
            .into_string();
        assert!(page.contains(r#"role="img" aria-labelledby="emr-title""#));
        assert!(page.contains(
            r#"<td class="number">3</td><td class="number">2m 00s</td><td class="number">9m 12s</td>"#
        ));
        assert!(page.contains("&lt;b&gt;west&lt;/b&gt;⟨U+202E⟩"), "{page}");
        assert!(!page.contains("<b>"));
        // p95 of 552 s on an axis of 10 minutes (steps of 5): 0, 5m, 10m.
        assert!(page.contains(">10m</text>"), "{page}");
        assert!(!page.contains(">15m</text>"), "{page}");
        assert!(page.contains("<tfoot><tr><th scope=\"row\">All locations</th>"));
        closed(&page);
    }
}
