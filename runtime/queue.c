/*
 * queue.c: the in-process call queue (see queue.h for the interface and
 * how Redis Streams maps onto it). Each pool keeps a FIFO list of its
 * queued calls (qhead, qtail, queued) and a count of the calls taken and
 * not yet acknowledged; the calls waiting to retry form one unordered
 * list (rt.delayed), short in practice. Only this file touches them.
 */
#include "rt.h"

size_t rt_queue_max = RT_QUEUE_MAX_DEFAULT;

int rt_queue_put(rt_pool *p, rt_call *c, enum rt_queue_end end)
{
    if (end == RT_QUEUE_NEW && p->queued >= rt_queue_max)
        return -1;
    c->state = RT_QUEUED;
    c->qnext = NULL;
    if (end == RT_QUEUE_FRONT) {
        c->qnext = p->qhead;
        p->qhead = c;
        if (p->qtail == NULL)
            p->qtail = c;
    } else {
        if (p->qtail)
            p->qtail->qnext = c;
        else
            p->qhead = c;
        p->qtail = c;
    }
    p->queued++;
    return 0;
}

static void unlink_queued(rt_pool *p, rt_call *prev, rt_call *c)
{
    if (prev)
        prev->qnext = c->qnext;
    else
        p->qhead = c->qnext;
    if (p->qtail == c)
        p->qtail = prev;
    p->queued--;
    c->qnext = NULL;
}

size_t rt_queue_take(rt_pool *p, rt_call **out, size_t max)
{
    size_t k = 0;
    while (k < max && p->qhead != NULL && (k == 0 || p->qhead->args_fd < 0)) {
        rt_call *c = p->qhead;
        unlink_queued(p, NULL, c);
        out[k++] = c;
        p->taken++;
        if (c->args_fd >= 0)
            break;
    }
    return k;
}

void rt_queue_ack(rt_call *c)
{
    if (c->pool->taken > 0)
        c->pool->taken--;
}

void rt_queue_requeue(rt_pool *p, rt_call *list, bool (*keep_fn)(rt_call *c),
                      void (*drop_fn)(rt_call *c))
{
    /* Keep their order: push the list's reverse at the front. */
    rt_call *rev = NULL;
    while (list) {
        rt_call *n = list->qnext;
        list->qnext = rev;
        rev = list;
        list = n;
    }
    while (rev) {
        rt_call *n = rev->qnext;
        rt_queue_ack(rev);
        if (keep_fn(rev))
            rt_queue_put(p, rev, RT_QUEUE_FRONT);
        else
            drop_fn(rev);
        rev = n;
    }
}

void rt_queue_cancel(rt_call *c)
{
    if (c->state == RT_QUEUED) {
        rt_pool *p = c->pool;
        rt_call *prev = NULL;
        for (rt_call *x = p->qhead; x; prev = x, x = x->qnext)
            if (x == c) {
                unlink_queued(p, prev, c);
                return;
            }
    } else if (c->state == RT_DELAYED) {
        for (rt_call **pp = &rt.delayed; *pp; pp = &(*pp)->qnext)
            if (*pp == c) {
                *pp = c->qnext;
                c->qnext = NULL;
                return;
            }
    }
}

rt_call *rt_queue_remove_if(rt_pool *p, bool (*match)(const rt_call *c, const void *arg),
                            const void *arg)
{
    rt_call *head = NULL, **tail = &head, *prev = NULL;
    for (rt_call *c = p->qhead, *next; c != NULL; c = next) {
        next = c->qnext;
        if (!match(c, arg)) {
            prev = c;
            continue;
        }
        unlink_queued(p, prev, c);
        *tail = c;
        tail = &c->qnext;
    }
    return head;
}

rt_call *rt_queue_peek(const rt_pool *p)
{
    return p->qhead;
}

size_t rt_queue_length(const rt_pool *p)
{
    return p->queued;
}

size_t rt_queue_taken(const rt_pool *p)
{
    return p->taken;
}

void rt_queue_delay(rt_call *c, double ready_at)
{
    c->state = RT_DELAYED;
    c->ready_at = ready_at;
    c->qnext = rt.delayed;
    rt.delayed = c;
}

rt_call *rt_queue_due(double now)
{
    rt_call *head = NULL, **tail = &head;
    for (rt_call **pp = &rt.delayed; *pp;) {
        rt_call *c = *pp;
        if (c->ready_at <= now) {
            *pp = c->qnext;
            c->qnext = NULL;
            *tail = c;
            tail = &c->qnext;
        } else {
            pp = &c->qnext;
        }
    }
    return head;
}

double rt_queue_next_due(double after)
{
    double t = after;
    for (rt_call *c = rt.delayed; c; c = c->qnext)
        if (c->ready_at < t)
            t = c->ready_at;
    return t;
}

bool rt_queue_any_delayed(void)
{
    return rt.delayed != NULL;
}

size_t rt_queue_delayed(const rt_pool *p)
{
    size_t n = 0;
    for (rt_call *c = rt.delayed; c; c = c->qnext)
        n += c->pool == p;
    return n;
}
