#!/usr/bin/env bash
# Build a local Debian bookworm base image with Python 3.11 for machines that cannot pull
# python:3.11-slim (no registry): mmdebstrap from this machine's apt sources, then
# `podman import`. Build hybridrec on it with BASE_IMAGE=localhost/hybridrec-base:bookworm.
#
#   deploy/make-base-image.sh [IMAGE]        (default localhost/hybridrec-base:bookworm)
#
# The image holds Debian's python3 (3.11), python3-venv and ca-certificates, plus the
# host's locally added CA certificates (/usr/local/share/ca-certificates), so that pip
# and apt inside a build reach their indexes through a TLS-inspecting proxy as the host
# does. Docs, man pages and locales are left out as in Debian's -slim images.
# Needs root, mmdebstrap and podman (or docker: ENGINE=docker).
set -euo pipefail

image="${1:-localhost/hybridrec-base:bookworm}"
engine="${ENGINE:-podman}"
suite=bookworm

# This machine's Debian sources (deb822 or one-line); deb.debian.org when there are none.
sources=()
for f in /etc/apt/sources.list.d/debian.sources /etc/apt/sources.list; do
  if [ -s "$f" ] && grep -qE '^(deb |URIs:)' "$f"; then sources+=("$f"); fi
done
if [ ${#sources[@]} -eq 0 ]; then
  sources=("deb http://deb.debian.org/debian $suite main"
           "deb http://deb.debian.org/debian $suite-updates main"
           "deb http://deb.debian.org/debian-security $suite-security main")
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/ca"
shopt -s nullglob
cas=(/usr/local/share/ca-certificates/*.crt)
[ ${#cas[@]} -eq 0 ] || cp "${cas[@]}" "$work/ca/"

mmdebstrap --variant=apt --mode=root --format=tar --quiet \
  --include=ca-certificates,python3,python3-venv \
  --dpkgopt='path-exclude=/usr/share/man/*' \
  --dpkgopt='path-exclude=/usr/share/doc/*' \
  --dpkgopt='path-include=/usr/share/doc/*/copyright' \
  --dpkgopt='path-exclude=/usr/share/locale/*' \
  --dpkgopt='path-exclude=/usr/share/info/*' \
  --customize-hook="cp $work/ca/. \"\$1/usr/local/share/ca-certificates/\" -r" \
  --customize-hook='chroot "$1" update-ca-certificates >/dev/null 2>&1' \
  --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin "$1"/var/log/*' \
  "$suite" "$work/rootfs.tar" "${sources[@]}"

"$engine" import \
  --change 'ENV LANG=C.UTF-8' \
  --change 'CMD ["python3"]' \
  "$work/rootfs.tar" "$image" >/dev/null
echo "built $image ($(du -h "$work/rootfs.tar" | cut -f1) rootfs)"
