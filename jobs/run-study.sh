#!/bin/bash
# run-study.sh: run a bnmpi study file on one machine with mpirun, then report.
#
#   jobs/run-study.sh [options] STUDY.tsv
#
# A study file lists runs, one per line: a name, the rank count, then bnmpi
# options (see jobs/study-default.tsv; the format is described there). Each run
# writes RESULTS/<study>/<name>.h5 (<study> is the file name without .tsv), its
# output goes to <name>.log beside it, and its checkpoint to <name>.ckpt.h5
# while it runs (removed when it completes).
#
# Re-running the same command finishes an interrupted study:
#   - a run whose metrics file has /summary is complete and skipped;
#   - a run with a checkpoint is resumed from it (--resume; bitwise the same
#     result as an uninterrupted run at the same rank count); if bnmpi refuses
#     the checkpoint (exit 2: the run's line was edited since), the run is
#     started again;
#   - a run with a metrics file but no checkpoint (killed before its first
#     epoch ended) is redone from the start (--force).
# Ctrl-C, SIGTERM or SIGHUP to this script is passed to the running bnmpi as
# SIGUSR1: it checkpoints, and the script stops with exit status 75.
#
# Seeds: with --seeds N (or "--seeds N" among a line's options, which wins for
# that line) a line is run N times, with --seed 1 .. --seed N, as
# RESULTS/<study>/<name>-seed<k>.h5 (log and checkpoint named alike), so that
# the runs that differ only in their seed sit side by side and the analysis
# tools treat them as one configuration (mean and 95% interval over seeds).
# Such a line must not set --seed itself. Without --seeds a line runs once, as
# <name>.h5, with the options as written. Skipping, resuming and redoing work
# per seed as above: a study stopped in seed 2 of a line resumes that seed.
#
# Then, when tools/analyze.py exists (beside jobs/, in a checkout or under
# <prefix>/share/bnmpi), it writes the figures and table into
# RESULTS/<study>/report.
#
# Options:
#   --epochs-scale F  multiply every run's --epochs by F (rounded, at least 1),
#                     e.g. 0.1 for a smoke run [1]
#   --bnmpi PATH      the bnmpi binary [$BNMPI, else bnmpi on the PATH]
#   --np-max N        skip runs that need more than N ranks [no limit; runs with
#                     more ranks than cores get --oversubscribe]
#   --results DIR     parent folder of the study's results [./results]
#   --mpirun PATH     the MPI launcher [mpirun]
#   --seeds N         run every line with seeds 1..N (see Seeds above) [each
#                     line once, as written]
#   --no-report       do not run tools/analyze.py
#   --list            print the runs (after --seeds), one per line: NAME, NP,
#                     OPTIONS separated by tabs, and exit; line k of it is
#                     task k of jobs/study.sbatch
#   --count           print how many runs that is (the job array's size), and exit
#   --dry-run         print the commands, run nothing
#   -h, --help        this text
#
# Exit status: 0 all runs complete (and the report written); 1 a run or the
# report failed (the other runs still ran); 2 bad command line or study file;
# 75 interrupted (a checkpoint was written: run the same command again).
set -u -o pipefail

prog=run-study.sh
script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

usage() { sed -n '2,/^set -u/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//'; }
die() { echo "$prog: $*" >&2; exit 2; }

epochs_scale=1
bnmpi=${BNMPI:-}
np_max=0
results_root=results
mpirun=mpirun
report=1
dry_run=0
seeds=0
list=
study_file=

