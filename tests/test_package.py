"""The package stands alone: built as a wheel, installed into a clean venv outside the source tree,
its CLI validates the packaged demo and its worker runs a campaign against a real Temporal dev
server, finding every run-time file through importlib.resources."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.package, pytest.mark.timeout(600)]
ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False, **kw)


@pytest.fixture(scope="module")
def clean_venv(tmp_path_factory) -> Path:
    """A venv that has only the wheel and its dependencies (none of the source tree)."""
    tmp = tmp_path_factory.mktemp("wheel")
    built = run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp / "dist"), str(ROOT)])
    assert built.returncode == 0, built.stderr[-2000:]
    (wheel,) = (tmp / "dist").glob("crossvisor-*.whl")
    venv = tmp / "venv"
    assert run([sys.executable, "-m", "venv", str(venv)]).returncode == 0
    inst = run([str(venv / "bin/pip"), "install", "-q", str(wheel)])
    assert inst.returncode == 0, inst.stderr[-2000:]
    return venv


def clean_env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CROSSVISOR_", "PYTHON", "VIRTUAL_ENV"))}
    return {**env, "CROSSVISOR_HOME": str(home), **extra}


def test_cli_and_worker_run_from_the_wheel(clean_venv: Path, tmp_path: Path) -> None:
    py, cli = str(clean_venv / "bin/python"), str(clean_venv / "bin/crossvisor")
    work = tmp_path / "elsewhere"  # not the source tree, nothing of it on the path
    work.mkdir()
    env = clean_env(tmp_path / "home")
    where = run(
        [py, "-c", "import drivers, deploy, worker; print(drivers.__file__, deploy.__file__, worker.__file__)"],
        cwd=work,
        env=env,
    )
    assert where.returncode == 0, where.stderr
    assert str(ROOT) not in where.stdout and str(clean_venv) in where.stdout
    demo = run(
        [py, "-c", "from crossvisor.core.resources import example; print(example('demo.yaml'))"], cwd=work, env=env
    )
    demo_spec = demo.stdout.strip()
    assert demo_spec.startswith(str(clean_venv)), demo.stdout + demo.stderr
    v = run([cli, "validate", demo_spec], cwd=work, env=env)
    assert v.returncode == 0 and "ok, 8 cells" in v.stdout, v.stdout + v.stderr
    guest_script = run(
        [
            py,
            "-c",
            "from crossvisor.core.resources import deploy_file; import os; print(deploy_file('guests', 'build-guest-image.sh')); print(os.path.isfile(deploy_file('guests', 'image', 'cv-lib.sh')))",
        ],
        cwd=work,
        env=env,
    )
    assert guest_script.returncode == 0 and guest_script.stdout.startswith(str(clean_venv)), guest_script.stderr
    assert guest_script.stdout.split()[1] == "True", "the guest image's in-guest files are not in the wheel"

    # a real dev server (the wheel's own temporal binary) and the wheel's worker
    port = free_port()
    address = f"127.0.0.1:{port}"
    server = subprocess.Popen(
        [
            str(clean_venv / "bin/temporal"),
            "server",
            "start-dev",
            "--headless",
            "--ip",
            "127.0.0.1",
            "--port",
            str(port),
            "--http-port",
            str(free_port()),
            "--metrics-port",
            str(free_port()),
            "--db-filename",
            str(tmp_path / "t.db"),
            "--log-level",
            "error",
        ],  # fmt: skip
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    wenv = clean_env(
        tmp_path / "home",
        CROSSVISOR_TEMPORAL_ADDRESS=address,
        CROSSVISOR_METRICS_PORT=str(free_port()),
        CROSSVISOR_SDK_METRICS_PORT=str(free_port()),
    )
    worker = None
    try:
        deadline = time.monotonic() + 30
        while (
            "SERVING"
            not in run([str(clean_venv / "bin/temporal"), "operator", "cluster", "health", "--address", address]).stdout
        ):
            assert time.monotonic() < deadline, "dev server not healthy"
            time.sleep(0.3)
        worker = subprocess.Popen(
            [py, "-m", "worker"],
            cwd=work,
            env=wenv,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        lab = tmp_path / "lab.yaml"
        lab.write_text(
            "hosts:\n"
            "  - {name: kvm-1, kind: kvm, endpoint: 'test:///default', site: s, slots: 2}\n"
            "  - {name: xen-1, kind: xen, endpoint: 'test:///default', site: s, slots: 2}\n"
        )
        spec = tmp_path / "two.yaml"
        spec.write_text(
            "name: wheel\ninventory: file:lab.yaml\nplatforms:\n  - {name: kvm, kind: kvm}\n  - {name: xen, kind: xen, firmware: [bios]}\n"
            "images:\n  - {name: img, disk_mib: 8}\n"
        )
        r = run([cli, "campaign", "start", str(spec), "--id", "wheel-1", "--wait"], cwd=work, env=wenv)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "cells: 2" in r.stdout and "pass: 2" in r.stdout, r.stdout
    finally:
        for p in (worker, server):
            if p is not None and p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
                try:
                    p.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    os.killpg(p.pid, signal.SIGKILL)
                    p.wait()
