/*
 * map.c: run one function over many inputs in parallel, the C twin of
 * `process_item.map(items)`.
 *
 * modal_fn_map() sends the inputs to the runtime in batches, where a pool of
 * warm workers (up to .max_containers) runs them, and streams the results
 * back. By default results come back in input order; with .unordered they
 * are delivered as they finish, through a callback.
 */
#include <modal.h>

#include <stdio.h>

MODAL_APP("map-example");

/* Each input is passed as the function's single argument. */
MODAL_FUNCTION(process_item, .timeout = 60, .max_containers = 4)
{
    int64_t item = modal_arg_int(args, 0);
    return modal_int(item * item);
}

/* Called once per result as it arrives: a running total and progress. */
static int on_result(const modal_map_item *item, void *user)
{
    int64_t *total = user, v = 0;
    if (item->status == MODAL_OK && modal_get_int(item->value, &v, NULL) == MODAL_OK)
        *total += v;
    return 0; /* non-zero would stop the map */
}

/* A list of the integers from..to-1. */
static modal_value *range(int64_t from, int64_t to)
{
    modal_value *list = modal_list();
    for (int64_t i = from; i < to; i++)
        if (modal_list_append(list, modal_int(i), NULL) != MODAL_OK) {
            modal_value_free(list); /* the map call then fails cleanly */
            return NULL;
        }
    return list;
}

MODAL_LOCAL_ENTRYPOINT(argc, argv)
{
    modal_value *results = NULL;
    modal_error err;

    /* items = [1, 2, 3, 4, 5]; results = list(process_item.map(items)) */
    if (modal_fn_map(&process_item, range(1, 6), NULL, &results, &err) != MODAL_OK) {
        fprintf(stderr, "map: %s\n", err.message);
        return 1;
    }
    printf("results: [");
    for (size_t i = 0; i < modal_value_len(results); i++) {
        int64_t v = 0;
        modal_get_int(modal_list_get(results, i), &v, NULL);
        printf("%s%lld", i ? ", " : "", (long long)v);
    }
    printf("]\n");
    modal_value_free(results);

    /* A thousand inputs, results handled as they finish, none kept. */
    int64_t total = 0;
    modal_map_options opts = {.unordered = true, .on_result = on_result, .user = &total};
    if (modal_fn_map(&process_item, range(0, 1000), &opts, NULL, &err) != MODAL_OK) {
        fprintf(stderr, "map: %s\n", err.message);
        return 1;
    }
    printf("sum of squares of 0..999 = %lld\n", (long long)total);
    return 0;
}
