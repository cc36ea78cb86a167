#!/usr/bin/env python3
"""The operator console in a real browser (Debian's Chromium, driven by
Playwright): an operator's round from sign-in to sign-out, as clicks and
form entries.

Fails on any console error or uncaught page error (the pages forbid all
script, so a CSP violation shows up as a console error), on any failed
request, and on any accessibility violation axe-core finds on a main page,
in light and in dark. Saves each main page as a full-page PNG in light and
dark (NAME-light.png, NAME-dark.png), its HTML as seen by the browser
(NAME.html) and the CSV export (jobs.csv) to the output folder.

axe-core is an injected script, which the console's CSP refuses: it runs in
contexts of their own that bypass the CSP; every other check runs under the
real policy. Nothing is fetched from the network.

Exit status: 0 when every check passed, 1 when one failed, 2 on bad usage.
"""

import argparse
import csv
import io
import re
import sys
import time
from pathlib import Path

from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import sync_playwright

# The machine's network is closed: without these, Chromium keeps trying to
# reach Google's services (refused connections, failed look-ups).
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-dev-shm-usage",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Every field is quoted, the header too (a spreadsheet splits nothing).
CSV_HEADER = '"job_id","patient_note_id","status"'
RECOVERY_LIMIT_S = 60
# The main pages, in the order of the round: each is screenshot and checked
# by axe in both color schemes.
PAGES = ["sign-in", "today", "jobs", "job", "overdue", "recovery", "outbound", "audit"]


class Failure(Exception):
    pass


class Watch:
    """What went wrong in a page: console errors, page errors, requests
    that failed or were answered with an error status."""

    found = 0

    def __init__(self, page, label):
        self.problems = []
        self.label = label
        page.on("console", self._console)
        page.on("pageerror", lambda e: self.problems.append(f"page error: {e}"))
        page.on("requestfailed", self._request_failed)
        page.on("response", self._response)

    def _console(self, message):
        if message.type == "error":
            where = message.location or {}
            url = where.get("url", "")
            self.problems.append(f"console error: {message.text} ({url})")

    def _request_failed(self, request):
        # Loads cut short by the next navigation, and a download handed to
        # the download manager, are reported as aborted: not failures. A
        # load the CSP blocks fails otherwise (and logs a console error).
        if request.failure == "net::ERR_ABORTED":
            return
        self.problems.append(f"request failed: {request.method} {request.url}: {request.failure}")

    def _response(self, response):
        if response.status >= 400:
            self.problems.append(f"answer {response.status}: {response.request.method} {response.url}")

    def check(self, step):
        """Reports what went wrong since the last check. The round goes on
        (the pages still work), so one run lists every problem."""
        for problem in self.problems:
            print(f"ERR  {step} ({self.label}): {problem}", flush=True)
            Watch.found += 1
        self.problems.clear()


