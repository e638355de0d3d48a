#!/usr/bin/env bash
# The Python benchmark: a release build of the package in a virtualenv of its
# own with the peers (redis-py, Celery 5 with gevent for its gevent pool,
# pika), the test brokers started,
# then benches/compare.py. Figures go to standard output.
set -euo pipefail
cd "$(dirname "$0")/../.."
bash tests/brokers/start-redis.sh
bash tests/brokers/start-rabbitmq.sh
bash tests/brokers/reset-rabbitmq.sh   # what the tests left would slow the node
venv=.pillarbox-test/bench-venv
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
source "$venv/bin/activate"
python -m pip install -q --upgrade pip
python -m pip install -q "redis==8.1.0" "celery==5.7.0" "pika==1.4.4" "gevent==26.9.0" packaging
python -m pip install -q ./bindings-python       # release profile: what users get
python bindings-python/benches/compare.py
