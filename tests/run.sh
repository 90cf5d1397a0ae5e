#!/usr/bin/env bash
# The whole test suite: lint, then pytest over every part (real servers started by fixtures).
set -euo pipefail
cd "$(dirname "$0")/.."
CROSSVISOR_FULL=1 bash deploy/install-system.sh
.venv/bin/ruff check .
.venv/bin/lint-imports --no-cache >/dev/null || .venv/bin/lint-imports --no-cache  # the layer contracts (pyproject.toml)
exec .venv/bin/python -m pytest -p no:cacheprovider -q -rs --durations=15 "$@"