while [ $# -gt 0 ]; do
  case "$1" in
    --epochs-scale) [ $# -ge 2 ] || die "--epochs-scale needs a value"; epochs_scale=$2; shift 2 ;;
    --epochs-scale=*) epochs_scale=${1#*=}; shift ;;
    --bnmpi) [ $# -ge 2 ] || die "--bnmpi needs a path"; bnmpi=$2; shift 2 ;;
    --bnmpi=*) bnmpi=${1#*=}; shift ;;
    --np-max) [ $# -ge 2 ] || die "--np-max needs a value"; np_max=$2; shift 2 ;;
    --np-max=*) np_max=${1#*=}; shift ;;
    --results) [ $# -ge 2 ] || die "--results needs a folder"; results_root=$2; shift 2 ;;
    --results=*) results_root=${1#*=}; shift ;;
    --mpirun) [ $# -ge 2 ] || die "--mpirun needs a path"; mpirun=$2; shift 2 ;;
    --mpirun=*) mpirun=${1#*=}; shift ;;
    --seeds) [ $# -ge 2 ] || die "--seeds needs a value"; seeds=$2; shift 2 ;;
    --seeds=*) seeds=${1#*=}; shift ;;
    --list) list=list; shift ;;
    --count) list=count; shift ;;
    --no-report) report=0; shift ;;
    --dry-run) dry_run=1; shift ;;
    -h|--help) usage; exit 0 ;;
    --) shift; break ;;
    -*) die "unknown option $1 (see --help)" ;;
    *) [ -z "$study_file" ] || die "one study file only ($study_file, then $1)"; study_file=$1; shift ;;
  esac
