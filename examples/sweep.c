/*
 * sweep.c: a hyperparameter sweep, the C twin of
 * `train_with_config.map(configs)` with `max(results, key=accuracy)`.
 *
 * Each config is a map {"lr", "batch_size", "epochs"}; each result is a map
 * {"config": ..., "accuracy": ...}. All nine trainings run in parallel.
 */
#include <modal.h>

#include <math.h>
#include <stdio.h>

MODAL_APP("sweep-example");

/* A stand-in for training that peaks at lr = 1e-4 and batch size 32. */
MODAL_FUNCTION(train_with_config, .timeout = 3600, .max_containers = 9)
{
    const modal_value *config = modal_arg(args, 0);
    double lr = 0;
    int64_t batch_size = 0, epochs = 0;
    if (modal_get_float(modal_map_get(config, "lr"), &lr, NULL) != MODAL_OK ||
        modal_get_int(modal_map_get(config, "batch_size"), &batch_size, NULL) != MODAL_OK ||
        modal_get_int(modal_map_get(config, "epochs"), &epochs, NULL) != MODAL_OK)
        return modal_ctx_fail(ctx, "config needs lr, batch_size and epochs");

    double accuracy = 0.9 - 0.05 * fabs(log10(lr) + 4.0) -
                      0.001 * fabs((double)batch_size - 32.0);
    modal_value *metrics = modal_map();
    modal_map_set(metrics, "config", modal_value_copy(config), NULL);
    modal_map_set(metrics, "accuracy", modal_float(accuracy), NULL);
    return metrics;
}

MODAL_LOCAL_ENTRYPOINT(argc, argv)
{
    static const double lrs[] = {1e-3, 1e-4, 1e-5};
    static const int batch_sizes[] = {16, 32, 64};

    /* configs = [{"lr": lr, "batch_size": bs, "epochs": 10} for ...] */
    modal_value *configs = modal_list();
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 3; j++) {
            modal_value *c = modal_map();
            modal_map_set(c, "lr", modal_float(lrs[i]), NULL);
            modal_map_set(c, "batch_size", modal_int(batch_sizes[j]), NULL);
            modal_map_set(c, "epochs", modal_int(10), NULL);
            modal_list_append(configs, c, NULL);
        }

    modal_value *results = NULL;
    modal_error err;
    if (modal_fn_map(&train_with_config, configs, NULL, &results, &err) != MODAL_OK) {
        fprintf(stderr, "sweep: %s\n", err.message);
        return 1;
    }

    /* best = max(results, key=lambda r: r["accuracy"]) */
    const modal_value *best = NULL;
    double best_acc = -INFINITY;
    for (size_t i = 0; i < modal_value_len(results); i++) {
        const modal_value *r = modal_list_get(results, i);
        double acc = 0;
        if (modal_get_float(modal_map_get(r, "accuracy"), &acc, NULL) == MODAL_OK &&
            acc > best_acc) {
            best_acc = acc;
            best = r;
        }
    }
    if (best == NULL) {
        fprintf(stderr, "sweep: no results\n");
        modal_value_free(results);
        return 1;
    }
    const modal_value *config = modal_map_get(best, "config");
    double lr = 0;
    int64_t bs = 0, epochs = 0;
    modal_get_float(modal_map_get(config, "lr"), &lr, NULL);
    modal_get_int(modal_map_get(config, "batch_size"), &bs, NULL);
    modal_get_int(modal_map_get(config, "epochs"), &epochs, NULL);
    printf("Best config: lr=%g batch_size=%lld epochs=%lld accuracy=%.3f\n", lr, (long long)bs,
           (long long)epochs, best_acc);
    modal_value_free(results);
    return 0;
}
