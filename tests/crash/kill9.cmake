# kill -9 torture of the real kvd binary (tests/crash/kill9.py, README.md):
# SIGKILL at random moments under concurrent writers, restart, check every
# acknowledged write against the ledger, kvfsck on the killed directory.
#
#   kill9_always    --fsync always,   KV_KILL9_CYCLES cycles (default 20)
#   kill9_everysec  --fsync everysec, KV_KILL9_MODE_CYCLES cycles (default 8)
#   kill9_no        --fsync no,       KV_KILL9_MODE_CYCLES cycles (default 8)
#   kill9_selftest, kill9_detects_loss: the checker catches what it must
#
# The everysec/no runs load kvd for up to 1.5 s before the kill, so the
# killed log holds acknowledged writes not yet fdatasynced.
#
# Each test stops starting cycles after --time-limit seconds (a bound below
# the CTest TIMEOUT, so kvd is always stopped by the driver itself). Long
# runs: run kill9.py directly (see README.md).
set(_kill9_env
  "KVD_BIN=$<TARGET_FILE:kvd>"
  "ASAN_OPTIONS=detect_leaks=1:abort_on_error=1"
  "UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1"
  "PYTHONDONTWRITEBYTECODE=1")
if(TARGET kvfsck)
  list(APPEND _kill9_env "KVFSCK_BIN=$<TARGET_FILE:kvfsck>")
else()
  message(STATUS "kill9 tests: no kvfsck target; the kvfsck checks of the kill9 tests are skipped")
  # An empty KVFSCK_BIN makes kill9.py skip kvfsck even if an old binary
  # is lying in the build tree.
  list(APPEND _kill9_env "KVFSCK_BIN=")
endif()

add_test(NAME kill9_always
  COMMAND /usr/bin/python3 ${CMAKE_CURRENT_SOURCE_DIR}/kill9.py
          --fsync always --cycles-env KV_KILL9_CYCLES --default-cycles 20 --time-limit 240)
add_test(NAME kill9_everysec
  COMMAND /usr/bin/python3 ${CMAKE_CURRENT_SOURCE_DIR}/kill9.py
          --fsync everysec --cycles-env KV_KILL9_MODE_CYCLES --default-cycles 8 --max-delay 1.5 --time-limit 150)
add_test(NAME kill9_no
  COMMAND /usr/bin/python3 ${CMAKE_CURRENT_SOURCE_DIR}/kill9.py
          --fsync no --cycles-env KV_KILL9_MODE_CYCLES --default-cycles 8 --max-delay 1.5 --time-limit 150)
# The checker itself: made-up ledgers (no server), and a real run in which
# 4 KiB are cut from the log after each kill: it must report lost writes.
add_test(NAME kill9_selftest
  COMMAND /usr/bin/python3 ${CMAKE_CURRENT_SOURCE_DIR}/kill9.py --self-test)
add_test(NAME kill9_detects_loss
  COMMAND /usr/bin/python3 ${CMAKE_CURRENT_SOURCE_DIR}/kill9.py
          --fsync always --cycles 5 --min-delay 0.1 --inject-loss 4096 --seed 1 --time-limit 60)
set_tests_properties(kill9_always PROPERTIES TIMEOUT 300 ENVIRONMENT "${_kill9_env}")
set_tests_properties(kill9_everysec kill9_no PROPERTIES TIMEOUT 200 ENVIRONMENT "${_kill9_env}")
set_tests_properties(kill9_selftest PROPERTIES TIMEOUT 60 ENVIRONMENT "PYTHONDONTWRITEBYTECODE=1")
set_tests_properties(kill9_detects_loss PROPERTIES TIMEOUT 120 ENVIRONMENT "${_kill9_env}")
unset(_kill9_env)
