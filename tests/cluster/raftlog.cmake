# Tests of br_raftlog (Criterion; every test case runs in its own process)
# and its throughput measurement (built, not run by CTest).
function(br_raftlog_test name)
  add_executable(${name} ${name}.c test_raftlog_util.c)
  target_link_libraries(${name} PRIVATE br_raftlog br_testutil PkgConfig::CRITERION)
  add_test(NAME ${name} COMMAND ${name} --jobs 2 --timeout 300)
  set_tests_properties(${name} PROPERTIES TIMEOUT 900
                       ENVIRONMENT "BR_TEST_TMP=${CMAKE_BINARY_DIR}/test-tmp")
endfunction()

br_raftlog_test(test_raftlog)
br_raftlog_test(test_raftlog_crash)

add_executable(raftlog_bench raftlog_bench.c)
target_link_libraries(raftlog_bench PRIVATE br_raftlog)
