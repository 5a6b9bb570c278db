"""Whole system, as a person uses it: the Dagster UI of a real `dagster dev`, driven in headless Chromium.

The browser is Debian's `chromium` (installed with apt when missing, as `make servers` does), driven
by Playwright through its `executable_path`: Playwright's own browser download is never used. Each
step saves a screenshot under the test's temp folder, and the paths are printed.
"""

import contextlib
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import Locator, Page, expect, sync_playwright

from batch_predict.servers import ServerError, chromium_bin

from .test_dagster_dev import POLL, RUNS, assert_partitions_written, graphql, make_project, running_dagster_dev

LOCATION = "batch_predict.definitions"  # the code location workspace.yaml loads
BACKFILLED = ["2026-03-04", "2026-03-05", "2026-03-06"]
GRAPH = {"inputs", "model", "predictions"}
EDGES = {("inputs", "predictions"), ("model", "predictions")}
# Chromium refuses to run as root inside its sandbox, and a container's /dev/shm is often too small for it.
CHROMIUM_ARGS = ["--disable-dev-shm-usage", *(["--no-sandbox"] if os.geteuid() == 0 else [])]
STEP_TIMEOUT_MS = 60_000
BACKFILL_TIMEOUT_S = 300
BACKFILL = """
query Backfill($id: String!) {
  partitionBackfillOrError(backfillId: $id) {
    ... on PartitionBackfill { partitionNames assetSelection { path } }
  }
}
"""
# The lineage graph is an SVG: asset nodes are <foreignObject> boxes, edges are <path>s ending in an
# arrow marker. An edge goes from the node nearest its first point to the node nearest its last.
EDGES_JS = """
(svg) => {
  const nodes = [...svg.querySelectorAll('foreignObject')].map((box) => ({
    name: (box.firstElementChild?.innerText ?? '').split('\\n').map((line) => line.trim()).find(Boolean),
    x: +box.getAttribute('x'), y: +box.getAttribute('y'),
    w: +box.getAttribute('width'), h: +box.getAttribute('height'),
  }));
  const gap = (p, n) => Math.hypot(Math.max(n.x - p.x, 0, p.x - n.x - n.w), Math.max(n.y - p.y, 0, p.y - n.y - n.h));
  const nearest = (p) => nodes.reduce((a, b) => (gap(p, a) <= gap(p, b) ? a : b)).name;
  return [...svg.querySelectorAll('path[marker-end]')].map((edge) => [
    nearest(edge.getPointAtLength(0)), nearest(edge.getPointAtLength(edge.getTotalLength())),
  ]);
}
"""


@contextlib.contextmanager
def chromium_page() -> Iterator[Page]:
    """A page of headless Debian Chromium; fails the test, saying why, when Chromium cannot be had or started.

    Playwright starts the browser in a process group of its own and kills that group on close.
    """
    try:
        binary = chromium_bin()
    except ServerError as error:
        pytest.fail(f"The UI test needs Debian's Chromium, which could not be installed: {error}")
    with sync_playwright() as playwright:
        try:
            browser = playwright.chromium.launch(executable_path=binary, args=CHROMIUM_ARGS)
        except PlaywrightError as error:
            pytest.fail(f"Chromium ({binary}) did not start with {CHROMIUM_ARGS}: {error}")
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            page.set_default_timeout(STEP_TIMEOUT_MS)
            expect.set_options(timeout=STEP_TIMEOUT_MS)
            # A fresh instance greets its first visitor with a newsletter dialog; skip it whenever it shows.
            greeting = page.get_by_role("dialog").filter(has_text="Join the Dagster community")
            page.add_locator_handler(greeting, lambda dialog: dialog.get_by_role("button", name="Skip").click())
            yield page
        finally:
            browser.close()


class Screenshots:
    """Numbered full-page screenshots of the steps, in one folder."""

    def __init__(self, page: Page, folder: Path) -> None:
        self.page = page
        self.folder = folder
        self.paths: list[Path] = []
        folder.mkdir(parents=True, exist_ok=True)

    def take(self, step: str) -> None:
        path = self.folder / f"{len(self.paths) + 1:02d}-{step}.png"
        self.page.screenshot(path=path, full_page=True)
        self.paths.append(path)


def lineage_edges(page: Page, names: set[str], timeout: float = 30.0) -> set[tuple[str, str]]:
    """The drawn edges between the named nodes of the lineage graph on the page, once they stop changing."""
    graph = page.locator("svg:has(foreignObject)")
    deadline = time.monotonic() + timeout
    seen: set[tuple[str, str]] = set()
    while time.monotonic() < deadline:
        drawn = {(a, b) for a, b in graph.evaluate(EDGES_JS) if {a, b} <= names}
        if drawn and drawn == seen:
            return drawn
        seen = drawn
        time.sleep(0.5)
    return seen


def graph_node(page: Page, name: str) -> Locator:
    """The name of an asset node in the lineage graph on the page."""
    return page.locator("svg foreignObject").get_by_text(name, exact=True)


