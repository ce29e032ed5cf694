#!/usr/bin/env bash
# Creates .venv with the Python of .python-version (3.10.13) and installs the pinned dependency set
# and this project (editable) into it. Safe to re-run: an existing .venv of the right Python is reused.
set -euo pipefail
cd "$(dirname "$0")/.."

want=$(tr -d '[:space:]' < .python-version)
python=""
if command -v pyenv >/dev/null 2>&1 && prefix=$(pyenv prefix "$want" 2>/dev/null); then
  python="$prefix/bin/python"
elif command -v "python${want%.*}" >/dev/null 2>&1; then
  python=$(command -v "python${want%.*}")
fi
if [ -z "$python" ] || ! "$python" -c "import sys; sys.exit(sys.version.split()[0] != '$want')"; then
  echo "install: Python $want is needed (TFX 1.16 does not install on 3.11+)." >&2
  echo "install: install it with 'pyenv install $want', or put python${want%.*} ($want) on PATH." >&2
  exit 1
fi

start=$(date +%s)
if [ -x .venv/bin/python ] && .venv/bin/python -c "import sys; sys.exit(sys.version.split()[0] != '$want')"; then
  echo "install: reusing .venv (Python $want)"
else
  rm -rf .venv
  echo "install: creating .venv with $python"
  "$python" -m venv .venv
fi

log=.venv/install.log
echo "install: installing requirements-lock.txt (about 3 minutes on a fresh machine; log in $log)"
if ! .venv/bin/python -m pip install --disable-pip-version-check -r requirements-lock.txt >"$log" 2>&1; then
  tail -n 40 "$log" >&2
  echo "install: pip failed; the full log is $log" >&2
  exit 1
fi
.venv/bin/python -m pip install --disable-pip-version-check --no-deps --no-build-isolation -e . >>"$log" 2>&1 \
  || { tail -n 40 "$log" >&2; exit 1; }
.venv/bin/python -m pip check

# Headless Chromium for the test that renders the review's HTML report (Debian package 'chromium').
if ! command -v chromium >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "install: installing Debian's chromium (headless browser for the HTML report test)"
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >>"$log" 2>&1; then
      apt-get update -q >>"$log" 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >>"$log" 2>&1 \
        || echo "install: WARNING: chromium could not be installed; the HTML report test will be skipped" >&2
    fi
  else
    echo "install: note: no chromium and no root apt-get; the HTML report test will be skipped" >&2
  fi
fi
echo "install: done in $(( $(date +%s) - start )) s; .venv is $(du -sh .venv | cut -f1)"
echo "install: run the tests with: .venv/bin/python -m pytest"
