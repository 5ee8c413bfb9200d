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
deb [$trust] $mirror bullseye main
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
say "fetching the bullseye package index from the configured mirror"
apt-get "${apt_opts[@]}" -qq update >&2 || fail "apt-get update of the private bullseye list failed"
say "downloading the consul package"
(cd "$work" && apt-get "${apt_opts[@]}" -qq download consul >&2) || fail "apt-get download consul failed"
deb=$(ls "$work"/consul_*.deb 2>/dev/null | head -n 1)
[ -n "$deb" ] || fail "no consul .deb was downloaded"
dpkg -x "$deb" "$cache"
[ -x "$cached_bin" ] || fail "the package did not contain usr/bin/consul"
rm -rf "$work"
say "installed $("$cached_bin" version | head -n 1) at $cached_bin"
echo "$cached_bin"
