"""What the console's browser tests share: the step timeout and the clicks every test makes."""

from __future__ import annotations

from playwright.sync_api import Page, expect

from zeroscale.testing import ACCESS_KEY

T = 20_000  # ms: the longest any single step may take
expect.set_options(timeout=T)


def nav(page: Page, name: str) -> None:
    page.get_by_role("navigation", name="Console").get_by_role("link", name=name, exact=True).click()


def sign_in(page: Page, secret: str, *, keyboard: bool = False) -> None:
    page.get_by_label("Access key ID").fill(ACCESS_KEY)
    page.get_by_label("Secret access key").fill(secret)
    if keyboard:
        page.get_by_label("Secret access key").press("Enter")
    else:
        page.get_by_role("button", name="Sign in").click()
