"""The engine's fixtures live in tests/conftest.py; these names are re-exported for imports."""

from tests.conftest import (
    Stage,
    change_after_backup,
    container_states,
    make_environment,
    make_services,
    wait_for_state,
)

__all__ = [
    "Stage",
    "change_after_backup",
    "container_states",
    "make_environment",
    "make_services",
    "wait_for_state",
]
