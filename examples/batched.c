/*
 * batched.c: dynamic batching, the C twin of
 *
 *   @app.function()
 *   @modal.batched(max_batch_size=4, wait_ms=1000)
 *   def batch_add(xs, ys):
 *       return [x + y for x, y in zip(xs, ys)]
 *
 *   batch_add.starmap(zip(range(10), range(0, 100, 10)))
 *
 * Callers pass single inputs, as to any function; the runtime gathers up
 * to 4 concurrent calls (or what arrived within 1 s of the first) into one
 * invocation whose arguments are lists, and hands item i of the returned
 * list back to call i. The "inference" flavour, embed(), is what batching
 * is for: a model on a GPU does one forward pass for many prompts at about
 * the cost of one.
 */
#include <modal.h>

#include <math.h>
#include <stdio.h>

MODAL_APP("batched-example");

MODAL_FUNCTION(batch_add, .batch_max_size = 4, .batch_wait_ms = 1000)
{
    const modal_value *xs = modal_arg(args, 0), *ys = modal_arg(args, 1);
    modal_value *out = modal_list();
    for (size_t i = 0; i < modal_value_len(xs); i++) {
        int64_t x = 0, y = 0;
        modal_get_int(modal_list_get(xs, i), &x, NULL);
        modal_get_int(modal_list_get(ys, i), &y, NULL);
        modal_list_append(out, modal_int(x + y), NULL);
    }
    return out;
}

#define DIM 4

/*
 * A stand-in for an embedding model: each prompt becomes a unit vector of
 * DIM floats made from its characters. A real body would load the model in
 * an .enter hook, ask for .gpu = "L40S", and run the whole batch at once.
 */
MODAL_FUNCTION(embed, .batch_max_size = 8, .batch_wait_ms = 50)
{
    const modal_value *prompts = modal_arg(args, 0);
    modal_value *out = modal_list();
    for (size_t i = 0; i < modal_value_len(prompts); i++) {
        const char *p = NULL;
        if (modal_get_string(modal_list_get(prompts, i), &p, NULL, NULL) != MODAL_OK) {
            modal_value_free(out);
            return modal_ctx_fail(ctx, "prompt %zu of the batch is not a string", i);
        }
        double v[DIM] = {0}, norm = 0;
        for (size_t k = 0; p[k] != '\0'; k++)
            v[k % DIM] += (unsigned char)p[k];
        for (int k = 0; k < DIM; k++)
            norm += v[k] * v[k];
        for (int k = 0; k < DIM; k++)
            v[k] = norm > 0 ? v[k] / sqrt(norm) : 0;
        modal_list_append(out, modal_array(MODAL_F64, v, DIM), NULL);
    }
    return out;
}

MODAL_LOCAL_ENTRYPOINT(argc, argv)
{
    modal_error err;

    /* batch_add.starmap(zip(range(10), range(0, 100, 10))) */
    modal_value *pairs = modal_list();
    for (int i = 0; i < 10; i++)
        modal_list_append(pairs, modal_args(modal_int(i), modal_int(10 * i)), NULL);
    modal_value *sums = NULL;
    if (modal_fn_starmap(&batch_add, pairs, NULL, &sums, &err) != MODAL_OK) {
        fprintf(stderr, "batch_add: %s\n", err.message);
        return 1;
    }
    printf("batch_add: [");
    for (size_t i = 0; i < modal_value_len(sums); i++) {
        int64_t s = 0;
        modal_get_int(modal_list_get(sums, i), &s, NULL);
        printf("%s%lld", i ? ", " : "", (long long)s);
    }
    printf("]\n");
    modal_value_free(sums);

    /* embed.map(prompts) */
    enum { N = 20 };
    modal_value *prompts = modal_list();
    for (int i = 0; i < N; i++) {
        char p[32];
        snprintf(p, sizeof p, "prompt %d", i);
        modal_list_append(prompts, modal_string(p), NULL);
    }
    modal_value *vectors = NULL;
    if (modal_fn_map(&embed, prompts, NULL, &vectors, &err) != MODAL_OK) {
        fprintf(stderr, "embed: %s\n", err.message);
        return 1;
    }
    const double *v = NULL;
    size_t dim = 0;
    modal_get_array(modal_list_get(vectors, 0), MODAL_F64, (const void **)&v, &dim,
                    NULL);
    printf("embed: %zu prompts, %zu vectors of %zu floats; first: [%.3f, %.3f, %.3f, %.3f]\n",
           (size_t)N, modal_value_len(vectors), dim, v[0], v[1], v[2], v[3]);
    modal_value_free(vectors);
    return 0;
}
