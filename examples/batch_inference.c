/*
 * batch_inference.c: batch inference, the C twin of
 * `batch_inference.map(batches)`.
 *
 * 1000 prompts are cut into batches of 100; each call takes one batch (a
 * list of strings) and returns a list of completions, and up to 10 workers
 * (.max_containers) run batches at once. Batching amortises the per-call
 * cost, here as with a real model kept loaded in a warm worker.
 */
#include <modal.h>

#include <ctype.h>
#include <stdio.h>
#include <string.h>

MODAL_APP("batch-inference-example");

#define N_PROMPTS 1000
#define BATCH 100

/*
 * The "model": echoes each prompt in capitals. A real one would load its
 * weights once per worker in an .enter hook and generate on the GPU.
 */
MODAL_FUNCTION(generate, .timeout = 600, .max_containers = 10)
{
    const modal_value *prompts = modal_arg(args, 0);
    modal_value *out = modal_list();
    for (size_t i = 0; i < modal_value_len(prompts); i++) {
        const char *p = NULL;
        if (modal_get_string(modal_list_get(prompts, i), &p, NULL, NULL) != MODAL_OK) {
            modal_value_free(out);
            return modal_ctx_fail(ctx, "prompt %zu of the batch is not a string", i);
        }
        char text[256];
        int n = snprintf(text, sizeof text, "completion of '%s': ", p);
        for (size_t k = 0; p[k] != '\0' && (size_t)n + 1 < sizeof text; k++)
            text[n++] = (char)toupper((unsigned char)p[k]);
        text[n] = '\0';
        if (modal_list_append(out, modal_string(text), NULL) != MODAL_OK) {
            modal_value_free(out);
            return modal_ctx_fail(ctx, "out of memory");
        }
    }
    return out;
}

MODAL_LOCAL_ENTRYPOINT(argc, argv)
{
    /* batches = [all_prompts[i:i+100] for i in range(0, 1000, 100)] */
    modal_value *batches = modal_list();
    for (int b = 0; b < N_PROMPTS / BATCH; b++) {
        modal_value *batch = modal_list();
        for (int i = 0; i < BATCH; i++) {
            char prompt[64];
            snprintf(prompt, sizeof prompt, "prompt %d", b * BATCH + i);
            modal_list_append(batch, modal_string(prompt), NULL);
        }
        modal_list_append(batches, batch, NULL);
    }

    modal_value *results = NULL;
    modal_error err;
    if (modal_fn_map(&generate, batches, NULL, &results, &err) != MODAL_OK) {
        fprintf(stderr, "batch_inference: %s\n", err.message);
        return 1;
    }

    /* One list of completions per batch, in batch order. */
    size_t total = 0;
    for (size_t b = 0; b < modal_value_len(results); b++)
        total += modal_value_len(modal_list_get(results, b));
    const char *first = NULL, *last = NULL;
    const modal_value *last_batch = modal_list_get(results, modal_value_len(results) - 1);
    modal_get_string(modal_list_get(modal_list_get(results, 0), 0), &first, NULL, NULL);
    modal_get_string(modal_list_get(last_batch, modal_value_len(last_batch) - 1), &last, NULL,
                     NULL);
    printf("%zu batches, %zu completions\n", modal_value_len(results), total);
    printf("first: %s\nlast: %s\n", first ? first : "?", last ? last : "?");
    modal_value_free(results);
    return total == N_PROMPTS ? 0 : 1;
}
