/* Memory read bandwidth: each of T threads sums its own slice of one large buffer, repeatedly.
 * Built and run by bench_bandwidth.py (gcc -O3 -march=native -fopenmp); the sums are printed so
 * the compiler cannot drop the reads. Usage: membw MIB THREADS REPEATS -> one JSON line. */
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

int main(int argc, char **argv) {
    size_t mib = argc > 1 ? strtoul(argv[1], 0, 10) : 1024;
    int threads = argc > 2 ? atoi(argv[2]) : 2, repeats = argc > 3 ? atoi(argv[3]) : 10;
    size_t n = mib * 1024 * 1024 / sizeof(uint64_t);
    uint64_t *buf = aligned_alloc(4096, n * sizeof(uint64_t));
    omp_set_num_threads(threads);
#pragma omp parallel for schedule(static) /* first touch by the thread that reads it */
    for (size_t i = 0; i < n; i++) buf[i] = i;
    double best = 0, total = 0;
    uint64_t check = 0;
    printf("{\"mib\": %zu, \"threads\": %d, \"gb_s\": [", mib, threads);
    for (int r = 0; r < repeats; r++) {
        uint64_t sum = 0;
        double t0 = now();
#pragma omp parallel for schedule(static) reduction(+ : sum)
        for (size_t i = 0; i < n; i++) sum += buf[i];
        double gbs = n * sizeof(uint64_t) / (now() - t0) / 1e9;
        check += sum;
        best = gbs > best ? gbs : best;
        total += gbs;
        printf("%s%.2f", r ? ", " : "", gbs);
    }
    printf("], \"best_gb_s\": %.2f, \"mean_gb_s\": %.2f, \"check\": %llu}\n", best,
           total / repeats, (unsigned long long)check);
    free(buf);
    return 0;
}
