#!/bin/bash
# tests/fuzz/run.sh: builds the libFuzzer harnesses and runs every fuzzer.
#
#   tests/fuzz/run.sh [--seconds N] [--build DIR] [--only LIST] [--regress] [--build-only]
#
# Fuzzers (tests/fuzz/README.md): idx (src/idx.c, plain and gzip), options
# (src/options.c, with the resume merge), study (jobs/run-study.sh --dry-run
# and jobs/study.sbatch, by fuzz_study.py). Each fuzzes for N seconds, one
# after the other, from a copy of its committed corpus (corpus/NAME) plus
# regressions/NAME, in DIR/run/NAME; the committed folders are only read.
# Per fuzzer it prints the executions, the coverage at the end (libFuzzer's
# cov: and ft:, for study the lines of the two scripts run and (line, hit
# count) features) and the findings, each with its reproducer and, for the C
# harnesses, the stack's frames in src/.
#
# Options:
#   --seconds N   fuzzing time per fuzzer [60]
#   --build DIR   build and scratch folder [<repo>/build-fuzz]
#   --only LIST   comma-separated subset of idx,options,study [all]
#   --regress     no fuzzing: run each fuzzer once over corpus/NAME and
#                 regressions/NAME (a few seconds; what ctest runs)
#   --build-only  build the harnesses, run nothing
#   -h, --help    this text
# Environment: FUZZ_CC [clang], FUZZ_NICE [15: nice level of the fuzzing runs].
#
# Exit status: 0 nothing found; 1 a finding (or a fuzzer failed to run);
# 2 bad command line or build failure.
set -u -o pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
seconds=60
build=$root/build-fuzz
only=idx,options,study
mode=fuzz
cc=${FUZZ_CC:-clang}
nice_level=${FUZZ_NICE:-15}
python=/usr/bin/python3; [ -x "$python" ] || python=python3

usage() { sed -n '2,/^set -u/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//'; }
die() { echo "run.sh: $*" >&2; exit 2; }

while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) [ $# -ge 2 ] || die "--seconds needs a value"; seconds=$2; shift 2 ;;
    --seconds=*) seconds=${1#*=}; shift ;;
    --build) [ $# -ge 2 ] || die "--build needs a folder"; build=$2; shift 2 ;;
    --build=*) build=${1#*=}; shift ;;
    --only) [ $# -ge 2 ] || die "--only needs a list"; only=$2; shift 2 ;;
    --only=*) only=${1#*=}; shift ;;
    --regress) mode=regress; shift ;;
    --build-only) mode=build; shift ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
done
[[ "$seconds" =~ ^[1-9][0-9]*$ ]] || die "--seconds $seconds: expected a whole number >= 1"
names=()
for h in ${only//,/ }; do
  case "$h" in idx|options|study) names+=("$h") ;; *) die "--only: unknown fuzzer '$h' (idx, options, study)" ;; esac
