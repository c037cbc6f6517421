/*
 * starmap.c: map a function of several arguments over a list of argument
 * tuples, the C twin of `train.starmap(configs)`.
 *
 * Each input of modal_fn_starmap() is itself an argument list, so
 * [[0.001, 32], [0.01, 64], [0.1, 128]] makes three calls
 * train(0.001, 32), train(0.01, 64) and train(0.1, 128), run in parallel.
 */
#include <modal.h>

#include <math.h>
#include <stdio.h>

MODAL_APP("starmap-example");

/*
 * A stand-in for training: an "accuracy" that peaks at lr = 0.01 and a
 * batch size of 64. A real body would train a model on the GPU it asked
 * for with .gpu = "A100".
 */
MODAL_FUNCTION(train, .timeout = 600)
{
    double lr = modal_arg_float(args, 0);
    int64_t batch_size = modal_arg_int(args, 1);
    double accuracy = 1.0 - 0.1 * fabs(log10(lr) + 2.0) -
                      fabs((double)batch_size - 64.0) / 640.0;
    return modal_float(accuracy);
}

MODAL_LOCAL_ENTRYPOINT(argc, argv)
{
    static const struct { double lr; int batch_size; } configs[] = {
        {0.001, 32}, {0.01, 64}, {0.1, 128}};
    const size_t n = sizeof configs / sizeof configs[0];

    /* configs = [(0.001, 32), (0.01, 64), (0.1, 128)] */
    modal_value *inputs = modal_list();
    for (size_t i = 0; i < n; i++)
        modal_list_append(inputs,
                          modal_args(modal_float(configs[i].lr),
                                     modal_int(configs[i].batch_size)),
                          NULL);

    modal_value *results = NULL;
    modal_error err;
    if (modal_fn_starmap(&train, inputs, NULL, &results, &err) != MODAL_OK) {
        fprintf(stderr, "starmap: %s\n", err.message);
        return 1;
    }

    /* Results are in input order. */
    size_t best = 0;
    double best_acc = -1;
    for (size_t i = 0; i < n; i++) {
        double acc = 0;
        modal_get_float(modal_list_get(results, i), &acc, NULL);
        printf("lr=%g batch_size=%d accuracy=%.3f\n", configs[i].lr, configs[i].batch_size, acc);
        if (acc > best_acc) {
            best_acc = acc;
            best = i;
        }
    }
    printf("best: lr=%g batch_size=%d\n", configs[best].lr, configs[best].batch_size);
    modal_value_free(results);
    return 0;
}
