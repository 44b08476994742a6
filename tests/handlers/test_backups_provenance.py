"""`/rollback backups ENV` shows each backup's provenance, escaped (issue 9)."""

from __future__ import annotations

import json
import shutil

from services.backup_now import take_backup
from services.provenance import read_provenance, sidecar_path, write_sidecar
from tests.handlers.conftest import DAVE, INCIDENTS, Bot


async def test_backups_list_shows_who_commit_schema_and_checksum_inert(bot: Bot) -> None:
    services, folder = bot.stage.services, bot.stage.environment.backups_dir
    taken = await take_backup(
        services, bot.environment, label="pre-deployment", requested_by="U0ALICE"
    )
    # A copy whose sidecar claims a hostile author; one whose sidecar is garbage.
    hostile = folder / "hostile-20240101-000000.dump"
    shutil.copy(taken.backup.path, hostile)
    write_sidecar(hostile, taken.provenance.model_copy(update={"created_by": "<!channel> *x*\n"}))
    sidecar_path(bot.stage.backup.path).write_text("{ not json")

    delivery = await bot.slack.send_command(
        DAVE.id, INCIDENTS.id, "/rollback", f"backups {bot.environment}"
    )
    assert delivery.status == 200
    reply = await bot.ephemeral(DAVE)
    text = json.dumps(reply.blocks, ensure_ascii=False)

    assert f"`{taken.backup.name}`" in text
    assert "pre-deployment by <@U0ALICE> · commit `?` · ✓ sha256 verified" in text
    assert "manual by" not in text and "<!channel>" not in text
    assert "&lt;!channel&gt; *x*\\\\n" in text  # shown as text, the newline as an escape
    assert "⚠️ provenance sidecar malformed: Invalid JSON" in text
    assert ".json`" not in text  # a sidecar is never listed as a backup
    assert read_provenance(bot.stage.backup.path) is None
