/* spheres.c - the kissing-sphere thread pool.
 *
 * Shape. n spheres form a tree with fan-out 12: sphere 0 is the calling
 * (control) thread, the children of sphere i are 12*i+1 .. 12*i+12 (those
 * < n) and the parent of sphere i > 0 is (i-1)/12. Spheres 1..n-1 are
 * persistent pthreads created once by cllm_spheres_new.
 *
 * One run (cllm_spheres_run). The caller publishes (fn, arg) and a new
 * generation number, then acts as sphere 0:
 *   1. set its `pending` counter to its child count, store the generation
 *      into each child's `gen` word (waking it with a futex if it sleeps);
 *   2. run its own task;
 *   3. wait until `pending` reaches 0 (all children's subtrees are done);
 *   4. (workers only) decrement the parent's `pending`, waking the parent if
 *      it sleeps and this was the last child.
 * Every woken worker does the same for its own children before running its
 * task, so wake-up fans out down the tree and completion comes back up it.
 *
 * Memory order. The task descriptor and the stop flag are plain fields
 * written by the controlling thread before the release-store of the
 * children's generation; a worker reads them after its acquire-load of that
 * word, and passes the happens-before edge on to its own children the same
 * way. Completion uses an acq_rel decrement of the parent's counter, so
 * everything a subtree wrote (task outputs, statistics, error slots) is
 * visible to the caller when cllm_spheres_run returns.
 *
 * Sleeping. A waiter spins for a short bounded time (CLLM_SPHERES_SPIN_US,
 * default 20 us; no spin at all when there are more spheres than CPUs),
 * then announces itself in a `*_sleep` flag and blocks in FUTEX_WAIT on the
 * word it watches. The waker stores the word, then checks the flag and
 * issues FUTEX_WAKE only if somebody may sleep. Both sides use seq_cst for
 * the store/load pair (Dekker pattern), so either the waker sees the flag or
 * the waiter sees the new value; FUTEX_WAIT re-checks the value atomically in
 * the kernel, so no wake-up can be lost. An idle pool is blocked in the
 * kernel and uses no CPU.
 *
 * Errors. A task returns 0 or a negative code. A worker that fails copies
 * its thread-local message into its own slot; the caller returns the code of
 * the lowest-numbered failing sphere and installs its message as the
 * caller's cllm_last_error().
 *
 * Threading contract. One controlling thread at a time may call run, stats,
 * reset_stats and free on a pool (different pools are independent). A call
 * from inside a task, or a concurrent call from a second thread while a run
 * is in flight, is detected and rejected with CLLM_ERR_STATE instead of
 * deadlocking. A run starts by clearing the caller's cllm_last_error(). In a
 * process forked from the pool's creator a multi-sphere pool refuses to run
 * (CLLM_ERR_STATE) and its free does not join (the threads are not there).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/futex.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#include "internal.h"
#include "spheres.h"

#define FANOUT 12
#define MAX_SPHERES 4096
#define ERRMSG_CAP 512
#define DEFAULT_SPIN_NS 20000L

/* Per-sphere state. Fields written by different threads live on different
 * cache lines so that a run does not bounce lines needlessly. */
typedef struct sphere {
    /* line 1: written by the parent (wake-up), read by this sphere */
    _Alignas(64) _Atomic uint32_t gen;  /* futex word: last published generation */
    _Atomic uint32_t gen_sleep;         /* 1 while this sphere may sleep on gen   */
    /* line 2: written by the children (completion), read by this sphere */
    _Alignas(64) _Atomic uint32_t pending;   /* futex word: children not done yet */
    _Atomic uint32_t pending_sleep;          /* 1 while this sphere may sleep on it */
    /* line 3+: owned by this sphere while a run is in flight */
    _Alignas(64) uint64_t tasks;
    uint64_t busy_ns;
    int rc;                 /* result of this sphere's task in the last run */
    int id, parent, first_child, nchildren;
    struct cllm_spheres *pool;
    pthread_t thread;
    char msg[ERRMSG_CAP];   /* error message of a failing task */
} sphere;

