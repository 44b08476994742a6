"""Swarm stacks of the busybox demo image on the local engine, for tests and benchmarks.

`swarm_mode` makes the engine a one-node Swarm for a while and leaves it afterwards,
whatever happens, but only a swarm it made: an engine already in a swarm is left in it. A
swarm made here carries a node label, so one left behind by a run that was killed is
recognised, reused and left by the next one. Several processes may use it at once (pytest
workers, a benchmark): each registers under a file lock, and the last one out leaves.

A stack is what `docker stack deploy` makes: services named STACK_SERVICE and labelled
`com.docker.stack.namespace=STACK`. Services run the image by its ID, so the engine never
tries to pull it from a registry (a tag would be looked up first).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiodocker
from aiodocker.exceptions import DockerError

from sandbox.demo_environment import WEB_PORT, DemoEnvironmentError, _free_port

STACK_LABEL = "com.docker.stack.namespace"
OWNED_LABEL = "rollback-sandbox.swarm"  # on the node: this swarm was made by swarm_mode
LEAVE_SECONDS = 60.0
LOCK_SECONDS = 120.0
# Who uses a swarm made here: one file per user, `user-PID-…`, beside a lock.
USERS = Path(tempfile.gettempdir()) / "rollback-sandbox-swarm"


async def _swarm_state(docker: aiodocker.Docker) -> tuple[str, bool]:
    info = await docker.system.info()
    swarm = info.get("Swarm") or {}
    return str(swarm.get("LocalNodeState", "inactive")), bool(swarm.get("ControlAvailable"))


async def _owned(docker: aiodocker.Docker) -> bool:
    info = await docker.system.info()
    node_id = (info.get("Swarm") or {}).get("NodeID")
    if not node_id:
        return False
    node = await docker.nodes.inspect(node_id=node_id)
    return (node.get("Spec", {}).get("Labels") or {}).get(OWNED_LABEL) == "true"


async def _mark_owned(docker: aiodocker.Docker) -> None:
    info = await docker.system.info()
    node_id = info["Swarm"]["NodeID"]
    node = await docker.nodes.inspect(node_id=node_id)
    spec = dict(node["Spec"])
    spec["Labels"] = {**(spec.get("Labels") or {}), OWNED_LABEL: "true"}
    await docker.nodes.update(node_id=node_id, version=node["Version"]["Index"], spec=spec)


@contextlib.asynccontextmanager
async def _registry() -> AsyncIterator[Path]:
    """The folder of the processes using a swarm made here, held under an exclusive lock."""
    USERS.mkdir(parents=True, exist_ok=True)
    with (USERS / ".lock").open("a") as lock:
        deadline = time.monotonic() + LOCK_SECONDS
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise DemoEnvironmentError(
                        f"{USERS}/.lock held for {LOCK_SECONDS:g} s"
                    ) from None
                await asyncio.sleep(0.05)
        try:
            yield USERS
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _alive(entry: Path) -> bool:
    """A registration whose process still runs (one killed left its file behind)."""
    try:
        os.kill(int(entry.name.split("-")[1]), 0)
    except (ValueError, IndexError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True


@contextlib.asynccontextmanager
async def swarm_mode(docker: aiodocker.Docker) -> AsyncIterator[bool]:
    """The engine as a Swarm manager meanwhile; yields whether the swarm is one made here
    (then the last process using it leaves it)."""
    me = USERS / f"user-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    async with _registry():
        state, manager = await _swarm_state(docker)
        if state == "active":
            made = await _owned(docker)  # made here: by another process, or left by a killed one
            if not manager:
                raise DemoEnvironmentError("the engine is a Swarm worker; a manager is needed")
        else:
            await docker.swarm.init(advertise_addr="127.0.0.1", listen_addr="127.0.0.1:2377")
            made = True
            await _mark_owned(docker)
        if made:
            await asyncio.to_thread(me.touch)
    try:
        yield made
    finally:
        if made:
            await asyncio.shield(_leave_if_last(docker, me))


def _last_out(users: Path, me: Path) -> bool:
    """Unregister; True if no live process is registered any more (dead ones are removed)."""
    me.unlink(missing_ok=True)
    for entry in users.glob("user-*"):
        if _alive(entry):
            return False
        entry.unlink(missing_ok=True)
    return True


async def _leave_if_last(docker: aiodocker.Docker, me: Path) -> None:
    async with _registry() as users:
        if await asyncio.to_thread(_last_out, users, me):
            async with asyncio.timeout(LEAVE_SECONDS):
                await docker.swarm.leave(force=True)


@dataclass(frozen=True)
class StackService:
    name: str
    replicas: int
    web: bool = False  # busybox httpd on a published port (host mode: one task per port)
    command: tuple[str, ...] | None = None


@dataclass
class Stack:
    name: str
    service_ids: dict[str, str] = field(default_factory=dict)  # service name -> ID
    web_urls: dict[str, str] = field(default_factory=dict)  # service -> health URL

    def full_name(self, service: str) -> str:
        return f"{self.name}_{service}"


async def create_stack(
    docker: aiodocker.Docker,
    name: str,
    services: Sequence[StackService],
    image: str,
    *,
    converge_seconds: float | None = 30.0,
) -> Stack:
    """The services of stack `name`; with `converge_seconds`, waits until all tasks run."""
    image_id = str((await docker.images.inspect(image))["Id"])
    stack = Stack(name)
    try:
        for service in services:
            args = ["/bin/busybox", "sleep", "2147483647"]
            endpoint: dict[str, Any] | None = None
            if service.web:
                port = _free_port()
                args = ["/bin/busybox", "httpd", "-f", "-p", str(WEB_PORT), "-h", "/www"]
                # The routing mesh needs what this host lacks; host mode publishes directly.
                endpoint = {
                    "Ports": [
                        {
                            "Protocol": "tcp",
                            "TargetPort": WEB_PORT,
                            "PublishedPort": port,
                            "PublishMode": "host",
                        }
                    ]
                }
                stack.web_urls[service.name] = f"http://127.0.0.1:{port}/health"
            created = await docker.services.create(
                {
                    # tini as PID 1 forwards SIGTERM: a scale to 0 is quick.
                    "ContainerSpec": {
                        "Image": image_id,
                        "Args": list(service.command or args),
                        "Init": True,
                        "StopGracePeriod": 5_000_000_000,
                    },
                    "RestartPolicy": {"Condition": "any", "Delay": 1_000_000_000},
                },
                name=stack.full_name(service.name),
                labels={STACK_LABEL: name},
                mode={"Replicated": {"Replicas": service.replicas}},
                endpoint_spec=endpoint,
            )
            stack.service_ids[service.name] = str(created["ID"])
        if converge_seconds is not None:
            await wait_for_tasks(
                docker, {stack.service_ids[s.name]: s.replicas for s in services}, converge_seconds
            )
    except BaseException:
        await remove_stack(docker, name)
        raise
    return stack


async def running_tasks(docker: aiodocker.Docker, service_id: str) -> int:
    tasks = await docker.tasks.list(filters={"service": service_id})
    return sum(
        1
        for t in tasks
        if t.get("DesiredState") == "running" and (t.get("Status") or {}).get("State") == "running"
    )


async def replicas(docker: aiodocker.Docker, service_id: str) -> int:
    service = await docker.services.inspect(service_id)
    return int(service["Spec"]["Mode"]["Replicated"]["Replicas"])


async def wait_for_tasks(
    docker: aiodocker.Docker, wanted: Mapping[str, int], timeout: float
) -> None:
    """Until each service (by ID) runs exactly its wanted number of tasks."""
    deadline = time.monotonic() + timeout
    while True:
        counts = {sid: await running_tasks(docker, sid) for sid in wanted}
        if counts == dict(wanted):
            return
        if time.monotonic() > deadline:
            raise DemoEnvironmentError(f"tasks running {counts}, wanted {dict(wanted)}")
        await asyncio.sleep(0.1)


async def remove_stack(docker: aiodocker.Docker, name: str) -> None:
    """Remove every service of the stack (idempotent)."""
    for service in await docker.services.list(filters={"label": f"{STACK_LABEL}={name}"}):
        try:
            await docker.services.delete(service["ID"])
        except DockerError as exc:
            if exc.status != 404:
                raise
