#!/usr/bin/env bash
# The interpreter the project's venv runs on: the newest Python >= 3.11 on this machine whose tarfile
# has the fix for CVE-2024-6232 (quadratic tar header parsing; fixed in 3.11.10, 3.12.6 and 3.13.0).
# crossvisor reads packages with a bounded tar reader of its own (crossvisor/core/bounded_tar.py), but
# every other tar the venv's Python or its packages open (pip's sdists included) goes through tarfile.
#
#   python.sh pick        prints the path of that interpreter ($PY if set and fixed; else the newest
#                         fixed one of python3, python3.X on PATH, pyenv's and /usr/local's installs),
#                         or exits 1 naming what it found
#   python.sh ok PYTHON   exit 0 when PYTHON has the fix
#   python.sh venv DIR    (re)makes DIR on that interpreter: a venv on an interpreter without the fix
#                         is replaced; then installs the project (-e '.[dev]') when pyproject.toml changed
set -euo pipefail

ok() {
  "$1" - <<'PY' 2>/dev/null
import sys
v = sys.version_info[:3]
fixed = {(3, 11): (3, 11, 10), (3, 12): (3, 12, 6)}
sys.exit(0 if v >= (3, 13, 0) or (v[:2] in fixed and v >= fixed[v[:2]]) else 1)
PY
}

pick() {
  local c found=() best="" bestv=""
  if [[ -n "${PY:-}" ]]; then  # named by the operator: that one, or a refusal saying why
    c="$(command -v "$PY" 2>/dev/null)" || { echo "python.sh: PY=$PY: no such interpreter" >&2; return 1; }
    ok "$c" || { echo "python.sh: PY=$PY ($("$c" -V 2>&1)) lacks the CVE-2024-6232 fix (3.11.10+, 3.12.6+, 3.13+)" >&2; return 1; }
    echo "$c"
    return 0
  fi
  shopt -s nullglob
  for c in python3 python3.13 python3.12 python3.11 \
    "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.1[1-9]*/bin/python3 /usr/local/bin/python3.1[1-9] /usr/bin/python3.1[1-9]; do
    c="$(command -v "$c" 2>/dev/null)" || continue
    local v
    v="$("$c" -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])' 2>/dev/null)" || continue
    found+=("$c ($v)")
    if ok "$c" && { [[ -z "$bestv" ]] || [[ "$(printf '%s\n%s\n' "$bestv" "$v" | sort -V | tail -1)" == "$v" && "$v" != "$bestv" ]]; }; then
      best="$c" bestv="$v"
    fi
  done
  if [[ -z "$best" ]]; then
    echo "python.sh: no Python with the CVE-2024-6232 fix (3.11.10+, 3.12.6+ or 3.13+) found; seen: ${found[*]:-none}" >&2
    return 1
  fi
  echo "$best"
}

case "${1:-}" in
  pick) pick ;;
  ok) ok "$2" ;;
  venv)
    dir="$2"
    if [[ -x "$dir/bin/python" ]] && ! ok "$dir/bin/python"; then
      echo "python.sh: $dir runs $("$dir/bin/python" -V 2>&1), without the CVE-2024-6232 fix: making it again" >&2
      rm -rf "$dir"
    fi
    if [[ ! -x "$dir/bin/python" ]]; then
      py="$(pick)"
      echo "python.sh: venv on $py ($("$py" -V 2>&1))" >&2
      "$py" -m venv "$dir"
    fi
    if [[ ! -f "$dir/.installed" || pyproject.toml -nt "$dir/.installed" ]]; then
      "$dir/bin/pip" install -q --disable-pip-version-check -e '.[dev]'
      touch "$dir/.installed"
    fi
    ;;
  *) sed -n '2,12p' "$0" >&2; exit 2 ;;
esac
