#!/usr/bin/env bash
# Starts the RabbitMQ server that pubcrypt's conformance suite (TestConformanceRabbit) and
# the rabbit:// demo use, and prints its AMQP URL. Run it as root (it installs a Debian
# package and writes /etc/rabbitmq/rabbitmq-env.conf).
#
#   scripts/start-rabbitmq.sh           # install if missing, start, print the URL
#   export RABBIT_SERVER_URL=$(scripts/start-rabbitmq.sh)
#
# RabbitMQ comes from Debian (rabbitmq-server, ~16 s to install). It and Erlang's port
# mapper (epmd) listen on 127.0.0.1 only: AMQP on 5672, epmd on 4369, the Erlang
# distribution port (used by rabbitmqctl) on 25672. The guest/guest account RabbitMQ
# creates is only accepted from loopback, which is all a test server needs.
#
# There is no systemd here: the server is started detached and this script waits until
# `rabbitmqctl await_startup` succeeds (~12 s cold). If it is already running, the script
# prints the URL and exits 0 at once. Logs: /var/log/rabbitmq/.
set -euo pipefail

URL=amqp://guest:guest@127.0.0.1:5672/
ENV_CONF=/etc/rabbitmq/rabbitmq-env.conf

ready() { timeout 10 rabbitmqctl -q await_startup --timeout 5 >/dev/null 2>&1; }
amqp_open() { timeout 1 bash -c '</dev/tcp/127.0.0.1/5672' 2>/dev/null; }

if command -v rabbitmqctl >/dev/null 2>&1 && amqp_open && ready; then
  echo "$URL"; exit 0
fi

if [ "$(id -u)" != 0 ]; then
  echo "start-rabbitmq.sh: run as root (installs rabbitmq-server, writes $ENV_CONF)" >&2
  exit 1
fi

if ! command -v rabbitmq-server >/dev/null 2>&1; then
  start=$(date +%s)
  export DEBIAN_FRONTEND=noninteractive
  install() { apt-get install -y -q --no-install-recommends rabbitmq-server >/dev/null; }
  # The package lists may be missing or stale: update once, only if the install fails.
  if ! install; then
    apt-get update -q >/dev/null
    install
  fi
  echo "start-rabbitmq.sh: installed rabbitmq-server in $(($(date +%s) - start)) s" >&2
fi

# Loopback only: AMQP, epmd and the Erlang distribution listener. The file is sourced by
# rabbitmq-server and rabbitmqctl alike, so both agree on the node and the epmd address.
mkdir -p /etc/rabbitmq
cat >"$ENV_CONF" <<'CONF'
# Written by pubcrypt's scripts/start-rabbitmq.sh: a local test server, loopback only.
NODE_IP_ADDRESS=127.0.0.1
NODE_PORT=5672
export ERL_EPMD_ADDRESS=127.0.0.1
SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
CTL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
CONF

start=$(date +%s)
# The Debian wrapper drops to the rabbitmq user when run as root; -detached returns
# as soon as the VM is forked.
ERL_EPMD_ADDRESS=127.0.0.1 rabbitmq-server -detached >/dev/null 2>&1 || true
for _ in $(seq 1 60); do
  if amqp_open && ready; then
    echo "start-rabbitmq.sh: RabbitMQ ready in $(($(date +%s) - start)) s" >&2
    echo "$URL"; exit 0
  fi
  sleep 1
done
echo "start-rabbitmq.sh: RabbitMQ did not start within 60 s; see /var/log/rabbitmq/" >&2
exit 1
