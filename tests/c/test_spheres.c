/* test_spheres.c - C driver for the kissing-sphere pool (csrc/runtime/spheres.c).
 *
 * Built and run by tests/c/run.sh (normal, ThreadSanitizer and ASan/UBSan
 * builds). Links every csrc file and is linked with
 * -Wl,--wrap=pthread_create so that thread-creation failure can be injected.
 *
 * Exit status 0 = all checks passed. Every failed check prints a line
 * starting with "FAIL". A watchdog turns a hang into a failure.
 *
 * Usage: test_spheres [--quick] [--bench]
 *   --quick  fewer repetitions (used by the sanitizer builds)
 *   --bench  also print the per-run overhead of an empty task
 */
#define _GNU_SOURCE
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/wait.h>
#include <unistd.h>
#include "runtime/internal.h"
#include "runtime/spheres.h"
#include "cllm.h"

static int g_failures = 0;
static int g_quick = 0;
static const char *volatile g_current = "startup";

#define CHECK(cond, ...)                                                          \
    do {                                                                          \
        if (!(cond)) {                                                            \
            g_failures++;                                                         \
            fprintf(stderr, "FAIL %s:%d [%s] %s: ", __FILE__, __LINE__, g_current, #cond); \
            fprintf(stderr, __VA_ARGS__);                                         \
            fprintf(stderr, "\n");                                                \
        }                                                                         \
    } while (0)

/* ------------------------------------------------------------- watchdog */
static void on_alarm(int sig) {
    (void)sig;
    const char *a = "FAIL watchdog: test hung in section: ";
    const char *b = (const char *)g_current;
    if (write(2, a, strlen(a)) < 0 || write(2, b, strlen(b)) < 0 || write(2, "\n", 1) < 0) { /* nothing */ }
    _exit(3);
}

static void section(const char *name, unsigned seconds) {
    g_current = name;
    alarm(seconds);
    printf("-- %s\n", name);
    fflush(stdout);
}

/* ---------------------------------------------- pthread_create injection */
int __real_pthread_create(pthread_t *t, const pthread_attr_t *a, void *(*fn)(void *), void *arg);
static atomic_int g_create_calls;
static atomic_int g_create_fail_at = -1;   /* fail the k-th call (0-based), -1 = never */

int __wrap_pthread_create(pthread_t *t, const pthread_attr_t *a, void *(*fn)(void *), void *arg) {
    int k = atomic_fetch_add(&g_create_calls, 1);
    if (k == atomic_load(&g_create_fail_at)) return 11; /* EAGAIN */
    return __real_pthread_create(t, a, fn, arg);
}

static int live_threads(void) {
    FILE *f = fopen("/proc/self/status", "r");
    if (!f) return -1;
    char line[256];
    int n = -1;
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, "Threads:", 8)) { n = atoi(line + 8); break; }
    fclose(f);
    return n;
}

/* ------------------------------------------------------ 1. every sphere */
typedef struct {
    int n;
    long *count;          /* runs seen by each sphere (each sphere writes its own slot) */
    pthread_t *who;       /* thread that ran each sphere in the last run */
    int bad_n;            /* set if nspheres != n was passed */
} count_ctx;

static int count_task(void *arg, int sphere, int nspheres) {
    count_ctx *c = arg;
    if (nspheres != c->n || sphere < 0 || sphere >= c->n) { c->bad_n = 1; return CLLM_ERR_INTERNAL; }
    c->count[sphere]++;
    c->who[sphere] = pthread_self();
    return 0;
}

/* A pool of n spheres with CLLM_SPHERES_SPIN_US = spin_us (NULL: default);
 * NULL after a failed CHECK when it cannot be made. */
static cllm_spheres *new_pool(int n, const char *spin_us) {
    if (spin_us) setenv("CLLM_SPHERES_SPIN_US", spin_us, 1);
    cllm_spheres *s = NULL;
    int rc = cllm_spheres_new(n, &s);
    if (spin_us) unsetenv("CLLM_SPHERES_SPIN_US");
    CHECK(rc == 0 && s, "new(%d) rc=%d: %s", n, rc, cllm_last_error());
    return rc ? NULL : s;
}

