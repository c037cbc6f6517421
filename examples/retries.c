/*
 * retries.c: timeouts and retries, the C twin of
 * `@app.function(timeout=86400, retries=3)`.
 *
 * .timeout bounds each attempt in seconds; the runtime stops a worker that
 * runs past it and the call fails with MODAL_ETIMEOUT. .retries = N retries
 * a failed attempt (an error, a crash or a timeout) up to N times, waiting
 * 1 s, then 2 s, 4 s... in between; .retry_policy = MODAL_RETRIES(...)
 * sets the count and the delays.
 */
#include <modal.h>

#include <stdio.h>
#include <time.h>

MODAL_APP("retries-example");

/*
 * Fails on its first two attempts (a "network hiccup"), then succeeds.
 * Retries come quickly here: 0.1 s, then 0.2 s.
 */
MODAL_FUNCTION(flaky_download, .timeout = 60,
               .retry_policy = MODAL_RETRIES(.max_retries = 3, .initial_delay = 0.1))
{
    int attempt = modal_ctx_attempt(ctx);
    if (attempt < 3)
        return modal_ctx_fail(ctx, "network hiccup on attempt %d", attempt);
    return modal_int(attempt);
}

/* Runs longer than its one-second timeout allows. */
MODAL_FUNCTION(long_training, .timeout = 1)
{
    struct timespec t = {3, 0};
    nanosleep(&t, NULL);
    return modal_string("finished");
}

MODAL_LOCAL_ENTRYPOINT(argc, argv)
{
    modal_value *result = NULL;
    modal_error err;

    if (modal_fn_remote(&flaky_download, modal_list(), &result, &err) != MODAL_OK) {
        fprintf(stderr, "flaky_download failed after its retries: %s\n", err.message);
        return 1;
    }
    int64_t attempt = 0;
    modal_get_int(result, &attempt, NULL);
    printf("flaky_download: succeeded on attempt %lld\n", (long long)attempt);
    modal_value_free(result);

    /* A timeout is an ordinary error: handle it and carry on. */
    modal_status st = modal_fn_remote(&long_training, modal_list(), &result, &err);
    if (st == MODAL_ETIMEOUT) {
        printf("long_training: timed out as expected (%s)\n", err.message);
    } else {
        fprintf(stderr, "long_training: expected a timeout, got %s\n", modal_status_name(st));
        modal_value_free(result);
        return 1;
    }
    return 0;
}
