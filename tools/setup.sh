#!/usr/bin/env bash
# setup.sh: set up bnmpi on a Debian 12 machine (packages, MNIST, build,
# install), then optionally run it or its tests. Every step is idempotent:
# a second run downloads nothing and rebuilds nothing.
#
# Usage:
#   tools/setup.sh run [bnmpi options...]  set up, then mpirun -np 2 bnmpi [options...]
#   tools/setup.sh test                    set up, then run the test suite: ctest, the
#                                          ASan+UBSan build's tests, 60 s of each fuzzer
#   tools/setup.sh build                   set up only
#   tools/setup.sh --help
#
# Set-up steps:
#   1. Debian packages: install the missing ones with apt-get (as root, or via sudo).
#   2. Data: data/fetch-mnist.sh (downloads only when absent; verifies SHA-256).
#   3. Build: cmake configure + build in build/ (Release; -DBNMPI_WERROR=ON when CI=true).
#   4. Install: cmake --install to /usr/local (as root or via sudo), else to ~/.local.
# Command output of steps 1, 3 and 4 goes to build/setup-*.log; the tail of the
# log is printed when a step fails.
set -euo pipefail

readonly PACKAGES=(
    libopenmpi-dev openmpi-bin libopenblas-dev libhdf5-openmpi-dev hdf5-tools
    libcmocka-dev pkg-config zlib1g-dev libssl-dev cmake make gcc npm
    python3-h5py python3-numpy python3-matplotlib python3-pandas python3-scipy dataset-fashion-mnist
    valgrind clang libclang-rt-14-dev
)
# The Python the tools are meant for: Debian's, which sees the python3-* packages
# (a python3 earlier on PATH, e.g. pyenv's, does not).
readonly DEBIAN_PYTHON=/usr/bin/python3

script=$(readlink -f -- "${BASH_SOURCE[0]}")
repo=$(cd -- "$(dirname -- "$script")/.." && pwd -P)
build=$repo/build
build_sanitize=$repo/build-sanitize
build_fuzz=$repo/build-fuzz
readonly script repo build build_sanitize build_fuzz

usage() {
    cat <<EOF
Usage: tools/setup.sh COMMAND [ARGS...]

Set up bnmpi on Debian 12 (Debian packages, MNIST data, build, install), then:
  run [bnmpi options...]  run 'mpirun -np 2 bnmpi [options...]' with the installed bnmpi
  test                    run the whole test suite: ctest in build/, the
                          sanitizer tests (ctest -L sanitize) in build-sanitize/,
                          and each fuzzer for 60 s (tests/fuzz/run.sh) in build-fuzz/
  build                   nothing more (set up only)
  --help                  show this help

Each set-up step is skipped quickly when already done. Installs to /usr/local
when root or when sudo is available, otherwise to \$HOME/.local.
Logs: build/setup-*.log. For the Python tools use $DEBIAN_PYTHON (Debian's).
EOF
}

say() { echo "setup: $*"; }

die() {
    echo "setup: error: $*" >&2
    exit 1
}

is_root() { ((EUID == 0)); }

# True when sudo can be used (without a password, or after asking for it on a
# terminal). Decided once.
sudo_ok=
can_sudo() {
    if [[ -z $sudo_ok ]]; then
        sudo_ok=no
        if command -v sudo >/dev/null 2>&1; then
            if sudo -n true 2>/dev/null || { [[ -t 0 ]] && sudo -v; }; then
                sudo_ok=yes
            fi
        fi
    fi
    [[ $sudo_ok == yes ]]
}

# Run a command as root: directly when root, else through sudo.
as_root() {
    if is_root; then
        "$@"
    else
        sudo "$@"
    fi
}

# quiet LOG WHAT CMD...: run CMD with its output appended to LOG; on failure
# print the log's tail and exit 1.
quiet() {
    local log=$1 what=$2
    shift 2
    if ! "$@" >>"$log" 2>&1; then
        echo "setup: error: $what failed; last lines of $log:" >&2
        tail -n 40 "$log" >&2
        exit 1
    fi
}

# Names provided (Provides:) by installed packages, one per line.
installed_provides() {
    dpkg-query -W -f='${db:Status-Abbrev}\t${Provides}\n' 2>/dev/null |
        awk -F'\t' '$1 ~ /^ii/ && $2 != "" {
            n = split($2, p, /, */)
            for (i = 1; i <= n; i++) { sub(/ .*/, "", p[i]); sub(/:.*/, "", p[i]); print p[i] }
        }'
}