static void test_every_sphere(int n, int runs) {
    cllm_spheres *s = new_pool(n, NULL);
    if (!s) return;
    int rc;
    int cnt = -1;
    CHECK(cllm_spheres_count(s, &cnt) == 0 && cnt == n, "count=%d want %d", cnt, n);
    count_ctx c = {n, calloc((size_t)n, sizeof(long)), calloc((size_t)n, sizeof(pthread_t)), 0};
    int distinct_ok = 1;
    for (int r = 0; r < runs; r++) {
        rc = cllm_spheres_run(s, count_task, &c);
        CHECK(rc == 0, "run %d of n=%d rc=%d: %s", r, n, rc, cllm_last_error());
        if (rc) break;
        for (int i = 0; i < n; i++)
            if (c.count[i] != r + 1) {
                CHECK(c.count[i] == r + 1, "n=%d run %d: sphere %d ran %ld times", n, r, i, c.count[i]);
                r = runs;
                break;
            }
        if (r == 0) {
            /* sphere 0 is the caller; every worker sphere is its own thread */
            if (!pthread_equal(c.who[0], pthread_self())) distinct_ok = 0;
            for (int i = 1; i < n && distinct_ok; i++) {
                if (pthread_equal(c.who[i], pthread_self())) distinct_ok = 0;
                for (int j = 1; j < i; j++)
                    if (pthread_equal(c.who[i], c.who[j])) { distinct_ok = 0; break; }
            }
        }
    }
    CHECK(!c.bad_n, "n=%d: wrong sphere/nspheres passed to the task", n);
    CHECK(distinct_ok, "n=%d: sphere 0 must run on the caller and each worker on its own thread", n);

    /* statistics: one entry per sphere, parents of the fan-out-12 tree */
    cllm_sphere_stats *st = calloc((size_t)n, sizeof *st);
    int got = 0;
    rc = cllm_spheres_stats(s, st, n, &got);
    CHECK(rc == 0 && got == n, "stats rc=%d n=%d", rc, got);
    for (int i = 0; i < n; i++) {
        int want_parent = i ? (i - 1) / 12 : -1;
        CHECK(st[i].sphere == i && st[i].parent == want_parent, "n=%d sphere %d: id %d parent %d want %d", n, i,
              st[i].sphere, st[i].parent, want_parent);
        CHECK(st[i].tasks == (uint64_t)runs, "n=%d sphere %d tasks=%llu want %d", n, i,
              (unsigned long long)st[i].tasks, runs);
        CHECK(st[i].busy_seconds >= 0 && st[i].busy_fraction >= 0 && st[i].busy_fraction <= 1.0,
              "n=%d sphere %d busy %g frac %g", n, i, st[i].busy_seconds, st[i].busy_fraction);
    }
    CHECK(cllm_spheres_reset_stats(s) == 0, "reset_stats");
    rc = cllm_spheres_stats(s, st, n, &got);
    for (int i = 0; i < n; i++)
        CHECK(st[i].tasks == 0 && st[i].busy_seconds == 0, "after reset sphere %d tasks=%llu", i,
              (unsigned long long)st[i].tasks);
    free(st);
    free(c.count);
    free(c.who);
    CHECK(cllm_spheres_free(s) == 0, "free(n=%d): %s", n, cllm_last_error());
}

