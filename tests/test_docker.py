"""The Docker image and the compose stack, checked without a Docker engine.

- ``docker/compose.yaml`` is validated against the Compose Specification's JSON schema
  (the copy shipped by ``check-jsonschema``, a ``dev`` dependency: offline);
- what an operator would check: health checks and start order, restart policies, the
  database URL, every ``QUORUM_*`` variable being a real setting or a container knob;
- the Dockerfile: non-root, dependency layer before the code, health check, entrypoint;
- ``docker/entrypoint.sh`` runs for real, with ``quorum`` and ``uvicorn`` replaced by
  stubs that record their arguments;
- the job workers: a ``worker`` service that scales (``--scale worker=N``) and a ``gpu``
  profile reserving NVIDIA devices for the embed queue.
"""

from __future__ import annotations

import fnmatch
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.test_docs import (
    COMPOSE_ONLY_VARIABLES,
    docker_script_variables,
    settings_classes,
    settings_env_vars,
)

ROOT = Path(__file__).resolve().parent.parent
DOCKER = ROOT / "docker"
COMPOSE = DOCKER / "compose.yaml"
APP_SERVICES = ("migrate", "api", "worker")
SH = shutil.which("sh") or "/bin/sh"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def _interpolate(value: str, env: dict[str, str] | None = None) -> str:
    """Compose's ``${VAR}``, ``${VAR:-default}``, ``${VAR:?error}`` with the defaults."""
    env = env or {}

    def sub(m: re.Match[str]) -> str:
        name, op, arg = m.group(1), m.group(2), m.group(3) or ""
        if env.get(name):
            return env[name]
        if op == ":?":
            raise KeyError(f"{name} is required: {arg}")
        return arg if op == ":-" else ""

    return re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:-|:\?)([^}]*))?\}", sub, value)


def _strings(node: Any) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [s for k, v in node.items() for s in (*_strings(k), *_strings(v))]
    if isinstance(node, list):
        return [s for v in node for s in _strings(v)]
    return []


# ---------------------------------------------------------------- compose: the schema
def _check_schema(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec",
         str(path)], capture_output=True, text=True, timeout=120)


