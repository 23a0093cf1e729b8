# br_node: real 3-node clusters inside one test process on 127.0.0.1.
# Clusters are heavy on a 2-core machine: one test case at a time.
add_executable(test_node test_node.c)
target_link_libraries(test_node PRIVATE br_node PkgConfig::CRITERION)
add_test(NAME node COMMAND test_node --jobs 1 --timeout 300)
set_tests_properties(node PROPERTIES TIMEOUT 900
                     ENVIRONMENT "BR_TEST_TMP=${CMAKE_BINARY_DIR}/test-tmp")