/* ------------------------------------------------- 2. busy accounting */
static int sleep_task(void *arg, int sphere, int nspheres) {
    (void)nspheres;
    const int *slow = arg;
    if (sphere == *slow) {
        struct timespec ts = {0, 20 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    return 0;
}

static void test_busy_stats(void) {
    cllm_spheres *s = new_pool(3, NULL);
    if (!s) return;
    cllm_spheres_reset_stats(s);
    int slow = 2;
    for (int r = 0; r < 5; r++) CHECK(cllm_spheres_run(s, sleep_task, &slow) == 0, "run");
    cllm_sphere_stats st[3];
    int n = 0;
    CHECK(cllm_spheres_stats(s, st, 3, &n) == 0 && n == 3, "stats");
    CHECK(st[2].busy_seconds >= 0.095, "sphere 2 slept 5 x 20 ms, busy %g s", st[2].busy_seconds);
    CHECK(st[2].busy_fraction > 0.3 && st[2].busy_fraction <= 1.0, "sphere 2 busy fraction %g",
          st[2].busy_fraction);
    CHECK(st[1].busy_seconds < st[2].busy_seconds, "sphere 1 (idle task) busier than sphere 2");
    /* cap smaller than the count: only cap entries written, *n is the count */
    cllm_sphere_stats one[1];
    memset(one, 0x5a, sizeof one);
    CHECK(cllm_spheres_stats(s, one, 1, &n) == 0 && n == 3 && one[0].sphere == 0, "stats cap=1");
    CHECK(cllm_spheres_stats(s, NULL, 0, &n) == 0 && n == 3, "stats cap=0");
    CHECK(cllm_spheres_stats(s, NULL, 2, &n) == CLLM_ERR_INVALID, "stats NULL out with cap 2");
    CHECK(cllm_spheres_stats(s, one, -1, &n) == CLLM_ERR_INVALID, "stats negative cap");
    cllm_spheres_free(s);
}

/* ----------------------------------------- 3. deterministic reductions */
typedef struct {
    const float *x;
    long len;
    float *partial;       /* one slot per sphere */
} sum_ctx;

static int sum_task(void *arg, int sphere, int nspheres) {
    sum_ctx *c = arg;
    long lo, hi;
    cllm_split(c->len, sphere, nspheres, &lo, &hi);
    float acc = 0.0f;
    for (long i = lo; i < hi; i++) acc += c->x[i] * c->x[i] + 1e-3f * (float)(i % 7);
    c->partial[sphere] = acc;
    return 0;
}

static float sequential_sum(const float *x, long len, int parts) {
    float total = 0.0f;
    for (int p = 0; p < parts; p++) {
        long lo, hi;
        cllm_split(len, p, parts, &lo, &hi);
        float acc = 0.0f;
        for (long i = lo; i < hi; i++) acc += x[i] * x[i] + 1e-3f * (float)(i % 7);
        total += acc;
    }
    return total;
}

static void test_reduction(int n, int repeats) {
    const long len = 100003;
    float *x = malloc(sizeof(float) * (size_t)len);
    uint64_t st = 0x9e3779b97f4a7c15ull;
    for (long i = 0; i < len; i++) {
        st ^= st << 13; st ^= st >> 7; st ^= st << 17;
        x[i] = (float)((double)(st >> 11) / 9007199254740992.0 * 2.0 - 1.0);
    }
    cllm_spheres *s = new_pool(n, NULL);
    if (!s) { free(x); return; }
    int rc;
    sum_ctx c = {x, len, calloc((size_t)n, sizeof(float))};
    float want = sequential_sum(x, len, n);
    uint32_t want_bits, got_bits;
    memcpy(&want_bits, &want, 4);
    for (int r = 0; r < repeats; r++) {
        for (int i = 0; i < n; i++) c.partial[i] = NAN;
        rc = cllm_spheres_run(s, sum_task, &c);
        CHECK(rc == 0, "run: %s", cllm_last_error());
        float total = 0.0f;
        for (int i = 0; i < n; i++) total += c.partial[i];   /* fixed sphere order */
        memcpy(&got_bits, &total, 4);
        if (got_bits != want_bits) {
            CHECK(got_bits == want_bits, "n=%d repeat %d: sum %.9g (0x%08x) != %.9g (0x%08x)", n, r, total,
                  got_bits, want, want_bits);
            break;
        }
    }
    free(c.partial);
    free(x);
    cllm_spheres_free(s);
}

/* ---------------------------------------------------- 4. worker errors */
typedef struct {
    int fail[4];       /* spheres that fail (-1 = unused) */
    int code[4];
    int silent;        /* fail without setting a message */
    int step;
} err_ctx;

static int err_task(void *arg, int sphere, int nspheres) {
    (void)nspheres;
    err_ctx *c = arg;
    for (int k = 0; k < 4; k++)
        if (c->fail[k] == sphere) {
            if (c->silent) return c->code[k];
            return cllm_fail(c->code[k], "injected failure in sphere %d at step %d", sphere, c->step);
        }
    return 0;
}

static void test_errors(void) {
    cllm_spheres *s = new_pool(13, NULL);
    if (!s) return;
    int rc;
    count_ctx ok = {13, calloc(13, sizeof(long)), calloc(13, sizeof(pthread_t)), 0};

    err_ctx e = {{7, -1, -1, -1}, {CLLM_ERR_NUMERIC, 0, 0, 0}, 0, 41};
    cllm_error_set_raw("stale message");
    rc = cllm_spheres_run(s, err_task, &e);
    CHECK(rc == CLLM_ERR_NUMERIC, "sphere 7 failure: rc=%d", rc);
    CHECK(strstr(cllm_last_error(), "injected failure in sphere 7 at step 41") != NULL, "message: '%s'",
          cllm_last_error());

    /* the pool still works after a failure, and a failure does not stick */
    CHECK(cllm_spheres_run(s, count_task, &ok) == 0, "run after failure: %s", cllm_last_error());
    for (int i = 0; i < 13; i++) CHECK(ok.count[i] == 1, "sphere %d ran %ld times after failure", i, ok.count[i]);

    /* several failures: the lowest-numbered sphere wins */
    err_ctx m = {{9, 12, 5, -1}, {CLLM_ERR_RANGE, CLLM_ERR_NOMEM, CLLM_ERR_INTERNAL, 0}, 0, 3};
    for (int r = 0; r < 20; r++) {
        rc = cllm_spheres_run(s, err_task, &m);
        CHECK(rc == CLLM_ERR_INTERNAL && strstr(cllm_last_error(), "sphere 5 at step 3"),
              "lowest failing sphere: rc=%d msg='%s'", rc, cllm_last_error());
    }

    /* the caller's own sphere (0) failing wins over workers */
    err_ctx z = {{3, 0, -1, -1}, {CLLM_ERR_RANGE, CLLM_ERR_STATE, 0, 0}, 0, 8};
    rc = cllm_spheres_run(s, err_task, &z);
    CHECK(rc == CLLM_ERR_STATE && strstr(cllm_last_error(), "sphere 0 at step 8"), "sphere 0: rc=%d msg='%s'", rc,
          cllm_last_error());

    /* a worker failing without a message still yields a useful one */
    err_ctx q = {{11, -1, -1, -1}, {CLLM_ERR_NUMERIC, 0, 0, 0}, 1, 0};
    rc = cllm_spheres_run(s, err_task, &q);
    CHECK(rc == CLLM_ERR_NUMERIC && strstr(cllm_last_error(), "sphere 11"), "silent: rc=%d msg='%s'", rc,
          cllm_last_error());
    /* ... and a stale message left on a worker by an earlier run is not reused */
    err_ctx q2 = {{7, -1, -1, -1}, {CLLM_ERR_RANGE, 0, 0, 0}, 1, 0};
    rc = cllm_spheres_run(s, err_task, &q2);
    CHECK(rc == CLLM_ERR_RANGE && !strstr(cllm_last_error(), "injected"), "stale: rc=%d msg='%s'", rc,
          cllm_last_error());
    /* sphere 0 failing silently gets a message too, not a stale one */
    err_ctx q0 = {{0, -1, -1, -1}, {CLLM_ERR_RANGE, 0, 0, 0}, 1, 0};
    cllm_error_set_raw("stale caller message");
    rc = cllm_spheres_run(s, err_task, &q0);
    CHECK(rc == CLLM_ERR_RANGE && strstr(cllm_last_error(), "sphere 0"), "silent 0: rc=%d msg='%s'", rc,
          cllm_last_error());
    free(ok.count);
    free(ok.who);
    cllm_spheres_free(s);

    /* a deep sphere of a big tree (third level) */
    rc = cllm_spheres_new(200, &s);
    CHECK(rc == 0, "new(200): %s", cllm_last_error());
    if (rc) return;
    err_ctx d = {{199, 150, -1, -1}, {CLLM_ERR_RANGE, CLLM_ERR_NUMERIC, 0, 0}, 0, 2};
    rc = cllm_spheres_run(s, err_task, &d);
    CHECK(rc == CLLM_ERR_NUMERIC && strstr(cllm_last_error(), "sphere 150 at step 2"), "n=200: rc=%d msg='%s'",
          rc, cllm_last_error());
    cllm_spheres_free(s);
}

/* -------------------------------------------------- 5. misuse / limits */
typedef struct {
    cllm_spheres *s;
    int nested_rc, stats_rc, free_rc;
} nest_ctx;

static int noop_task(void *arg, int sphere, int nspheres) {
    (void)arg; (void)sphere; (void)nspheres;
    return 0;
}

static int nest_task(void *arg, int sphere, int nspheres) {
    (void)nspheres;
    nest_ctx *c = arg;
    if (sphere == 0) {
        int n;
        cllm_sphere_stats st[4];
        c->nested_rc = cllm_spheres_run(c->s, noop_task, NULL);
        c->stats_rc = cllm_spheres_stats(c->s, st, 4, &n);
        c->free_rc = cllm_spheres_free(c->s);
    }
    return 0;
}

static void test_misuse(void) {
    cllm_spheres *s = (cllm_spheres *)(uintptr_t)1;
    int rc = cllm_spheres_new(-1, &s);
    CHECK(rc == CLLM_ERR_INVALID && s == NULL && cllm_last_error()[0], "threads=-1 rc=%d", rc);
    rc = cllm_spheres_new(4097, &s);
    CHECK(rc == CLLM_ERR_INVALID && s == NULL && strstr(cllm_last_error(), "4097"), "threads=4097 rc=%d '%s'", rc,
          cllm_last_error());
    CHECK(cllm_spheres_new(2, NULL) == CLLM_ERR_INVALID, "out=NULL");
    CHECK(cllm_spheres_free(NULL) == 0, "free(NULL)");
    int n = 0;
    CHECK(cllm_spheres_count(NULL, &n) == CLLM_ERR_INVALID, "count(NULL)");
    CHECK(cllm_spheres_reset_stats(NULL) == CLLM_ERR_INVALID, "reset(NULL)");
    CHECK(cllm_spheres_run(NULL, noop_task, NULL) == CLLM_ERR_INVALID, "run(NULL)");

    /* threads = 0: the CPUs of the affinity mask */
    int ncpu = 0;
    cllm_cpu_count(&ncpu);
    rc = cllm_spheres_new(0, &s);
    CHECK(rc == 0, "threads=0: %s", cllm_last_error());
    if (rc == 0) {
        CHECK(cllm_spheres_count(s, &n) == 0 && n == ncpu && n >= 1, "threads=0 gave %d, cpus %d", n, ncpu);
        CHECK(cllm_spheres_run(s, NULL, NULL) == CLLM_ERR_INVALID, "run(fn=NULL)");
        cllm_spheres_free(s);
    }

    /* calls from inside a task are rejected, not deadlocked */
    rc = cllm_spheres_new(3, &s);
    CHECK(rc == 0, "new(3)");
    if (rc == 0) {
        nest_ctx c = {s, 0, 0, 0};
        rc = cllm_spheres_run(s, nest_task, &c);
        CHECK(rc == 0, "outer run rc=%d", rc);
        CHECK(c.nested_rc == CLLM_ERR_STATE, "nested run rc=%d", c.nested_rc);
        CHECK(c.stats_rc == CLLM_ERR_STATE, "stats during run rc=%d", c.stats_rc);
        CHECK(c.free_rc == CLLM_ERR_STATE, "free during run rc=%d", c.free_rc);
        CHECK(cllm_spheres_run(s, noop_task, NULL) == 0, "run after nested attempt");
        cllm_spheres_free(s);
    }
}

/* ------------------------------------------------------------- fork */
static void test_fork(void) {
    cllm_spheres *s = NULL, *one = NULL;
    int rc = cllm_spheres_new(3, &s);
    CHECK(rc == 0, "new(3)");
    rc |= cllm_spheres_new(1, &one);
    if (rc) return;
    CHECK(cllm_spheres_run(s, noop_task, NULL) == 0, "run before fork");
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid == 0) {
        alarm(20);   /* a hang in the child is a failure too */
        int bad = 0;
        int r = cllm_spheres_run(s, noop_task, NULL);
        if (r != CLLM_ERR_STATE || !strstr(cllm_last_error(), "fork")) bad |= 1;
        if (cllm_spheres_free(s) != 0) bad |= 2;
        if (cllm_spheres_run(one, noop_task, NULL) != 0) bad |= 4;   /* no workers: still usable */
        if (cllm_spheres_free(one) != 0) bad |= 8;
#ifndef __SANITIZE_THREAD__
        /* a new pool works in the child (TSan cannot start threads after a
         * multi-threaded fork, so only the other builds check this) */
        cllm_spheres *fresh = NULL;
        if (cllm_spheres_new(2, &fresh) != 0 || cllm_spheres_run(fresh, noop_task, NULL) != 0) bad |= 16;
        if (fresh && cllm_spheres_free(fresh) != 0) bad |= 32;
#endif
        _exit(bad);
    }
    CHECK(pid > 0, "fork failed");
    if (pid > 0) {
        int status = 0;
        waitpid(pid, &status, 0);
        CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "forked child: status 0x%x", status);
    }
    CHECK(cllm_spheres_run(s, noop_task, NULL) == 0, "parent run after fork: %s", cllm_last_error());
    cllm_spheres_free(s);
    cllm_spheres_free(one);
}