done
[ ${#names[@]} -gt 0 ] || die "--only: no fuzzer given"
mkdir -p "$build" || die "cannot make $build"
build=$(cd "$build" && pwd)

# --- build --------------------------------------------------------------------------------
# The harness and the bnmpi sources it needs, compiled together (nothing that calls MPI).
cflags=(-fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer
        -g -O1 -std=c11 -Wall -Wextra -I"$root/include")
sources_idx=("$here/fuzz_idx.c" "$root/src/idx.c" "$root/src/sha256.c" "$root/src/common.c")
libs_idx=(-lz -lcrypto -ldl)
sources_options=("$here/fuzz_options.c" "$root/src/options.c" "$root/src/common.c")
[ -f "$root/src/arch.c" ] && sources_options+=("$root/src/arch.c")  # --arch (self-contained)
libs_options=(-lm)

# The options a resume may change (RESUME_FREE in src/options.c's table), for
# fuzz_options' merge oracle: read from the table, so that a new option needs no edit here.
free_options=$("$python" - "$root/src/options.c" <<'PY'
import re, sys
t = open(sys.argv[1]).read()
t = t[t.index("static const opt_def table[]"):]
t = t[:t.index("};")]
ents = re.findall(r'\{(?:NULL|"[^"]*"),\s*"([a-z0-9-]+)",\s*K_\w+,(.*?)\},\s*\n', t, re.S)
print(",".join('"%s"' % n for n, body in ents if "RESUME_FREE" in body), len(ents))
PY
) || die "cannot read the option table of $root/src/options.c"
read -r free_list n_table <<<"$free_options"
cflags_options=(-DFUZZ_FREE_OPTIONS="$free_list" -DFUZZ_N_OPTIONS="$n_table")
cflags_idx=()

build_one() {  # NAME
  local h=$1 srcs libs
  local extra
  eval "srcs=(\"\${sources_$h[@]}\"); libs=(\"\${libs_$h[@]}\"); extra=(\"\${cflags_$h[@]}\")"
  if ! "$cc" "${cflags[@]}" "${extra[@]}" -o "$build/fuzz_$h" "${srcs[@]}" "${libs[@]}" 2>"$build/fuzz_$h.build.log"; then
    cat "$build/fuzz_$h.build.log" >&2
    die "building fuzz_$h with $cc failed (needs clang and libclang-rt-14-dev; log $build/fuzz_$h.build.log)"
  fi
}

command -v "$cc" >/dev/null || die "$cc not found (apt-get install clang libclang-rt-14-dev)"
for h in "${names[@]}"; do
  [ "$h" = study ] || build_one "$h"
done
[ "$mode" = build ] && { echo "built: $(cd "$build" && ls fuzz_idx fuzz_options 2>/dev/null | tr '\n' ' ')in $build"; exit 0; }

export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

# libFuzzer flags per harness: -max_len well above the seeds (IDX: 28x28 images),
# memory caps far below the machine's, -timeout for a hang (a slow shared machine).
flags_idx=(-max_len=16384 -rss_limit_mb=1536 -timeout=25 -dict="$here/idx.dict")
flags_options=(-max_len=4096 -rss_limit_mb=1024 -timeout=25 -dict="$here/options.dict")

inputs_of() {  # NAME -> the committed input files, one a line
  local d
  for d in "$here/corpus/$1" "$here/regressions/$1"; do
    [ -d "$d" ] && find "$d" -maxdepth 1 -type f ! -name '*.args' ! -name '*.log' ! -name '*.md' | sort
  done
}

# The stack of a sanitizer report: the frames in bnmpi's src/, and the harness's top frame.
stack_summary() {  # LOG
  grep -m 3 -E 'FINDING|ERROR: (AddressSanitizer|LeakSanitizer|libFuzzer)|runtime error' "$1" | sed 's/^/      /'
  grep -E '^ +#[0-9]+ .* in .*(/src/|/tests/fuzz/)[^ ]+\.c:[0-9]+' "$1" | grep -v 'LLVMFuzzerTestOneInput' \
    | sed -E 's/^ +(#[0-9]+) 0x[0-9a-f]+ in /      \1 /; s#'"$root"'/##' | head -n 6
}

status=0
summary=()

regress_c() {  # NAME
  local h=$1 bin=$build/fuzz_$1 log=$build/regress-$1.log files=() f bad=0
  mapfile -t files < <(inputs_of "$h")
  if "$bin" "${files[@]}" >"$log" 2>&1; then
    summary+=("$h: ${#files[@]} inputs, no finding")
    return
  fi
  for f in "${files[@]}"; do  # name every failing input
    if ! "$bin" "$f" >"$log.one" 2>&1; then
      bad=$((bad + 1))
      echo "$h: FAIL ${f#$root/}"
      stack_summary "$log.one"
    fi
  done
  summary+=("$h: ${#files[@]} inputs, $bad failing")
  status=1
}

fuzz_c() {  # NAME
  local h=$1 bin=$build/fuzz_$1 w=$build/run/$1 flags rc n_art execs cov ft a
  eval "flags=(\"\${flags_$h[@]}\")"
  rm -rf "$w" && mkdir -p "$w/corpus" "$w/artifacts" "$w/regressions"
  cp -p "$here/corpus/$h/"* "$w/corpus/" 2>/dev/null
  inputs_of "$h" | grep "/regressions/" | while read -r f; do cp -p "$f" "$w/regressions/"; done
  echo "== $h: fuzzing ${seconds} s (log $w/fuzz.log)"
  (cd "$w" && nice -n "$nice_level" "$bin" -max_total_time="$seconds" -print_final_stats=1 \
     -artifact_prefix="$w/artifacts/" "${flags[@]}" "$w/corpus" "$w/regressions" >"$w/fuzz.log" 2>&1)
  rc=$?
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$w/fuzz.log" | tail -n 1)
  read -r cov ft < <(grep -E '^#[0-9]+.*cov: [0-9]+ ft: [0-9]+' "$w/fuzz.log" | tail -n 1 \
                     | sed -E 's/.*cov: ([0-9]+) ft: ([0-9]+).*/\1 \2/')
  n_art=0
  for a in "$w/artifacts/"crash-* "$w/artifacts/"leak-* "$w/artifacts/"timeout-* "$w/artifacts/"oom-*; do
    [ -e "$a" ] || continue
    n_art=$((n_art + 1))
    echo "$h: FINDING $(basename "$a" | cut -d- -f1): $a"
    stack_summary "$w/fuzz.log"
  done
  if [ "$rc" != 0 ] && [ "$n_art" = 0 ]; then
    echo "$h: libFuzzer exit $rc without an artifact; the end of $w/fuzz.log:"
    tail -n 15 "$w/fuzz.log" | sed 's/^/      /'
    n_art=1
  fi
  summary+=("$h: execs ${execs:-?}, cov ${cov:-?}, ft ${ft:-?}, findings $n_art")
  [ "$n_art" = 0 ] || status=1
}

run_study() {
  local w=$build/run/study rc execs cov ft found
  rm -rf "$w" && mkdir -p "$w"
  if [ "$mode" = regress ]; then
    "$python" "$here/fuzz_study.py" --work "$w" --replay "$here/corpus/study" \
      $( [ -d "$here/regressions/study" ] && echo "$here/regressions/study") >"$w/replay.log" 2>&1
    rc=$?
    grep -E '^(FAIL| {5})' "$w/replay.log" | sed 's/^/study: /'
    summary+=("study: $(tail -n 1 "$w/replay.log")")
    [ "$rc" = 0 ] || status=1
    return
  fi
  echo "== study: fuzzing ${seconds} s (log $w/fuzz.log)"
  nice -n "$nice_level" "$python" "$here/fuzz_study.py" --seconds "$seconds" --work "$w" --findings "$w/findings" \
    --corpus-out "$w/corpus" --corpus "$here/corpus/study" --corpus "$here/regressions/study" >"$w/fuzz.log" 2>&1
  rc=$?
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$w/fuzz.log")
  read -r cov ft < <(grep -E '^#[0-9]+ DONE' "$w/fuzz.log" | sed -E 's/.*cov: ([0-9]+) ft: ([0-9]+).*/\1 \2/')
  found=$(sed -n 's/^stat::findings: \([0-9]*\).*/\1/p' "$w/fuzz.log")
  grep -A1 '^FINDING' "$w/fuzz.log" | grep -v '^--$' | sed 's/^/study: /'
  if [ -z "$execs" ]; then
    echo "study: fuzz_study.py exit $rc; the end of $w/fuzz.log:"; tail -n 15 "$w/fuzz.log" | sed 's/^/      /'
    found=1
  fi
  summary+=("study: execs ${execs:-?}, cov ${cov:-?} script lines, ft ${ft:-?}, findings ${found:-?} $(sed -n 's/^stat::findings: [0-9]* distinct //p' "$w/fuzz.log")")
  [ "${found:-1}" = 0 ] || status=1
}

for h in "${names[@]}"; do
  if [ "$h" = study ]; then run_study
  elif [ "$mode" = regress ]; then regress_c "$h"
  else fuzz_c "$h"
  fi
done

echo "== fuzz summary ($mode$( [ "$mode" = fuzz ] && echo ", $seconds s each"))"
printf '  %s\n' "${summary[@]}"
exit $status
