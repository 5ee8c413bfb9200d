#!/usr/bin/env bash
# Print the path of a usable `consul` binary, installing Consul 1.8.7 into a
# project-local cache when none is available.
#
# Order: $CONSUL_BIN, then `consul` on PATH, then the cache, then a download of
# Debian bullseye's `consul` package through apt, using a private sources list
# that reuses the mirror URI already configured on this machine. Idempotent: a
# cached binary means no download. All progress goes to stderr; stdout carries
# only the binary's path.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
cache="${VOLTHA_CACHE_DIR:-$here/.cache}/consul"
cached_bin="$cache/usr/bin/consul"

say() { echo "install-consul: $*" >&2; }

if [ -n "${CONSUL_BIN:-}" ]; then
  if [ -x "$CONSUL_BIN" ]; then echo "$CONSUL_BIN"; exit 0; fi
  say "CONSUL_BIN=$CONSUL_BIN is not an executable file"; exit 1
fi
if command -v consul >/dev/null 2>&1; then command -v consul; exit 0; fi
if [ -x "$cached_bin" ]; then echo "$cached_bin"; exit 0; fi

fail() {
  say "$*"
  say "install Consul by hand (any 1.8+ binary) and put it on PATH, or set CONSUL_BIN=/path/to/consul"
  exit 1
}

work="$cache/apt"
. "$here/scripts/lib/debian-download.sh"
debian_download "$work" bullseye consul || fail "the consul package could not be downloaded"
deb=$(ls "$work"/debs/consul_*.deb 2>/dev/null | head -n 1)
[ -n "$deb" ] || fail "no consul .deb was downloaded"
dpkg -x "$deb" "$cache"
[ -x "$cached_bin" ] || fail "the package did not contain usr/bin/consul"
rm -rf "$work"
say "installed $("$cached_bin" version | head -n 1) at $cached_bin"
echo "$cached_bin"