/* ---------------------------------------------------------- signals */
static pthread_t g_main_thread;
static atomic_int g_sig_on_main, g_sig_elsewhere;
static void on_usr1(int sig) {
    (void)sig;
    if (pthread_equal(pthread_self(), g_main_thread)) atomic_fetch_add(&g_sig_on_main, 1);
    else atomic_fetch_add(&g_sig_elsewhere, 1);
}

static void test_signals_reach_caller(void) {
    cllm_spheres *s = NULL;
    if (cllm_spheres_new(5, &s)) { CHECK(0, "new(5)"); return; }
    g_main_thread = pthread_self();
    struct sigaction sa, old;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_usr1;
    sigaction(SIGUSR1, &sa, &old);
    /* The caller blocks SIGUSR1 for a while (the pool was created before, so
     * this does not leak into the workers' masks): a process-directed signal
     * must then stay pending for the caller, not be taken by a worker. */
    sigset_t usr1, prev;
    sigemptyset(&usr1);
    sigaddset(&usr1, SIGUSR1);
    for (int k = 0; k < 20; k++) {
        pthread_sigmask(SIG_BLOCK, &usr1, &prev);
        kill(getpid(), SIGUSR1);
        for (int r = 0; r < 50; r++) cllm_spheres_run(s, noop_task, NULL);
        struct timespec ts = {0, 200 * 1000};
        nanosleep(&ts, NULL);
        pthread_sigmask(SIG_SETMASK, &prev, NULL);   /* pending signal delivered here */
    }
    CHECK(atomic_load(&g_sig_elsewhere) == 0, "%d process signals were delivered to worker threads",
          atomic_load(&g_sig_elsewhere));
    CHECK(atomic_load(&g_sig_on_main) == 20, "caller handled %d of 20 signals", atomic_load(&g_sig_on_main));
    sigaction(SIGUSR1, &old, NULL);
    cllm_spheres_free(s);
}

