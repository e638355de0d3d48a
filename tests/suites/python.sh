#!/usr/bin/env bash
# The Python package, as a user gets it: `pip install ./bindings-python` into
# a fresh virtualenv (pip fetches maturin and builds the native module with
# cargo), its type stubs checked against the module, the package and the
# example type-checked, then its tests against the brokers tests/run.sh started.
set -euo pipefail
cd "$(dirname "$0")/../.."

python=${PYTHON:-python3}
venv=.pillarbox-test/python-venv
rm -rf "$venv"
if ! "$python" -m venv "$venv" 2>/dev/null; then
  source tests/lib/apt.sh
  apt_install python3-venv
  "$python" -m venv "$venv"
fi
source "$venv/bin/activate"
python -m pip install -q --upgrade pip
python -m pip install -q "pytest==9.2.0" "mypy==2.4.1"

# The dev profile with every backend, as `cargo test --all-features` built
# the core: cargo reuses that build instead of compiling a release one.
started=$(date +%s)
MATURIN_PEP517_ARGS="--profile dev" python -m pip install -q ./bindings-python
echo "pip install ./bindings-python: $(( $(date +%s) - started ))s"

echo "mypy.stubtest (the native module against its stubs)"
(cd "$venv" && python -m mypy.stubtest pillarbox._native)
# The check itself: a stub that lacks a method the module has must fail it.
stale=$(mktemp -d)
mkdir -p "$stale/pillarbox"
touch "$stale/pillarbox/__init__.pyi"
grep -v "def publish_one" bindings-python/python/pillarbox/_native.pyi >"$stale/pillarbox/_native.pyi"
if (cd "$venv" && MYPYPATH="$stale" python -m mypy.stubtest pillarbox._native >/dev/null 2>&1); then
  echo "stubtest passed a stale stub (one without Broker.publish_one): it checks nothing" >&2
  exit 1
fi
rm -rf "$stale"
echo "mypy --strict (the package and the example)"
# pillarbox.django needs Django and its stubs: tests/suites/django.sh checks it.
python -m mypy --strict --exclude 'pillarbox/django/' bindings-python/python/pillarbox examples/python/quickstart.py

echo "the pillarbox console script"
pillarbox --version

echo "the Python quickstart"
python examples/python/quickstart.py >/dev/null

cd bindings-python
python -m pytest -q tests
