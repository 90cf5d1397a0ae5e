"""The project's Python runtime: the venv runs on an interpreter with CVE-2024-6232 fixed (issue 27).

The package reader never hands a package's tar headers to tarfile (crossvisor/core/bounded_tar.py),
but pip, the SDK and any tool in the venv still do: the interpreter itself must be a fixed one.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "deploy" / "python.sh"


def _ok(python: str) -> bool:
    return subprocess.run(["bash", str(SCRIPT), "ok", python], check=False).returncode == 0


def test_the_suite_runs_on_an_interpreter_with_the_tarfile_fix():
    v = sys.version_info[:3]
    assert _ok(sys.executable), f"{sys.executable} is Python {v}: CVE-2024-6232 is fixed in 3.11.10, 3.12.6, 3.13.0"


def _fake_python(path: Path, version: tuple[int, int, int]) -> str:
    """A 'python' that runs this interpreter but reports ``version``, for ``-c CODE`` and for a script
    on stdin (``-``): the two ways python.sh asks an interpreter."""
    path.write_text(
        "#!/bin/sh\n"
        f"exec {sys.executable} -c \"import sys; sys.version_info = {version!r} + ('final', 0); "
        "sys.argv = sys.argv[1:]; "
        "code = sys.argv[1] if sys.argv[:1] == ['-c'] else sys.stdin.read(); "
        'exec(code)" "$@"\n'
    )
    path.chmod(0o755)
    return str(path)


def test_the_check_refuses_an_unpatched_interpreter(tmp_path):
    # The check reads the interpreter's own version: 3.11.7 (pyenv's default here) and 3.12.1 are
    # refused, the first fixed release of each line accepted.
    def ok(version: tuple[int, int, int]) -> bool:
        return _ok(_fake_python(tmp_path / ("python" + ".".join(map(str, version))), version))

    assert not ok((3, 11, 7))
    assert not ok((3, 12, 1))
    assert ok((3, 11, 10))
    assert ok((3, 12, 6))
    assert ok((3, 13, 0))


def test_pick_names_what_it_saw_when_nothing_is_fixed(tmp_path):
    # Only an unpatched interpreter on PATH and no pyenv: the refusal names it with its version.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _fake_python(bin_dir / "python3", (3, 11, 7))
    r = subprocess.run(
        ["bash", str(SCRIPT), "pick"],
        env={"PATH": f"{bin_dir}:/usr/bin:/bin", "PYENV_ROOT": str(tmp_path / "none"), "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        check=False,
    )
    # A fixed /usr/bin/python3.X on the machine would be picked, which is right too.
    if r.returncode == 0:
        assert _ok(r.stdout.strip())
        assert r.stdout.strip() != str(bin_dir / "python3")
    else:
        assert "no Python with the CVE-2024-6232 fix" in r.stderr
        assert f"{bin_dir / 'python3'} (3.11.7)" in r.stderr
