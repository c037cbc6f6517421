/*
 * batch.c: dynamic batching, the part shared by the worker and
 * modal_fn_local. A batched function (.batch_max_size > 0) is invoked
 * once for several calls: its arguments are, for each position, the list
 * of that argument across the calls, and its result is a list with one
 * item per call. These helpers turn the calls' argument lists into the
 * body's (modal__batch_columns) and check what the body returned
 * (modal__batch_result_check).
 */
#include "internal.h"

#include <stdlib.h>

bool modal__batched(const modal_function *fn)
{
    const modal_function_options *o = modal__fn_options(fn);
    return o != NULL && o->batch_max_size > 0;
}

modal_status modal__batch_columns(modal_value *const *calls, size_t n, modal_value **out,
                                  modal_error *err)
{
    *out = NULL;
    size_t m = n > 0 ? modal_value_len(calls[0]) : 0;
    for (size_t i = 0; i < n; i++)
        if (modal_value_type(calls[i]) != MODAL_TYPE_LIST || modal_value_len(calls[i]) != m)
            return modal__fail(err, MODAL_EINVAL, "batch: call %zu has %zu argument%s, call 0 "
                               "has %zu; every call of a batch takes the same number", i,
                               modal_value_len(calls[i]), modal_value_len(calls[i]) == 1 ? "" : "s",
                               m);
    modal_value *cols = modal_list();
    if (cols == NULL)
        return modal__fail(err, MODAL_ENOMEM, "out of memory building a batch's arguments");
    for (size_t k = 0; k < m; k++) {
        modal_value *col = modal_list();
        if (col == NULL || modal_list_append(cols, col, NULL) != MODAL_OK) {
            modal_value_free(cols);
            return modal__fail(err, MODAL_ENOMEM, "out of memory building a batch's arguments");
        }
        /* Room for every item first, so that moving them cannot fail
         * half-way and leave a call without its argument. */
        modal_value **items = malloc((n ? n : 1) * sizeof *items);
        if (items == NULL) {
            modal_value_free(cols);
            return modal__fail(err, MODAL_ENOMEM, "out of memory building a batch's arguments");
        }
        free(col->u.list.items);
        col->u.list.items = items;
        col->u.list.cap = n ? n : 1;
    }
    /* The arguments move (no copy: an argument may be a large array). */
    for (size_t k = 0; k < m; k++) {
        modal_value *col = cols->u.list.items[k];
        for (size_t i = 0; i < n; i++) {
            col->u.list.items[i] = calls[i]->u.list.items[k];
            calls[i]->u.list.items[k] = NULL;
        }
        col->u.list.len = n;
    }
    *out = cols;
    return MODAL_OK;
}

modal_status modal__batch_result_check(const modal_function *fn, const modal_value *result,
                                       size_t n, modal_error *err)
{
    if (modal_value_type(result) != MODAL_TYPE_LIST)
        return modal__fail(err, MODAL_EFUNC, "%s: batched function returned a value of type %s, not a list "
                           "of %zu result%s (one per call of the batch)", fn->name,
                           modal_type_name(modal_value_type(result)), n, n == 1 ? "" : "s");
    if (modal_value_len(result) != n)
        return modal__fail(err, MODAL_EFUNC, "%s: batched function returned a list of %zu "
                           "result%s for a batch of %zu call%s", fn->name,
                           modal_value_len(result), modal_value_len(result) == 1 ? "" : "s", n,
                           n == 1 ? "" : "s");
    return MODAL_OK;
}