struct cllm_spheres {
    int n;
    long spin_ns;
    sphere *sp;                 /* n entries, 64-byte aligned */
    /* task descriptor: written by the controller before publishing gen */
    cllm_sphere_fn fn;
    void *arg;
    int stop;
    uint32_t gen;               /* controller's generation counter */
    _Atomic int failed;         /* some sphere failed in this run */
    _Atomic int busy;           /* a run (or free) is in progress */
    /* in-task barrier (cllm_spheres_barrier): arrivals in this round, the
     * round number (futex word) and how many spheres may sleep on it */
    _Alignas(64) _Atomic uint32_t bar_count;
    _Atomic uint32_t bar_gen;
    _Atomic uint32_t bar_sleepers;
    uint64_t t_reset_ns;        /* CLOCK_MONOTONIC at creation / last reset */
    unsigned fork_epoch;        /* g_fork_epoch when the workers were created */
};

/* Fork safety: a child process inherits the pool's memory but none of its
 * worker threads. A run there would wait forever, and joining would be
 * undefined, so the child's copy of a multi-sphere pool refuses to run and
 * is freed without joining. */
static _Atomic unsigned g_fork_epoch;
static pthread_once_t g_atfork_once = PTHREAD_ONCE_INIT;
static void on_fork_child(void) { atomic_fetch_add_explicit(&g_fork_epoch, 1, memory_order_relaxed); }
static void register_atfork(void) { pthread_atfork(NULL, NULL, on_fork_child); }
static inline int forked_away(const cllm_spheres *s) {
    return s->n > 1 && s->fork_epoch != atomic_load_explicit(&g_fork_epoch, memory_order_relaxed);
}

/* --------------------------------------------------------------- helpers */
static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ volatile("yield");
#endif
}

static inline void futex_wait(_Atomic uint32_t *addr, uint32_t val) {
    /* Returns on wake, on EAGAIN (value changed) or EINTR: callers loop. */
    syscall(SYS_futex, (uint32_t *)addr, FUTEX_WAIT_PRIVATE, val, NULL, NULL, 0);
}

