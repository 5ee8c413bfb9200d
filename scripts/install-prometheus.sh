#!/usr/bin/env bash
# Print the path of a usable `prometheus` binary (its `promtool` sits next to it), installing
# Prometheus 2.42 into a project-local cache when none is available.
#
# Order: $PROMETHEUS_BIN, then `prometheus` on PATH, then the cache, then a download of
# Debian bookworm's `prometheus` package through apt, using a private sources list that reuses
# the mirror URI already configured on this machine (as scripts/install-consul.sh does), and
# `dpkg -x` into .cache/prometheus/. Bookworm's, because its binaries are static Go builds
# that run from the unpacked tree (libc only) and ship promtool; its web UI's JavaScript
# dependencies are not fetched: the monitoring tests use the HTTP API only. Idempotent: a
# cached binary means no download. Progress goes to stderr; stdout carries only the path.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
cache="${VOLTHA_CACHE_DIR:-$here/.cache}/prometheus"
cached_bin="$cache/usr/bin/prometheus"
suite=bookworm

say() { echo "install-prometheus: $*" >&2; }

if [ -n "${PROMETHEUS_BIN:-}" ]; then
  if [ -x "$PROMETHEUS_BIN" ]; then echo "$PROMETHEUS_BIN"; exit 0; fi
  say "PROMETHEUS_BIN=$PROMETHEUS_BIN is not an executable file"; exit 1
fi
if command -v prometheus >/dev/null 2>&1; then command -v prometheus; exit 0; fi
if [ -x "$cached_bin" ] && [ -x "$cache/usr/bin/promtool" ]; then echo "$cached_bin"; exit 0; fi

fail() {
  say "$*"
  say "install Prometheus 2.x by hand (prometheus and promtool side by side) and put it on PATH,"
  say "or set PROMETHEUS_BIN=/path/to/prometheus"
  exit 1
}

work="$cache/apt"
. "$here/scripts/lib/debian-download.sh"
debian_download "$work" "$suite" prometheus || fail "the prometheus package could not be downloaded"
deb=$(ls "$work"/debs/prometheus_*.deb 2>/dev/null | head -n 1)
[ -n "$deb" ] || fail "no prometheus .deb was downloaded"
dpkg -x "$deb" "$cache"
[ -x "$cached_bin" ] || fail "the package did not contain usr/bin/prometheus"
[ -x "$cache/usr/bin/promtool" ] || fail "the package did not contain usr/bin/promtool"
"$cached_bin" --version >/dev/null 2>&1 || fail "$cached_bin does not run here"
rm -rf "$work"
say "installed $("$cached_bin" --version 2>&1 | head -n 1) at $cached_bin"
echo "$cached_bin"