/* --------------------------------------------- 6. pthread_create failure */
static void test_create_failure(void) {
    int before = live_threads();
    int fail_at[] = {0, 4, 11};
    for (int k = 0; k < 3; k++) {
        atomic_store(&g_create_calls, 0);
        atomic_store(&g_create_fail_at, fail_at[k]);
        cllm_spheres *s = (cllm_spheres *)(uintptr_t)1;
        int rc = cllm_spheres_new(13, &s);
        atomic_store(&g_create_fail_at, -1);
        CHECK(rc == CLLM_ERR_THREAD && s == NULL, "injected create failure %d: rc=%d", fail_at[k], rc);
        CHECK(strstr(cllm_last_error(), "pthread_create") != NULL, "message '%s'", cllm_last_error());
        CHECK(atomic_load(&g_create_calls) == fail_at[k] + 1, "creation continued after failure (%d calls)",
              atomic_load(&g_create_calls));
        int after = live_threads();
        CHECK(after == before, "partial pool leaked threads: %d before, %d after", before, after);
    }
    /* a pool can be created normally afterwards */
    cllm_spheres *s = NULL;
    CHECK(cllm_spheres_new(13, &s) == 0, "new after failures: %s", cllm_last_error());
    CHECK(live_threads() == before + 12, "13 spheres should add 12 threads (%d -> %d)", before, live_threads());
    CHECK(cllm_spheres_run(s, noop_task, NULL) == 0, "run");
    cllm_spheres_free(s);
    CHECK(live_threads() == before, "free did not join all workers (%d -> %d)", before, live_threads());
}