def wait_for_backfill(port: int, backfill_id: str) -> tuple[str, list[dict[str, Any]]]:
    """Poll the webserver until the backfill is done; its status and runs."""
    deadline = time.monotonic() + BACKFILL_TIMEOUT_S
    status = "REQUESTED"
    while status in ("REQUESTED", "CANCELING", "FAILING"):
        assert time.monotonic() < deadline, f"backfill {backfill_id} still {status} after {BACKFILL_TIMEOUT_S} s"
        time.sleep(2)
        status = graphql(port, POLL, {"id": backfill_id})["partitionBackfillOrError"]["status"]
    return status, graphql(port, RUNS, {"id": backfill_id})["runsOrError"]["results"]


@pytest.mark.system
def test_a_person_backfills_three_partitions_in_the_ui(tmp_path: Path) -> None:
    started = time.monotonic()
    env, warehouse = make_project(tmp_path / "project")
    with running_dagster_dev(tmp_path / "project", env) as port, chromium_page() as page:
        shots = Screenshots(page, tmp_path / "screenshots")
        base = f"http://127.0.0.1:{port}"
        try:
            # The asset graph of the prediction group: inputs → predictions ← model.
            page.goto(f"{base}/locations/{LOCATION}/asset-groups/batch_predict")
            for name in sorted(GRAPH):
                expect(graph_node(page, name)).to_be_visible()
            assert lineage_edges(page, GRAPH) == EDGES
            shots.take("asset-graph")

            # predictions → Partitions: nothing materialized yet.
            graph_node(page, "predictions").click()
            page.get_by_role("link", name="View in Asset Catalog").click()
            page.get_by_role("tab", name="Partitions").click()
            expect(page).to_have_url(re.compile(r"/assets/predictions\?view=partitions"))
            expect(page.get_by_text("Materialized (0)")).to_be_visible()
            shots.take("predictions-partitions")

            # Materialize… on predictions alone: the UI warns that its upstream `inputs` was never materialized.
            page.get_by_role("button", name="Materialize…").click()
            warning = page.get_by_role("dialog").filter(has_text="upstream assets")
            expect(warning.get_by_text("inputs", exact=True)).to_be_visible()
            shots.take("upstream-warning")
            warning.get_by_role("button", name="Cancel").click()

            # So from predictions' lineage, materialize it with its inputs (the registry's model is not
            # materializable): choose the 3 partitions in the dialog's partition selector and launch.
            page.get_by_role("tab", name="Lineage").click()
            for name in sorted(GRAPH):
                expect(graph_node(page, name)).to_be_visible()
            page.get_by_role("button", name=re.compile(r"Materialize all \(2\)")).click()
            dialog = page.get_by_role("dialog").filter(has_text="Launch runs to materialize 2 assets")
            expect(dialog).to_be_visible()
            selector = dialog.get_by_role("textbox")
            expect(selector).to_be_visible()
            show_all = dialog.get_by_role("button", name="Show all partitions")
            if show_all.is_visible():  # the dialog offers the last 90 days first, when there are older ones
                show_all.click()
            selector.fill(f"[{BACKFILLED[0]}...{BACKFILLED[-1]}]")
            selector.press("Enter")
            expect(dialog.get_by_text(f"{len(BACKFILLED)} partitions", exact=True)).to_be_visible()
            shots.take("materialize-dialog")
            dialog.get_by_role("button", name="Launch backfill").click()

            toast = page.locator("[data-sonner-toast]").filter(has_text="Created backfill")
            expect(toast).to_be_visible()
            found = re.search(r"Created backfill (\w+)", toast.inner_text())
            assert found, toast.inner_text()
            backfill_id = found.group(1)
            toast.get_by_role("link", name="View").click()
            expect(page).to_have_url(re.compile(f"/runs/b/{backfill_id}"))
            launched = graphql(port, BACKFILL, {"id": backfill_id})["partitionBackfillOrError"]
            assert launched["partitionNames"] == BACKFILLED, launched
            assert sorted(asset["path"][-1] for asset in launched["assetSelection"]) == ["inputs", "predictions"]
            shots.take("backfill-launched")

            status, runs = wait_for_backfill(port, backfill_id)
            assert status in ("COMPLETED", "COMPLETED_SUCCESS"), (status, runs)
            assert runs and all(run["status"] == "SUCCESS" for run in runs), runs
            page.reload()
            expect(page.get_by_text("Succeeded", exact=True).first).to_be_visible()
            shots.take("backfill-completed")

            page.goto(f"{base}/assets/predictions?view=partitions")
            expect(page.get_by_text(f"Materialized ({len(BACKFILLED)})")).to_be_visible()
            shots.take("predictions-partitions-after")
        except BaseException:
            with contextlib.suppress(PlaywrightError):
                shots.take("failed-here")
            raise
        finally:
            print("screenshots:", *map(str, shots.paths), sep="\n  ")
    # Read after the runs, with dagster dev stopped: no process holds the DuckDB file.
    assert_partitions_written(warehouse, BACKFILLED)
    print(f"UI backfill test: {time.monotonic() - started:.0f} s")
