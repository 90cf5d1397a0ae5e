"""Files the package ships (the ``deploy`` package's data), found with ``importlib.resources``.

Installed from a wheel or from a checkout, the same call finds the same file: no code looks up a
path relative to a source tree.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path


def deploy_file(*parts: str) -> Path:
    """A file shipped under ``deploy/`` (e.g. ``deploy_file("guests", "build-guest-image.sh")``)."""
    res = files("deploy").joinpath(*parts)
    path = Path(str(res))
    if not path.exists():
        raise FileNotFoundError(f"crossvisor ships no deploy/{'/'.join(parts)} (a broken installation?)")
    return path


def example(name: str) -> Path:
    """One of the example campaigns or labs (``examples/demo.yaml``, ...)."""
    return deploy_file("examples", name)
