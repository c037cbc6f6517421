/*
 * hello.c: the basic example, the C twin of Modal's first page.
 *
 * A function declared with MODAL_FUNCTION runs wherever you call it: in a
 * warm worker of a runtime with modal_fn_remote(), or right here with
 * modal_fn_local(). The worker runs this very executable, so there is
 * nothing to deploy: build it and run it.
 *
 *     make demo                      # or: build/examples/hello
 *     build/examples/hello --local   # no runtime at all
 *
 * With MODAL_RUNTIME_URL unset, the first remote call starts a local
 * runtime by itself and later runs reuse it.
 */
#include <modal.h>

#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

/* The app groups this program's functions, logs and deployments. */
MODAL_APP("hello");

/*
 * The function: the sum of squares of an array of doubles. In the body,
 * `args` is the argument list and `ctx` the running call. Options go in
 * the macro; here, at most 60 seconds per call.
 */
MODAL_FUNCTION(sum_of_squares, .timeout = 60)
{
    size_t n = 0;
    const double *x = modal_arg_f64(args, 0, &n);
    double sum = 0;
    for (size_t i = 0; i < n; i++)
        sum += x[i] * x[i];
    /* Output of a remote call is streamed back, prefixed with the name. */
    printf("summing %zu squares in process %d\n", n, (int)getpid());
    return modal_float(sum);
}

/* main() for this program; inside a worker it never runs. */
MODAL_LOCAL_ENTRYPOINT(argc, argv)
{
    bool local = argc > 1 && strcmp(argv[1], "--local") == 0;

    double x[10];
    for (int i = 0; i < 10; i++)
        x[i] = i + 1;
    /* modal_args() builds the argument list; the call takes ownership. */
    modal_value *args = modal_args(modal_array(MODAL_F64, x, 10));

    modal_value *result = NULL;
    modal_error err;
    modal_status st = local ? modal_fn_local(&sum_of_squares, args, &result, &err)
                            : modal_fn_remote(&sum_of_squares, args, &result, &err);
    if (st != MODAL_OK) {
        fprintf(stderr, "hello: %s\n", err.message);
        return 1;
    }

    double sum = 0;
    modal_get_float(result, &sum, NULL);
    printf("sum of squares of 1..10 = %g (%s)\n", sum, local ? "ran locally" : "ran remotely");
    if (!local)
        printf("caller process %d; runtime at %s\n", (int)getpid(), modal_runtime_url());
    modal_value_free(result);
    return 0;
}
