# br_raftlog: the Raft log on disk (segment files, hard state, snapshot
# metadata), implementing the raft core's br_raft_storage. See
# src/cluster/raftlog.h and docs/RAFTLOG.md.
add_library(br_raftlog STATIC raftlog.c)
target_include_directories(br_raftlog PUBLIC ${CMAKE_CURRENT_SOURCE_DIR})
target_link_libraries(br_raftlog PUBLIC br_raft br_common PkgConfig::XXHASH Threads::Threads)
