/* ascope_rt_post, the one thread-safe entry: 4 threads x 10,000 posts are
 * each delivered exactly once, on the loop thread, in order per thread,
 * while a scope is kept pending by a hanging operation that the last post
 * ends. Also posts from the loop thread, and posts with nothing pending.
 * Runs under ThreadSanitizer too (build-tsan). */
#include <criterion/criterion.h>

#include "test_driver.h"
#include "test_util.h"

#define THREADS 4
#define PER_THREAD 10000

static ascope_rt *rt;

static void setup(void) {
  td_reset();
  rt = ascope_rt_new(NULL);
  cr_assert_not_null(rt);
}

static void teardown(void) {
  cr_assert_eq(ascope_rt_free(rt), 0);
}

TestSuite(post, .init = setup, .fini = teardown, .timeout = 60);

/* Loop-thread state: only touched by posted functions and the test body. */
static unsigned char seen[THREADS][PER_THREAD];
static int last[THREADS];
static long delivered, dupes, out_of_order, wrong_thread;
static uv_thread_t loop_thread;
static td_manual keeper;

struct producer {
  int id;
  int failed; /* posts that returned an error */
  uv_thread_t th;
};

static void on_post(void *ud) {
  uintptr_t v = (uintptr_t)ud;
  int t = (int)(v / PER_THREAD), i = (int)(v % PER_THREAD);
  uv_thread_t self = uv_thread_self();
  if (!uv_thread_equal(&self, &loop_thread)) wrong_thread++;
  if (seen[t][i]++) dupes++;
  if (i != last[t] + 1) out_of_order++;
  last[t] = i;
  if (++delivered == (long)THREADS * PER_THREAD) td_manual_end(&keeper, 0);
}

static void produce(void *arg) {
  struct producer *p = arg;
  for (int i = 0; i < PER_THREAD; i++) {
    uintptr_t v = (uintptr_t)p->id * PER_THREAD + (uintptr_t)i;
    if (ascope_rt_post(rt, on_post, (void *)v) != 0) p->failed++;
  }
}

static void keeper_body(ascope *s, rec *r) {
  (void)r;
  cr_assert_eq(td_manual_start(s, &keeper), 0);
}

Test(post, four_threads_ten_thousand_each) {
  memset(seen, 0, sizeof seen);
  for (int t = 0; t < THREADS; t++) last[t] = -1;
  delivered = dupes = out_of_order = wrong_thread = 0;
  memset(&keeper, 0, sizeof keeper);
  loop_thread = uv_thread_self();

  ascope *s = ascope_new(rt);
  rec r = {.body = keeper_body};
  cr_assert_eq(rec_start(s, &r), 0);
  static struct producer p[THREADS];
  for (int t = 0; t < THREADS; t++) {
    p[t] = (struct producer){.id = t};
    cr_assert_eq(uv_thread_create(&p[t].th, produce, &p[t]), 0);
  }
  cr_assert_eq(ascope_rt_run(rt), 0);
  for (int t = 0; t < THREADS; t++) cr_assert_eq(uv_thread_join(&p[t].th), 0);

  for (int t = 0; t < THREADS; t++) cr_assert_eq(p[t].failed, 0, "thread %d: posts failed", t);
  assert_done(&r, 0);
  cr_assert_eq(keeper.ended, 1);
  cr_assert_eq(delivered, (long)THREADS * PER_THREAD);
  cr_assert_eq(dupes, 0, "%ld posts ran twice", dupes);
  cr_assert_eq(out_of_order, 0, "%ld posts out of their thread's order", out_of_order);
  cr_assert_eq(wrong_thread, 0, "%ld posts ran off the loop thread", wrong_thread);
  long missing = 0;
  for (int t = 0; t < THREADS; t++)
    for (int i = 0; i < PER_THREAD; i++) missing += seen[t][i] == 0;
  cr_assert_eq(missing, 0);
}

/* ---- from the loop thread ---------------------------------------------------------- */

static int chain_count;
static void chain_post(void *ud) {
  (void)ud;
  if (++chain_count < 100)
    cr_assert_eq(ascope_rt_post(rt, chain_post, NULL), 0);
  else
    td_manual_end(&keeper, 0);
}

static void chain_body(ascope *s, rec *r) {
  (void)r;
  cr_assert_eq(td_manual_start(s, &keeper), 0);
  cr_assert_eq(ascope_rt_post(rt, chain_post, NULL), 0);
  cr_assert_eq(chain_count, 0, "a post ran inside ascope_rt_post");
}

Test(post, posts_from_the_loop_thread_and_from_posts) {
  chain_count = 0;
  memset(&keeper, 0, sizeof keeper);
  ascope *s = ascope_new(rt);
  rec r = {.body = chain_body};
  cr_assert_eq(rec_start(s, &r), 0);
  cr_assert_eq(ascope_rt_run(rt), 0);
  assert_done(&r, 0);
  cr_assert_eq(chain_count, 100);
}

/* ---- with nothing pending ---------------------------------------------------------- */

static int simple;
static void simple_post(void *ud) {
  simple += (int)(intptr_t)ud;
}

Test(post, run_with_nothing_pending_delivers_posts) {
  simple = 0;
  cr_assert_eq(ascope_rt_post(rt, simple_post, (void *)1), 0);
  cr_assert_eq(ascope_rt_post(rt, simple_post, (void *)10), 0);
  cr_assert_eq(simple, 0);
  cr_assert_eq(ascope_rt_run(rt), 0);
  cr_assert_eq(simple, 11);
  /* and nothing is delivered twice */
  cr_assert_eq(ascope_rt_run(rt), 0);
  cr_assert_eq(simple, 11);
}

static void post_from_thread(void *arg) {
  (void)arg;
  cr_assert_eq(ascope_rt_post(rt, simple_post, (void *)100), 0);
}

Test(post, post_from_thread_with_nothing_pending) {
  simple = 0;
  uv_thread_t th;
  cr_assert_eq(uv_thread_create(&th, post_from_thread, NULL), 0);
  cr_assert_eq(uv_thread_join(&th), 0);
  cr_assert_eq(ascope_rt_run(rt), 0);
  cr_assert_eq(simple, 100);
}

/* A post that starts a scope: ascope_rt_run runs it to the end. */
static rec started_rec;
static td_spec started_spec;
static void start_scope_post(void *ud) {
  (void)ud;
  ascope *s = ascope_new(rt);
  cr_assert_eq(td_use(s, &started_spec), 0);
  cr_assert_eq(rec_start(s, &started_rec), 0);
}

Test(post, post_starting_a_scope) {
  memset(&started_rec, 0, sizeof started_rec);
  started_spec = (td_spec){.name = "p", .acquire = TD_OK_LATE, .delay_ms = 2};
  cr_assert_eq(ascope_rt_post(rt, start_scope_post, NULL), 0);
  cr_assert_eq(ascope_rt_run(rt), 0);
  assert_done(&started_rec, 0);
  cr_assert_str_eq(td_log(), "+p -p");
}
