"""Issue 10: environments on a remote engine (tcp:// with TLS client certificates).

The remote engine is the local one behind a TLS port on localhost that requires a client
certificate (tests/docker_over_tls.py). The bot is opened as `serve` opens it
(bot.resources.open_services from the environments file): one client per engine, and a
router that sends each environment's calls to its own.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiodocker
import pytest

from bot.environments_file import load_environments
from bot.resources import open_services
from bot.settings import load_settings
from sandbox.demo_environment import database_snapshot
from sandbox.throwaway_postgres import ThrowawayPostgres
from services.errors import EndpointUnavailable
from services.events import ignore
from services.workflow import plan_rollback, rollback_database
from tests.bot.test_cli import cli, environment_toml, store_env
from tests.docker_over_tls import Certificates, TlsForwarder
from tests.services.conftest import Stage, change_after_backup, container_states


@pytest.fixture
async def tls_engine(docker_certificates: Certificates) -> AsyncIterator[TlsForwarder]:
    forwarder = TlsForwarder(docker_certificates)
    await forwarder.start()
    try:
        yield forwarder
    finally:
        await forwarder.stop()


def tls_keys(endpoint: str, certificates: Certificates, *, rogue: bool = False) -> str:
    cert, key = (
        (certificates.rogue_client_cert, certificates.rogue_client_key)
        if rogue
        else (certificates.client_cert, certificates.client_key)
    )
    return (
        f'docker_endpoint = "{endpoint}"\ndocker_tls_ca = "{certificates.ca}"\n'
        f'docker_tls_cert = "{cert}"\ndocker_tls_key = "{key}"\n'
    )


def write(folder: Path, *tables: str) -> Path:
    path = folder / "rollback.toml"
    path.write_text("\n".join(tables))
    return path


async def test_an_environment_on_a_tls_endpoint_rolls_back_through_it(
    stage: Stage,
    tls_engine: TlsForwarder,
    docker_certificates: Certificates,
    pg: ThrowawayPostgres,
    docker: aiodocker.Docker,
    tmp_path: Path,
) -> None:
    at_backup = await database_snapshot(stage.dsn)
    await change_after_backup(stage.dsn)
    keys = tls_keys(tls_engine.endpoint, docker_certificates)
    config = write(tmp_path, environment_toml(stage.environment, name="remote", keys=keys))
    settings = load_settings(rollback_config=config, database_url=store_env(pg)["DATABASE_URL"])

    async with open_services(settings, load_environments(config)) as services:
        plan = await plan_rollback(services, "remote", None)
        result = await rollback_database(services, plan, requested_by="U1", listener=ignore)

    assert result.ok, result.environment_state
    assert sorted(c.name for c in plan.containers) == sorted(stage.project.container_names.values())
    assert plan.summary()["workload"] == (
        f"Compose project '{stage.environment.compose_project}' "
        f"(label com.docker.compose.project) on {tls_engine.endpoint}"
    )
    assert await database_snapshot(stage.dsn) == at_backup
    assert set((await container_states(docker, stage.project)).values()) == {"running"}
    assert tls_engine.handshakes > 0  # the calls went through the TLS endpoint


async def test_a_client_certificate_the_engine_does_not_trust_fails_with_a_clear_line(
    stage: Stage,
    tls_engine: TlsForwarder,
    docker_certificates: Certificates,
    pg: ThrowawayPostgres,
    docker: aiodocker.Docker,
    tmp_path: Path,
) -> None:
    keys = tls_keys(tls_engine.endpoint, docker_certificates, rogue=True)
    config = write(tmp_path, environment_toml(stage.environment, name="remote", keys=keys))

    code, out, err = await cli(
        "--config", str(config), "rollback", "remote", "--yes", env=store_env(pg)
    )

    assert code == 1, out + err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"error: Docker endpoint {tls_engine.endpoint} does not answer")
    assert "unknown ca" in lines[0]
    assert "TLS refused: check docker_tls_ca, docker_tls_cert and docker_tls_key" in lines[0]
    assert tls_engine.refused > 0
    assert set((await container_states(docker, stage.project)).values()) == {"running"}


async def test_an_endpoint_down_fails_only_its_environments(
    stage: Stage,
    tls_engine: TlsForwarder,
    docker_certificates: Certificates,
    pg: ThrowawayPostgres,
    docker: aiodocker.Docker,
    tmp_path: Path,
) -> None:
    """The bot opens with one endpoint down; its environment cannot be planned, with a
    line that names the endpoint; the environment on the local engine rolls back in the
    same process; the endpoint comes back and is reached again without a restart."""
    at_backup = await database_snapshot(stage.dsn)
    await change_after_backup(stage.dsn)
    local = stage.environment.name
    keys = tls_keys(tls_engine.endpoint, docker_certificates)
    config = write(
        tmp_path,
        environment_toml(stage.environment, name="remote", keys=keys),
        environment_toml(stage.environment),
    )
    settings = load_settings(rollback_config=config, database_url=store_env(pg)["DATABASE_URL"])
    await tls_engine.stop()

    async with open_services(settings, load_environments(config)) as services:
        with pytest.raises(EndpointUnavailable) as caught:
            await plan_rollback(services, "remote", None)
        plan = await plan_rollback(services, local, None)
        result = await rollback_database(services, plan, requested_by="U1", listener=ignore)
        await tls_engine.start()  # the same port again
        again = await plan_rollback(services, "remote", None)

    assert str(caught.value).startswith(
        f"Docker endpoint {tls_engine.endpoint} does not answer: "
    ), caught.value
    assert "Connect call failed" in str(caught.value)
    assert result.ok, result.environment_state
    assert await database_snapshot(stage.dsn) == at_backup
    assert len(again.containers) == 2
    assert set((await container_states(docker, stage.project)).values()) == {"running"}
