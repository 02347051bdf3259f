/* Two runtimes at once, each on its own thread with one scope on one SQL
 * connection running its own number of distinct statements: what each
 * runtime's "<driver>.<counter>" says while both connections are open (the
 * two threads meet there, twice, so the process-wide counters can be read
 * in between) and once its scope ended. For the drivers' tests: each
 * runtime must see its own counts, the process-wide ones their sum. */
#ifndef ASCOPE_RT_PAIR_H
#define ASCOPE_RT_PAIR_H

#include <ascope/sql.h>
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>
#include <uv.h>

#define RT_PAIR_MAX 8 /* counters read */

struct rt_pair_side {
  int n;                           /* statements to run */
  int (*use)(ascope *s, void *ud); /* appends the connection */
  void *ud;
  /* results */
  int status, answered;
  int64_t held[RT_PAIR_MAX];    /* the names, after the n-th answer */
  int64_t after[RT_PAIR_MAX];   /* once the scope ended */
  int64_t process[RT_PAIR_MAX]; /* the process-wide reader's, between the meetings */
  /* private */
  const char *const *names;
  int64_t (*process_stat)(const char *name);
  uv_barrier_t *meet;
  ascope_rt *rt;
  uv_thread_t th;
};

static int rt_pair_answer(ascope *s, int status, ascope_rows *rows, void *ud) {
  (void)s, (void)rows;
  struct rt_pair_side *x = ud;
  if (status == 0 && ++x->answered == x->n) {
    for (int i = 0; i < RT_PAIR_MAX && x->names[i]; i++)
      x->held[i] = ascope_rt_stat(x->rt, x->names[i]);
    uv_barrier_wait(x->meet); /* both connections open, each runtime's statements run */
    for (int i = 0; i < RT_PAIR_MAX && x->names[i]; i++) {
      const char *dot = strchr(x->names[i], '.');
      x->process[i] = x->process_stat ? x->process_stat(dot + 1) : 0;
    }
    uv_barrier_wait(x->meet);
  }
  return status;
}

static void rt_pair_body(ascope *s, void *ud) {
  struct rt_pair_side *x = ud;
  ascope_sql *db = ascope_sql_resource(s, 0);
  char sql[32];
  for (int i = 0; i < x->n; i++) {
    snprintf(sql, sizeof sql, "SELECT %d", 1000 + i);
    if (ascope_sql_query(s, db, sql, NULL, rt_pair_answer, x) != 0) ascope_cancel(s);
  }
}

static void rt_pair_done(ascope *s, int status, void *ud) {
  (void)s;
  ((struct rt_pair_side *)ud)->status = status;
}

static void rt_pair_thread(void *arg) {
  struct rt_pair_side *x = arg;
  ascope *s = ascope_new(x->rt);
  if (s == NULL || x->use(s, x->ud) != 0 || ascope_start(s, rt_pair_body, rt_pair_done, x) != 0) {
    x->status = UV_ENOMEM;
    if (s) ascope_discard(s);
  } else {
    ascope_rt_run(x->rt);
  }
  if (x->answered != x->n) { /* the other side must not wait for us */
    uv_barrier_wait(x->meet);
    uv_barrier_wait(x->meet);
  }
  for (int i = 0; i < RT_PAIR_MAX && x->names[i]; i++)
    x->after[i] = ascope_rt_stat(x->rt, x->names[i]);
}

/* Runs both sides at once; names (NULL-terminated, "<driver>.<counter>")
 * are read as described above, process_stat (the driver's process-wide
 * reader, given what follows the dot; may be NULL) between the meetings.
 * 0, or the first failure to make a runtime or a thread. */
static int rt_pair_run(struct rt_pair_side *a, struct rt_pair_side *b, const char *const *names,
                       int64_t (*process_stat)(const char *name)) {
  uv_barrier_t meet;
  if (uv_barrier_init(&meet, 2) != 0) return UV_ENOMEM;
  struct rt_pair_side *side[2] = {a, b};
  int rc = 0;
  for (int i = 0; i < 2; i++) {
    side[i]->names = names;
    side[i]->process_stat = process_stat;
    side[i]->meet = &meet;
    side[i]->answered = 0;
    side[i]->status = 1;
    side[i]->rt = ascope_rt_new(NULL);
    if (side[i]->rt == NULL) rc = UV_ENOMEM;
  }
  if (rc == 0 && (rc = uv_thread_create(&a->th, rt_pair_thread, a)) == 0) {
    if ((rc = uv_thread_create(&b->th, rt_pair_thread, b)) != 0) {
      uv_barrier_wait(&meet); /* stand in for b */
      uv_barrier_wait(&meet);
    }
    uv_thread_join(&a->th);
    if (rc == 0) uv_thread_join(&b->th);
  }
  for (int i = 0; i < 2; i++)
    if (side[i]->rt) ascope_rt_free(side[i]->rt);
  uv_barrier_destroy(&meet);
  return rc;
}

/* The checks every SQL driver's pair shares, its names
 * being "<d>.statements", "<d>.connections", "<d>.opened", "<d>.closed",
 * "sql.requests" in that order; "statements" as the driver counts them is
 * the caller's to check. */
static void rt_pair_check_sql(struct rt_pair_side *a, struct rt_pair_side *b) {
  struct rt_pair_side *side[2] = {a, b};
  for (int i = 0; i < 2; i++) {
    struct rt_pair_side *x = side[i];
    cr_assert_eq(x->status, 0);
    cr_assert_eq(x->held[1], 1, "its connection, not the other's");
    cr_assert_eq(x->held[2], 1);
    cr_assert_eq(x->held[3], 0);
    cr_assert_geq(x->held[4], 1, "its requests in flight");
    cr_assert_leq(x->held[4], x->n);
    cr_assert_eq(x->after[1], 0);
    cr_assert_eq(x->after[2], 1);
    cr_assert_eq(x->after[3], 1);
    cr_assert_eq(x->after[4], 0);
  }
  cr_assert_eq(a->process[1], 2, "the process-wide reader: both runtimes");
}

#endif
