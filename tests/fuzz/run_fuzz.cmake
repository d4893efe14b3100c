# ctest driver: seeds a fresh temporary corpus (the repository is never written) and fuzzes.
# -D FUZZER=... -D SEEDER=... -D DICT=... -D WORK=... -D SECONDS=...
file(REMOVE_RECURSE ${WORK})
file(MAKE_DIRECTORY ${WORK}/corpus)
execute_process(COMMAND ${SEEDER} ${WORK}/corpus RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "seed generator failed: ${rc}")
endif()
execute_process(COMMAND ${FUZZER} -max_total_time=${SECONDS} -max_len=4096 -timeout=10 -rss_limit_mb=2048
                        -dict=${DICT} -artifact_prefix=${WORK}/ ${WORK}/corpus
                RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "gguf_reader_fuzz found a failure (${rc}); the input is in ${WORK}")
endif()
file(REMOVE_RECURSE ${WORK})
