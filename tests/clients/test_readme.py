"""What a new user meets before anything works: the README's commands on a machine that lacks something say in one
line which package to install (not a bindgen panic minutes in), and pgpilot's first log line says where clients
connect and as whom. The commands themselves run as written in .ci/run, on a machine without clang."""
import os
import subprocess
from pathlib import Path

from conftest import wait_until

REPO = Path(__file__).resolve().parents[2]


def stub(bin_dir, name, script):
    path = bin_dir / name
    path.write_text("#!/bin/sh\n" + script + "\n")
    path.chmod(0o755)


def machine(tmp_path, keep, libclang_installed):
    """A PATH with only `keep` of the machine's commands, a non-root `id`, a `cargo` that records being called, and
    a `dpkg-query` that knows libclang-dev only when `libclang_installed`."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in keep:
        real = subprocess.run(["sh", "-c", f"command -v {name}"], capture_output=True, text=True).stdout.strip()
        assert real, f"{name} is not on this machine"
        (bin_dir / name).symlink_to(real)
    stub(bin_dir, "id", 'echo 1000')
    stub(bin_dir, "cargo", f'touch "{tmp_path}/cargo-ran"; exit 0')
    status = "install ok installed" if libclang_installed else ""
    stub(bin_dir, "dpkg-query", f'case "$*" in *libclang-dev*) printf "{status}";; esac')
    env = {k: v for k, v in os.environ.items() if k not in ("LIBCLANG_PATH", "PGPILOT_VENV")}
    env["PATH"] = str(bin_dir)
    env["PGPILOT_VENV"] = str(tmp_path / "venv")
    return env


BASICS = ["bash", "sh", "dirname", "grep", "ls", "sort", "touch"]


def test_run_without_libclang_names_the_package_in_one_line(tmp_path):
    env = machine(tmp_path, BASICS, libclang_installed=False)
    out = subprocess.run(["bash", str(REPO / "run"), "--upstream", "postgres://u:p@127.0.0.1:5432"],
                         capture_output=True, text=True, env=env, timeout=30)
    assert out.returncode == 1, out
    assert out.stderr.splitlines() == [
        "pgpilot: building needs libclang (or set LIBCLANG_PATH): apt-get install clang libclang-dev"], out.stderr
    assert not (tmp_path / "cargo-ran").exists(), "cargo ran although its build could not succeed"


def test_run_with_libclang_goes_on_to_cargo(tmp_path):
    env = machine(tmp_path, BASICS, libclang_installed=True)
    out = subprocess.run(["bash", str(REPO / "run"), "--help"], capture_output=True, text=True, env=env, timeout=30)
    assert out.returncode == 0, out
    assert (tmp_path / "cargo-ran").exists()


def test_tests_run_names_what_the_machine_lacks_before_building(tmp_path):
    """Nothing of the suite's tools on PATH (psql, redis-server, chromium, ...): one line naming their packages."""
    env = machine(tmp_path, BASICS + ["python3"], libclang_installed=True)
    out = subprocess.run(["bash", str(REPO / "tests" / "run.sh")], capture_output=True, text=True, env=env,
                         timeout=30)
    assert out.returncode == 1, out
    lines = out.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("tests/run.sh: the tests need: apt-get install "), out.stderr
    named = set(lines[0].split("apt-get install ", 1)[1].split())
    assert {"postgresql-client-15", "redis-server", "chromium", "socat"} <= named, named
    assert not (tmp_path / "cargo-ran").exists()


def test_first_log_line_says_where_clients_connect(start_proxy):
    proxy = start_proxy()
    want = (f"clients connect to postgres://app:PASSWORD@127.0.0.1:{proxy.port}/DATABASE as app with the upstream"
            f" URL's password (upstream {proxy.upstream.rsplit('@', 1)[1]})")
    # (the proxy listens a moment before it logs the line: the fixture returns at the first connect)
    wait_until(lambda: want in proxy.stderr_text(), 5, message="the start line in pgpilot's log")
