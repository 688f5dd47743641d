#!/bin/sh
# Form a Redis Cluster of masters (no replicas) from the nodes given as HOST:PORT, once;
# on later starts, re-introduce the nodes to each other at their current addresses (a
# container may come back with a new IP) and wait until the cluster is ok again.
#   cluster-init.sh redis-node-1:6379 redis-node-2:6379 redis-node-3:6379
set -eu
[ $# -ge 3 ] || { echo "usage: $0 HOST:PORT HOST:PORT HOST:PORT..." >&2; exit 2; }

cli() { node="$1"; shift; redis-cli -h "${node%:*}" -p "${node##*:}" "$@"; }
ip_of() { getent hosts "${1%:*}" | awk '{ print $1; exit }'; }
info() { cli "$1" cluster info | tr -d '\r' | sed -n "s/^$2://p"; }

deadline=$(( $(date +%s) + ${CLUSTER_INIT_WAIT:-120} ))
for node in "$@"; do
  until [ -n "$(ip_of "$node")" ] && [ "$(cli "$node" ping 2>/dev/null)" = PONG ]; do
    [ "$(date +%s)" -lt "$deadline" ] || { echo "cluster-init: $node does not answer" >&2; exit 1; }
    sleep 0.5
  done
done

assigned=0
for node in "$@"; do assigned=$(( assigned + $(info "$node" cluster_slots_assigned) )); done
if [ "$assigned" -eq 0 ]; then
  addresses=""
  for node in "$@"; do addresses="$addresses $(ip_of "$node"):${node##*:}"; done
  # shellcheck disable=SC2086  # one word per node
  redis-cli --cluster create $addresses --cluster-replicas 0 --cluster-yes
else
  for node in "$@"; do
    for other in "$@"; do
      [ "$node" = "$other" ] || cli "$node" cluster meet "$(ip_of "$other")" "${other##*:}" >/dev/null
    done
  done
fi

until [ "$(info "$1" cluster_state)" = ok ]; do
  [ "$(date +%s)" -lt "$deadline" ] || { echo "cluster-init: cluster not ok" >&2; cli "$1" cluster info >&2; exit 1; }
  sleep 0.5
done
echo "cluster-init: cluster ok ($(info "$1" cluster_known_nodes) nodes)"
