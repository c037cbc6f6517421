/*
 * spawn.c: start a call without waiting for it, do something else, and
 * collect the result later, the C twin of `f.spawn()` and
 * `FunctionCall.get()`.
 *
 * Every call has an id ("fc-..."). Any process, not only this one, can
 * fetch the result with modal_call_from_id() + modal_call_get(); the
 * runtime keeps it after it has been fetched, for a while.
 */
#include <modal.h>

#include <stdio.h>
#include <time.h>

MODAL_APP("spawn-example");

/* A slow job: the sum 1 + 2 + ... + n, after pretending to work a while. */
MODAL_FUNCTION(slow_sum, .timeout = 120)
{
    int64_t n = modal_arg_int(args, 0);
    struct timespec pause = {1, 0};
    nanosleep(&pause, NULL);
    int64_t sum = 0;
    for (int64_t i = 1; i <= n; i++)
        sum += i;
    return modal_int(sum);
}

MODAL_LOCAL_ENTRYPOINT(argc, argv)
{
    modal_call *call = NULL;
    modal_error err;
    if (modal_fn_spawn(&slow_sum, modal_args(modal_int(1000000)), &call, &err) != MODAL_OK) {
        fprintf(stderr, "spawn: %s\n", err.message);
        return 1;
    }
    printf("spawned call %s\n", modal_call_id(call));

    /* A timeout of 0 only looks: the call is most likely still running. */
    modal_value *result = NULL;
    modal_status st = modal_call_get(call, 0, &result, &err);
    if (st == MODAL_EPENDING)
        printf("still running; doing other work meanwhile\n");

    /* Fetch it by id, as another process would, and wait up to 5 minutes. */
    modal_call *again = NULL;
    if (modal_call_from_id(modal_call_id(call), &again, &err) != MODAL_OK ||
        modal_call_get(again, 300, &result, &err) != MODAL_OK) {
        fprintf(stderr, "spawn: %s\n", err.message);
        modal_call_free(again);
        modal_call_free(call);
        return 1;
    }
    int64_t sum = 0;
    modal_get_int(result, &sum, NULL);
    printf("slow_sum(1000000) = %lld\n", (long long)sum);
    modal_value_free(result);
    modal_call_free(again);
    modal_call_free(call); /* frees the handle; never cancels the call */
    return 0;
}
