"""The deployment files (deploy/) and the configuration reference, checked without a Docker engine: every manifest
parses, every file one references exists, every variable a container is given is valid configuration for the real
binary and documented in docs/CONFIG.md, the container healthcheck works against a live pgpilot, and every series the
Grafana dashboard draws exists in a live pgpilot's /metrics. `docker compose config` (or Debian's docker-compose) validates the compose file."""
import configparser
import json
import os
import re
import shutil
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import asyncpg
import pytest
import yaml

import config_md
from conftest import free_port, pg_host, pg_port, require_env, run_async, wait_cache_ready, wait_until

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "docker-compose.yml"


def compose():
    return yaml.safe_load(COMPOSE.read_text())


def k8s_docs():
    return [d for f in sorted((DEPLOY / "k8s").glob("*.yaml")) for d in yaml.safe_load_all(f.read_text()) if d]


def test_the_configuration_reference_is_generated_from_the_example():
    assert config_md.render() == (ROOT / "docs" / "CONFIG.md").read_text(), \
        "docs/CONFIG.md is stale: python3 tests/clients/config_md.py > docs/CONFIG.md"


def test_manifests_parse_and_every_file_they_reference_exists():
    c = compose()
    assert {"postgres", "redis", "pgpilot", "prometheus", "grafana", "codebase-mcp", "workflow-mcp"} <= set(c["services"])
    for name, svc in c["services"].items():
        for vol in svc.get("volumes", []):
            src = vol.split(":")[0]
            if src.startswith("."):
                assert (DEPLOY / src).exists(), f"{name}: {src}"
        build = svc.get("build")
        if build:
            context = (DEPLOY / build["context"]).resolve()
            dockerfile = context / build["dockerfile"]
            assert dockerfile.exists()
            for line in dockerfile.read_text().splitlines():
                if line.startswith("COPY ") and "--from" not in line:
                    for src in line.split()[1:-1]:
                        assert (context / src).exists(), f"Dockerfile copies {src}"
    # Healthchecks on /health and the order they give.
    assert c["services"]["pgpilot"]["healthcheck"]["test"] == ["CMD", "pgpilot-health"]
    for mcp in ("codebase-mcp", "workflow-mcp"):
        env = c["services"][mcp]["environment"]
        assert env["DB_HOST"] == "pgpilot" and env["DB_PORT"] == "6432"
        assert env["DATABASE_URL"].startswith("postgresql+asyncpg://") and "@pgpilot:6432/" in env["DATABASE_URL"]
        assert c["services"][mcp]["depends_on"]["pgpilot"]["condition"] == "service_healthy"
    assert c["services"]["pgpilot"]["depends_on"]["redis"]["condition"] == "service_healthy"
    prom = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    assert prom["scrape_configs"][0]["static_configs"][0]["targets"] == ["pgpilot:9930"]
    for f in (DEPLOY / "grafana" / "provisioning").rglob("*.yml"):
        assert yaml.safe_load(f.read_text())["apiVersion"] == 1, f
    kinds = {d["kind"]: d for d in k8s_docs()}
    assert {"Deployment", "ConfigMap", "Secret"} <= set(kinds)
    pod = kinds["Deployment"]["spec"]["template"]["spec"]
    # A native sidecar: started before the application (once its startup probe passes), stopped after it.
    sidecar = next(c for c in pod["initContainers"] if c["name"] == "pgpilot")
    assert sidecar["restartPolicy"] == "Always" and sidecar["startupProbe"]["httpGet"]["path"] == "/health"
    assert all(c["name"] != "pgpilot" for c in pod["containers"])
    assert sidecar["readinessProbe"]["httpGet"]["path"] == "/health"
    assert sidecar["livenessProbe"]["httpGet"]["path"] == "/health?live"  # not restarted for a database outage
    assert sidecar["lifecycle"]["preStop"]["exec"]["command"]
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.read_string((DEPLOY / "systemd" / "pgpilot.service").read_text())
    assert unit["Service"]["ExecReload"].endswith("-HUP $MAINPID") and unit["Service"]["KillSignal"] == "SIGTERM"


