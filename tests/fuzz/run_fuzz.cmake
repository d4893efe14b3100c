# ctest driver: seeds a fresh temporary corpus (the repository is never written) and fuzzes.
# -D FUZZER=... (-D SEEDER=program | -D SEEDS=folder) -D DICT=... -D WORK=... -D SECONDS=...
# [-D TIMEOUT=seconds per input, default 10] [-D MAX_LEN=bytes, default 4096]
if(NOT DEFINED TIMEOUT)
  set(TIMEOUT 10)
endif()
if(NOT DEFINED MAX_LEN)
  set(MAX_LEN 4096)
endif()
file(REMOVE_RECURSE ${WORK})
file(MAKE_DIRECTORY ${WORK}/corpus)
if(DEFINED SEEDS)
  file(GLOB seed_files ${SEEDS}/*)
  file(COPY ${seed_files} DESTINATION ${WORK}/corpus)
else()
  execute_process(COMMAND ${SEEDER} ${WORK}/corpus RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "seed generator failed: ${rc}")
  endif()
endif()
execute_process(COMMAND ${FUZZER} -max_total_time=${SECONDS} -max_len=${MAX_LEN} -timeout=${TIMEOUT} -rss_limit_mb=2048
                        -dict=${DICT} -artifact_prefix=${WORK}/ ${WORK}/corpus
                RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "${FUZZER} found a failure (${rc}); the input is in ${WORK}")
endif()
file(REMOVE_RECURSE ${WORK})