def test_compose_file_follows_the_compose_specification():
    pytest.importorskip("check_jsonschema", reason="pip install -e '.[dev]'")
    result = _check_schema(COMPOSE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_schema_check_catches_a_broken_compose_file(tmp_path):
    """The validation is not a rubber stamp: a misspelt key and a bad condition fail."""
    pytest.importorskip("check_jsonschema", reason="pip install -e '.[dev]'")
    text = COMPOSE.read_text()
    for broken in (text.replace("    healthcheck:", "    healthchek:", 1),
                   text.replace("service_completed_successfully", "service_done", 1)):
        assert broken != text
        path = tmp_path / "compose.yaml"
        path.write_text(broken)
        assert _check_schema(path).returncode != 0


def test_compose_interpolation_is_well_formed():
    """Every ``$`` is ``$$`` or a ``${NAME...}``: Compose refuses anything else."""
    for n, line in enumerate(COMPOSE.read_text().splitlines(), start=1):
        if line.lstrip().startswith("#"):
            continue
        rest = re.sub(r"\$\$|\$\{[A-Za-z_][A-Za-z0-9_]*(?:(?::?-|:?\?)[^}]*)?\}", "", line)
        assert "$" not in rest, f"docker/compose.yaml:{n}: bad interpolation: {line.strip()}"


def test_compose_config_with_a_real_compose_binary(tmp_path):
    """Where Docker Compose is installed (a developer's machine), it must accept the file."""
    exe = shutil.which("docker-compose")
    cmd = [exe] if exe else None
    if cmd is None and shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True)
        cmd = ["docker", "compose"] if probe.returncode == 0 else None
    if cmd is None:
        pytest.skip("Docker Compose is not installed (the schema test covers the file)")
    env = {**os.environ, "QUORUM_SECRET_KEY": "test-secret"}
    r = subprocess.run([*cmd, "-f", str(COMPOSE), "config", "--quiet"], env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    env.pop("QUORUM_SECRET_KEY")
    r = subprocess.run([*cmd, "-f", str(COMPOSE), "config", "--quiet"], env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "QUORUM_SECRET_KEY" in r.stderr


# ---------------------------------------------------------------- compose: what an operator checks
def test_services_and_start_order(compose):
    services = compose["services"]
    assert set(services) >= {"db", "migrate", *APP_SERVICES}
    for name, svc in services.items():
        conditions = [d.get("condition") for d in (svc.get("depends_on") or {}).values()
                      if isinstance(d, dict)]
        assert svc.get("healthcheck") or conditions, f"{name}: no healthcheck, no wait"
        if isinstance(svc.get("depends_on"), dict):
            assert all(conditions), f"{name}: every depends_on needs a condition"
        if svc.get("healthcheck"):
            assert not svc["healthcheck"].get("disable"), name
    db = services["db"]
    assert db["image"] == "pgvector/pgvector:pg17"
    assert "pg_isready" in " ".join(db["healthcheck"]["test"])
    assert any(v.endswith(":/var/lib/postgresql/data") for v in db["volumes"])
    migrate = services["migrate"]
    assert migrate["command"] == ["quorum", "db", "upgrade"]
    assert migrate["depends_on"]["db"]["condition"] == "service_healthy"
    for name in ("api", "worker"):
        deps = services[name]["depends_on"]
        assert deps["migrate"]["condition"] == "service_completed_successfully", name


def test_restart_policies(compose):
    services = compose["services"]
    assert services["migrate"]["restart"] == "no"  # one-shot: a loop would hide failures
    for name in ("db", "api", "worker"):
        assert services[name]["restart"] in ("always", "unless-stopped"), name


def test_api_port_and_healthcheck(compose):
    api = compose["services"]["api"]
    assert api["command"] == ["api"]
    published = [_interpolate(p) for p in api["ports"]]
    assert published == ["8000:8000"]
    probe = " ".join(api["healthcheck"]["test"])
    assert "http://127.0.0.1:8000/healthz" in probe
    entrypoint = (DOCKER / "entrypoint.sh").read_text()
    assert "--port 8000" in entrypoint and "--host 0.0.0.0" in entrypoint


def test_healthz_is_a_route_of_the_app():
    from backend.app import create_app

    app = create_app(database_url="sqlite:///:memory:")
    assert "/healthz" in {getattr(r, "path", None) for r in app.routes}


def test_worker_healthcheck_reads_the_heartbeat_the_worker_writes(compose):
    worker = compose["services"]["worker"]
    assert worker["command"] == ["worker"]
    beat = worker["environment"]["QUORUM_JOBS_HEARTBEAT_FILE"]
    assert beat in " ".join(worker["healthcheck"]["test"])
    from backend.jobs.settings import JobSettings

    assert "heartbeat_file" in JobSettings.model_fields  # a setting the worker reads


def test_worker_service_scales_out(compose):
    """``--scale worker=N`` needs a service with nothing unique per replica."""
    worker = compose["services"]["worker"]
    for unique in ("container_name", "ports", "hostname"):
        assert unique not in worker, f"worker: {unique} would stop it from scaling"
    assert worker["stop_grace_period"]  # SIGTERM lets running jobs finish
    queues = _interpolate(worker["environment"]["QUORUM_WORKER_QUEUES"])
    assert queues == ""  # every queue by default


def test_gpu_worker_is_an_optional_profile_reserving_nvidia_devices(compose):
    gpu = compose["services"]["worker-gpu"]
    assert gpu["profiles"] == ["gpu"]  # not started unless asked for
    [device] = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
    assert gpu["environment"]["QUORUM_WORKER_QUEUES"] == "embed"
    assert "cu1" in gpu["build"]["args"]["TORCH_INDEX_URL"]
    assert gpu["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert gpu["healthcheck"] == compose["services"]["worker"]["healthcheck"]
    assert not (DOCKER / "worker.sh").exists()  # the shell loop is gone


def _app_environment(compose: dict[str, Any], service: str) -> dict[str, str]:
    env = compose["services"][service]["environment"]
    return {k: _interpolate(str(v), {"QUORUM_SECRET_KEY": "s3cret"}) for k, v in env.items()}


def test_every_quorum_variable_in_compose_is_real(compose):
    """A misspelt QUORUM_ name is silently ignored by the settings: catch it here."""
    settings = set(settings_env_vars())
    knobs = docker_script_variables()
    used = set()
    for svc in APP_SERVICES:
        used |= set(compose["services"][svc]["environment"])
    used |= {m for s in _strings(compose) for m in re.findall(r"\$\{(QUORUM_[A-Z0-9_]+)", s)}
    unknown = sorted(v for v in used if v.startswith("QUORUM_")
                     and v not in settings | knobs | COMPOSE_ONLY_VARIABLES)
    assert not unknown, f"docker/compose.yaml uses variables nothing reads: {unknown}"
    assert {"QUORUM_DATABASE_URL", "QUORUM_SECRET_KEY"} <= used


def test_compose_environment_parses_as_settings(compose, monkeypatch):
    """The values compose passes are valid settings and point at the db service."""
    from sqlalchemy.engine import make_url

    env = _app_environment(compose, "api")
    for name in list(os.environ):
        if name.startswith("QUORUM_"):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    values = {}
    for cls in settings_classes():
        values[cls] = cls()
    from backend.settings import Settings

    settings = values[Settings]
    assert settings.secret_key.get_secret_value() == "s3cret"
    url = make_url(settings.resolved_database_url)
    db_env = compose["services"]["db"]["environment"]
    assert url.drivername == "postgresql+psycopg"
    assert (url.host, url.port, url.database) == ("db", 5432, db_env["POSTGRES_DB"])
    assert url.username == db_env["POSTGRES_USER"]
    assert url.password == _interpolate(db_env["POSTGRES_PASSWORD"]) == "quorum"
    assert str(settings.data_dir) == "/var/lib/quorum"
    assert _interpolate(env.get("QUORUM_WEB_WORKERS", "")) == "4"
    for svc in APP_SERVICES:  # one database for all three
        assert _app_environment(compose, svc)["QUORUM_DATABASE_URL"] == env["QUORUM_DATABASE_URL"]


def test_secret_key_is_required(compose):
    raw = compose["services"]["api"]["environment"]["QUORUM_SECRET_KEY"]
    with pytest.raises(KeyError):
        _interpolate(raw)


def test_compose_variables_are_documented(compose):
    names = {m for s in _strings(compose) for m in re.findall(r"\$\{([A-Z0-9_]+)", s)}
    assert {"POSTGRES_PASSWORD", "QUORUM_SECRET_KEY"} <= names
    deploy = (ROOT / "docs" / "deploy.md").read_text()
    missing = sorted(n for n in names if f"`{n}`" not in deploy)
    assert not missing, f"docs/deploy.md does not explain: {missing}"


# ---------------------------------------------------------------- the Dockerfile
def _instructions() -> list[tuple[str, str]]:
    text = (DOCKER / "Dockerfile").read_text()
    text = re.sub(r"\\\n", " ", text)
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def _index(instructions: list[tuple[str, str]], word: str, pattern: str) -> int:
    for i, (w, rest) in enumerate(instructions):
        if w == word and re.search(pattern, rest):
            return i
    raise AssertionError(f"no {word} matching {pattern!r} in docker/Dockerfile")


def test_dockerfile_runs_as_a_non_root_user():
    ins = _instructions()
    assert ins[0] == ("FROM", "python:3.11-slim")
    users = [(i, rest) for i, (w, rest) in enumerate(ins) if w == "USER"]
    assert users, "no USER line: the container would run as root"
    last_index, last_user = users[-1]
    assert last_user.split(":")[0] not in ("root", "0")
    assert re.search(rf"useradd .*\b{re.escape(last_user)}\b", " ".join(r for _, r in ins))
    assert last_index < _index(ins, "ENTRYPOINT", "entrypoint.sh")
    assert last_index < _index(ins, "CMD", "api")


def test_dockerfile_installs_dependencies_before_the_code():
    ins = _instructions()
    pyproject = _index(ins, "COPY", r"^pyproject\.toml ")
    deps = _index(ins, "RUN", r"pip install .*-r ")
    code = min(_index(ins, "COPY", rf"^{pkg} ") for pkg in ("backend", "ml", "crowd"))
    package = _index(ins, "RUN", r"pip install .*--no-deps")
    assert pyproject < deps < code < package
    assert "download.pytorch.org/whl/cpu" in " ".join(r for _, r in ins)


def test_dockerfile_healthcheck_and_entrypoint():
    ins = _instructions()
    health = ins[_index(ins, "HEALTHCHECK", "")][1]
    assert "http://127.0.0.1:8000/healthz" in health
    assert ins[_index(ins, "EXPOSE", "")][1] == "8000"
    entrypoint = ins[_index(ins, "ENTRYPOINT", "")][1]
    assert entrypoint == '["/app/docker/entrypoint.sh"]'
    copies = " ".join(r for w, r in ins if w == "COPY")
    assert "docker/entrypoint.sh" in copies and "worker.sh" not in copies


def _ignored(path: str, patterns: list[str]) -> bool:
    """Roughly Docker's matching: a pattern matches the path or one of its parents;
    a leading ``**/`` matches any depth, the root included."""
    parts = path.split("/")
    prefixes = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    expanded = [q for p in patterns for q in (p, p.removeprefix("**/"))]
    return any(fnmatch.fnmatch(prefix, p) for prefix in prefixes for p in expanded)


def test_dockerfile_copies_only_what_the_context_has():
    patterns = [p.strip().removeprefix("/") for p in (ROOT / ".dockerignore").read_text()
                .splitlines() if p.strip() and not p.startswith("#")]
    for word, rest in _instructions():
        if word != "COPY" or rest.startswith("--from"):
            continue
        *sources, _dest = shlex.split(rest)
        for src in sources:
            if src == "README.md" and not (ROOT / src).exists():
                continue  # written by the lead; pyproject's readme needs it too
            assert (ROOT / src).exists(), f"COPY {src}: not in the repository"
            assert not _ignored(src, patterns), f"COPY {src}: excluded by .dockerignore"
    for secret in ("docker/quorum.env", ".env", ".venv", ".git", "var"):
        assert _ignored(secret, patterns), f".dockerignore should exclude {secret}"


def test_requirements_script_lists_dependencies_and_extras():
    r = subprocess.run([sys.executable, str(DOCKER / "requirements.py"), "safety"], cwd=ROOT,
                       capture_output=True, text=True, check=True)
    lines = r.stdout.splitlines()
    assert "torch==2.14.1" in lines and "torchvision==0.29.1" in lines
    assert any(line.startswith("nudenet") for line in lines)
    assert not any(line.startswith("pytest") for line in lines)


# ---------------------------------------------------------------- the scripts, run for real
@pytest.fixture
def stubs(tmp_path):
    """``quorum`` and ``uvicorn`` stubs that log their arguments; QUORUM_STUB_FAIL=cmd fails."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls.log"
    for name in ("quorum", "uvicorn"):
        stub = bin_dir / name
        stub.write_text(f'#!/bin/sh\necho "{name} $*" >> "{log}"\n'
                        f'[ -n "${{QUORUM_STUB_FAIL:-}}" ] && [ "$1" = "$QUORUM_STUB_FAIL" ]'
                        " && exit 6\nexit 0\n")
        stub.chmod(0o755)

    def run(script: str, *args: str, **env: str) -> tuple[int, list[str]]:
        base = {k: v for k, v in os.environ.items() if not k.startswith("QUORUM_")}
        full_env = {**base, "PATH": f"{bin_dir}:{os.environ['PATH']}", **env}
        r = subprocess.run([SH, str(DOCKER / script), *args], env=full_env,
                           capture_output=True, text=True, timeout=30)
        calls = log.read_text().splitlines() if log.exists() else []
        log.unlink(missing_ok=True)
        return r.returncode, calls

    return run


def test_entrypoint_migrates_then_serves_with_several_workers(stubs):
    rc, calls = stubs("entrypoint.sh")
    assert rc == 0
    assert calls[0] == "quorum db upgrade"
    assert calls[1].startswith("uvicorn backend.asgi:app ")
    assert "--workers 4" in calls[1] and "--port 8000" in calls[1]
    rc, calls = stubs("entrypoint.sh", "api", QUORUM_WEB_WORKERS="9")
    assert rc == 0 and "--workers 9" in calls[1]


def test_entrypoint_does_not_serve_when_the_migration_fails(stubs):
    rc, calls = stubs("entrypoint.sh", "api", QUORUM_STUB_FAIL="db")
    assert rc == 6 and calls == ["quorum db upgrade"]


def test_entrypoint_can_skip_the_migration_and_run_anything(stubs):
    rc, calls = stubs("entrypoint.sh", "api", QUORUM_MIGRATE_ON_START="0")
    assert rc == 0 and len(calls) == 1 and calls[0].startswith("uvicorn ")
    rc, calls = stubs("entrypoint.sh", "quorum", "users", "add", "ana", "--role", "analyst")
    assert rc == 0 and calls == ["quorum users add ana --role analyst"]


def test_entrypoint_worker_runs_the_job_worker_on_its_queues(stubs):
    rc, calls = stubs("entrypoint.sh", "worker")
    assert (rc, calls) == (0, ["quorum worker"])
    rc, calls = stubs("entrypoint.sh", "worker", "--concurrency", "4",
                      QUORUM_WORKER_QUEUES="embed,crowd")
    assert (rc, calls) == (0, ["quorum worker --queues embed,crowd --concurrency 4"])
    rc, calls = stubs("entrypoint.sh", "worker", QUORUM_STUB_FAIL="worker")
    assert rc == 6  # its exit status is the container's (compose restarts it)
