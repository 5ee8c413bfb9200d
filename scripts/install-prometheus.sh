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

sources=/etc/apt/sources.list.d/debian.sources
list=/etc/apt/sources.list
mirror=""
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
if [ -r "$sources" ]; then
  mirror=$(awk '/^URIs:/ {print $2; exit}' "$sources")
  signed=$(awk '/^Signed-By:/ {print $2; exit}' "$sources")
  [ -n "$signed" ] && keyring=$signed
elif [ -r "$list" ]; then
  mirror=$(awk '$1 == "deb" && $0 !~ /security/ {for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) {print $i; exit}}' "$list")
fi
[ -n "$mirror" ] || fail "no Debian mirror found in $sources"
command -v apt-get >/dev/null 2>&1 || fail "apt-get is not available"
command -v dpkg >/dev/null 2>&1 || fail "dpkg is not available"

work="$cache/apt"
mkdir -p "$work/lists/partial" "$work/archives/partial" "$work/sourceparts"
# Verify the index with the machine's Debian keyring when it has one.
if [ -r "$keyring" ]; then trust="signed-by=$keyring"; else trust="trusted=yes"; fi
cat > "$work/sources.list" <<LIST
deb [$trust] $mirror $suite main
LIST
apt_opts=(
  -o "Dir::Etc::SourceList=$work/sources.list"
  -o "Dir::Etc::SourceParts=$work/sourceparts"
  -o "Dir::State::Lists=$work/lists"
  -o "Dir::Cache::Archives=$work/archives"
  -o "Dir::Cache::pkgcache=$work/pkgcache.bin"
  -o "Dir::Cache::srcpkgcache=$work/srcpkgcache.bin"
  -o "Acquire::Check-Valid-Until=false"
  -o "APT::Sandbox::User=root"
)
say "fetching the $suite package index from the configured mirror"
apt-get "${apt_opts[@]}" -qq update >&2 || fail "apt-get update of the private $suite list failed"
say "downloading the prometheus package"
(cd "$work" && apt-get "${apt_opts[@]}" -qq download prometheus >&2) || fail "apt-get download prometheus failed"
deb=$(ls "$work"/prometheus_*.deb 2>/dev/null | head -n 1)
[ -n "$deb" ] || fail "no prometheus .deb was downloaded"
dpkg -x "$deb" "$cache"
[ -x "$cached_bin" ] || fail "the package did not contain usr/bin/prometheus"
[ -x "$cache/usr/bin/promtool" ] || fail "the package did not contain usr/bin/promtool"
"$cached_bin" --version >/dev/null 2>&1 || fail "$cached_bin does not run here"
rm -rf "$work"
say "installed $("$cached_bin" --version 2>&1 | head -n 1) at $cached_bin"
echo "$cached_bin"
