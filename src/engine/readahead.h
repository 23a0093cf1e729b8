/*
 * readahead.h - parallel reads for ranges over cold data (the WiscKey idea).
 *
 * The values of consecutive keys lie scattered over the data files. When
 * they are not in the page cache, reading them one after the other waits
 * for the disk once per value (~8.7 k random reads/s here at queue depth
 * 1); the disk serves 31 k/s with 8 readers and more with deeper queues. So
 * when an iterator finds the first records of a page of keys cold, it hands
 * every record of the page to a small pool of threads that fault their
 * pages in, in parallel, while it goes on consuming in key order: its own
 * page faults then find the pages there, or wait for the read in flight.
 * Hot pages cost one mincore() probe per page of keys.
 */
#ifndef BR_ENGINE_READAHEAD_H
#define BR_ENGINE_READAHEAD_H

#include <stddef.h>
#include <stdint.h>

#include "engine/datafile.h"

typedef struct br_readahead br_readahead;

/* Starts `threads` reader threads (0: returns NULL, no read-ahead). */
br_readahead *br_ra_new(unsigned threads);

/* Stops the threads (after the queued reads) and frees the pool. */
void br_ra_free(br_readahead *ra);

/*
 * Queues a read of [offset, offset + len) of f's map. Takes a pin on f
 * (refs) that the reader drops when done. Returns 0, or -1 when the queue
 * is full (nothing queued: the caller's own read will do it).
 */
int br_ra_queue(br_readahead *ra, br_datafile *f, uint64_t offset, size_t len);

/* Whether the page holding f's byte at offset is in memory (mincore). */
int br_ra_resident(const br_datafile *f, uint64_t offset);

#endif
