# Sourced by the build scripts under tests/ (control-plane, flagger, helm): each builds Go
# programs from the module proxy into a cache outside the repository, and they share how.
#
#   go_cache_key EXTRA...        the cache key: go.mod + go.sum + EXTRA (the build flags' revision)
#   go_cache_begin LABEL ROOT KEY RESULT WHY
#       prints RESULT and exits when the caller's `complete` holds; otherwise checks that `go` is
#       there (WHY says what it builds), takes ROOT's lock, checks `complete` again (another
#       process may have built it meanwhile) and makes the scratch directory $tmp, removed on exit.

go_cache_key() {
  (cat go.mod go.sum; echo "$*") | sha256sum | cut -c1-16
}

go_cache_begin() {
  local label=$1 root=$2 key=$3 result=$4 why=$5
  if complete; then
    echo "$result"
    exit 0
  fi
  command -v go >/dev/null 2>&1 || {
    echo "$label: 'go' is not on the PATH; $why (Go 1.26)" >&2
    exit 1
  }
  # One build at a time per cache root (parallel test binaries may all ask at once).
  mkdir -p "$root"
  exec 9>"$root/.lock"
  flock 9
  if complete; then
    echo "$result"
    exit 0
  fi
  tmp="$root/.build-$key.$$"
  rm -rf "$tmp"
  mkdir -p "$tmp"
  trap 'rm -rf "$tmp"' EXIT
}
