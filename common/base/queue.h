/* queue.h — a bounded blocking FIFO of pointers between threads (producers block when full,
 * consumers when empty), with close() to signal the end of the stream.
 * Not for: lock-free hot paths or unbounded buffering.
 */
#ifndef ASVR_BASE_QUEUE_H
#define ASVR_BASE_QUEUE_H

#ifdef __cplusplus
extern "C" {
#endif

typedef struct asvr_queue asvr_queue;

asvr_queue *asvr_queue_new(int capacity);
void asvr_queue_free(asvr_queue *q);
/* Blocks while full. Returns -1 if the queue was closed (the item is not taken). */
int asvr_queue_push(asvr_queue *q, void *item);
/* Blocks while empty and open. Returns NULL once closed and drained. */
void *asvr_queue_pop(asvr_queue *q);
/* No more pushes; waiting consumers wake up and drain what is left. */
void asvr_queue_close(asvr_queue *q);

#ifdef __cplusplus
}
#endif
#endif
