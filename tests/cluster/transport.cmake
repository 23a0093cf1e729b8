# The peer transport: Criterion tests (each case in its own process, on
# 127.0.0.1 with ports picked by the kernel) and a throughput benchmark.
add_executable(test_transport test_transport.c)
target_link_libraries(test_transport PRIVATE br_transport PkgConfig::CRITERION PkgConfig::XXHASH)
add_test(NAME transport COMMAND test_transport --jobs 2 --timeout 300)
set_tests_properties(transport PROPERTIES TIMEOUT 600)

# Prints messages/s and MB/s between two transports over loopback; not a test.
add_executable(transport_bench transport_bench.c)
target_link_libraries(transport_bench PRIVATE br_transport)
