# br_node: the replicated store — the raft core driven on a libuv loop over
# the raft log, the peer transport and the engine. See src/cluster/node.h
# and docs/NODE.md.
add_library(br_node STATIC node.c node_loop.c node_cmd.c node_snapshot.c node_members.c)
target_include_directories(br_node PUBLIC ${CMAKE_CURRENT_SOURCE_DIR})
target_link_libraries(br_node PUBLIC br_raft br_raftlog br_transport br_engine PkgConfig::UV
                      PkgConfig::XXHASH Threads::Threads)
