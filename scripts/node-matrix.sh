#!/usr/bin/env bash
# Runs the README's test command (`npm test`) on other Node.js lines: each line's binary comes
# from the npm registry's `node` package, installed once into a cache folder and put first on
# PATH, so npm, vitest and every child process the tests start run on that line.
#
#   scripts/node-matrix.sh            # Node 22, 24 and 26
#   scripts/node-matrix.sh 24         # one line
#
# TELESCOPE_NODE_CACHE sets the cache folder (default: ~/.cache/telescope-node). The build
# (dist/) must exist already: the pack and example checks use it, the tests do not.
set -uo pipefail
cd "$(dirname "$0")/.."

lines=("$@")
[ ${#lines[@]} -gt 0 ] || lines=(22 24 26)
cache="${TELESCOPE_NODE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/telescope-node}"

install_line() {
  local line="$1" dir="$cache/node-$1"
  if [ ! -x "$dir/node_modules/.bin/node" ]; then
    mkdir -p "$dir"
    [ -f "$dir/package.json" ] || echo '{"private":true}' >"$dir/package.json"
    npm install --prefix "$dir" --no-audit --no-fund --no-save --loglevel=error "node@$line" >&2 || return 1
  fi
  echo "$dir/node_modules/.bin"
}

failed=()
summary=()
failures=()
for line in "${lines[@]}"; do
  if ! bin="$(install_line "$line")"; then
    echo "node-matrix: could not install node@$line" >&2
    failed+=("$line")
    continue
  fi
  version="$("$bin/node" --version)"
  echo "node-matrix: npm test on Node $version"
  start=$SECONDS
  log="$(mktemp)"
  if PATH="$bin:$PATH" npm test 2>&1 | tee "$log"; then
    summary+=("Node $version: passed in $((SECONDS - start)) s")
  else
    summary+=("Node $version: FAILED after $((SECONDS - start)) s")
    failed+=("$line")
    # The failures again, at the end, where a truncated CI log still shows them.
    failures+=("Node $version:" "$(sed 's/\x1b\[[0-9;]*m//g' "$log" | grep -E -A 12 '^ *(FAIL|×|❯ .*\([0-9]+ tests? \| [0-9]+ failed)|AssertionError|Error:' | head -80)")
  fi
  rm -f "$log"
done

[ ${#failures[@]} -eq 0 ] || printf '%s\n' "${failures[@]}"
printf 'node-matrix: %s\n' "${summary[@]}"
if [ ${#failed[@]} -gt 0 ]; then
  echo "node-matrix: failed on Node ${failed[*]}" >&2
  exit 1
fi
