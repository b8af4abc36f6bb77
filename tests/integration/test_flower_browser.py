"""Flower as a person sees it: headless Chromium logs in, reads the task list and opens a task.

Chromium is Debian's (``/usr/bin/chromium``), installed by ``tests/setup.sh``, which the
README's test command (and so CI) runs first; Playwright drives it and downloads no browser of
its own. Without it the test is skipped, naming the script, except under CI, where it fails.
The screenshots are kept in the test's ``tmp_path``, printed at the end (``pytest -s``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Locator, Page, expect, sync_playwright

from backup_jobs.models import JobStatus
from backup_jobs.policies import Retention, ScheduleKind, make_policy
from backup_jobs.providers.local_faults import Fault
from tests.flower import AUTH, progress_of, running_flower
from tests.harness import Cluster, demo_fleet, eventually

CHROMIUM = Path("/usr/bin/chromium")
SETUP = "tests/setup.sh"
# How long the page may take to show what the test looks for (the task list polls the server).
SHOWN_WITHIN_MS = 15_000


@pytest.fixture(scope="module")
def chromium() -> Iterator[Browser]:
    """Debian's Chromium, headless, driven by Playwright."""
    if not CHROMIUM.exists():
        message = f"no {CHROMIUM}: run `sh {SETUP}` (installs Debian's chromium package)"
        if os.environ.get("CI"):
            pytest.fail(f"{message}; CI runs it before the tests, so it should be there")
        pytest.skip(message)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM))
        try:
            yield browser
        finally:
            browser.close()


# True if ``text`` is inside ``cell`` and drawn within the cell's box and the window: not cut
# off by the cell's ellipsis, nor off the right of the screen.
_SHOWN_JS = """(cell, text) => {
    const walker = document.createTreeWalker(cell, NodeFilter.SHOW_TEXT);
    for (let node = walker.nextNode(); node; node = walker.nextNode()) {
        const at = node.data.indexOf(text);
        if (at < 0) continue;
        const range = document.createRange();
        range.setStart(node, at);
        range.setEnd(node, at + text.length);
        const drawn = range.getBoundingClientRect(), box = cell.getBoundingClientRect();
        return drawn.width > 0 && drawn.right <= Math.min(box.right, window.innerWidth) + 1;
    }
    return false;
}"""


def _row(page: Page, *texts: str) -> Locator:
    """The tasks table's row holding every one of ``texts``, once the table shows it."""
    rows = page.locator("#tasks-table tbody tr")
    for text in texts:
        rows = rows.filter(has_text=text)
    expect(rows.first).to_be_visible(timeout=SHOWN_WITHIN_MS)
    return rows.first


def _shown(row: Locator, text: str) -> bool:
    """Whether a person sees ``text`` in ``row``, not only whether the page holds it."""
    cell = row.locator("td", has_text=text).first
    return bool(cell.evaluate(_SHOWN_JS, text))


@contextmanager
def _page(browser: Browser) -> Iterator[Page]:
    """A page of a fresh browser context that logs in to Flower with HTTP basic auth."""
    context = browser.new_context(
        http_credentials={"username": AUTH[0], "password": AUTH[1]},
        viewport={"width": 1600, "height": 1000},
    )
    try:
        yield context.new_page()
    finally:
        context.close()


def _hidden(page: Page, expected: list[tuple[str, ...]]) -> list[str]:
    """Of each expected row's VM and job id (in the task id), those a person cannot see."""
    rows = [_row(page, *texts) for texts in expected]
    return [
        f"{text} in the row {texts}"
        for texts, row in zip(expected, rows, strict=True)
        for text in texts[1:3]
        if not _shown(row, text)
    ]


def test_flower_in_a_browser_lists_backup_and_register_tasks_by_vm_and_shows_a_failure(
    cluster: Cluster, chromium: Browser, tmp_path: Path
) -> None:
    fleet = demo_fleet(tmp_path)
    client = cluster.client(tmp_path / "fleet", vault_dir=tmp_path / "vault")
    (tmp_path / "flower").mkdir()
    shots = tmp_path / "screenshots"
    shots.mkdir()
    with running_flower(cluster, tmp_path / "flower") as flower, _page(chromium) as page:
        client.discover().wait(30)
        registered, failed = (h.wait(30) for h in client.register(["app01", "stopped01"]))
        client.create_policy(
            make_policy("nightly", ScheduleKind.DAILY, times=["22:00"], retention=Retention(7))
        )
        client.protect(["cs-app/app01"], "nightly")[0].wait(30)
        fleet.write_disks("cs-app/app01", percent=100, seed=1)
        fleet.faults.add(Fault("transfer-timeout", "cs-app/app01", seconds=0.4))  # slow reads
        handle = client.backup_now("cs-app/app01")
        eventually(lambda: progress_of(flower, f"{handle.id}.1"), 30, 0.1)

        page.goto(f"{flower}/tasks")
        _row(page, "backup_jobs.backup", handle.id, "PROGRESS", "Transfer data to vault")
        page.screenshot(path=shots / "1-tasks-backup-running.png", full_page=True)
        page.goto(f"{flower}/task/{handle.id}.1")
        expect(page.get_by_text("Transfer data to vault").first).to_be_visible(
            timeout=SHOWN_WITHIN_MS
        )
        page.screenshot(path=shots / "2-backup-task-running.png", full_page=True)
        backup = handle.wait(60)
        page.goto(f"{flower}/tasks")
        hidden = _hidden(
            page,
            [
                ("backup_jobs.backup", "cs-app/app01", backup.id, "SUCCESS"),
                ("backup_jobs.register", "cs-app/app01", registered.id, "SUCCESS"),
                ("backup_jobs.register", "cs-app/stopped01", failed.id, "FAILURE"),
            ],
        )
        page.screenshot(path=shots / "3-tasks.png", full_page=True)
        page.goto(f"{flower}/task/{backup.id}.1")
        point = str(backup.properties["recovery_point_id"])
        expect(page.get_by_text(point).first).to_be_visible(timeout=SHOWN_WITHIN_MS)
        page.screenshot(path=shots / "4-backup-task.png", full_page=True)
        page.goto(f"{flower}/task/{failed.id}.1")
        expect(page.get_by_text("VMNotRunning").first).to_be_visible(timeout=SHOWN_WITHIN_MS)
        page.screenshot(path=shots / "5-failed-register-task.png", full_page=True)
        failed_page = page.inner_text("body")

    print(f"\nFlower screenshots: {shots}")
    assert (registered.status, failed.status) == (JobStatus.COMPLETED, JobStatus.FAILED)
    assert backup.status == JobStatus.COMPLETED
    assert not hidden, f"in the task list, cut off or off screen: {hidden}"
    assert "Start the virtual machine" in failed_page and "cs-app/stopped01" in failed_page