/* ------------------------------------------------- 7. create / destroy */
static void test_cycles(int cycles) {
    int before = live_threads();
    count_ctx c = {0, calloc(16, sizeof(long)), calloc(16, sizeof(pthread_t)), 0};
    for (int k = 0; k < cycles; k++) {
        int n = 1 + k % 16;
        cllm_spheres *s = NULL;
        int rc = cllm_spheres_new(n, &s);
        if (rc) { CHECK(rc == 0, "cycle %d new(%d): %s", k, n, cllm_last_error()); break; }
        if (k % 3 != 2) {          /* every third pool is freed without ever running */
            c.n = n;
            memset(c.count, 0, 16 * sizeof(long));
            rc = cllm_spheres_run(s, count_task, &c);
            CHECK(rc == 0, "cycle %d run", k);
            for (int i = 0; i < n; i++)
                if (c.count[i] != 1) { CHECK(c.count[i] == 1, "cycle %d sphere %d", k, i); break; }
        }
        rc = cllm_spheres_free(s);
        if (rc) { CHECK(rc == 0, "cycle %d free", k); break; }
    }
    CHECK(live_threads() == before, "threads leaked over %d cycles: %d -> %d", cycles, before, live_threads());
    free(c.count);
    free(c.who);
}

/* --------------------------------------------- 8. back-to-back runs */
typedef struct {
    int n;
    atomic_long total;    /* all spheres, all runs */
    long *mine;           /* per-sphere counter */
} b2b_ctx;

static int b2b_task(void *arg, int sphere, int nspheres) {
    (void)nspheres;
    b2b_ctx *c = arg;
    c->mine[sphere]++;
    atomic_fetch_add_explicit(&c->total, 1, memory_order_relaxed);
    return 0;
}

static void test_back_to_back(int n, int runs, const char *spin_us) {
    cllm_spheres *s = new_pool(n, spin_us);
    int rc;
    if (!s) return;
    b2b_ctx c = {n, 0, calloc((size_t)n, sizeof(long))};
    for (int r = 0; r < runs; r++) {
        rc = cllm_spheres_run(s, b2b_task, &c);
        if (rc) { CHECK(rc == 0, "run %d", r); break; }
        /* every run must be complete when run returns */
        if (atomic_load_explicit(&c.total, memory_order_relaxed) != (long)n * (r + 1)) {
            CHECK(0, "n=%d run %d: %ld tasks done, want %ld", n, r, atomic_load(&c.total), (long)n * (r + 1));
            break;
        }
    }
    for (int i = 0; i < n; i++) CHECK(c.mine[i] == runs, "n=%d sphere %d ran %ld of %d", n, i, c.mine[i], runs);
    free(c.mine);
    cllm_spheres_free(s);
}

/* ------------------------------------------- 9. idle after running */
static double cpu_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void test_idle_after_runs(int n) {
    cllm_spheres *s = new_pool(n, NULL);
    if (!s) return;
    for (int r = 0; r < 1000; r++) cllm_spheres_run(s, noop_task, NULL);
    struct timespec settle = {0, 20 * 1000 * 1000}, nap = {0, 500 * 1000 * 1000};
    nanosleep(&settle, NULL);         /* past any bounded spin */
    double c0 = cpu_s(), w0 = cllm_now_s();
    nanosleep(&nap, NULL);
    double cpu = cpu_s() - c0, wall = cllm_now_s() - w0;
    CHECK(cpu < 0.025, "idle pool of %d used %.4f s CPU in %.3f s wall", n, cpu, wall);
    printf("idle: threads=%d used %.4f s CPU over %.3f s after 1000 runs\n", n, cpu, wall);
    cllm_spheres_free(s);
}

/* -------------------------------------------------------- 10. overhead */
static void bench_overhead(void) {
    int ns[] = {1, 2, 3, 13};
    for (int k = 0; k < 4; k++) {
        cllm_spheres *s = NULL;
        if (cllm_spheres_new(ns[k], &s)) continue;
        int runs = ns[k] > 2 ? 5000 : 20000;
        double best = 1e9;
        for (int rep = 0; rep < 5; rep++) {
            double t0 = cllm_now_s();
            for (int r = 0; r < runs; r++) cllm_spheres_run(s, noop_task, NULL);
            double dt = (cllm_now_s() - t0) / runs;
            if (dt < best) best = dt;
        }
        printf("overhead: threads=%-3d %.3f us per empty run (best of 5 x %d)\n", ns[k], best * 1e6, runs);
        cllm_spheres_free(s);
    }
}

/* ============================================================================
 * MODEL SECTION: a few training steps through the public model API with a
 * pool of 3 spheres. model.c may still be a stub: CLLM_ERR_STATE from
 * cllm_model_new means "model not available" and is not a failure.
 * ========================================================================== */