# missing_packages PKG...: print, one per line, each PKG that is neither
# installed nor provided by an installed package (e.g. NodeSource's nodejs
# provides npm and conflicts with Debian's npm package).
missing_packages() {
    local pkg status provides=
    local -a absent=()
    for pkg in "$@"; do
        status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null) || status=
        [[ $status == "install ok installed" ]] || absent+=("$pkg")
    done
    ((${#absent[@]})) || return 0
    provides=$(installed_provides)
    for pkg in "${absent[@]}"; do
        grep -Fxq -- "$pkg" <<<"$provides" || echo "$pkg"
    done
}

step_packages() {
    command -v dpkg-query >/dev/null 2>&1 ||
        die "dpkg-query not found: this script sets up Debian 12 machines"
    local -a missing
    mapfile -t missing < <(missing_packages "${PACKAGES[@]}")
    if ((${#missing[@]} == 0)); then
        say "Debian packages: all ${#PACKAGES[@]} present"
        return
    fi
    if ! is_root && ! can_sudo; then
        die "missing Debian packages: ${missing[*]} (not root, and no usable sudo: as root, run apt-get install --no-install-recommends ${missing[*]}, then re-run)"
    fi
    mkdir -p "$build"
    local log=$build/setup-apt.log
    say "Debian packages: installing ${missing[*]} (log: $log)"
    : >"$log"
    quiet "$log" "apt-get update" \
        as_root env DEBIAN_FRONTEND=noninteractive apt-get -q -o DPkg::Lock::Timeout=300 update
    quiet "$log" "apt-get install" \
        as_root env DEBIAN_FRONTEND=noninteractive apt-get -q -y -o DPkg::Lock::Timeout=300 \
        install --no-install-recommends "${missing[@]}"
    mapfile -t missing < <(missing_packages "${PACKAGES[@]}")
    ((${#missing[@]} == 0)) || die "still missing after apt-get install: ${missing[*]}"
}

step_data() {
    if ! bash "$repo/data/fetch-mnist.sh" 2>&1 | sed -u 's/^/setup: data: /'; then
        die "data/fetch-mnist.sh failed (see above)"
    fi
}

# Where cmake --install puts things, and whether it needs sudo for that.
prefix=
install_sudo=no
choose_prefix() {
    if is_root; then
        prefix=/usr/local
    elif can_sudo; then
        prefix=/usr/local
        install_sudo=yes
    else
        prefix=$HOME/.local
    fi
}

step_build() {
    local -a args=(-DCMAKE_BUILD_TYPE=Release "-DCMAKE_INSTALL_PREFIX=$prefix")
    if [[ ${CI:-} == true ]]; then
        args+=(-DBNMPI_WERROR=ON)
    fi
    mkdir -p "$build"
    : >"$build/setup-configure.log"
    quiet "$build/setup-configure.log" "cmake configure" cmake -S "$repo" -B "$build" "${args[@]}"
    local log=$build/setup-build.log compiled
    : >"$log"
    quiet "$log" "build" cmake --build "$build" -j "$(nproc)"
    compiled=$(grep -c 'Building C object' "$log" || true)
    if ((compiled == 0)); then
        say "build: up to date in $build (Release${CI:+, CI=$CI})"
    else
        say "build: compiled $compiled file(s) in $build (Release${CI:+, CI=$CI})"
    fi
}

step_install() {
    local log=$build/setup-install.log
    : >"$log"
    if [[ $install_sudo == yes ]]; then
        quiet "$log" "cmake --install (via sudo)" sudo cmake --install "$build"
    else
        quiet "$log" "cmake --install" cmake --install "$build"
    fi
    [[ -x $prefix/bin/bnmpi ]] || die "cmake --install did not produce $prefix/bin/bnmpi (see $log)"
    say "install: bnmpi is $prefix/bin/bnmpi (data and tools in $prefix/share/bnmpi)"
    if [[ ":$PATH:" != *":$prefix/bin:"* ]]; then
        say "hint: $prefix/bin is not on PATH; add it: export PATH=\"$prefix/bin:\$PATH\""
    fi
    local first_python
    first_python=$(command -v python3 || true)
    if [[ -n $first_python && $(readlink -f -- "$first_python") != "$(readlink -f -- "$DEBIAN_PYTHON")" ]]; then
        say "hint: run the Python tools with $DEBIAN_PYTHON (Debian's, with h5py/numpy/matplotlib), not $first_python"
    fi
}

# For `test` only: bnmpi and its C tests under AddressSanitizer and
# UndefinedBehaviorSanitizer (tests/sanitize). No -DBNMPI_WERROR: -O1 warns.
step_build_sanitize() {
    mkdir -p "$build_sanitize"
    : >"$build_sanitize/setup-configure.log"
    quiet "$build_sanitize/setup-configure.log" "cmake configure (sanitize)" \
        cmake -S "$repo" -B "$build_sanitize" -DCMAKE_BUILD_TYPE=Release -DBNMPI_SANITIZE=ON
    : >"$build_sanitize/setup-build.log"
    quiet "$build_sanitize/setup-build.log" "build (sanitize)" \
        cmake --build "$build_sanitize" -j "$(nproc)" --target bnmpi test_idx test_kernels test_syncbn test_conv
    say "build: ASan+UBSan bnmpi and C tests in $build_sanitize"
}

# Each fuzzer for 60 s, the three side by side (they share nothing); their
# reports are printed in order once all have finished.
fuzz_all() {
    local h st=0
    local -a pids=()
    mkdir -p "$build_fuzz"
    for h in idx options study; do
        bash "$repo/tests/fuzz/run.sh" --seconds 60 --only "$h" --build "$build_fuzz" >"$build_fuzz/fuzz-$h.log" 2>&1 &
        pids+=($!)
    done
    for h in 0 1 2; do wait "${pids[h]}" || st=1; done
    cat "$build_fuzz"/fuzz-{idx,options,study}.log
    return "$st"
}

# The three parts of `test`; every part runs, the last line counts them
# (each is a suite of its own), and the first failure's status is returned.
run_tests() {
    local rc=0 s failed=0
    say "test: ctest --test-dir $build --output-on-failure"
    ctest --test-dir "$build" --output-on-failure || { rc=$?; failed=$((failed + 1)); }
    step_build_sanitize
    say "test: ctest --test-dir $build_sanitize -L sanitize --output-on-failure"
    ctest --test-dir "$build_sanitize" -L sanitize --output-on-failure ||
        { s=$?; ((rc)) || rc=$s; failed=$((failed + 1)); }
    say "test: tests/fuzz/run.sh --seconds 60 --only F --build $build_fuzz, for F = idx, options, study at once"
    fuzz_all || { s=$?; ((rc)) || rc=$s; failed=$((failed + 1)); }
    echo "suites: $((3 - failed)) passed, $failed failed"
    return "$rc"
}

setup() {
    [[ -f $repo/CMakeLists.txt && -f $repo/data/fetch-mnist.sh ]] ||
        die "$repo is not a bnmpi source tree; run tools/setup.sh from a checkout"
    step_packages
    step_data
    choose_prefix
    step_build
    step_install
}

# Physical cores usable here (Open MPI's default slot count), at least 1.
cores() {
    local n physical
    n=$(nproc)
    physical=$(lscpu -p=CORE,SOCKET 2>/dev/null | grep -v '^#' | sort -u | wc -l) || physical=0
    if ((physical > 0 && physical < n)); then
        n=$physical
    fi
    echo "$((n > 0 ? n : 1))"
}

main() {
    local cmd=${1:-}
    case $cmd in
        -h | --help | help)
            usage
            return 0
            ;;
        run | test | build) shift ;;
        '')
            usage >&2
            return 2
            ;;
        *)
            echo "setup: unknown command '$cmd'" >&2
            usage >&2
            return 2
            ;;
    esac
    if [[ $cmd != run ]] && (($#)); then
        die "'$cmd' takes no arguments (got: $*)"
    fi

    setup

    case $cmd in
        build) say "done" ;;
        test) run_tests ;;
        run)
            local -a mpirun=(mpirun)
            # Open MPI refuses root unless told so; say it for this command only.
            if is_root; then
                mpirun+=(--allow-run-as-root)
            fi
            if (($(cores) < 2)); then
                mpirun+=(--oversubscribe)
            fi
            mpirun+=(-np 2 "$prefix/bin/bnmpi")
            say "run: ${mpirun[*]} $*"
            exec "${mpirun[@]}" "$@"
            ;;
    esac
}

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
    main "$@"
fi
