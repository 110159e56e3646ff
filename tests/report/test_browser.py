"""The report in a real browser: Debian's chromium, headless, driven by Playwright (no browser download).
The page renders, a screenshot is taken, the console has no errors, nothing beyond the file is fetched, and
the page text holds the gate table and every step name. The quickstart and income recipes' own reports are
the slow variant."""

from __future__ import annotations

import shutil
from pathlib import Path

import psutil
import pytest

from tests.conftest import REPO, Cli

from .conftest import STEPS

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--no-sandbox", "--disable-gpu", "--headless", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]


def render(html: Path, shot: Path, profile: Path) -> tuple[str, list[str], list[str]]:
    """Open `html` in headless chromium; return its text, its console errors and the URLs it asked for."""
    sync = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).is_file():
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    errors, requests = [], []
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    with sync.sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(str(profile), executable_path=CHROMIUM, args=FLAGS,
                                                         headless=True, viewport={"width": 1200, "height": 900})
        try:
            page = context.new_page()
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.on("request", lambda r: requests.append(r.url))
            page.goto(html.as_uri(), wait_until="load")
            page.screenshot(path=str(shot), full_page=True)
            text = page.inner_text("body")
        finally:
            context.close()
    left = [p for p in psutil.Process().children(recursive=True) if p.pid not in before and p.is_running()
            and p.status() != psutil.STATUS_ZOMBIE]
    assert not left, f"browser processes left behind: {left}"
    return text, errors, [u for u in requests if u != html.as_uri()]


def check(cli: Cli, what: str, steps: list[str], tmp_path: Path) -> None:
    html = tmp_path / "report.html"
    cli("report", what, "-o", html)
    text, errors, fetched = render(html, tmp_path / "report.png", tmp_path / "profile")
    assert errors == [] and fetched == []
    assert (tmp_path / "report.png").stat().st_size > 10_000
    assert "Gate table" in text and "accuracy" in text
    assert all(step in text for step in steps), [s for s in steps if s not in text]


def test_report_renders_in_chromium(built, tmp_path):
    cli, _ = built
    check(cli, "recipe.yaml", STEPS, tmp_path)


@pytest.mark.slow(minutes=5)
@pytest.mark.parametrize("recipe", ["quickstart", "income"])
def test_quickstart_and_income_reports_render_in_chromium(recipe, tmp_path):
    shutil.copytree(REPO / "recipes", tmp_path / "recipes")
    cli = Cli(tmp_path, tmp_path / "store")
    target = [] if recipe == "quickstart" else ["-t", "evaluate", "-t", "profile_train", "-t", "profile_test"]
    cli.build(f"recipes/{recipe}.yaml", *target)
    from modelbuild.recipe import load_recipe
    check(cli, f"recipes/{recipe}.yaml", load_recipe(tmp_path / "recipes" / f"{recipe}.yaml").order, tmp_path)
