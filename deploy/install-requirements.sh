#!/bin/sh
# Install pyproject.toml's dependencies (and build backend) into the venv of PIP, from a
# wheelhouse kept in a build cache mount (WHEELS), so that a rebuild neither downloads
# nor compiles what it already has. Used by the Dockerfile's build stage.
#
# LightFM (rectools-lightfm) is always compiled here, from its sdist, with
# LIGHTFM_NO_CFLAGS=1 (no -march=native or -ffast-math: the binary runs on any x86-64
# CPU, no SIGILL elsewhere); a wheel from the index is never used for it.
#   install-requirements.sh PYPROJECT PIP WHEELS
set -eu
pyproject="$1" pip="$2" wheels="$3"
export LIGHTFM_NO_CFLAGS=1
tmp="$(mktemp -d)"
python3 - "$pyproject" > "$tmp/requirements.txt" <<'PY'
import sys, tomllib
p = tomllib.load(open(sys.argv[1], "rb"))
print("\n".join(p["project"]["dependencies"] + p["build-system"]["requires"]))
PY

offline() { $pip install -q --no-index --find-links "$wheels" -r "$tmp/requirements.txt"; }
if offline 2>/dev/null; then exit 0; fi

echo "wheelhouse: fetching and building what $wheels lacks"
$pip install -q --upgrade pip
grep -i '^rectools-lightfm' "$tmp/requirements.txt" > "$tmp/lightfm.txt"
if ! $pip download -q --no-index --no-deps --find-links "$wheels" -d "$tmp/lightfm" \
     -r "$tmp/lightfm.txt" 2>/dev/null; then
  $pip wheel -q --no-deps --no-binary rectools-lightfm -w "$wheels" -r "$tmp/lightfm.txt"
  $pip download -q --no-index --no-deps --find-links "$wheels" -d "$tmp/lightfm" -r "$tmp/lightfm.txt"
fi
# pin LightFM to the version compiled above, so the resolver cannot take an index wheel
for wheel in "$tmp"/lightfm/*.whl; do
  basename "$wheel" | awk -F- '{ print "rectools-lightfm==" $2 }'
done > "$tmp/constraints.txt"
$pip wheel -q --find-links "$wheels" -c "$tmp/constraints.txt" -w "$wheels" -r "$tmp/requirements.txt"
offline
rm -rf "$tmp"
