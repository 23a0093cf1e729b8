# The fault proxy for partition tests (bitraft-faultproxy, a TCP forwarder
# whose links can be cut, stalled, delayed and healed) and its tests.
pkg_check_modules(FPUV REQUIRED IMPORTED_TARGET libuv)
pkg_check_modules(FPCRITERION REQUIRED IMPORTED_TARGET criterion)

add_executable(bitraft-faultproxy ${CMAKE_CURRENT_SOURCE_DIR}/faultproxy.c)
target_link_libraries(bitraft-faultproxy PRIVATE PkgConfig::FPUV)
set_target_properties(bitraft-faultproxy PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR})

# Real proxy processes against an echo server in the test: bytes both ways,
# cut, stall, heal, delay, one link's fault leaving the others alone, exit
# with its driver. About 5 s.
add_executable(test_faultproxy ${CMAKE_CURRENT_SOURCE_DIR}/test_faultproxy.c)
target_link_libraries(test_faultproxy PRIVATE PkgConfig::FPCRITERION Threads::Threads)
add_dependencies(test_faultproxy bitraft-faultproxy)
add_test(NAME faultproxy COMMAND test_faultproxy --jobs 2 --timeout 60)
set_tests_properties(faultproxy PROPERTIES TIMEOUT 120
                     ENVIRONMENT "BR_FAULTPROXY=$<TARGET_FILE:bitraft-faultproxy>")

# Partitions of a real 3-node cluster made with the proxy (every peer link
# goes through it): the isolated leader cannot commit, the majority elects
# and serves, after healing one leader and no acknowledged write lost.
find_program(BR_FP_BASH bash REQUIRED)
add_test(NAME partition
         COMMAND ${BR_FP_BASH} ${CMAKE_CURRENT_SOURCE_DIR}/partition_test.sh $<TARGET_FILE:bitraft>
                 $<TARGET_FILE:bitraft-faultproxy> ${CMAKE_BINARY_DIR}/test-tmp)
set_tests_properties(partition PROPERTIES TIMEOUT 120)

# The same cluster with a recorded history: concurrent clients while a node
# is isolated every few seconds; bitraft-lincheck must find it linearizable.
if(TARGET bitraft-linclient AND TARGET bitraft-lincheck)
  add_test(NAME lin_partition
           COMMAND ${BR_FP_BASH} ${CMAKE_CURRENT_SOURCE_DIR}/partition_test.sh $<TARGET_FILE:bitraft>
                   $<TARGET_FILE:bitraft-faultproxy> ${CMAKE_BINARY_DIR}/test-tmp
                   $<TARGET_FILE:bitraft-linclient> $<TARGET_FILE:bitraft-lincheck> 12)
  set_tests_properties(lin_partition PROPERTIES TIMEOUT 240)
endif()
