/*
 * readahead.h - reading ahead for ranges over cold data (the WiscKey idea).
 *
 * The values of consecutive keys lie scattered over the data files. When
 * they are not in the page cache, reading them one after the other waits
 * for the disk once per value (~8.7 k random reads/s here at queue depth
 * 1, 67 k/s at depth 32). So when an iterator finds a page of keys cold,
 * it asks the kernel for every record of the page at once
 * (madvise(MADV_WILLNEED) on each record's bytes: the reads are submitted
 * and the call returns without waiting), then consumes in key order: its
 * page faults find the pages there or wait for the read in flight. Hot
 * pages cost one mincore() probe per page of keys.
 *
 * An earlier version faulted pages in from a pool of 16 threads; measured
 * side by side (bitraft-bench engine --phases fillbatch,scan100cold, three
 * runs each), the kernel's own asynchronous reads did better (2.24–2.40x
 * serial against 1.97–2.24x) with no threads, queue or pins.
 */
#ifndef BR_ENGINE_READAHEAD_H
#define BR_ENGINE_READAHEAD_H

#include <stddef.h>
#include <stdint.h>

#include "engine/datafile.h"

/* Starts reading [offset, offset + len) of f's map into the page cache,
 * without waiting. f must stay mapped during the call. */
void br_ra_willneed(const br_datafile *f, uint64_t offset, size_t len);

/* Whether the page holding f's byte at offset is in memory (mincore). */
int br_ra_resident(const br_datafile *f, uint64_t offset);

#endif
