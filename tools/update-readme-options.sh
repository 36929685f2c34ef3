#!/usr/bin/env bash
# Regenerates the option table in README.md from `bnmpi --help-markdown`, the
# same table that drives the parser and --help. The test e2e_readme_options
# fails when the README's copy is stale.
# Usage: tools/update-readme-options.sh [path/to/bnmpi]   (default: build/bnmpi)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bnmpi=${1:-$root/build/bnmpi}
readme=$root/README.md
table=$(mktemp)
trap 'rm -f "$table"' EXIT
"$bnmpi" --help-markdown > "$table"
awk -v table="$table" '
  /<!-- options:begin -->/ { print; while ((getline line < table) > 0) print line; skip = 1; next }
  /<!-- options:end -->/   { skip = 0 }
  !skip { print }
' "$readme" > "$readme.tmp"
mv "$readme.tmp" "$readme"
echo "updated the option table in $readme"
