# Linearizability tooling: the checker library, its CLI, the recording
# client, their unit tests and a run against a real standalone server.
# (docs/LINCHECK.md)
pkg_check_modules(LINCURL REQUIRED IMPORTED_TARGET libcurl)
pkg_check_modules(LINCRITERION REQUIRED IMPORTED_TARGET criterion)

add_library(br_lincheck STATIC ${CMAKE_CURRENT_SOURCE_DIR}/lincheck.c)
target_include_directories(br_lincheck PUBLIC ${CMAKE_CURRENT_SOURCE_DIR})
target_link_libraries(br_lincheck PUBLIC br_common)

add_executable(bitraft-lincheck ${CMAKE_CURRENT_SOURCE_DIR}/lincheck_main.c)
target_link_libraries(bitraft-lincheck PRIVATE br_lincheck)
set_target_properties(bitraft-lincheck PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR})

add_executable(bitraft-linclient ${CMAKE_CURRENT_SOURCE_DIR}/linclient.c)
target_link_libraries(bitraft-linclient PRIVATE br_lincheck PkgConfig::LINCURL Threads::Threads)
set_target_properties(bitraft-linclient PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR})

add_executable(test_lincheck ${CMAKE_CURRENT_SOURCE_DIR}/test_lincheck.c)
target_link_libraries(test_lincheck PRIVATE br_lincheck PkgConfig::LINCRITERION)
add_test(NAME lincheck COMMAND test_lincheck --jobs 2 --timeout 300)
set_tests_properties(lincheck PROPERTIES TIMEOUT 600
                     ENVIRONMENT "BR_TEST_TMP=${CMAKE_BINARY_DIR}/test-tmp")

# The recorder and the checker against today's single-node server: must be
# linearizable, also across a SIGKILL and restart.
find_program(BR_LIN_BASH bash REQUIRED)
add_test(NAME lin_standalone
         COMMAND ${BR_LIN_BASH} ${CMAKE_CURRENT_SOURCE_DIR}/lin_standalone_test.sh
                 $<TARGET_FILE:bitraft> $<TARGET_FILE:bitraft-linclient>
                 $<TARGET_FILE:bitraft-lincheck> ${CMAKE_BINARY_DIR}/test-tmp)
set_tests_properties(lin_standalone PROPERTIES TIMEOUT 120)

# A real 3-node cluster under kill -9 of (mostly) the leader every few
# seconds: the recorded history must be linearizable.
add_test(NAME lin_cluster
         COMMAND ${BR_LIN_BASH} ${CMAKE_CURRENT_SOURCE_DIR}/lin_cluster_test.sh
                 $<TARGET_FILE:bitraft> $<TARGET_FILE:bitraft-linclient>
                 $<TARGET_FILE:bitraft-lincheck> ${CMAKE_BINARY_DIR}/test-tmp 12)
set_tests_properties(lin_cluster PROPERTIES TIMEOUT 240)
# The same under membership changes: members removed (often the leader) and
# added back while the clients run.
add_test(NAME lin_membership
         COMMAND ${BR_LIN_BASH} ${CMAKE_CURRENT_SOURCE_DIR}/lin_cluster_test.sh
                 $<TARGET_FILE:bitraft> $<TARGET_FILE:bitraft-linclient>
                 $<TARGET_FILE:bitraft-lincheck> ${CMAKE_BINARY_DIR}/test-tmp 12 members)
set_tests_properties(lin_membership PROPERTIES TIMEOUT 240)
