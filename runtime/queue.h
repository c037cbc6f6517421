/*
 * queue.h: the calls waiting for a worker. The scheduler puts a call on
 * its pool's queue, takes calls off it for a worker, acknowledges each
 * taken call once its attempt is over, puts back the calls a stopped
 * worker never started, and removes cancelled ones; calls waiting to be
 * retried sit in the delayed set until they are due. The scheduler uses
 * only these functions: no other file reads the lists behind them.
 *
 * Every function runs with rt.mu held and does memory work only.
 *
 * The in-process implementation (queue.c) keeps a FIFO list per pool and
 * one delayed list. The interface is shaped so that Redis Streams can sit
 * behind it, one stream per pool (per spec hash), with the runtimes of a
 * cluster as the consumers of one consumer group:
 *
 *   rt_queue_put(new)       XADD stream * call <id>          MAXLEN is checked
 *                           first; the call's frame lives in a hash
 *                           keyed by the call id
 *   rt_queue_put(front)     only ever used for a call that was taken
 *                           before: its entry is still pending, so it is
 *                           released (XCLAIM to the group's idle consumer)
 *                           and read before new entries, at its old place
 *   rt_queue_take           XREADGROUP GROUP g <runtime> COUNT n
 *                           STREAMS stream >   (pending entries of this
 *                           consumer are read first, with id 0)
 *   rt_queue_ack            XACK stream g <entry>; XDEL stream <entry>
 *   rt_queue_requeue        as put(front), for each call, in order: the
 *                           entries keep their stream ids, so order holds
 *   rt_queue_cancel         XDEL of a queued entry; ZREM of a delayed one
 *   rt_queue_delay/due      ZADD delayed <ready_at> <id>; ZRANGEBYSCORE
 *                           -inf <now> then XADD for each due call
 *   a runtime that died     its pending entries are taken over by the
 *                           others with XAUTOCLAIM (min-idle = a lease),
 *                           so its calls run again (at least once; the
 *                           call id keeps a result delivered once)
 *   rt_queue_length/peek    XLEN and XRANGE stream - + COUNT 1 (or a
 *                           counter kept beside the stream)
 *
 * In this file's terms a call is "queued" between put and take, "taken"
 * between take and ack (or requeue), and "delayed" between delay and due.
 */
#ifndef RT_QUEUE_H
#define RT_QUEUE_H

#include <stdbool.h>
#include <stddef.h>

typedef struct rt_call rt_call;
typedef struct rt_pool rt_pool;

/* Where rt_queue_put places a call: a new call at the back (refused when
 * the queue is full), a retry that is due at the back (never refused: it
 * was accepted once), a call given back at the front. */
enum rt_queue_end { RT_QUEUE_NEW, RT_QUEUE_RETRY, RT_QUEUE_FRONT };

/* The most calls one pool's queue holds (--max-queued). */
#define RT_QUEUE_MAX_DEFAULT 1000000
extern size_t rt_queue_max;

/* Queue c on pool p (c->pool). Returns 0, or -1 when c is new and p
 * already holds rt_queue_max calls. */
int rt_queue_put(rt_pool *p, rt_call *c, enum rt_queue_end end);

/*
 * Take up to max calls from the front of p's queue into out, in order.
 * A call whose arguments travel in a memfd goes alone: taking stops
 * before one when out already holds a call, and after one. Returns how
 * many were taken; each must later be acknowledged or requeued.
 */
size_t rt_queue_take(rt_pool *p, rt_call **out, size_t max);

/* The attempt of a taken call is over (a result, a failure, dropped). */
void rt_queue_ack(rt_call *c);

/*
 * Give back calls that were taken but never started: list, linked by
 * qnext, goes to the front of p's queue in its own order. Calls that
 * are done or gone already (those keep_fn says no to) are acknowledged
 * and handed to drop_fn instead.
 */
void rt_queue_requeue(rt_pool *p, rt_call *list, bool (*keep_fn)(rt_call *c),
                      void (*drop_fn)(rt_call *c));

/* Remove c from its pool's queue or from the delayed set, wherever it
 * waits; a call that waits in neither is left alone. */
void rt_queue_cancel(rt_call *c);

/*
 * Remove every queued call of p that match says yes to, in one pass, and
 * return them linked by qnext (in queue order) for the caller to free.
 */
rt_call *rt_queue_remove_if(rt_pool *p, bool (*match)(const rt_call *c, const void *arg),
                            const void *arg);

/* The first queued call of p, or NULL; it stays queued. */
rt_call *rt_queue_peek(const rt_pool *p);

/* Calls queued on p (not taken, not delayed). */
size_t rt_queue_length(const rt_pool *p);

/* Calls of p taken and not yet acknowledged or requeued. */
size_t rt_queue_taken(const rt_pool *p);

/* Park c (an attempt failed) until ready_at, then rt_queue_due gives it. */
void rt_queue_delay(rt_call *c, double ready_at);

/* Take every delayed call due at now; returns them linked by qnext. */
rt_call *rt_queue_due(double now);

/* When the next delayed call is due, or `after` if none is due before. */
double rt_queue_next_due(double after);

/* Whether any call is delayed. */
bool rt_queue_any_delayed(void);

/* Delayed calls of p. */
size_t rt_queue_delayed(const rt_pool *p);

#endif