static int train_few_steps(float *losses, int steps, int *available, int precision) {
    cllm_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.vocab_size = 67;
    cfg.context_len = 16;
    cfg.num_layers = 2;
    cfg.num_heads = 2;
    cfg.embed_dim = 32;
    cfg.batch_size = 5;
    cfg.seq_len = 16;
    cfg.threads = 3;
    cfg.seed = 1234;
    cfg.max_memory_gb = 1.0;
    cfg.precision = precision;
    cllm_model *m = NULL;
    int rc = cllm_model_new(&cfg, &m);
    if (rc == CLLM_ERR_STATE) {
        *available = 0;
        printf("model not available (%s)\n", cllm_last_error());
        return 0;
    }
    *available = 1;
    CHECK(rc == 0 && m, "model_new rc=%d: %s", rc, cllm_last_error());
    if (rc || !m) return 1;
    int before = g_failures;
    rc = cllm_model_init(m, 1234);
    CHECK(rc == 0, "model_init rc=%d: %s", rc, cllm_last_error());
    cllm_spheres *sp = NULL;
    int nsp = 0;
    rc = cllm_model_spheres(m, &sp);
    CHECK(rc == 0 && sp && cllm_spheres_count(sp, &nsp) == 0 && nsp == 3, "model spheres rc=%d n=%d", rc, nsp);
    if (sp) cllm_spheres_reset_stats(sp);

    const int B = 5, T = 16;
    int32_t in[5 * 16], tg[5 * 16];
    uint64_t st = 42;
    cllm_adamw opt = {1e-3f, 0.9f, 0.999f, 1e-8f, 0.1f, 1.0f};
    for (int step = 1; step <= steps; step++) {
        for (int i = 0; i < B * T; i++) {
            st = st * 6364136223846793005ull + 1442695040888963407ull;
            in[i] = (int32_t)((st >> 33) % (uint64_t)cfg.vocab_size);
        }
        for (int i = 0; i < B * T; i++) tg[i] = (i % T == T - 1) ? -1 : in[i + 1];
        float loss = NAN, gn = NAN;
        rc = cllm_model_train_step(m, in, tg, B, T, &opt, step, &loss, &gn);
        CHECK(rc == 0, "train_step %d rc=%d: %s", step, rc, cllm_last_error());
        CHECK(isfinite(loss) && loss > 0, "step %d loss %g", step, loss);
        CHECK(isfinite(gn) && gn >= 0, "step %d grad norm %g", step, gn);
        losses[step - 1] = loss;
        if (rc) break;
    }
    if (sp) {
        cllm_sphere_stats ss[3];
        int n = 0;
        if (cllm_spheres_stats(sp, ss, 3, &n) == 0)
            for (int i = 0; i < 3; i++)
                CHECK(ss[i].tasks > 0, "model training left sphere %d idle (B=5 > 3 spheres)", i);
    }
    rc = cllm_model_free(m);
    CHECK(rc == 0, "model_free rc=%d: %s", rc, cllm_last_error());
    return g_failures != before;
}

static void test_model(void) {
    float a[4], b[4];
    int avail = 0;
    if (train_few_steps(a, 4, &avail, CLLM_PRECISION_FP32) || !avail) return;
    printf("model: losses %.6f %.6f %.6f %.6f\n", a[0], a[1], a[2], a[3]);
    train_few_steps(b, 4, &avail, CLLM_PRECISION_FP32);
    CHECK(memcmp(a, b, sizeof a) == 0, "same seed and 3 threads must give bit-identical losses");
    /* BF16 mixed precision (BF16 GEMM, AdamW refreshing the BF16 copies)
     * where the CPU has a BF16 kernel */
    int auto_p = CLLM_PRECISION_FP32;
    if (cllm_precision_auto(&auto_p) == 0 && auto_p == CLLM_PRECISION_BF16) {
        if (train_few_steps(a, 4, &avail, CLLM_PRECISION_BF16)) return;
        printf("model bf16: losses %.6f %.6f %.6f %.6f\n", a[0], a[1], a[2], a[3]);
        train_few_steps(b, 4, &avail, CLLM_PRECISION_BF16);
        CHECK(memcmp(a, b, sizeof a) == 0, "bf16: same seed and 3 threads must give bit-identical losses");
    }
}
/* ========================================================================== */

/* ------------------------------------- 11. in-task barrier, decoder */
typedef struct { cllm_spheres *pool; int n, phases; int *slot; atomic_int bad; } bar_ctx;

static int barrier_task(void *arg, int sphere, int nspheres) {
    bar_ctx *c = arg;
    for (int p = 1; p <= c->phases; p++) {
        c->slot[sphere] = p;                  /* plain writes, published by the barrier */
        cllm_spheres_barrier(c->pool);
        for (int i = 0; i < nspheres; i++)
            if (c->slot[i] != p) atomic_fetch_add(&c->bad, 1);
        cllm_spheres_barrier(c->pool);        /* nobody writes phase p+1 before all have read */
    }
    return 0;
}

static void test_barrier(int n, int phases, const char *spin_us) {
    cllm_spheres *s = new_pool(n, spin_us);
    if (!s) return;
    bar_ctx c = {s, n, phases, calloc((size_t)n, sizeof(int)), 0};
    for (int r = 0; r < 3; r++) CHECK(cllm_spheres_run(s, barrier_task, &c) == 0, "run: %s", cllm_last_error());
    CHECK(atomic_load(&c.bad) == 0, "n=%d: %d stale reads after a barrier", n, atomic_load(&c.bad));
    free(c.slot);
    cllm_spheres_free(s);
}

