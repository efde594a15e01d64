"""Playwright helpers for the browser tests (``tests/browser``): a session, a login through
the form, screenshots kept as test artifacts."""

from __future__ import annotations

from pathlib import Path

from playwright.async_api import Browser, BrowserContext, Page, expect

CHROMIUM = "/usr/bin/chromium"  # Debian's, from `make system-deps`
SHOTS = Path(__file__).resolve().parents[2] / "reports" / "screenshots"


async def open_page(browser: Browser, base_url: str) -> tuple[BrowserContext, Page]:
    """A fresh browser session (its own cookies) on a laptop-sized window."""
    ctx = await browser.new_context(base_url=base_url, viewport={"width": 1366, "height": 900})
    return ctx, await ctx.new_page()


async def log_in(
    browser: Browser, base_url: str, user: str, password: str, totp: str | None
) -> tuple[BrowserContext, Page]:
    """Log in through the login form, as a person would; lands on the fleet overview."""
    ctx, page = await open_page(browser, base_url)
    await page.goto("/login")
    await page.get_by_label("User name").fill(user)
    await page.get_by_label("Password").fill(password)
    if totp:
        await page.get_by_label("Authenticator code").fill(totp)
    await page.get_by_label("Password").press("Enter")  # the keyboard submits the form
    await expect(page.get_by_role("heading", name="Fleet overview")).to_be_visible()
    return ctx, page


# Form controls without an accessible name (a <label>, aria-label or aria-labelledby; a
# button's own text), and images without alt text: what a screen reader could not announce.
UNLABELLED = """() => Array.from(document.querySelectorAll(
    'input:not([type=hidden]), select, textarea, button, img')).filter((el) => {
  if (el.tagName === 'IMG') return !el.hasAttribute('alt');
  if (el.tagName === 'BUTTON') return !el.textContent.trim() && !el.getAttribute('aria-label');
  return !(el.labels && el.labels.length) && !el.getAttribute('aria-label')
      && !el.getAttribute('aria-labelledby');
}).map((el) => el.outerHTML.slice(0, 120))"""


async def shot(page: Page, name: str) -> None:
    """A screenshot of the whole page, kept as a test artifact in reports/screenshots/, once
    every form control on it has an accessible name and the page has one <h1> and a <main>."""
    assert await page.evaluate(UNLABELLED) == [], f"{name}: unlabelled controls"
    assert await page.locator("h1").count() == 1 and await page.locator("main").count() == 1
    await page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)
