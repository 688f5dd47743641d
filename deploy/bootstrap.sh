#!/bin/sh
# One-shot bootstrap of the compose stack, first start only: when no model is published
# yet, load the bundled MovieLens sample into the feature store, train on it and publish.
# Later starts (a model is current) do nothing. Uses only the hybridrec CLI and its
# environment (HYBRIDREC_REDIS_URL, HYBRIDREC_MODEL_STORE).
#
# Order: features and titles (--replace, idempotent), then train from the sample file and publish,
# then append the sample to the interaction log. A run interrupted before the publish is
# redone whole on the next start without appending the log twice; only one interrupted
# in the moment between the publish and the append leaves the log empty (then run
# `hybridrec interactions load` on the sample by hand). The champion is "trained from a
# file": retrain holds out what the log gains after its newest timestamp.
set -eu

wait_seconds="${HYBRIDREC_BOOTSTRAP_WAIT:-120}"
epochs="${HYBRIDREC_BOOTSTRAP_EPOCHS:-}"

# The store may still be starting (a Redis Cluster is formed by another one-shot service).
deadline=$(( $(date +%s) + wait_seconds ))
until listed="$(hybridrec models list --json 2>/tmp/bootstrap.err)"; do
  if [ "$(date +%s)" -ge "$deadline" ]; then
    echo "bootstrap: the store did not answer within ${wait_seconds}s:" >&2
    cat /tmp/bootstrap.err >&2
    exit 1
  fi
  sleep 1
done

if printf '%s' "$listed" | grep -q '"current": true'; then
  echo "bootstrap: a model is already published; nothing to do"
  exit 0
fi

sample="$(python3 -c 'from importlib.resources import files; print(files("hybridrec") / "sample")')"
echo "bootstrap: loading the bundled sample from $sample"
hybridrec features load users "$sample/user_features.csv" --replace
hybridrec features load items "$sample/item_features.csv" --replace
hybridrec metadata load "$sample/item_metadata.csv" --replace
set -- --interactions "$sample/interactions.csv" --publish
[ -z "$epochs" ] || set -- "$@" --epochs "$epochs"
version="$(hybridrec train "$@" 2>/tmp/bootstrap.err)" || { cat /tmp/bootstrap.err >&2; exit 1; }
hybridrec interactions load "$sample/interactions.csv"
echo "bootstrap: published model $version"
