"""Docs that can be checked are checked (in the manner of datasette's ``tests/test_docs.py``).

Every setting's environment variable is in ``docs/configuration.md``, every ``quorum``
command (with its options and arguments) has a section in ``docs/cli.md``, every API
route and error code is in ``docs/api.md``. Settings, commands and routes are discovered
from the code, so adding one without documenting it fails here.
"""

from __future__ import annotations

import ast
import importlib
import re
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from pydantic import AliasChoices
from pydantic_settings import BaseSettings

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PACKAGES = ("backend", "ml", "crowd")


# ---------------------------------------------------------------- settings discovery
def _base_names(node: ast.ClassDef) -> set[str]:
    names = set()
    for base in node.bases:
        if isinstance(base, ast.Name):
            names.add(base.id)
        elif isinstance(base, ast.Attribute):
            names.add(base.attr)
    return names


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@cache
def settings_classes() -> tuple[type[BaseSettings], ...]:
    """Every ``BaseSettings`` subclass with fields defined in backend/, ml/ or crowd/.

    The source is scanned (without importing it) for classes deriving, directly or
    through other classes, from ``BaseSettings``; only the modules defining them are
    imported, then the real subclass tree is walked.
    """
    classes: dict[Path, list[ast.ClassDef]] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
            classes[path] = [n for n in ast.walk(tree) if isinstance(n, ast.ClassDef)]
    settings_names = {"BaseSettings"}
    while True:  # fixpoint: subclasses of subclasses, across modules
        found = {c.name for defs in classes.values() for c in defs
                 if _base_names(c) & settings_names}
        if found <= settings_names:
            break
        settings_names |= found
    for path, defs in classes.items():
        if any(_base_names(c) & settings_names for c in defs):
            importlib.import_module(_module_name(path))

    out: list[type[BaseSettings]] = []
    todo = list(BaseSettings.__subclasses__())
    while todo:
        cls = todo.pop()
        todo.extend(cls.__subclasses__())
        if cls.__module__.split(".")[0] in PACKAGES and cls.model_fields and cls not in out:
            out.append(cls)
    return tuple(sorted(out, key=lambda c: (c.__module__, c.__qualname__)))


def env_names(cls: type[BaseSettings], name: str) -> list[str]:
    """The environment variable(s) that set field ``name`` of ``cls``."""
    field = cls.model_fields[name]
    alias = field.validation_alias or field.alias
    if isinstance(alias, str):
        names = [alias]
    elif isinstance(alias, AliasChoices):
        names = [c for c in alias.choices if isinstance(c, str)]
    else:
        names = [f"{cls.model_config.get('env_prefix', '')}{name}"]
    if not cls.model_config.get("case_sensitive", False):
        names = [n.upper() for n in names]
    return names


@cache
def settings_env_vars() -> dict[str, tuple[type[BaseSettings], str]]:
    """``{"QUORUM_DATABASE_URL": (Settings, "database_url"), ...}`` for every setting."""
    out: dict[str, tuple[type[BaseSettings], str]] = {}
    for cls in settings_classes():
        for name in cls.model_fields:
            for env in env_names(cls, name):
                out[env] = (cls, name)
    return out


def docker_script_variables() -> set[str]:
    """``QUORUM_*`` variables read by the container scripts (not settings: entrypoint knobs)."""
    text = "".join(p.read_text() for p in sorted((ROOT / "docker").glob("*.sh")))
    return set(re.findall(r"\$\{(QUORUM_[A-Z0-9_]+)", text))


#: Compose-level variables (interpolated in docker/compose.yaml, never seen by the app).
COMPOSE_ONLY_VARIABLES = {"QUORUM_IMAGE", "QUORUM_GPU_IMAGE", "QUORUM_GPU_COUNT"}


def documented_quorum_variables(text: str) -> set[str]:
    return set(re.findall(r"\bQUORUM_[A-Z0-9_]*[A-Z0-9]\b", text))


# ---------------------------------------------------------------- CLI discovery
def cli_commands() -> Iterator[tuple[str, Any]]:
    """``("quorum rules backtest", command)`` for every command and group, recursively."""
    import typer.main

    from backend.cli import app

    def walk(command: Any, path: str) -> Iterator[tuple[str, Any]]:
        yield path, command
        if hasattr(command, "list_commands"):  # a group (typer vendors its own click)
            ctx = command.context_class(command)
            for name in command.list_commands(ctx):
                sub = command.get_command(ctx, name)
                if not getattr(sub, "hidden", False):
                    yield from walk(sub, f"{path} {name}")

    root = typer.main.get_command(app)
    for path, command in walk(root, "quorum"):
        if path != "quorum":
            yield path, command


def cli_sections(text: str) -> dict[str, str]:
    """``{"quorum rules backtest": "<its section's text>"}`` from ``## quorum ...`` headings."""
    sections: dict[str, str] = {}
    current = None
    for line in text.splitlines():
        m = re.match(r"^#{2,6}\s+`?(quorum(?: [a-z0-9][a-z0-9-]*)*)`?\s*$", line)
        if m:
            current = m.group(1)
            sections[current] = ""
        elif line.startswith("#"):
            current = None
        elif current is not None:
            sections[current] += line + "\n"
    return sections


