# Power-loss and I/O-fault tests of the real kvd binary (tests/crash/README.md,
# section "Power loss, I/O errors and full disk").
#
# iotrace.so: an LD_PRELOAD shim (iotrace.c) that records every mutating
# file-system call kvd makes in its data directory and can fail the Nth
# write or sync. It is built WITHOUT sanitizers even in the ASan build: a
# preloaded library must not carry its own ASan runtime, and the tests
# preload libasan first (LD_PRELOAD="libasan.so.8 iotrace.so", found with
# ldd on $KVD_BIN), which keeps ASan's link-order check satisfied without
# verify_asan_link_order=0. The shim itself writes its trace with raw
# syscalls, so no sanitizer interceptor ever sees its I/O.
add_library(kv_iotrace SHARED iotrace.c)
set_target_properties(kv_iotrace PROPERTIES PREFIX "" OUTPUT_NAME iotrace)
target_compile_options(kv_iotrace PRIVATE -fno-sanitize=all)
target_link_options(kv_iotrace PRIVATE -fno-sanitize=all)
target_link_libraries(kv_iotrace PRIVATE Threads::Threads ${CMAKE_DL_LIBS})

set(_kv_iotrace_env
  "KVD_BIN=$<TARGET_FILE:kvd>"
  "KV_IOTRACE_LIB=$<TARGET_FILE:kv_iotrace>"
  "ASAN_OPTIONS=detect_leaks=1:abort_on_error=1"
  "UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1"
  "PYTHONDONTWRITEBYTECODE=1")
if(TARGET kvfsck)
  list(APPEND _kv_iotrace_env "KVFSCK_BIN=$<TARGET_FILE:kvfsck>")
endif()

# name, python module, timeout (s). Bounded by default; the env vars in
# tests/crash/README.md make the runs larger.
foreach(_t
    "crash_iotrace_selftest;iotrace_selftest;120"
    "crash_powerloss;powerloss;400"
    "crash_losswindow;powerloss_window;300"
    "crash_faults;faults;400"
    "crash_config_rewrite;config_rewrite;300")
  list(GET _t 0 _name)
  list(GET _t 1 _mod)
  list(GET _t 2 _timeout)
  add_test(NAME ${_name}
    COMMAND /usr/bin/python3 -m unittest -v ${_mod}
    WORKING_DIRECTORY ${CMAKE_CURRENT_SOURCE_DIR})
  set_tests_properties(${_name} PROPERTIES TIMEOUT ${_timeout} ENVIRONMENT "${_kv_iotrace_env}")
endforeach()