class Round:
    def __init__(self, args):
        self.args = args
        self.base = args.base_url.rstrip("/")
        self.out = Path(args.out)
        self.urls = {}
        self.headings = {}
        self.watches = []

    def context(self, browser, label, **options):
        context = browser.new_context(**options)
        page = context.new_page()
        watch = Watch(page, label)
        self.watches.append(watch)
        return context, page, watch

    def step(self, name, action):
        started = time.monotonic()
        try:
            detail = action()
        except (Failure, PlaywrightError, AssertionError) as error:
            for watch in self.watches:
                watch.check(name)
            print(f"FAIL {name}: {error}", flush=True)
            raise Failure(name) from error
        took = time.monotonic() - started
        print(f"ok   {name} ({took:.1f} s){': ' + detail if detail else ''}", flush=True)

    def path(self, page):
        return re.sub(r"^https?://[^/]+", "", page.url)

    def said(self, page):
        """The page's main text, shortened, for a failure's message."""
        text = " ".join(page.locator("main").first.inner_text().split())
        return text[:300]

    def expect_heading(self, page, text):
        heading = page.locator("h1").first.inner_text().strip()
        if not heading.startswith(text):
            raise Failure(f"h1 is {heading!r} at {self.path(page)}, not {text!r}: {self.said(page)}")

    def keep(self, page, name, scheme, watch):
        """Records a main page: its URL (for the other passes), a
        screenshot, and in the first pass its HTML."""
        if scheme == "light":
            self.urls[name] = self.path(page)
            self.headings[name] = page.locator("h1").first.inner_text().strip()
            (self.out / f"{name}.html").write_text(page.content(), encoding="utf-8")
        page.screenshot(path=str(self.out / f"{name}-{scheme}.png"), full_page=True)
        watch.check(name)

    def revisit(self, page, name):
        """Opens a main page the round saw, and checks it is the same page
        (a lost session would show the sign-in page instead)."""
        page.goto(f"{self.base}{self.urls[name]}")
        heading = page.locator("h1").first.inner_text().strip()
        if heading != self.headings[name]:
            raise Failure(f"{self.urls[name]} shows {heading!r}, not {self.headings[name]!r}: {self.said(page)}")

    def follow(self, page, locator):
        """Clicks a link or a form's button and waits for the page it
        leads to."""
        with page.expect_navigation():
            locator.click()

    def sign_in(self, page):
        page.fill("input[name=token]", self.args.token)
        self.follow(page, page.locator("button[type=submit]"))
        if self.path(page).startswith("/ui/sign-in"):
            raise Failure(f"signing in failed: {self.said(page)}")

    # The round itself, under the console's real CSP, in light.
    def round(self, browser):
        context, page, watch = self.context(browser, "light", color_scheme="light", accept_downloads=True)
        nav = page.get_by_role("navigation", name="Main")

        def sign_in_page():
            page.goto(f"{self.base}/ui")
            if not self.path(page).startswith("/ui/sign-in"):
                raise Failure(f"/ui without a session went to {self.path(page)}, not to sign-in")
            self.expect_heading(page, "Sign in")
            self.keep(page, "sign-in", "light", watch)

        def today():
            self.sign_in(page)
            if self.path(page) != "/ui":
                raise Failure(f"signing in went to {self.path(page)}, not /ui: {self.said(page)}")
            self.expect_heading(page, "Today")
            self.keep(page, "today", "light", watch)
            # An SVG element the HTML parser left open swallows the rest of
            # the drawing: the bars must have a size on the screen.
            charts = page.locator("svg[role=img]").count()
            drawn = page.evaluate(
                "[...document.querySelectorAll('svg[role=img] rect')]"
                ".filter(r => r.getBoundingClientRect().width > 0).length"
            )
            if charts and not drawn:
                raise Failure(f"{charts} chart(s) on Today draw no bar")
            return f"{charts} chart(s), {drawn} bar(s) drawn"

        def jobs():
            self.follow(page, nav.get_by_role("link", name="Jobs", exact=True))
            self.expect_heading(page, "Jobs")
            page.select_option("form.filters select[name=status]", "failed")
            self.follow(page, page.locator("form.filters").get_by_role("button", name="Filter"))
            if "status=failed" not in page.url:
                raise Failure(f"filtering went to {self.path(page)}")
            badges = page.locator("table tbody tr .badge").all_inner_texts()
            if not badges or any(b.strip() != "failed" for b in badges):
                raise Failure(f"the failed jobs' list shows {badges}")
            self.keep(page, "jobs", "light", watch)
            return f"{len(badges)} failed job(s)"

        def job():
            self.follow(page, page.locator("table tbody").get_by_role("link", name=self.args.job, exact=True))
            self.expect_heading(page, f"Job {self.args.job}")
            events = page.locator("ol.timeline > li").count()
            if events == 0:
                raise Failure("the job's timeline is empty")
            self.keep(page, "job", "light", watch)
            return f"{events} timeline entries"

        def search():
            form = page.locator("form.search")
            form.locator("input[name=q]").fill(self.args.search)
            self.follow(page, form.get_by_role("button", name="Find"))
            if not self.path(page).startswith("/ui/jobs/"):
                raise Failure(f"searching {self.args.search} went to {self.path(page)}")
            if self.args.search_job and self.path(page) != f"/ui/jobs/{self.args.search_job}":
                raise Failure(f"searching {self.args.search} went to {self.path(page)}, not job {self.args.search_job}")
            self.expect_heading(page, "Job ")
            watch.check("search")
            return f"{self.args.search} -> {self.path(page)}"

        def export():
            page.goto(f"{self.base}{self.urls['jobs']}")
            link = page.get_by_role("link", name="Export these jobs as CSV")
            href = link.get_attribute("href") or ""
            if not href.startswith("/ui/jobs.csv") or "status=failed" not in href:
                raise Failure(f"the export link is {href!r}: not the filtered list's")
            if link.get_attribute("download") is None:
                raise Failure("the export link has no download attribute")
            with page.expect_download() as info:
                link.click()
            target = self.out / "jobs.csv"
            info.value.save_as(str(target))
            text = target.read_text(encoding="utf-8")
            if not text.startswith(CSV_HEADER):
                raise Failure(f"the CSV starts with {text[:80]!r}")
            rows = list(csv.DictReader(io.StringIO(text)))
            if not rows or any(row["status"] != "failed" for row in rows):
                raise Failure(f"the CSV of failed jobs has the statuses {[r['status'] for r in rows]}")
            watch.check("export")
            return f"{info.value.suggested_filename}, {len(rows)} row(s)"

        def overdue():
            self.follow(page, nav.get_by_role("link", name="Overdue", exact=True))
            self.expect_heading(page, "Overdue")
            self.keep(page, "overdue", "light", watch)

        def recovery():
            self.follow(page, page.get_by_role("button", name="Recover now"))
            if not re.fullmatch(r"/ui/recoveries/[0-9a-f]+", self.path(page)):
                raise Failure(f"Recover now went to {self.path(page)}")
            status = page.locator("p[role=status]")
            deadline = time.monotonic() + RECOVERY_LIMIT_S
            text = ""
            while time.monotonic() < deadline:
                # The page reloads itself every 2 s while the sweep runs.
                try:
                    text = status.inner_text(timeout=5_000).strip()
                except PlaywrightError:
                    text = ""
                if text.startswith("Finished"):
                    break
                time.sleep(0.5)
            else:
                raise Failure(f"no Finished within {RECOVERY_LIMIT_S} s; the status says {text!r}")
            page.wait_for_load_state()
            if text.startswith("Finished with errors"):
                errors = page.locator("main ul li").all_inner_texts()
                raise Failure(f"the recovery reported errors: {errors}")
            self.expect_heading(page, "Recovery")
            self.keep(page, "recovery", "light", watch)
            facts = page.locator("dl.facts").inner_text().replace("\n", " ")
            return f"{self.path(page)}: {text}; {facts}"

        def outbound():
            self.follow(page, nav.get_by_role("link", name="Outbound", exact=True))
            self.expect_heading(page, "Outbound")
            # The test's endpoint never answers: its messages are failing
            # (from their first attempt, a moment after the deliveries).
            deadline = time.monotonic() + 10
            while page.get_by_text("Failing since").count() == 0:
                if time.monotonic() > deadline:
                    raise Failure(f"the Outbound page shows no failing endpoint: {self.said(page)}")
                time.sleep(0.5)
                page.reload()
            self.keep(page, "outbound", "light", watch)
            return f"{page.locator('table tbody tr').count()} message(s) needing attention"

        def audit():
            wanted = ["console.sign_in", "console.export", "console.recovery.start"]
            deadline = time.monotonic() + 10
            while True:
                self.follow(page, nav.get_by_role("link", name="Audit", exact=True))
                self.expect_heading(page, "Audit")
                actions = set(page.locator("table tbody tr td code").all_inner_texts())
                missing = [a for a in wanted if a not in actions]
                # Audit rows are written in the background: a moment late.
                if not missing or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
            if missing:
                raise Failure(f"the audit trail has no row for {missing}; it has {sorted(actions)}")
            self.keep(page, "audit", "light", watch)
            return f"{page.locator('table tbody tr').count()} row(s)"

        def sign_out():
            self.follow(page, page.get_by_role("button", name="Sign out"))
            if not self.path(page).startswith("/ui/sign-in"):
                raise Failure(f"signing out went to {self.path(page)}")
            self.expect_heading(page, "Sign in")
            # The session is gone: a page sends the browser to sign in again.
            page.goto(f"{self.base}/ui/jobs")
            if not self.path(page).startswith("/ui/sign-in"):
                raise Failure(f"after signing out /ui/jobs showed {self.path(page)}")
            watch.check("sign-out")

        try:
            self.step("sign-in page", sign_in_page)
            self.step("sign in, Today", today)
            self.step("Jobs filtered by status=failed", jobs)
            self.step(f"open job {self.args.job}", job)
            self.step(f"search for {self.args.search}", search)
            self.step("export CSV", export)
            self.step("Overdue", overdue)
            self.step("Recover now, until Finished", recovery)
            self.step("Outbound", outbound)
            self.step("Audit", audit)
            self.step("sign out", sign_out)
        finally:
            context.close()

    # The same pages in dark, under the real CSP, for their screenshots.
    def dark(self, browser):
        context, page, watch = self.context(browser, "dark", color_scheme="dark")
        try:
            def visit():
                for name in PAGES:
                    self.revisit(page, name)
                    self.keep(page, name, "dark", watch)
                    if name == "sign-in":
                        self.sign_in(page)
                return f"{len(PAGES)} pages"

            self.step("dark screenshots", visit)
        finally:
            context.close()

    # A phone's screen: every main page fits its width (wide tables scroll
    # inside their own box, not the page), with a screenshot of each.
    def phone(self, browser):
        context, page, watch = self.context(
            browser, "phone", viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True
        )
        try:
            def visit():
                for name in PAGES:
                    self.revisit(page, name)
                    page.screenshot(path=str(self.out / f"{name}-phone.png"), full_page=True)
                    watch.check(name)
                    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
                    if overflow > 0:
                        raise Failure(f"{name} is {overflow} px wider than a phone's screen")
                    if name == "sign-in":
                        self.sign_in(page)
                return f"{len(PAGES)} pages fit 390 px"

            self.step("phone screenshots", visit)
        finally:
            context.close()

    # axe-core on every main page, in both schemes: every violation is
    # reported, and counted.
    def accessibility(self, browser):
        violations = []
        for scheme in ["light", "dark"]:
            # A tab that crashes while axe is injected says nothing about
            # the console: that pass runs once more in a new tab (a page
            # that crashes the tab again still fails).
            for attempt in (1, 2):
                found_before = Watch.found
                context, page, watch = self.context(browser, f"axe, {scheme}", color_scheme=scheme, bypass_csp=True)
                here = []
                try:
                    def check():
                        for name in PAGES:
                            self.revisit(page, name)
                            watch.check(name)
                            for v in self.axe(page):
                                here.append((name, scheme, v))
                            if name == "sign-in":
                                self.sign_in(page)
                        return f"{len(here)} violation(s) on {len(PAGES)} pages"

                    self.step(f"axe-core, {scheme}", check)
                    violations.extend(here)
                    break
                except Failure as failure:
                    cause = str(failure.__cause__ or "")
                    if attempt == 2 or "crashed" not in cause:
                        raise
                    print(f"RETRY axe-core, {scheme}: the tab crashed ({cause.strip()}); once more in a new tab", flush=True)
                    Watch.found = found_before
                    self.watches.remove(watch)
                finally:
                    context.close()
        for name, scheme, v in violations:
            print(f"AXE  {name} ({scheme}): {v['id']} [{v['impact']}] {v['help']} ({v['helpUrl']})")
            for node in v["nodes"]:
                print(f"       at {', '.join(node['target'])}: {node['html'][:200]}")
                for line in (node["failureSummary"] or "").splitlines():
                    print(f"         {line.strip()}")
        return len(violations)

    def axe(self, page):
        page.add_script_tag(path=self.args.axe)
        return page.evaluate(
            """async () => {
                const result = await axe.run(document, { resultTypes: ["violations"] });
                return result.violations.map(v => ({
                    id: v.id, impact: v.impact, help: v.help, helpUrl: v.helpUrl,
                    nodes: v.nodes.map(n => ({
                        target: n.target.map(String), html: n.html, failureSummary: n.failureSummary,
                    })),
                }));
            }"""
        )


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base-url", required=True, help="the console, such as http://127.0.0.1:8081")
    parser.add_argument("--token", required=True, help="an API token with read and operate")
    parser.add_argument("--job", required=True, help="a failed job's id, to open from the list")
    parser.add_argument("--search", required=True, help="an id to search for (job, note, EMR note or event)")
    parser.add_argument("--search-job", help="the job the search must land on")
    parser.add_argument("--out", required=True, help="folder for screenshots, pages and the export")
    parser.add_argument("--axe", required=True, help="axe-core's axe.min.js")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args()
    Path(args.out).mkdir(parents=True, exist_ok=True)
    if not Path(args.axe).is_file():
        parser.error(f"no axe-core at {args.axe}")

    run = Round(args)
    started = time.monotonic()
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=args.chromium, args=CHROMIUM_FLAGS)
            print(f"ok   Chromium {browser.version} started", flush=True)
            try:
                run.round(browser)
                run.dark(browser)
                run.phone(browser)
                violations = run.accessibility(browser)
            finally:
                browser.close()
        problems = []
        if Watch.found:
            problems.append(f"{Watch.found} console error(s), page error(s) or failed request(s) (ERR lines)")
        if violations:
            problems.append(f"{violations} accessibility violation(s) (AXE lines)")
        if problems:
            raise Failure("; ".join(problems))
    except Failure as failure:
        print(f"FAILED: {failure} (after {time.monotonic() - started:.1f} s)", flush=True)
        return 1
    print(f"passed: every step, in {time.monotonic() - started:.1f} s; files in {args.out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
