"""Issue 10: the environments file names a Compose project or a Swarm stack, and the
Docker engine (the local one, another socket, or tcp:// with TLS client certificates)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.environments_file import load_environments
from services.environments import DockerEndpoint, DockerTls
from services.errors import ConfigError
from tests.bot.test_cli import cli
from tests.docker_over_tls import Certificates


def config_with(folder: Path, *tables: str) -> Path:
    (folder / "backups").mkdir(exist_ok=True)
    path = folder / "rollback.toml"
    path.write_text(
        "\n".join(
            f'[environments.{name}]\ndatabase_url = "postgresql://app@db/{name}"\n'
            f'backups_dir = "backups"\n{body}\n'
            for name, body in (table.split("\n", 1) for table in tables)
        )
    )
    return path


def problems(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_environments(path)
    return [p.removeprefix(f"{path}: ") for p in caught.value.problems]


def tls(certificates: Certificates) -> str:
    return (
        f'docker_tls_ca = "{certificates.ca}"\ndocker_tls_cert = "{certificates.client_cert}"\n'
        f'docker_tls_key = "{certificates.client_key}"'
    )


def test_a_stack_or_a_compose_project_on_this_or_another_engine(
    tmp_path: Path, docker_certificates: Certificates
) -> None:
    path = config_with(
        tmp_path,
        "legacy\n",  # neither: the Compose project named like the environment, locally
        'shop\nstack = "shop"\ndocker_endpoint = "unix:///run/other/docker.sock"',
        'far\ncompose_project = "app"\ndocker_endpoint = "tcp://10.0.0.5:2376"\n'
        + tls(docker_certificates),
        'plain\nstack = "app"\ndocker_endpoint = "tcp://10.0.0.6:2375"\ndocker_tls = false',
    )

    environments = load_environments(path)

    legacy, shop, far, plain = (environments[n] for n in ("legacy", "shop", "far", "plain"))
    assert (legacy.compose_project, legacy.stack, legacy.docker_endpoint) == ("legacy", None, None)
    assert legacy.workload == "legacy"  # as before: the local Compose project's name
    assert (shop.compose_project, shop.stack) == (None, "shop")
    assert shop.docker_endpoint == DockerEndpoint(url="unix:///run/other/docker.sock")
    assert shop.workload == "stack shop on unix:///run/other/docker.sock"
    assert far.docker_endpoint == DockerEndpoint(
        url="tcp://10.0.0.5:2376",
        tls=DockerTls(
            ca=docker_certificates.ca,
            cert=docker_certificates.client_cert,
            key=docker_certificates.client_key,
        ),
    )
    assert far.docker_endpoint.client_url == "https://10.0.0.5:2376"
    assert plain.docker_endpoint == DockerEndpoint(url="tcp://10.0.0.6:2375")
    assert plain.docker_endpoint.client_url == "http://10.0.0.6:2375"


def test_every_mistake_about_the_engine_is_one_line_naming_its_key(
    tmp_path: Path, docker_certificates: Certificates
) -> None:
    missing = tmp_path / "nowhere" / "cert.pem"
    path = config_with(
        tmp_path,
        'both\ncompose_project = "app"\nstack = "app"',
        'badstack\nstack = "no spaces"',
        'badproject\ncompose_project = "App"',
        'http\ndocker_endpoint = "http://10.0.0.5:2375"',
        'noport\ndocker_endpoint = "tcp://10.0.0.5"',
        'relative\ndocker_endpoint = "unix://docker.sock"',
        'notls\ndocker_endpoint = "tcp://10.0.0.5:2376"',
        'partial\ndocker_endpoint = "tcp://10.0.0.5:2376"\n'
        f'docker_tls_ca = "{docker_certificates.ca}"',
        'nofile\ndocker_endpoint = "tcp://10.0.0.5:2376"\n'
        + tls(docker_certificates).replace(str(docker_certificates.client_cert), str(missing)),
        'mismatch\ndocker_endpoint = "tcp://10.0.0.5:2376"\n'
        + tls(docker_certificates).replace(
            str(docker_certificates.client_key), str(docker_certificates.rogue_client_key)
        ),
        f'contradiction\ndocker_endpoint = "tcp://10.0.0.5:2376"\ndocker_tls = false\n'
        f'docker_tls_ca = "{docker_certificates.ca}"',
        'unixtls\ndocker_endpoint = "unix:///run/docker.sock"\ndocker_tls = true',
        f'orphan\ndocker_tls_ca = "{docker_certificates.ca}"',
        'frozen\nstack = "shop"\ncutover_mode = "pause"',
    )

    found = problems(path)

    assert found[:8] == [
        "environments.both: names both compose_project and stack; an environment is one or "
        "the other",
        "environments.badstack.stack: 'no spaces' is not a stack name (letters, digits, _ . -, "
        "starting with a letter or digit)",
        "environments.badproject.compose_project: 'App' is not a Compose project name "
        "(lowercase letters, digits, _ and -, starting with a letter or digit)",
        "environments.http.docker_endpoint: 'http://10.0.0.5:2375': must be "
        "unix:///path/to/docker.sock or tcp://host:port",
        "environments.noport.docker_endpoint: 'tcp://10.0.0.5': must be tcp://host:port "
        "(the engine's TLS port is usually 2376)",
        "environments.relative.docker_endpoint: 'unix://docker.sock': a socket is named "
        "unix:///absolute/path",
        "environments.notls: tcp://10.0.0.5:2376 needs docker_tls_ca, docker_tls_cert, "
        "docker_tls_key (the engine's CA, this bot's client certificate and key); for an "
        "engine without TLS say docker_tls = false",
        "environments.partial: tcp://10.0.0.5:2376 needs docker_tls_cert, docker_tls_key (the "
        "engine's CA, this bot's client certificate and key); for an engine without TLS say "
        "docker_tls = false",
    ]
    assert found[8] == f"environments.nofile.docker_tls_cert: {missing} is not a readable file"
    assert found[9].startswith(
        "environments.mismatch: the TLS files for tcp://10.0.0.5:2376 do not fit together: "
    )
    assert "KEY_VALUES_MISMATCH" in found[9]
    assert found[10:] == [
        "environments.contradiction: docker_tls = false, yet docker_tls_ca given",
        "environments.unixtls: docker_tls: only with a tcp:// docker_endpoint",
        "environments.orphan: docker_tls_ca: only with a tcp:// docker_endpoint",
        "environments.frozen.cutover_mode: pause freezes containers through their own engine, "
        "and a Swarm stack's tasks run on the swarm's nodes: use keep (with swap) or stop",
    ]


async def test_check_config_says_where_each_environment_runs(
    tmp_path: Path, docker_certificates: Certificates
) -> None:
    path = config_with(
        tmp_path,
        'local\ncompose_project = "app"',
        'swarm\nstack = "shop"\ndocker_endpoint = "tcp://10.0.0.5:2376"\n'
        + tls(docker_certificates),
        'plain\nstack = "app"\ndocker_endpoint = "tcp://10.0.0.6:2375"\ndocker_tls = false',
    )

    code, out, err = await cli("--config", str(path), "check-config")

    assert code == 0, err
    lines = out.splitlines()
    assert lines[1].startswith("  local: project app, database ")
    assert lines[2].startswith(
        "  swarm: stack shop on tcp://10.0.0.5:2376 with TLS client certificates, database "
    )
    assert lines[3].startswith(
        "  plain: stack app on tcp://10.0.0.6:2375 WITHOUT TLS (docker_tls = false), database "
    )
