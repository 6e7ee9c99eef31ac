#!/usr/bin/env bash
# The wheel on its own: build it from the repo, install it with its dependencies in a fresh virtual
# environment, and run a short search from an empty folder outside the repo. It fails when the wheel lacks a
# file the commands need (the shipped study files, say) or when anything still reads from the checkout.
# PYTHON chooses the interpreter (default python3); BCAUTO_WHEEL_CHECK_DIR keeps the work folder for a look.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
python="${PYTHON:-python3}"
work="${BCAUTO_WHEEL_CHECK_DIR:-$(mktemp -d)}"
[[ -n "${BCAUTO_WHEEL_CHECK_DIR:-}" ]] || trap 'rm -rf "$work"' EXIT
mkdir -p "$work/dist" "$work/run"

# built from a copy of the files git tracks (or would), so no stale build/ folder of the checkout leaks in
mkdir -p "$work/src"
git -C "$repo" ls-files -z --cached --others --exclude-standard | (cd "$repo" && tar --null -T - -cf -) | tar -xf - -C "$work/src"
"$python" -m pip wheel --quiet --no-deps -w "$work/dist" "$work/src"
wheel=("$work"/dist/bcauto-*.whl)
"$python" -m venv "$work/venv"
"$work/venv/bin/python" -m pip install --quiet "${wheel[0]}"

cd "$work/run"
# the shipped studies come from the installed wheel, not from the checkout
"$work/venv/bin/python" - "$work/venv" <<'PY'
import sys
from pathlib import Path

from bcauto.cli import studies_dir

found = studies_dir()
assert found.resolve().is_relative_to(Path(sys.argv[1]).resolve()), f"studies found at {found}, outside the venv"
assert {"cpu.toml", "default.toml"} <= {p.name for p in found.iterdir()}, f"{found} lacks cpu.toml or default.toml"
PY
# the CPU study whatever the machine: no pretrained weights to download, and the same few minutes anywhere
CUDA_VISIBLE_DEVICES=-1 "$work/venv/bin/bcauto" search --trials 2 --data synthetic:600
echo "wheel check: ${wheel[0]##*/} installs in a fresh venv and 'bcauto search --trials 2 --data synthetic:600' runs outside the repo"
