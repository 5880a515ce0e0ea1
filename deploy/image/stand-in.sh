#!/usr/bin/env bash
# Make the stand-in for the official base image, for machines that cannot pull it: a Debian
# bookworm root filesystem (debootstrap --variant=minbase) with Python 3.11, venv and pip,
# packed as a tarball for `podman import`. Cached: a second call returns at once.
#
#   deploy/image/stand-in.sh OUTPUT.tar
#
# DEBIAN_MIRROR overrides the mirror (default: the first one apt on this machine uses).
set -euo pipefail
out=${1:?usage: stand-in.sh OUTPUT.tar}
if [[ -s $out ]]; then
    exit 0
fi
command -v debootstrap >/dev/null || { echo "stand-in.sh: debootstrap is not installed" >&2; exit 1; }
mirror=${DEBIAN_MIRROR:-}
if [[ -z $mirror ]]; then
    mirror=$(sed -n 's/^URIs: *\([^ ]*debian\)$/\1/p' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -1)
fi
mirror=${mirror:-http://deb.debian.org/debian}
work=$(mktemp -d "$(dirname "$out")/stand-in.XXXXXX")
trap 'rm -rf "$work"' EXIT
debootstrap --variant=minbase \
    --include=python3,python3-venv,python3-pip,python-is-python3,ca-certificates,passwd \
    bookworm "$work/rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 \
    || { tail -20 "$work/debootstrap.log" >&2; exit 1; }
# What an image does not need: package lists and downloaded .debs.
rm -rf "$work"/rootfs/var/lib/apt/lists/* "$work"/rootfs/var/cache/apt/*.bin \
    "$work"/rootfs/var/cache/apt/archives/*.deb "$work"/rootfs/var/log/*.log
tar --numeric-owner -C "$work/rootfs" -cf "$work/rootfs.tar" .
mv "$work/rootfs.tar" "$out"
