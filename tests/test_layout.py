"""The sandbox is a package of its own: the bot runs without it (issue 11).

No module of `handlers/` or `services/` imports it, and `bot/` only where the `demo`
command hands over to it.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# (file, function) pairs of bot/ allowed to import the sandbox.
ALLOWED = {("bot/cli.py", "cmd_demo")}


def _sandbox_imports(path: Path) -> list[tuple[str, int, str]]:
    """(enclosing function or '', line, module) of every import of `sandbox` in a file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: list[tuple[str, int, str]] = []

    def visit(node: ast.AST, function: str) -> None:
        for child in ast.iter_child_nodes(node):
            inner = function
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                inner = child.name
            modules: list[str] = []
            if isinstance(child, ast.Import):
                modules = [alias.name for alias in child.names]
            elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                modules = [child.module]
            for module in modules:
                if module == "sandbox" or module.startswith("sandbox."):
                    found.append((inner, child.lineno, module))
            visit(child, inner)

    visit(tree, "")
    return found


def test_handlers_services_and_bot_do_not_import_the_sandbox() -> None:
    offending = []
    checked = 0
    for package in ("handlers", "services", "bot"):
        for path in sorted((ROOT / package).rglob("*.py")):
            checked += 1
            relative = path.relative_to(ROOT).as_posix()
            for function, line, module in _sandbox_imports(path):
                if (relative, function) not in ALLOWED:
                    offending.append(f"{relative}:{line} imports {module}")
    assert checked > 30  # the walk found the packages
    assert offending == []


def test_the_demo_command_is_the_one_hand_over() -> None:
    # The check above would pass vacuously if the demo stopped importing the sandbox.
    found = _sandbox_imports(ROOT / "bot/cli.py")
    assert [(f, m) for f, _, m in found] == [("cmd_demo", "sandbox.demo")]


def test_the_bot_imports_without_the_sandbox(tmp_path: Path) -> None:
    """`serve` and `rollback` load with the sandbox package hidden."""
    import subprocess
    import sys

    blocker = tmp_path / "sandbox"
    blocker.mkdir()
    (blocker / "__init__.py").write_text("raise ImportError('sandbox is not installed')\n")
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]);"
        "import bot.cli, bot.app, handlers.listeners, services.workflow, services.undo;"
        "print(bot.cli.main(['--config', '/nonexistent.toml', 'demo']))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=False,
    )
    assert "Traceback" not in done.stderr, done.stderr
    assert "pip install .[demo]" in done.stderr + done.stdout