def _read(name: str) -> str:
    path = DOCS / name
    assert path.exists(), f"{path.relative_to(ROOT)} is missing"
    return path.read_text(encoding="utf-8")


# ---------------------------------------------------------------- settings
def test_settings_are_discovered():
    from backend.settings import Settings

    assert Settings in settings_classes()
    assert settings_env_vars()["QUORUM_DATABASE_URL"] == (Settings, "database_url")


def test_every_setting_is_documented():
    doc = _read("configuration.md")
    documented = documented_quorum_variables(doc)
    missing = sorted(set(settings_env_vars()) - documented)
    assert not missing, f"document these settings in docs/configuration.md: {missing}"


def test_configuration_doc_names_only_real_variables():
    """A renamed or removed setting must not linger in the docs."""
    doc = _read("configuration.md")
    known = set(settings_env_vars()) | docker_script_variables() | COMPOSE_ONLY_VARIABLES
    stale = sorted(documented_quorum_variables(doc) - known)
    assert not stale, f"docs/configuration.md names variables nothing reads: {stale}"


def test_container_variables_are_documented_and_are_not_settings():
    script_vars = docker_script_variables()
    assert "QUORUM_WEB_WORKERS" in script_vars and "QUORUM_WORKER_QUEUES" in script_vars
    clash = sorted(script_vars & set(settings_env_vars()))
    assert not clash, f"container variables clash with settings: {clash}"
    doc = _read("configuration.md") + _read("deploy.md")
    missing = sorted(script_vars - documented_quorum_variables(doc))
    assert not missing, f"document these container variables: {missing}"


# ---------------------------------------------------------------- CLI
def test_every_cli_command_has_a_section():
    sections = cli_sections(_read("cli.md"))
    commands = [path for path, _ in cli_commands()]
    assert "quorum rules backtest" in commands and "quorum db upgrade" in commands
    missing = [c for c in commands if c not in sections]
    assert not missing, f"add a '## <command>' section to docs/cli.md for: {missing}"
    stale = sorted(set(sections) - set(commands))
    assert not stale, f"docs/cli.md documents commands that do not exist: {stale}"


def test_every_cli_option_and_argument_is_documented():
    sections = cli_sections(_read("cli.md"))
    missing = []
    for path, command in cli_commands():
        section = sections.get(path, "")
        for param in command.params:
            if param.param_type_name == "option":
                flags = [f for f in [*param.opts, *param.secondary_opts] if f.startswith("--")]
                missing += [f"{path} {f}" for f in flags if f != "--help"
                            and not re.search(rf"{re.escape(f)}(?![a-z0-9-])", section)]
            elif param.param_type_name == "argument":
                name = param.name.upper()
                if not re.search(rf"\b{name}\b", section):
                    missing.append(f"{path} {name}")
    assert not missing, f"document these in their docs/cli.md section: {missing}"


def test_cli_exit_codes_are_documented():
    from backend.errors import QuorumError

    codes = {0, 6}  # success; database unreachable (backend.cli.main)
    todo = [QuorumError]
    while todo:
        cls = todo.pop()
        codes.add(cls.exit_code)
        todo.extend(cls.__subclasses__())
    doc = _read("cli.md")
    missing = sorted(c for c in codes if not re.search(rf"^\|\s*{c}\s*\|", doc, re.M))
    assert not missing, f"docs/cli.md's exit code table lacks: {missing}"


# ---------------------------------------------------------------- API
def test_every_api_route_is_documented():
    from backend.app import create_app

    # The OpenAPI paths: FastAPI nests included routers, so app.routes is not flat.
    paths = create_app(database_url="sqlite:///:memory:").openapi()["paths"]
    doc = _read("api.md")
    routes = {(m.upper(), p) for p, ops in paths.items() if p.startswith("/api/") for m in ops}
    assert ("POST", "/api/v1/items") in routes
    missing = sorted(f"{m} {p}" for m, p in routes
                     if not re.search(rf"`{m} {re.escape(p)}`", doc))
    assert not missing, f"docs/api.md does not list: {missing}"
    assert "/healthz" in doc and "/docs" in doc


def test_every_error_code_is_documented():
    from backend.errors import QuorumError

    codes = {"unavailable", "internal"}  # backend.app's handlers
    todo = [QuorumError]
    while todo:
        cls = todo.pop()
        codes.add(cls.code)
        todo.extend(cls.__subclasses__())
    doc = _read("api.md")
    missing = sorted(c for c in codes if f"`{c}`" not in doc)
    assert not missing, f"docs/api.md does not explain the error codes: {missing}"


# ---------------------------------------------------------------- README
@pytest.mark.parametrize("command", ["make demo", "make test"])
def test_readme_mentions(command):
    readme = ROOT / "README.md"
    if not readme.exists():
        pytest.skip("README.md is not written yet")
    assert command in readme.read_text(encoding="utf-8")


@pytest.mark.parametrize("name", ["configuration.md", "cli.md", "api.md", "deploy.md"])
def test_doc_links_resolve(name):
    """Relative links between the docs (and to the repository's files) point somewhere."""
    doc = _read(name)
    broken = [target for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", doc)
              if "://" not in target and not (DOCS / target).exists()]
    assert not broken, f"docs/{name} links to missing files: {broken}"