def container_envs():
    """(where, {variable: value}) for every container pgpilot runs in, as the manifests give them."""
    # `${NAME:-default}`: what compose gives the container when NAME is not set.
    unset = lambda v: re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", v) if isinstance(v, str) else v
    out = [("compose", {k: unset(v) for k, v in compose()["services"]["pgpilot"]["environment"].items()})]
    docs = k8s_docs()
    secret = next(d for d in docs if d["kind"] == "Secret")["stringData"]
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    sidecar = next(c for c in deployment["spec"]["template"]["spec"]["initContainers"] if c["name"] == "pgpilot")
    env = {}
    for e in sidecar["env"]:
        env[e["name"]] = e["value"] if "value" in e else secret[e["valueFrom"]["secretKeyRef"]["key"]]
    out.append(("k8s", env))
    return out, secret


def test_every_variable_a_container_gets_is_valid_and_documented(tmp_path):
    binary = require_env("PGPILOT_BIN")
    documented = (ROOT / "docs" / "CONFIG.md").read_text()
    envs, secret = container_envs()
    configmap = next(d for d in k8s_docs() if d["kind"] == "ConfigMap")["data"]["pgpilot.toml"]
    (tmp_path / "pgpilot.toml").write_text(configmap)
    (tmp_path / "users.toml").write_text(secret["users.toml"])
    for where, env in envs:
        for name in env:
            assert name in documented, f"{where}: {name} is not in docs/CONFIG.md"
        run_env = {k: v for k, v in os.environ.items() if not k.startswith("PGPILOT_") and k != "DATABASE_URL"}
        run_env.update({k: str(v) for k, v in env.items()})
        if "PGPILOT_USERS_FILE" in run_env:
            run_env["PGPILOT_USERS_FILE"] = str(tmp_path / "users.toml")
        args = [binary, "--check"] + (["--config", str(tmp_path / "pgpilot.toml")] if where == "k8s" else [])
        r = subprocess.run(args, env=run_env, capture_output=True, text=True)
        assert r.returncode == 0, f"{where}: {r.stderr}"
        assert "change-me" not in r.stdout and "app:app@" not in r.stdout, "secrets masked"
    # The systemd unit's command line with the example configuration.
    unit = (DEPLOY / "systemd" / "pgpilot.service").read_text()
    exec_start = re.search(r"^ExecStart=(\S+) (.*)$", unit, re.M).group(2).split()
    exec_start[exec_start.index("--config") + 1] = str(ROOT / "config" / "pgpilot.toml")
    r = subprocess.run([binary, "--check", *exec_start], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_the_compose_page_opens_with_its_token_on_the_wide_bind(tmp_path):
    """The sidecar's HTTP port is bound to 0.0.0.0 in the container: the page and /queries need the compose file's
    token (the URL its comment gives), /metrics and /health do not."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PGPILOT_") and k != "DATABASE_URL"}
    env.update(container_envs()[0][0][1])
    env.pop("PGPILOT_CACHE_REDIS_URL")
    env["DATABASE_URL"] = f"postgres://app:app@{pg_host()}:{pg_port()}"
    token = env["PGPILOT_HTTP_TOKEN"]
    assert f"http://localhost:9930/?token={token}" in COMPOSE.read_text()
    http = free_port()
    proc = subprocess.Popen([require_env("PGPILOT_BIN"), "--listen", f"127.0.0.1:{free_port()}",
                             "--http-listen", f"0.0.0.0:{http}"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)

    def get(path):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{http}{path}", timeout=5) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, ""
    try:
        wait_until(lambda: get_or_none(get, "/health"), 10, message="pgpilot's HTTP port")
        status, page = get(f"/?token={token}")
        assert status == 200 and "<html" in page.lower(), status
        assert get("/")[0] == 401 and get("/queries")[0] == 401
        assert get("/metrics")[0] == 200
    finally:
        proc.terminate()
        proc.wait(10)


def get_or_none(get, path):
    try:
        return get(path)[0] == 200
    except OSError:
        return False


def test_every_flag_the_docs_give_pgpilot_exists():
    """Each `pgpilot --flag` / `./run --flag` written in README.md, docs/ and deploy/ is one the binary accepts (a
    renamed flag would leave the docs telling users to run a command that fails)."""
    binary = require_env("PGPILOT_BIN")
    accepted = set(re.findall(r"(?<![\w-])(--[a-z][a-z-]*)", subprocess.run([binary, "--help"], capture_output=True,
                                                                     text=True, check=True).stdout))
    files = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), *sorted(p for p in DEPLOY.rglob("*") if p.is_file())]
    written = {}
    for f in files:
        for cmd in re.findall(r"(?:\bpgpilot|\./run|cargo run --release --)((?: +--[a-z][a-z-]*(?:[ =][^ `|\n]+)?)+)",
                              f.read_text(errors="replace")):
            for flag in re.findall(r"(--[a-z][a-z-]*)", cmd):
                written.setdefault(flag, f.relative_to(ROOT).as_posix())
    assert {"--upstream", "--config", "--check", "--from-pgbouncer"} <= set(written), written
    unknown = {flag: where for flag, where in written.items() if flag not in accepted}
    assert not unknown, f"flags the docs give that pgpilot does not accept: {unknown}"


def test_the_container_healthcheck_follows_health(start_proxy):
    proxy = start_proxy()
    script = str(DEPLOY / "pgpilot-health")
    ok = subprocess.run([script], env={**os.environ, "PGPILOT_HEALTH_PORT": str(proxy.http_port)})
    assert ok.returncode == 0
    closed = subprocess.run([script], env={**os.environ, "PGPILOT_HEALTH_PORT": "1"}, stderr=subprocess.DEVNULL)
    assert closed.returncode != 0


def compose_command():
    """Docker's compose plugin where it is installed, else Debian's docker-compose 1.29 (which reads the
    Compose Specification too): either validates the file without a Docker engine."""
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return None


def test_docker_compose_config():
    cmd = compose_command()
    if cmd is None:
        pytest.skip("neither docker compose nor docker-compose is installed")
    r = subprocess.run([*cmd, "-f", str(COMPOSE), "config", "-q"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    # The check can fail: a dependency on a service the file does not define is refused.
    broken = COMPOSE.read_text().replace("depends_on:", "depends_on:\n      no-such-service:\n        condition: service_started", 1)
    bad = DEPLOY / ".compose-check.yml"
    bad.write_text(broken)
    try:
        r = subprocess.run([*cmd, "-f", str(bad), "config", "-q"], capture_output=True, text=True)
    finally:
        bad.unlink()
    assert r.returncode != 0 and "no-such-service" in r.stderr, r.stderr


def dashboard_series():
    dash = json.loads((DEPLOY / "grafana" / "dashboards" / "pgpilot.json").read_text())
    names = set()
    for panel in dash["panels"]:
        assert panel["targets"], panel["title"]
        for t in panel["targets"]:
            names |= set(re.findall(r"pgpilot_[a-z0-9_]+", t["expr"]))
    return names


def test_every_series_the_dashboard_draws_exists_on_a_live_pgpilot(start_proxy):
    toml = "[insights]\nslow_query_ms = 1\nn_plus_one_min_total_ms = 0\nindex_usage_interval_s = 1\n"
    proxy = start_proxy(pool_size=4, extra_toml=toml)
    wait_cache_ready(proxy, "pgbench_branches", db="bench")

    async def load():
        c = await asyncpg.connect(proxy.dsn("bench"))
        try:
            for _ in range(3):
                await c.fetchval("SELECT count(*) FROM pgbench_branches")  # a miss, then hits
            await c.execute("SELECT pg_sleep(0.01)")  # slow
            tellers = await c.fetch("SELECT tid FROM pgbench_tellers ORDER BY tid LIMIT 8")
            for t in tellers:  # N+1
                await c.fetchval("SELECT tbalance FROM pgbench_tellers WHERE tid = $1", t["tid"])
            await c.execute("UPDATE pgbench_branches SET bbalance = bbalance WHERE bid = 1")  # invalidates
            await c.fetchval("SELECT count(*) FROM pgbench_branches")
        finally:
            await c.close()
    run_async(load(), 30)

    def index_usage():
        _, body = proxy.http_get("/health/status")
        return json.loads(body)["index_usage"]
    usage = wait_until(index_usage, 10, interval=0.2, message="index usage read")
    assert any(t["database"] == "bench" and t["table"] == "pgbench_accounts" for t in usage), usage
    _, body = proxy.http_get("/health/status")
    pkey = next(i for i in json.loads(body)["indexes"] if i["index"] == "pgbench_accounts_pkey")
    assert pkey["bloat_percent"] is not None and pkey["bloat_percent"] < 20, pkey  # fresh from pgbench -i
    _, metrics = proxy.http_get("/metrics")
    present = {line.split("{")[0].split(" ")[0] for line in metrics.splitlines() if line.startswith("pgpilot_")}
    missing = sorted(n for n in dashboard_series() if n not in present)
    assert not missing, f"series the dashboard draws that /metrics lacks: {missing}"
