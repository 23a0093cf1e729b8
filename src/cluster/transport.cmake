# br_transport: the peer transport (framed raft messages over TCP, libuv).
add_library(br_transport STATIC transport.c)
target_link_libraries(br_transport PUBLIC br_common PkgConfig::UV PkgConfig::XXHASH)
target_include_directories(br_transport PUBLIC ${CMAKE_CURRENT_SOURCE_DIR})
