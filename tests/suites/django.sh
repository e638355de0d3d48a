#!/usr/bin/env bash
# pillarbox.django, as a Django project gets it: the package's wheel (built
# once, abi3) installed into a fresh virtualenv per Django, the templates and
# migrations checked to come with it, then the Django tests (pytest-django)
# on the embedded backend, Redis and RabbitMQ:
#   - Django 6.1 on Python 3.12 (django.tasks built in), with mypy + django-stubs;
#   - Django 5.2 LTS with the django-tasks backport on the default python3.
# The admin is also checked in headless Chromium (Debian's package, driven by
# Playwright); screenshots land in .pillarbox-test/.
# PILLARBOX_TEST_BACKENDS (e.g. sqlite) limits the backends, as for Python.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)
source tests/lib/apt.sh

backends=${PILLARBOX_TEST_BACKENDS:-sqlite,redis,amqp}
redis_url=${PILLARBOX_REDIS_URL:-redis://127.0.0.1:6390}
amqp_url=${PILLARBOX_AMQP_URL:-amqp://guest:guest@127.0.0.1:5673/%2f?management_port=15673&stats_delay_ms=5000}

[ -x /usr/bin/chromium ] || apt_install chromium
# Django 6 needs Python 3.12 or newer: on PATH, else one of pyenv's. A
# candidate must run (pyenv's shims exist on PATH for versions not selected).
py312=""
for candidate in "$(command -v python3.12 || true)" "$(command -v python3.13 || true)" \
  "$HOME"/.pyenv/versions/3.1[2-9]*/bin/python; do
  if [ -n "$candidate" ] && [ -x "$candidate" ] &&
    "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 12))' >/dev/null 2>&1; then
    py312=$candidate
    break
  fi
done
if [ -z "$py312" ]; then
  echo "Python 3.12 or newer not found (python3.12, python3.13 or pyenv's): Django 6 needs it" >&2
  exit 1
fi
python3 -m venv --help >/dev/null 2>&1 || apt_install python3-venv

# One abi3 wheel for both Pythons, in the dev profile (reuses the Rust tests' build).
wheels=.pillarbox-test/django-wheel
rm -rf "$wheels"
started=$(date +%s)
MATURIN_PEP517_ARGS="--profile dev" python3 -m pip wheel -q --no-deps -w "$wheels" ./bindings-python
echo "pip wheel ./bindings-python: $(( $(date +%s) - started ))s"
wheel=$(ls "$wheels"/pillarbox-*.whl)

run_env() {
  local label=$1 python=$2
  shift 2
  local venv=.pillarbox-test/$label-venv
  printf '\n--- %s: %s\n' "$label" "$("$python" --version)"
  rm -rf "$venv"
  "$python" -m venv "$venv"
  "$venv/bin/python" -m pip install -q --upgrade pip
  "$venv/bin/python" -m pip install -q "$@" "pytest==9.2.0" "pytest-django==4.14.0" "playwright==1.65.3" "$root/$wheel"

  echo "the wheel carries the templates and migrations"
  (cd "$venv" && bin/python - <<'PY'
import importlib.util, pathlib, sys
import pillarbox
assert "django" not in sys.modules, "importing pillarbox imported Django"
spec = importlib.util.find_spec("pillarbox.django")
base = pathlib.Path(spec.origin).parent
for need in ("templates/pillarbox/admin/queues.html", "templates/pillarbox/admin/dead_letters.html",
             "templates/pillarbox/admin/confirm.html", "migrations/0001_initial.py",
             "management/commands/pillarbox_worker.py"):
    assert (base / need).is_file(), f"missing from the installed package: {need}"
assert "site-packages" in str(base), base
print("  ok:", base)
PY
)

  if [ "$label" = django6 ]; then
    echo "mypy --strict pillarbox.django (django-stubs)"
    "$venv/bin/python" -m pip install -q "mypy==2.4.1" "django-stubs==6.1.2"
    (cd bindings-python/django-tests && PYTHONPATH=. PILLARBOX_TEST_DIR="$root/.pillarbox-test/$label-mypy" \
      "$root/$venv/bin/python" -m mypy --config-file mypy.ini "$root/bindings-python/python/pillarbox/django")
  fi

  local backend url
  for backend in sqlite redis amqp; do
    case ",$backends," in *",$backend,"*) ;; *) continue ;; esac
    local dir=$root/.pillarbox-test/$label-$backend
    rm -rf "$dir"
    mkdir -p "$dir"
    url=""
    [ "$backend" = redis ] && url=$redis_url
    [ "$backend" = amqp ] && url=$amqp_url
    echo "pytest ($label, $backend)"
    started=$(date +%s)
    (cd bindings-python/django-tests && \
      PILLARBOX_TEST_DIR="$dir" PILLARBOX_TEST_URL="$url" PILLARBOX_TEST_LABEL="$label-$backend" \
      PILLARBOX_TEST_PREFIX="dj-$label-$(date +%s)-$RANDOM-" \
      "$root/$venv/bin/python" -m pytest -q)
    echo "pytest ($label, $backend): $(( $(date +%s) - started ))s"
  done
}

run_env django6 "$py312" "Django==6.1.3"
run_env django52 python3 "Django==5.2.20" "django-tasks==0.12.0"