/* A small decoder with random weights: logits bit-identical for 1, 2 and 3
 * spheres in every storage dtype (and no data race under TSan). */
static void test_decoder(void) {
    cllm_config cfg = {0};
    cfg.vocab_size = 97; cfg.context_len = 16; cfg.num_layers = 2; cfg.num_heads = 3; cfg.embed_dim = 36;
    uint64_t st = 42;
    int dtypes[3] = {CLLM_DTYPE_F32, CLLM_DTYPE_BF16, CLLM_DTYPE_INT8};
    for (int k = 0; k < 3; k++) {
        float ref[97 * 12];
        for (int threads = 1; threads <= 3; threads++) {
            cfg.threads = threads;
            cllm_decoder *d = NULL;
            int rc = cllm_decoder_new(&cfg, dtypes[k], &d);
            CHECK(rc == 0, "decoder_new: %s", cllm_last_error());
            if (rc) return;
            int nt = 0;
            cllm_decoder_num_tensors(d, &nt);
            st = 42;
            for (int i = 0; i < nt; i++) {
                cllm_tensor_info info;
                cllm_decoder_tensor_info(d, i, &info, NULL, NULL);
                float *w = malloc(sizeof(float) * info.numel);
                for (size_t j = 0; j < info.numel; j++) {
                    st = st * 6364136223846793005ull + 1442695040888963407ull;
                    w[j] = (float)((double)(st >> 40) / (double)(1ull << 24) - 0.5) * 0.2f;
                }
                CHECK(cllm_decoder_set_tensor(d, i, w, CLLM_DTYPE_F32, 0) == 0, "set %s", info.name);
                free(w);
            }
            CHECK(cllm_decoder_reset(d) == 0, "reset: %s", cllm_last_error());
            float lg[97];
            for (int t = 0; t < 12; t++) {
                CHECK(cllm_decoder_step(d, (t * 31) % 97, lg) == 0, "step: %s", cllm_last_error());
                if (threads == 1) memcpy(ref + t * 97, lg, sizeof lg);
                else CHECK(!memcmp(ref + t * 97, lg, sizeof lg), "dtype %d threads %d step %d differs", dtypes[k],
                           threads, t);
            }
            CHECK(cllm_decoder_step(d, 97, lg) == CLLM_ERR_RANGE, "bad token accepted");
            cllm_decoder_free(d);
        }
    }
}

int main(int argc, char **argv) {
    int bench = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--quick")) g_quick = 1;
        else if (!strcmp(argv[i], "--bench")) bench = 1;
        else { fprintf(stderr, "usage: %s [--quick] [--bench]\n", argv[0]); return 2; }
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    signal(SIGALRM, on_alarm);
    unsigned T = g_quick ? 600 : 300;   /* per-section watchdog, seconds */
    double t0 = cllm_now_s();

    section("every sphere runs exactly once per run", T);
    int sizes[] = {1, 2, 3, 13, 25, 64, 200};
    for (int k = 0; k < 7; k++) {
        int runs = sizes[k] <= 25 ? (g_quick ? 200 : 1000) : (g_quick ? 20 : 100);
        test_every_sphere(sizes[k], runs);
    }
    section("busy statistics", T);
    test_busy_stats();
    section("deterministic fixed-order reductions", T);
    for (int k = 0; k < 6; k++) test_reduction(sizes[k], g_quick ? 10 : 50);
    section("errors raised in workers", T);
    test_errors();
    section("misuse and limits", T);
    test_misuse();
    section("fork", T);
    test_fork();
    section("signals go to the caller, not to workers", T);
    test_signals_reach_caller();
    section("pthread_create failure", T);
    test_create_failure();
    section("create/destroy cycles", T);
    test_cycles(500);
    section("back-to-back runs (spinning waiters)", T);
    test_back_to_back(2, 10000, NULL);
    test_back_to_back(3, 10000, NULL);
    test_back_to_back(13, g_quick ? 1000 : 3000, NULL);
    section("back-to-back runs (futex only, no spin)", T);
    test_back_to_back(2, 10000, "0");
    test_back_to_back(3, 10000, "0");
    test_back_to_back(25, g_quick ? 500 : 2000, "0");
    section("idle pool after runs uses no CPU", T);
    test_idle_after_runs(2);
    test_idle_after_runs(4);
    section("in-task barrier", T);
    test_barrier(2, g_quick ? 2000 : 20000, NULL);
    test_barrier(3, g_quick ? 2000 : 20000, NULL);
    test_barrier(13, g_quick ? 200 : 1000, NULL);
    test_barrier(3, g_quick ? 500 : 2000, "0");
    section("decoder: bit-identical across sphere counts", T);
    test_decoder();
    section("model: training steps with 3 spheres", T);
    test_model();
    if (bench) {
        section("per-run overhead", T);
        bench_overhead();
    }
    alarm(0);
    printf("%s: %d failure(s), %.1f s\n", g_failures ? "FAILED" : "OK", g_failures, cllm_now_s() - t0);
    return g_failures ? 1 : 0;
}
