# Sourced by the install scripts, not run: download Debian packages without touching the
# machine's apt state, through a private sources list that reuses the mirror URI already
# configured on this machine (no registry host name is written anywhere in the project).
#
#   debian_download WORK SUITE PACKAGE...   .debs into WORK/debs; SUITE "" = the machine's
#
# Needs a `say` function from the caller (progress to stderr). Returns 1 with the reason
# said on stderr when the mirror, apt-get, dpkg, the index or a download is missing.

debian_download() {
  local work=$1 suite=$2
  shift 2
  local sources=/etc/apt/sources.list.d/debian.sources list=/etc/apt/sources.list
  local mirror="" machine_suite="" keyring=/usr/share/keyrings/debian-archive-keyring.gpg signed=""
  if [ -r "$sources" ]; then
    mirror=$(awk '/^URIs:/ {print $2; exit}' "$sources")
    machine_suite=$(awk '/^Suites:/ {print $2; exit}' "$sources")
    signed=$(awk '/^Signed-By:/ {print $2; exit}' "$sources")
    [ -n "$signed" ] && keyring=$signed
  elif [ -r "$list" ]; then
    read -r mirror machine_suite < <(awk '$1 == "deb" && $0 !~ /security/ {
      for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) {print $i, $(i + 1); exit}}' "$list") || true
  fi
  suite=${suite:-$machine_suite}
  [ -n "$mirror" ] && [ -n "$suite" ] || { say "no Debian mirror found in $sources"; return 1; }
  command -v apt-get >/dev/null 2>&1 || { say "apt-get is not available"; return 1; }
  command -v dpkg >/dev/null 2>&1 || { say "dpkg is not available"; return 1; }

  mkdir -p "$work/lists/partial" "$work/archives/partial" "$work/sourceparts" "$work/debs"
  local trust  # verify the index with the machine's Debian keyring when it has one
  if [ -r "$keyring" ]; then trust="signed-by=$keyring"; else trust="trusted=yes"; fi
  echo "deb [$trust] $mirror $suite main" > "$work/sources.list"
  local apt_opts=(
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
  apt-get "${apt_opts[@]}" -qq update >&2 || { say "apt-get update of the private $suite list failed"; return 1; }
  say "downloading $*"
  (cd "$work/debs" && apt-get "${apt_opts[@]}" -qq download "$@" >&2) || { say "apt-get download $* failed"; return 1; }
}