done
if [ $# -gt 0 ]; then
  [ -z "$study_file" ] && [ $# -eq 1 ] || die "one study file only"
  study_file=$1
fi
[ -n "$study_file" ] || die "no study file given (usage: $prog [options] STUDY.tsv; see --help)"
[ -f "$study_file" ] && [ -r "$study_file" ] || die "$study_file: not a readable file"
awk -v f="$epochs_scale" 'BEGIN { exit !(f ~ /^([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?$/ && f + 0 > 0) }' \
  || die "--epochs-scale $epochs_scale: expected a number > 0"
# whole V LO HI: V is digits only (leading zeros allowed) and LO <= V <= HI,
# without the overflow of [ -le ] or $(( )) on long digit strings.
whole() {
  local v=$1
  [[ "$v" =~ ^[0-9]+$ ]] || return 1
  v=${v#"${v%%[!0]*}"}; v=${v:-0}
  [ "${#v}" -le 18 ] && [ "$v" -ge "$2" ] && [ "$v" -le "$3" ]
}
# The most ranks a line may ask for (and what an --np-max above it means).
NP_LIMIT=1000000
# bnmpi's range for --epochs (src/options.c).
EPOCHS_MAX=100000
[[ "$np_max" =~ ^[0-9]+$ ]] || die "--np-max $np_max: expected a whole number (0 = no limit)"
whole "$np_max" 0 "$NP_LIMIT" && np_max=$((10#$np_max)) || np_max=0
whole "$seeds" 0 1000 || die "--seeds $seeds: expected a whole number of seeds (1-1000)"
seeds=$((10#$seeds))

# --- the study file ----------------------------------------------------------
# Lines: NAME NP OPTIONS..., separated by tabs or spaces; '#' starts a comment
# line; blank lines are skipped. Each line becomes one run, or one per seed
# (--seeds). study.sbatch's task k is the k-th run of this list (--list).
names=() nps=() optss=()
declare -A seen=()
lineno=0
# The reads are byte for byte (LC_ALL=C): in a UTF-8 locale bash's read takes an
# invalid byte and the newline after it for one character, joining two lines.
while LC_ALL=C IFS= read -r line || [ -n "$line" ]; do
  lineno=$((lineno + 1))
  line=${line%$'\r'}
  [[ "$line" =~ ^[[:space:]]*(#|$) ]] && continue
  LC_ALL=C read -r name np opts <<<"$line"
  where="$study_file:$lineno"
  # bash drops some control characters (\x01) from words, so a token could
  # vanish on the way to bnmpi: only tabs and spaces may separate fields
  ctl=${line//$'\t'/ }
  [[ ! "$ctl" =~ [[:cntrl:]] ]] || die "$where: a control character in the line (fields are separated by tabs or spaces)"
  [[ "$name" =~ ^[A-Za-z0-9][A-Za-z0-9._-]*$ ]] || die "$where: run name '$name': use letters, digits, '.', '_', '-'"
  # NAME.ckpt.h5 is the checkpoint of run NAME: a run NAME.ckpt would write its
  # metrics there (its -seed<k> runs end in a digit, so only the name as written
  # matters).
  [[ "$name" != *.ckpt ]] || die "$where: run name '$name': a name ending in .ckpt would share files with run ${name%.ckpt}"
  [[ "$np" =~ ^[1-9][0-9]*$ ]] && whole "$np" 1 "$NP_LIMIT" \
    || die "$where: rank count '$np' for $name: expected a whole number from 1 to $NP_LIMIT"
  LC_ALL=C read -r -a optv <<<"$opts"
  line_seeds=$seeds has_seed= kept=()
  for ((i = 0; i < ${#optv[@]}; i++)); do
    o=${optv[i]}
    case "$o" in
      --metrics|--metrics=*|--checkpoint|--checkpoint=*|--resume|--resume=*|--force)
        die "$where: $o: the launcher sets the metrics, checkpoint and resume options itself" ;;
      --) die "$where: '--' for $name: it would make the launcher's --metrics and --checkpoint arguments" ;;
      --seeds) line_seeds=${optv[i + 1]-}; i=$((i + 1))
        whole "$line_seeds" 1 1000 || die "$where: --seeds '$line_seeds' for $name: expected a whole number from 1 to 1000"
        line_seeds=$((10#$line_seeds))
        continue ;;
      --seeds=*) line_seeds=${o#*=}
        whole "$line_seeds" 1 1000 || die "$where: $o for $name: expected a whole number from 1 to 1000"
        line_seeds=$((10#$line_seeds))
        continue ;;
      --seed|--seed=*) has_seed=1 ;;
      --epochs|--epochs=*)
        if [ "$o" = --epochs ]; then
          [ $((i + 1)) -lt ${#optv[@]} ] || die "$where: --epochs for $name has no value: expected a whole number from 1 to $EPOCHS_MAX"
          e=${optv[i + 1]}; kept+=("$o" "$e"); i=$((i + 1))
        else
          e=${o#*=}; kept+=("$o")
        fi
        whole "$e" 1 "$EPOCHS_MAX" || die "$where: --epochs '$e' for $name: expected a whole number from 1 to $EPOCHS_MAX"
        continue ;;
      --?*)
        # bnmpi's getopt_long takes an unambiguous prefix for the option: refuse
        # prefixes of the options this launcher sets, rewrites or reads.
        p=${o%%=*}; p=${p#--}
        for full in metrics checkpoint checkpoint-every resume force epochs seed seeds; do
          if [ "$p" != "$full" ] && [ "${full#"$p"}" != "$full" ]; then
            case " metrics checkpoint checkpoint-every resume force epochs seed seeds " in
              *" $p "*) ;;  # a full name of its own (--seed, --checkpoint): handled above or passed on
              *) die "$where: $o for $name: an abbreviation of --$full: write the option's full name" ;;
            esac
          fi
        done ;;
    esac
    kept+=("$o")
  done
  opts="${kept[*]}"
  if [ "$line_seeds" -gt 0 ]; then
    [ -z "$has_seed" ] || die "$where: $name sets --seed and is run with --seeds $line_seeds: drop one of them"
    for ((s = 1; s <= line_seeds; s++)); do
      run="$name-seed$s"
      [ -z "${seen[$run]:-}" ] || die "$where: run name $run is used twice (also line ${seen[$run]})"
      seen[$run]=$lineno
      names+=("$run") nps+=("$np") optss+=("$opts --seed $s")
    done
  else
    [ -z "${seen[$name]:-}" ] || die "$where: run name $name is used twice (also line ${seen[$name]})"
    seen[$name]=$lineno
    names+=("$name") nps+=("$np") optss+=("$opts")
  fi
done <"$study_file"
n=${#names[@]}
[ "$n" -gt 0 ] || die "$study_file: no runs in it"

study=$(basename "$study_file"); study=${study%.tsv}; study=${study%.txt}
outdir=$results_root/$study
if [ "$list" = count ]; then echo "$n"; exit 0; fi
if [ "$list" = list ]; then
  for ((k = 0; k < n; k++)); do printf '%s\t%s\t%s\n' "${names[k]}" "${nps[k]}" "${optss[k]}"; done
  exit 0
fi

# --- tools ---------------------------------------------------------------------
if [ -z "$bnmpi" ]; then
  bnmpi=$(command -v bnmpi) || { [ "$dry_run" = 1 ] && bnmpi=bnmpi; } \
    || die "no bnmpi on the PATH: give --bnmpi PATH (or set BNMPI)"
elif [[ "$bnmpi" != */* ]]; then
  bnmpi=$(command -v "$bnmpi") || die "--bnmpi $bnmpi: not found on the PATH"
fi
version=
if [ "$dry_run" = 0 ]; then
  [ -f "$bnmpi" ] && [ -x "$bnmpi" ] || die "--bnmpi $bnmpi: not an executable file"
  version=$("$bnmpi" --version 2>&1 | head -n 1)
  command -v "$mpirun" >/dev/null || die "$mpirun: not found (--mpirun PATH)"
fi
analyze=$(cd "$script_dir/.." && pwd)/tools/analyze.py
python=/usr/bin/python3; [ -x "$python" ] || python=python3
cores=$(nproc 2>/dev/null || echo 1)

# Epochs of a run after scaling: --epochs N in its options, else bnmpi's 10.
scaled_opts() {  # OPTS -> OPTS with --epochs replaced
  local -a in out; local i e=10 have=0
  LC_ALL=C read -r -a in <<<"$1"
  for ((i = 0; i < ${#in[@]}; i++)); do
    case "${in[i]}" in
      --epochs) e=${in[i + 1]}; i=$((i + 1)); have=1 ;;
      --epochs=*) e=${in[i]#*=}; have=1 ;;
      *) out+=("${in[i]}") ;;
    esac
  done
  if [ "$epochs_scale" != 1 ] || [ "$have" = 1 ]; then
    e=$(awk -v e="$e" -v f="$epochs_scale" 'BEGIN { x = int(e * f + 0.5); print (x < 1 ? 1 : x) }')
    out+=(--epochs "$e")
  fi
  printf '%s\n' "${out[*]}"
}

# The file's /summary/test_acc in percent, or nothing (and status 1) when the
# file has no /summary. Reads without HDF5's file lock.
summary_acc() {
  local f=$1 v
  [ -f "$f" ] || return 1
  if command -v h5dump >/dev/null; then
    v=$(HDF5_USE_FILE_LOCKING=FALSE h5dump -a /summary/test_acc "$f" 2>/dev/null \
        | sed -n 's/^ *(0): *//p') || return 1
  else
    v=$(HDF5_USE_FILE_LOCKING=FALSE "$python" -c '
import sys, h5py
with h5py.File(sys.argv[1], "r") as f: print(f["summary"].attrs["test_acc"])' "$f" 2>/dev/null) || return 1
  fi
  [ -n "$v" ] || return 1
  awk -v v="$v" 'BEGIN { printf "%.2f%%\n", 100 * v }'
}

# Run cmd[] with its output appended to $log; sets rc. A signal to this script
# reaches bnmpi through on_signal while it waits.
run_logged() {
  echo "# $(date -u +%FT%TZ) $1: $(quote "${cmd[@]}")" >>"$log"
  "${cmd[@]}" </dev/null >>"$log" 2>&1 &
  child=$!
  wait "$child"; rc=$?
  while kill -0 "$child" 2>/dev/null; do wait "$child"; rc=$?; done
  child=
}

quote() { local a out=(); for a in "$@"; do out+=("$(printf '%q' "$a")"); done; printf '%s\n' "${out[*]}"; }

# --- run -------------------------------------------------------------------------
stop_signal=
child=
on_signal() {
  stop_signal=$1
  # bnmpi checkpoints and exits 75 on SIGUSR1, which mpirun passes on to every rank.
  [ -n "$child" ] && kill -USR1 "$child" 2>/dev/null
}
trap 'on_signal INT' INT
trap 'on_signal TERM' TERM
trap 'on_signal HUP' HUP

width=${#n}
[ "$dry_run" = 1 ] || mkdir -p "$outdir" || die "cannot make $outdir"
scale_note=; [ "$epochs_scale" = 1 ] || scale_note=", epochs x $epochs_scale"
echo "study $study: $n runs from $study_file into $outdir${version:+ ($version: $bnmpi)}$scale_note"
failed=() done_count=0 skipped_np=0
t_study=$(date +%s.%N)
for ((k = 0; k < n; k++)); do
  [ -z "$stop_signal" ] || { echo "$prog: interrupted by SIG$stop_signal" >&2; exit 75; }
  name=${names[k]} np=${nps[k]}
  tag=$(printf '[%*d/%d] %-24s np=%-2s' "$width" $((k + 1)) "$n" "$name" "$np")
  metrics=$outdir/$name.h5 ckpt=$outdir/$name.ckpt.h5 log=$outdir/$name.log
  if acc=$(summary_acc "$metrics"); then
    echo "$tag done earlier        test acc $acc"
    rm -f "$ckpt"
    done_count=$((done_count + 1))
    continue
  fi
  if [ "$np_max" -gt 0 ] && [ "$np" -gt "$np_max" ]; then
    echo "$tag skipped: needs $np ranks, --np-max $np_max"
    skipped_np=$((skipped_np + 1))
    continue
  fi
  LC_ALL=C read -r -a opts <<<"$(scaled_opts "${optss[k]}")"
  cmd=("$mpirun" -np "$np")
  [ "$(id -u)" = 0 ] && cmd+=(--allow-run-as-root)
  [ "$np" -gt "$cores" ] && cmd+=(--oversubscribe)
  cmd+=("$bnmpi" "${opts[@]}" --metrics "$metrics" --checkpoint "$ckpt")
  base=("${cmd[@]}")
  how=new
  if [ -f "$ckpt" ]; then
    cmd+=(--resume "$ckpt"); how=resumed
  elif [ -e "$metrics" ]; then
    cmd+=(--force); how=redone
  fi
  if [ "$dry_run" = 1 ]; then
    quote "${cmd[@]}"
    continue
  fi
  t0=$(date +%s.%N)
  run_logged "$how"
  if [ "$how" = resumed ] && [ "$rc" = 2 ] && [ -z "$stop_signal" ]; then
    # bnmpi refused the checkpoint: the run's options no longer match it (the
    # study line was edited, or another bnmpi). Start the run again.
    rm -f "$ckpt"
    cmd=("${base[@]}" --force); how="redone: checkpoint refused"
    run_logged "$how"
  fi
  secs=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%7.1f s", b - a }')
  note=; [ "$how" = new ] || note=" ($how)"
  if [ "$rc" = 0 ] && acc=$(summary_acc "$metrics"); then
    echo "$tag $secs  test acc $acc$note"
    rm -f "$ckpt"
    done_count=$((done_count + 1))
  elif [ "$rc" = 75 ] || [ -n "$stop_signal" ]; then
    echo "$tag $secs  stopped by a signal${stop_signal:+ ($stop_signal)}; checkpoint $ckpt"
    echo "$prog: interrupted: run the same command again to resume (log: $log)" >&2
    exit 75
  else
    echo "$tag $secs  FAILED (exit $rc)$note; last lines of $log:"
    tail -n 5 "$log" | sed 's/^/    /'
    failed+=("$name")
  fi
  [ -z "$stop_signal" ] || { echo "$prog: interrupted by SIG$stop_signal" >&2; exit 75; }
done
total=$(awk -v a="$t_study" -v b="$(date +%s.%N)" 'BEGIN { printf "%.0f", b - a }')

if [ "$dry_run" = 1 ]; then
  [ "$report" = 1 ] && [ -f "$analyze" ] && quote "$python" "$analyze" "$outdir" --out "$outdir/report"
  exit 0
fi
echo "study $study: $done_count/$n runs complete, ${#failed[@]} failed, $skipped_np skipped by --np-max; $total s"

status=0
[ "${#failed[@]}" -eq 0 ] || { echo "$prog: failed runs: ${failed[*]}" >&2; status=1; }
if [ "$report" = 1 ]; then
  if [ -f "$analyze" ]; then
    echo "report: $(quote "$python" "$analyze" "$outdir" --out "$outdir/report")"
    if ! "$python" "$analyze" "$outdir" --out "$outdir/report"; then
      echo "$prog: the report failed (the runs are kept in $outdir)" >&2
      status=1
    fi
  else
    echo "report: skipped, no $analyze"
  fi
fi
exit $status
