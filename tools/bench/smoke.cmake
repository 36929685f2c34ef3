# smoke.cmake: the bench_smoke test. Runs the benchmark in --quick --skip-torch
# mode into a fresh folder, then checks the CSV files it wrote (check_csv.py).
# Variables: PYTHON BENCH CHECK BNMPI BOUND MPIEXEC OUT (see CMakeLists.txt).
file(REMOVE_RECURSE "${OUT}")
file(MAKE_DIRECTORY "${OUT}")
set(mpiexec_args)
if(MPIEXEC)
  set(mpiexec_args --mpirun "${MPIEXEC}")
endif()
execute_process(
  COMMAND "${PYTHON}" "${BENCH}" --quick --skip-torch --out "${OUT}"
          --bnmpi "${BNMPI}" --bound "${BOUND}" ${mpiexec_args}
  RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "bench.py --quick --skip-torch failed (${rc})")
endif()
execute_process(COMMAND "${PYTHON}" "${CHECK}" "${OUT}" RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "check_csv.py found a problem in ${OUT} (${rc})")
endif()
