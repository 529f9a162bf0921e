#!/usr/bin/env bash
# One-time, idempotent set-up: system packages, the virtualenv, Python packages.
# Re-running it does nothing when everything is in place (a stamp keyed by the dependency files).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
APT_PACKAGES="bubblewrap redis-server python3 prometheus chromium"  # python3: the sandbox needs an interpreter outside /root; prometheus: the metrics tests scrape a real one; chromium: headless, a test screenshots the TensorBoard page

missing=""
for pkg in $APT_PACKAGES; do dpkg -s "$pkg" >/dev/null 2>&1 || missing="$missing $pkg"; done
if [ -n "$missing" ]; then
  echo "setup: installing system packages:$missing"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >/dev/null
fi

stamp="$VENV/.installed-$(cat pyproject.toml scripts/setup.sh scripts/install_vllm.sh 2>/dev/null | sha256sum | cut -c1-16)"
if [ -f "$stamp" ]; then exit 0; fi

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PIP="$VENV/bin/python -m pip"
$PIP install -q --upgrade pip
# torch first and alone: pip takes the local CPU build, and nothing later may replace it.
$PIP install -q "torch==2.13.0"
$PIP install -q -e ".[dev]"
if [ -f scripts/install_vllm.sh ]; then bash scripts/install_vllm.sh "$VENV/bin/python"; fi

torch_version=$("$VENV/bin/python" -c 'import torch; print(torch.__version__)')
if [ "$torch_version" != "2.13.0+cpu" ]; then
  echo "setup: torch is $torch_version, expected 2.13.0+cpu: a dependency replaced it" >&2; exit 1
fi
if $PIP list 2>/dev/null | grep -qi '^nvidia-'; then
  echo "setup: nvidia-* packages were pulled in; refusing to continue" >&2; exit 1
fi
rm -f "$VENV"/.installed-*
touch "$stamp"
echo "setup: done (torch $torch_version)"
