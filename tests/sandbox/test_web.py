"""The sandbox workspace's page in a real headless browser (issue 11).

Debian's chromium driven by Playwright (nothing downloaded): a person types the command,
switches to the approver, clicks Approve, confirms in the dialog and watches the steps.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiodocker
import aiohttp
import pytest
from slack_sdk.web.async_client import AsyncWebClient

from sandbox.web import EnvironmentPanel, Person, WorkspacePage, rollback_running
from tests.handlers.conftest import ALICE, BOB, CAROL, DAVE, INCIDENTS, Bot
from tests.services.conftest import change_after_backup

CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    """Headless chromium; fails (never skips) when it or Playwright is missing."""
    try:
        from playwright.async_api import async_playwright
    except ImportError as error:
        pytest.fail(f"playwright is not installed (pip install .[test]): {error}", pytrace=False)
    if not CHROMIUM.exists():  # noqa: ASYNC240 (one stat, before anything starts)
        pytest.fail(f"{CHROMIUM} missing: run scripts/setup.sh (apt chromium)", pytrace=False)
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=["--no-sandbox"], headless=True
        )
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture
async def page_of(bot: Bot, docker: aiodocker.Docker) -> AsyncIterator[WorkspacePage]:
    stage = bot.stage
    panel = EnvironmentPanel(
        docker,
        stage.project.project,
        stage.dsn,
        stage.environment.backups_dir,
        busy=rollback_running(stage.services.store, bot.environment),
    )
    people = [
        Person(ALICE.id, "requester"),
        Person(BOB.id, "approver"),
        Person(CAROL.id, "contact"),
        Person(DAVE.id, "outsider"),
    ]
    async with WorkspacePage(
        bot.workspace, bot.slack, channel=INCIDENTS.id, people=people, panel=panel
    ) as page:
        yield page


async def test_type_switch_approve_confirm_and_watch_the_steps_in_a_browser(
    bot: Bot, page_of: WorkspacePage, browser: Any, tmp_path: Path
) -> None:
    await change_after_backup(bot.stage.dsn)
    page = await browser.new_page(viewport={"width": 1400, "height": 1000})
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    await page.goto(page_of.url)
    await page.wait_for_selector("body[data-ready=true]")
    # The environment panel: both containers running, the tables and the backup.
    panel = page.locator("#environment-body")
    await panel.get_by_text("feature_flags").wait_for()
    assert (await panel.locator(".state-running").count()) == 2
    assert bot.stage.backup.name in await panel.inner_text()

    await page.select_option("#acting-as", ALICE.id)
    await page.fill("#message-box", f"/rollback {bot.environment}")
    await page.press("#message-box", "Enter")
    plan = page.locator("#messages .message").first
    await plan.get_by_text("awaiting approval").wait_for()
    assert "<@" not in await plan.inner_text()  # mentions drawn as names, never raw

    # An outsider sees the buttons but the bot refuses him, only to him.
    await page.select_option("#acting-as", DAVE.id)
    await plan.get_by_role("button", name="Approve", exact=True).click()
    dialog = page.locator("dialog#confirm")
    assert "Approve the rollback?" in await dialog.inner_text()
    await dialog.get_by_role("button", name="Approve").click()
    refusal = page.locator("#messages .message.ephemeral")
    await refusal.get_by_text("Only visible to you").wait_for()
    await page.select_option("#acting-as", ALICE.id)
    assert await refusal.count() == 0  # dave's refusal is not shown to alice

    await page.select_option("#acting-as", BOB.id)
    await plan.get_by_role("button", name="Approve", exact=True).click()
    await dialog.get_by_role("button", name="Approve").click()
    await plan.locator(".block-header", has_text=": done").wait_for(timeout=60_000)
    shown = await plan.inner_text()
    steps = ("Stop containers", "Safety backup", "Restore database", "Start containers")
    for label in (*steps, "Health checks"):
        assert f"✓ {label}" in shown, shown
    assert "⏳" not in shown and "HTTP 200" in shown  # the health table
    # bob ticks a checklist item: the bot records who did and the message says so (the bot
    # ticked "Monitoring active" itself: it watches the environment now, issue 9).
    await plan.get_by_text("☑ Monitoring active — the bot").wait_for()
    await plan.get_by_label("Root cause investigation started").check()
    await plan.get_by_text("☑ Root cause investigation started — @bob").wait_for()
    # The channel with the finished run, as a test artefact.
    shot = tmp_path / "demo-web.png"
    await page.screenshot(path=str(shot))  # the artefact (docs/demo-web.png is one, kept)
    assert shot.stat().st_size > 10_000

    await plan.get_by_role("button", name="1 reply").click()
    await page.locator("#thread").get_by_text("Incident report").wait_for()
    # After the run the panel reads the database again: the table the deployment added is
    # gone, and both containers run.
    await panel.get_by_text("feature_flags").wait_for(state="detached", timeout=10_000)
    assert (await panel.locator(".state-running").count()) == 2
    # carol, a contact, reads the bot's direct messages: asked, then ended.
    await page.select_option("#acting-as", CAROL.id)
    await page.locator("#dms li").click()
    await page.locator("#messages").get_by_text("ended").wait_for()
    assert "asked to roll back" in await page.inner_text("#messages")
    assert errors == []

    await page.close()


async def test_text_is_escaped_and_mrkdwn_drawn(
    bot: Bot, page_of: WorkspacePage, browser: Any
) -> None:
    """Any message the bot could send is drawn from its JSON; nothing in it becomes HTML."""
    hostile = "<img src=x onerror=alert(1)>"
    blocks = [
        {"type": "header", "text": {"type": "plain_text", "text": hostile}},
        {
            "type": "section",
            "text": {
                "type": "mrkdwn",
                "text": "*bold* `code` <@U0BOB> <https://example.test/x|a link> "
                "&lt;script&gt;alert(1)&lt;/script&gt; <javascript:alert(1)|bad>",
            },
            "fields": [{"type": "mrkdwn", "text": "```line one\nline two```"}],
        },
        {"type": "context", "elements": [{"type": "mrkdwn", "text": "_small print_"}]},
        {"type": "divider"},
        {"type": "rich_text", "elements": [{"type": "rich_text_section", "elements": []}]},
    ]
    client = AsyncWebClient(token=bot.workspace.bot_token, base_url=bot.workspace.base_url)
    await client.chat_postMessage(channel=INCIDENTS.id, text="escaping", blocks=blocks)
    page = await browser.new_page()
    alerts: list[str] = []
    page.on("dialog", lambda dialog: alerts.append(dialog.message))
    await page.goto(page_of.url)
    message = page.locator("#messages .message").first
    await message.locator(".block-header").wait_for()
    assert await message.locator(".block-header").inner_text() == hostile
    assert await message.locator("img, script").count() == 0
    assert await message.locator(".block b").inner_text() == "bold"
    assert await message.locator("code").inner_text() == "code"
    assert await message.locator(".mention").inner_text() == "@bob"
    assert await message.locator("a").count() == 1  # the javascript: link is text
    assert await message.locator("a").get_attribute("href") == "https://example.test/x"
    assert await message.locator("pre.code-block").inner_text() == "line one\nline two"
    assert await message.locator("i").inner_text() == "small print"
    assert await message.locator("hr.divider").count() == 1
    assert "<script>alert(1)</script>" in await message.inner_text()
    assert alerts == []
    state = json.loads(await page.evaluate("() => JSON.stringify(document.body.dataset)"))
    assert state["ready"] == "true"
    await page.close()


async def test_only_the_page_itself_can_act(
    bot: Bot, page_of: WorkspacePage, http: aiohttp.ClientSession
) -> None:
    """Another site open in the browser cannot type commands for alice (issue 11)."""
    command = {"user": ALICE.id, "channel": INCIDENTS.id, "text": f"/rollback {bot.environment}"}
    # A cross-site form or fetch without a preflight can only send a "simple" content type.
    async with http.post(page_of.url + "command", data=json.dumps(command)) as response:
        assert response.status == 415
    # A name rebound to 127.0.0.1 (DNS rebinding) arrives with its own Host header.
    async with http.post(
        page_of.url + "command", json=command, headers={"Host": "evil.example:80"}
    ) as response:
        assert response.status == 403
    async with http.get(page_of.url + "state") as response:
        assert response.status == 200
        assert (await response.json())["messages"][INCIDENTS.id] == []
    assert bot.workspace.user_actions == []
    # The page's own request goes through, signed, to the bot.
    async with http.post(page_of.url + "command", json=command) as response:
        assert (await response.json())["status"] == 200
    await bot.workspace.wait_for(lambda: bot.workspace.messages(INCIDENTS.id), 10)