static inline void futex_wake(_Atomic uint32_t *addr) {
    syscall(SYS_futex, (uint32_t *)addr, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
}

static inline void futex_wake_all(_Atomic uint32_t *addr) {
    syscall(SYS_futex, (uint32_t *)addr, FUTEX_WAKE_PRIVATE, 0x7fffffff, NULL, NULL, 0);
}

/* Spin for at most spin_ns until *word != val; returns the last value seen. */
static inline uint32_t spin_while_eq(_Atomic uint32_t *word, uint32_t val, long spin_ns) {
    uint32_t v = atomic_load_explicit(word, memory_order_acquire);
    if (v != val || spin_ns <= 0) return v;
    uint64_t deadline = cllm_now_ns() + (uint64_t)spin_ns;
    for (;;) {
        for (int k = 0; k < 64; k++) {
            cpu_relax();
            v = atomic_load_explicit(word, memory_order_acquire);
            if (v != val) return v;
        }
        if (cllm_now_ns() >= deadline) return v;
    }
}

/* Block until *word != val (spin first). */
static uint32_t wait_while_eq(_Atomic uint32_t *word, _Atomic uint32_t *sleep_flag,
                              uint32_t val, long spin_ns) {
    uint32_t v = spin_while_eq(word, val, spin_ns);
    if (v != val) return v;
    atomic_store_explicit(sleep_flag, 1, memory_order_seq_cst);
    while ((v = atomic_load_explicit(word, memory_order_seq_cst)) == val)
        futex_wait(word, val);
    atomic_store_explicit(sleep_flag, 0, memory_order_relaxed);
    return v;
}

/* Block until *word == 0 (spin first). */
static void wait_until_zero(_Atomic uint32_t *word, _Atomic uint32_t *sleep_flag, long spin_ns) {
    uint32_t v = atomic_load_explicit(word, memory_order_acquire);
    if (v == 0) return;
    if (spin_ns > 0) {
        uint64_t deadline = cllm_now_ns() + (uint64_t)spin_ns;
        for (;;) {
            for (int k = 0; k < 64; k++) {
                cpu_relax();
                if (atomic_load_explicit(word, memory_order_acquire) == 0) return;
            }
            if (cllm_now_ns() >= deadline) break;
        }
    }
    atomic_store_explicit(sleep_flag, 1, memory_order_seq_cst);
    while ((v = atomic_load_explicit(word, memory_order_seq_cst)) != 0)
        futex_wait(word, v);
    atomic_store_explicit(sleep_flag, 0, memory_order_relaxed);
}

/* Publish generation g to sphere c and wake it if it may be asleep. */
static inline void wake(sphere *c, uint32_t g) {
    atomic_store_explicit(&c->gen, g, memory_order_seq_cst);
    if (atomic_load_explicit(&c->gen_sleep, memory_order_seq_cst))
        futex_wake(&c->gen);
}

/* Report completion of sphere me's subtree to its parent. */
static inline void complete(sphere *parent) {
    uint32_t left = atomic_fetch_sub_explicit(&parent->pending, 1, memory_order_seq_cst);
    if (left == 1 && atomic_load_explicit(&parent->pending_sleep, memory_order_seq_cst))
        futex_wake(&parent->pending);
}

/* Steps 1-3 of a run for sphere me (worker or controller). */
static void run_sphere(cllm_spheres *s, sphere *me, uint32_t g) {
    if (me->nchildren) {
        atomic_store_explicit(&me->pending, (uint32_t)me->nchildren, memory_order_relaxed);
        for (int c = 0; c < me->nchildren; c++) wake(&s->sp[me->first_child + c], g);
    }
    uint64_t t0 = cllm_now_ns();
    int rc = s->fn(s->arg, me->id, s->n);
    uint64_t t1 = cllm_now_ns();
    me->tasks++;
    me->busy_ns += t1 - t0;
    me->rc = rc;
    if (rc != 0) {
        cllm_error_copy(me->msg, sizeof me->msg);
        if (!me->msg[0]) {
            snprintf(me->msg, sizeof me->msg, "sphere %d: task failed with code %d (no message)", me->id, rc);
            if (me->id == 0) cllm_error_set_raw(me->msg);
        }
        atomic_store_explicit(&s->failed, 1, memory_order_relaxed);
    }
    if (me->nchildren) wait_until_zero(&me->pending, &me->pending_sleep, s->spin_ns);
}

static void *worker_main(void *p) {
    sphere *me = p;
    cllm_spheres *s = me->pool;
    sphere *parent = &s->sp[me->parent];
    char name[16];
    snprintf(name, sizeof name, "cllm-sph-%d", me->id);
    pthread_setname_np(pthread_self(), name);
    uint32_t last = 0;
    for (;;) {
        uint32_t g = wait_while_eq(&me->gen, &me->gen_sleep, last, s->spin_ns);
        last = g;
        if (s->stop) break;
        cllm_clear_error();
        run_sphere(s, me, g);
        complete(parent);
    }
    return NULL;
}

/* Stop and join workers 1..created (inclusive upper bound created-1). */
static void stop_workers(cllm_spheres *s, int created) {
    s->stop = 1;
    uint32_t g = ++s->gen;
    /* Wake every worker directly: a stopping worker does not propagate. */
    for (int i = 1; i < created; i++) wake(&s->sp[i], g);
    for (int i = 1; i < created; i++) pthread_join(s->sp[i].thread, NULL);
}

static long spin_budget_ns(int n) {
    const char *env = getenv("CLLM_SPHERES_SPIN_US");
    if (env && *env) {
        char *end = NULL;
        long us = strtol(env, &end, 10);
        if (end && *end == 0 && us >= 0 && us <= 1000000) return us * 1000L;
    }
    int ncpu = 1;
    cllm_cpu_count(&ncpu);
    /* Oversubscribed: a spinning waiter would steal the CPU the thread it
     * waits for needs. Block at once. */
    return n > ncpu ? 0 : DEFAULT_SPIN_NS;
}

/* ------------------------------------------------------------ public API */
CLLM_EXPORT int cllm_spheres_new(int threads, cllm_spheres **out) {
    CLLM_CHECK_PTR(out, "out");
    *out = NULL;
    if (threads < 0 || threads > MAX_SPHERES)
        return cllm_fail(CLLM_ERR_INVALID, "spheres: threads must be in [0, %d] (0 = all CPUs), got %d",
                         MAX_SPHERES, threads);
    if (threads == 0) cllm_cpu_count(&threads);
    if (threads < 1) threads = 1;
    if (threads > MAX_SPHERES) threads = MAX_SPHERES;

    cllm_spheres *s = calloc(1, sizeof *s);
    if (!s) return cllm_fail(CLLM_ERR_NOMEM, "spheres: out of memory");
    s->sp = cllm_aligned_alloc(sizeof(sphere) * (size_t)threads);
    if (!s->sp) {
        free(s);
        return cllm_fail(CLLM_ERR_NOMEM, "spheres: out of memory for %d spheres", threads);
    }
    s->n = threads;
    s->spin_ns = spin_budget_ns(threads);
    for (int i = 0; i < threads; i++) {
        sphere *sp = &s->sp[i];
        atomic_init(&sp->gen, 0);
        atomic_init(&sp->gen_sleep, 0);
        atomic_init(&sp->pending, 0);
        atomic_init(&sp->pending_sleep, 0);
        sp->id = i;
        sp->parent = i ? (i - 1) / FANOUT : -1;
        sp->first_child = FANOUT * i + 1;
        int last = FANOUT * i + FANOUT;           /* inclusive */
        if (sp->first_child >= threads) sp->nchildren = 0;
        else sp->nchildren = (last < threads ? last : threads - 1) - sp->first_child + 1;
        sp->pool = s;
    }
    atomic_init(&s->failed, 0);
    atomic_init(&s->busy, 0);
    atomic_init(&s->bar_count, 0);
    atomic_init(&s->bar_gen, 0);
    atomic_init(&s->bar_sleepers, 0);
    s->t_reset_ns = cllm_now_ns();
    pthread_once(&g_atfork_once, register_atfork);
    s->fork_epoch = atomic_load_explicit(&g_fork_epoch, memory_order_relaxed);

    /* Workers block asynchronous signals (inherited mask), so that SIGINT,
     * SIGALRM, ... sent to the process reach the caller's threads (Python's
     * main thread) instead of a worker. Fault signals stay deliverable. */
    sigset_t all, old;
    sigfillset(&all);
    static const int faults[] = {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGTRAP, SIGABRT, SIGSYS};
    for (size_t k = 0; k < sizeof faults / sizeof faults[0]; k++) sigdelset(&all, faults[k]);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    for (int i = 1; i < threads; i++) {
        int err = pthread_create(&s->sp[i].thread, NULL, worker_main, &s->sp[i]);
        if (err != 0) {
            pthread_sigmask(SIG_SETMASK, &old, NULL);
            stop_workers(s, i);
            cllm_aligned_free(s->sp);
            free(s);
            return cllm_fail(CLLM_ERR_THREAD, "spheres: pthread_create failed for sphere %d of %d: %s",
                             i, threads, strerror(err));
        }
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    *out = s;
    return CLLM_OK;
}

CLLM_EXPORT int cllm_spheres_free(cllm_spheres *s) {
    if (!s) return CLLM_OK;
    int expected = 0;
    if (!atomic_compare_exchange_strong(&s->busy, &expected, 1))
        return cllm_fail(CLLM_ERR_STATE, "spheres_free: the pool is running a task (called from a task or "
                                         "from a second thread?)");
    if (!forked_away(s)) stop_workers(s, s->n);   /* a forked copy has no threads to join */
    cllm_aligned_free(s->sp);
    free(s);
    return CLLM_OK;
}

CLLM_GETTER(cllm_spheres_count, cllm_spheres, "s", int, h->n)

CLLM_EXPORT int cllm_spheres_stats(const cllm_spheres *s, cllm_sphere_stats *out, int cap, int *n) {
    CLLM_CHECK_PTR(s, "s");
    CLLM_CHECK_PTR(n, "n");
    if (cap < 0) return cllm_fail(CLLM_ERR_INVALID, "spheres_stats: cap must be >= 0, got %d", cap);
    if (cap > 0 && !out) return cllm_fail(CLLM_ERR_INVALID, "spheres_stats: out is NULL");
    if (atomic_load_explicit(&((cllm_spheres *)s)->busy, memory_order_acquire))
        return cllm_fail(CLLM_ERR_STATE, "spheres_stats: the pool is running a task");
    *n = s->n;
    double wall = (double)(cllm_now_ns() - s->t_reset_ns) * 1e-9;
    for (int i = 0; i < s->n && i < cap; i++) {
        const sphere *sp = &s->sp[i];
        out[i].sphere = i;
        out[i].parent = sp->parent;
        out[i].tasks = sp->tasks;
        out[i].busy_seconds = (double)sp->busy_ns * 1e-9;
        double f = wall > 0 ? out[i].busy_seconds / wall : 0.0;
        out[i].busy_fraction = f > 1.0 ? 1.0 : f;
    }
    return CLLM_OK;
}

CLLM_EXPORT int cllm_spheres_reset_stats(cllm_spheres *s) {
    CLLM_CHECK_PTR(s, "s");
    if (atomic_load_explicit(&s->busy, memory_order_acquire))
        return cllm_fail(CLLM_ERR_STATE, "spheres_reset_stats: the pool is running a task");
    for (int i = 0; i < s->n; i++) {
        s->sp[i].tasks = 0;
        s->sp[i].busy_ns = 0;
    }
    s->t_reset_ns = cllm_now_ns();
    return CLLM_OK;
}

int cllm_spheres_run(cllm_spheres *s, cllm_sphere_fn fn, void *arg) {
    CLLM_CHECK_PTR(s, "s");
    CLLM_CHECK_PTR(fn, "fn");
    int expected = 0;
    if (!atomic_compare_exchange_strong_explicit(&s->busy, &expected, 1, memory_order_acquire,
                                                 memory_order_relaxed))
        return cllm_fail(CLLM_ERR_STATE, "spheres_run: the pool is already running a task (nested call "
                                         "from a task, or a second controlling thread)");
    if (forked_away(s)) {
        atomic_store_explicit(&s->busy, 0, memory_order_release);
        return cllm_fail(CLLM_ERR_STATE, "spheres_run: this pool of %d spheres was created before fork(); its "
                                         "worker threads do not exist in this process (create a new pool)", s->n);
    }
    cllm_clear_error();
    s->fn = fn;
    s->arg = arg;
    atomic_store_explicit(&s->failed, 0, memory_order_relaxed);
    uint32_t g = ++s->gen;
    sphere *root = &s->sp[0];
    run_sphere(s, root, g);

    int rc = 0;
    if (atomic_load_explicit(&s->failed, memory_order_relaxed)) {
        for (int i = 0; i < s->n; i++) {
            if (s->sp[i].rc != 0) {
                rc = s->sp[i].rc;
                /* sphere 0 ran on this thread: its message is already ours */
                if (i != 0) cllm_error_set_raw(s->sp[i].msg);
                break;
            }
        }
    }
    atomic_store_explicit(&s->busy, 0, memory_order_release);
    return rc;
}

/* In-task barrier (centralised, generation-counted). The round number is
 * read BEFORE arriving, so it cannot move until this sphere has arrived.
 * The last arrival resets the count, then publishes round+1 (release: all
 * writes made before every sphere's arrival are visible to every sphere
 * after the barrier, because the arrivals are one RMW release sequence and
 * the last arrival acquires it). Waiters spin for the pool's spin budget,
 * then sleep on the round word with the same Dekker handshake as wake(). */
void cllm_spheres_barrier(cllm_spheres *s) {
    if (s->n <= 1) return;
    uint32_t g = atomic_load_explicit(&s->bar_gen, memory_order_acquire);
    uint32_t arrived = atomic_fetch_add_explicit(&s->bar_count, 1, memory_order_acq_rel) + 1;
    if (arrived == (uint32_t)s->n) {
        atomic_store_explicit(&s->bar_count, 0, memory_order_relaxed);
        atomic_store_explicit(&s->bar_gen, g + 1, memory_order_seq_cst);
        if (atomic_load_explicit(&s->bar_sleepers, memory_order_seq_cst))
            futex_wake_all(&s->bar_gen);
        return;
    }
    if (spin_while_eq(&s->bar_gen, g, s->spin_ns) != g) return;
    atomic_fetch_add_explicit(&s->bar_sleepers, 1, memory_order_seq_cst);
    while (atomic_load_explicit(&s->bar_gen, memory_order_seq_cst) == g)
        futex_wait(&s->bar_gen, g);
    atomic_fetch_sub_explicit(&s->bar_sleepers, 1, memory_order_relaxed);
}
