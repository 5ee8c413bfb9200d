#!/usr/bin/env bash
# Print what the peers bench needs to run a standalone ZooKeeper server, installing it into a
# project-local cache when it is not there yet:
#
#   java=/path/to/java
#   classpath=/a.jar:/b.jar:...
#
# ZooKeeper's jars come from Debian's libzookeeper-java package (what the `zookeeper` package
# runs: that one only adds init scripts, /etc config and a dependency on a full JRE) and the few
# Java libraries a standalone server loads, found in this order: $ZOOKEEPER_CLASSPATH, the jars
# of an installed package (/usr/share/java/zookeeper.jar), the cache, then `apt-get download`
# + `dpkg -x` into the cache through a private sources list that reuses the mirror URI already
# configured on this machine (as scripts/install-consul.sh does), and as a last resort
# `apt-get install libzookeeper-java` when running as root. The server is started with plain
# `java -cp ... ZooKeeperServerMain`, so no init script, user or /etc file is needed.
#
# A headless JRE: $JAVA, $JAVA_HOME/bin/java, `java` on PATH, else (as root) `apt-get install
# default-jre-headless` - a JRE does not run reliably out of a `dpkg -x` tree (its config is
# symlinked into /etc), so it is the one thing installed system-wide.
#
# Idempotent: a filled cache means no download. Progress goes to stderr; stdout carries only
# the two lines above. Exit status 1 with the reason on stderr when either cannot be had.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
cache="${VOLTHA_CACHE_DIR:-$here/.cache}/zookeeper"
root="$cache/root"
marker="$cache/.complete"

say() { echo "install-zookeeper: $*" >&2; }
fail() { say "$*"; exit 1; }
. "$here/scripts/lib/debian-download.sh"

# -- the JRE ---------------------------------------------------------------------------------
find_java() {
  if [ -n "${JAVA:-}" ] && [ -x "$JAVA" ]; then echo "$JAVA"; return 0; fi
  if [ -n "${JAVA_HOME:-}" ] && [ -x "$JAVA_HOME/bin/java" ]; then echo "$JAVA_HOME/bin/java"; return 0; fi
  if command -v java >/dev/null 2>&1; then command -v java; return 0; fi
  return 1
}

java_bin=$(find_java) || true
if [ -z "$java_bin" ]; then
  [ "$(id -u)" = 0 ] || fail "no Java runtime (set JAVA or JAVA_HOME, or install default-jre-headless as root)"
  command -v apt-get >/dev/null 2>&1 || fail "no Java runtime and no apt-get to install one"
  say "installing default-jre-headless (a JRE cannot run from a dpkg -x tree)"
  apt-get -qq update >&2 || say "apt-get update failed; trying the install with the lists there are"
  DEBIAN_FRONTEND=noninteractive apt-get -qq install -y --no-install-recommends default-jre-headless >&2 \
    || fail "apt-get install default-jre-headless failed"
  java_bin=$(find_java) || fail "default-jre-headless installed but no java found"
fi
"$java_bin" -version >/dev/null 2>&1 || fail "$java_bin does not run"

# -- the jars --------------------------------------------------------------------------------
# What a standalone server loads (the admin server, which wants Jetty and Jackson, is turned
# off by the bench's zoo.cfg); one slf4j binding only, or slf4j refuses to start.
JARS="zookeeper zookeeper-jute slf4j-api slf4j-simple commons-cli metrics-core snappy-java
  netty-buffer netty-codec netty-common netty-handler netty-resolver netty-transport
  netty-transport-native-epoll netty-transport-native-unix-common"
PACKAGES="libzookeeper-java libslf4j-java libcommons-cli-java libdropwizard-metrics-java
  libsnappy-java libnetty-java"

classpath_in() {  # the chosen jars found in directory $1, colon-separated
  local dir=$1 name out=()
  for name in $JARS; do [ -e "$dir/$name.jar" ] && out+=("$dir/$name.jar"); done
  (IFS=:; echo "${out[*]}")
}

print() { echo "java=$java_bin"; echo "classpath=$1"; exit 0; }

if [ -n "${ZOOKEEPER_CLASSPATH:-}" ]; then print "$ZOOKEEPER_CLASSPATH"; fi
if [ -f /usr/share/java/zookeeper.jar ]; then print "$(classpath_in /usr/share/java)"; fi
if [ -f "$marker" ]; then print "$(classpath_in "$root/usr/share/java")"; fi

download() {
  local work="$cache/apt"
  # Only the Java libraries in $PACKAGES: the JRE comes from the system, and the rest of
  # libzookeeper-java's dependencies serve the admin server, tools and the client.
  local packages
  read -r -a packages <<< "$(echo $PACKAGES)"
  debian_download "$work" "" "${packages[@]}" || return 1
  rm -rf "$root"; mkdir -p "$root"
  local deb
  for deb in "$work"/debs/*.deb; do dpkg -x "$deb" "$root"; done
  [ -e "$root/usr/share/java/zookeeper.jar" ] \
    || { say "the packages held no zookeeper jar"; return 1; }
  rm -rf "$work"
  touch "$marker"
}

if download; then
  say "installed ZooKeeper's jars into $root"
  print "$(classpath_in "$root/usr/share/java")"
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  say "falling back to apt-get install libzookeeper-java"
  DEBIAN_FRONTEND=noninteractive apt-get -qq install -y --no-install-recommends libzookeeper-java >&2 \
    && [ -f /usr/share/java/zookeeper.jar ] && print "$(classpath_in /usr/share/java)"
fi
fail "ZooKeeper could not be installed (no cache, no download, no root apt-get)"
