/* Tracing: the events a scenario produces (a scope with two uses and an
 * operation, a child whose deadline fires, a child cancelled), their ids and
 * order; targets with their secrets redacted; the JSON writer's file, parsed
 * and checked for the trace-event format, balanced even when closed with
 * scopes open; the counters of ascope_rt_stat. */
#include <criterion/criterion.h>

#include <ascope/driver.h>
#include <ascope/trace.h>
#include <stdint.h>
#include <fcntl.h>
#include <unistd.h>

#include "test_driver.h"
#include "temp_dir.h"
#include "test_util.h"

static ascope_rt *rt;

static void setup(void) {
  td_reset();
  rt = ascope_rt_new(NULL);
  cr_assert_not_null(rt);
}

static void teardown(void) {
  cr_assert_eq(ascope_rt_free(rt), 0);
  cr_assert_eq(td_live(), 0);
}

TestSuite(trace, .init = setup, .fini = teardown, .timeout = 60);

/* ---- recording events ------------------------------------------------------ */

#define MAX_EV 256
typedef struct rec_ev {
  int kind, status, outcome;
  uint64_t ts, scope, parent, id;
  char name[48], driver[32], target[160], message[160];
} rec_ev;
static rec_ev evs[MAX_EV];
static int nev;

static void copy(char *dst, size_t cap, const char *src) {
  snprintf(dst, cap, "%s", src ? src : "");
}

static void record(const ascope_trace_event *ev, void *ud) {
  (void)ud;
  cr_assert_eq(ev->size, sizeof *ev);
  if (nev == MAX_EV) return;
  rec_ev *r = &evs[nev++];
  r->kind = ev->kind;
  r->status = ev->status;
  r->outcome = ev->outcome;
  r->ts = ev->ts_ns;
  r->scope = ev->scope_id;
  r->parent = ev->parent_id;
  r->id = ev->id;
  copy(r->name, sizeof r->name, ev->scope_name);
  copy(r->driver, sizeof r->driver, ev->driver);
  copy(r->target, sizeof r->target, ev->target);
  copy(r->message, sizeof r->message, ev->message);
}

/* The index of the first event from `from` of this kind and scope (0: any
 * scope), or -1. */
static int find(int from, int kind, uint64_t scope) {
  for (int i = from; i < nev; i++)
    if (evs[i].kind == kind && (scope == 0 || evs[i].scope == scope)) return i;
  return -1;
}

static int count(int kind, uint64_t scope) {
  int n = 0;
  for (int i = 0; i < nev; i++) n += evs[i].kind == kind && (scope == 0 || evs[i].scope == scope);
  return n;
}

/* ---- the scenario ---------------------------------------------------------- */

/* parent (two uses, COLLECT_ALL): an operation of 5 ms whose end cancels
 * child "doomed" (a hanging manual operation), and child "late", whose
 * 20 ms deadline fires over a hanging operation. */
struct scenario {
  td_spec a, b;
  rec parent, late, doomed;
  ascope *doomed_scope;
  td_manual doomed_op;
  td_op_stats ops;
};

static int cancel_doomed(ascope *s, int status, void *result, void *ud) {
  (void)s;
  (void)result;
  ascope_cancel(ud);
  return status;
}

static void late_body(ascope *s, rec *r) {
  struct scenario *sc = r->arg;
  cr_assert_eq(td_op_start(s, TD_HANG, 0, 0, NULL, NULL, &sc->ops), 0);
}

static void doomed_body(ascope *s, rec *r) {
  struct scenario *sc = r->arg;
  cr_assert_eq(td_manual_start(s, &sc->doomed_op), 0);
}

static void parent_body(ascope *s, rec *r) {
  struct scenario *sc = r->arg;
  ascope *late = ascope_child(s), *doomed = ascope_child(s);
  cr_assert_eq(ascope_set_name(late, "late"), 0);
  cr_assert_eq(ascope_set_name(doomed, "doomed"), 0);
  cr_assert_eq(ascope_set_timeout(late, 20), 0);
  sc->late.body = late_body;
  sc->late.arg = sc;
  sc->doomed.body = doomed_body;
  sc->doomed.arg = sc;
  sc->doomed_scope = doomed;
  cr_assert_eq(rec_start(late, &sc->late), 0);
  cr_assert_eq(rec_start(doomed, &sc->doomed), 0);
  cr_assert_eq(td_op_start(s, TD_OK_LATE, 5, 0, cancel_doomed, doomed, &sc->ops), 0);
}

static void run_scenario(struct scenario *sc) {
  memset(sc, 0, sizeof *sc);
  sc->a = (td_spec){.name = "a"};
  sc->b = (td_spec){.name = "b", .acquire = TD_OK_LATE, .delay_ms = 2};
  ascope *s = ascope_new(rt);
  cr_assert_eq(ascope_set_name(s, "parent"), 0);
  cr_assert_eq(ascope_set_mode(s, ASCOPE_COLLECT_ALL), 0);
  cr_assert_eq(td_use(s, &sc->a), 0);
  cr_assert_eq(td_use(s, &sc->b), 0);
  sc->parent.body = parent_body;
  sc->parent.arg = sc;
  cr_assert_eq(rec_start(s, &sc->parent), 0);
  cr_assert_eq(ascope_rt_run(rt), 0);
  assert_done(&sc->parent, 0);
  assert_done(&sc->late, ASCOPE_ETIMEDOUT);
  assert_done(&sc->doomed, ASCOPE_ECANCELED);
}

Test(trace, events_of_a_scenario_pair_up_in_order) {
  nev = 0;
  cr_assert_eq(ascope_rt_set_trace(rt, record, NULL), 0);
  struct scenario sc;
  run_scenario(&sc);

  /* the parent: top-level, named, its uses acquired in order */
  int i = find(0, ASCOPE_TRACE_SCOPE_BEGIN, 0);
  cr_assert_geq(i, 0);
  uint64_t parent = evs[i].scope;
  cr_assert_eq(evs[i].parent, 0);
  cr_assert_str_eq(evs[i].name, "parent");
  int a0 = find(i, ASCOPE_TRACE_ACQUIRE_BEGIN, parent),
      a0e = find(i, ASCOPE_TRACE_ACQUIRE_END, parent);
  cr_assert(a0 > i && a0e > a0);
  cr_assert_eq(evs[a0].id, 0);
  cr_assert_str_eq(evs[a0].driver, "test");
  cr_assert_str_eq(evs[a0].target, ""); /* an opaque arg: no target */
  int a1 = find(a0e, ASCOPE_TRACE_ACQUIRE_BEGIN, parent);
  cr_assert(a1 > a0e);
  cr_assert_eq(evs[a1].id, 1);
  /* b's 2 ms timer counts from the loop's cached time, which lags
   * uv_hrtime by this loop turn so far (a preempted turn: any amount), so
   * the two events may be under 2 ms apart, or under 1. What holds: b
   * began before its timer was armed and ended once the timer was due. */
  int a1e = find(a1, ASCOPE_TRACE_ACQUIRE_END, parent);
  cr_assert_leq(evs[a1].ts, sc.b.acquire_armed_ns);
  cr_assert_geq(evs[a1e].ts, sc.b.acquire_due_ns, "the 2 ms acquire ended before it was due");
  int body = find(a1, ASCOPE_TRACE_BODY_BEGIN, parent);
  cr_assert_gt(body, a1);

  /* the children: parent id, deadline then its error, the cancel */
  int late = find(body, ASCOPE_TRACE_SCOPE_BEGIN, 0);
  cr_assert_str_eq(evs[late].name, "late");
  cr_assert_eq(evs[late].parent, parent);
  uint64_t late_id = evs[late].scope;
  int doomed = find(late + 1, ASCOPE_TRACE_SCOPE_BEGIN, 0);
  cr_assert_str_eq(evs[doomed].name, "doomed");
  cr_assert_eq(evs[doomed].parent, parent);
  uint64_t doomed_id = evs[doomed].scope;
  cr_assert(late_id != doomed_id && late_id != parent);

  int dl = find(0, ASCOPE_TRACE_DEADLINE, late_id);
  cr_assert_geq(dl, 0);
  cr_assert_eq(evs[dl].id, 20);
  cr_assert_eq(count(ASCOPE_TRACE_DEADLINE, 0), 1);
  int err = find(dl, ASCOPE_TRACE_ERROR, late_id);
  cr_assert_eq(evs[err].status, ASCOPE_ETIMEDOUT);
  int late_end = find(dl, ASCOPE_TRACE_SCOPE_END, late_id);
  cr_assert_eq(evs[late_end].status, ASCOPE_ETIMEDOUT);
  cr_assert_eq(evs[late_end].parent, parent);
  cr_assert_neq(evs[late_end].message[0], '\0');

  int cn = find(0, ASCOPE_TRACE_CANCEL, doomed_id);
  cr_assert_geq(cn, 0);
  cr_assert_eq(evs[cn].id, 0, "cancelled by ascope_cancel, not by its parent");
  cr_assert_eq(count(ASCOPE_TRACE_CANCEL, 0), 1);
  cr_assert_lt(cn, dl, "the 5 ms cancel came after the 20 ms deadline");
  cr_assert_eq(evs[find(cn, ASCOPE_TRACE_SCOPE_END, doomed_id)].status, ASCOPE_ECANCELED);

  /* operations: three, each ended once with the id it began with */
  cr_assert_eq(count(ASCOPE_TRACE_OP_BEGIN, 0), 3);
  cr_assert_eq(count(ASCOPE_TRACE_OP_END, 0), 3);
  for (int k = 0; k < nev; k++) {
    if (evs[k].kind != ASCOPE_TRACE_OP_BEGIN) continue;
    int ends = 0;
    for (int m = k + 1; m < nev; m++)
      if (evs[m].kind == ASCOPE_TRACE_OP_END && evs[m].id == evs[k].id) {
        ends++;
        cr_assert_eq(evs[m].scope, evs[k].scope);
        cr_assert_str_eq(evs[m].driver, "test");
        /* the parent's own op ends OK; the children's are cancelled */
        cr_assert_eq(evs[m].status, evs[k].scope == parent ? 0 : ASCOPE_ECANCELED);
      }
    cr_assert_eq(ends, 1);
  }

  /* releases in reverse order, told the outcome, after the body */
  int bend = find(body, ASCOPE_TRACE_BODY_END, parent);
  cr_assert_gt(bend, late_end, "the parent's body waits for its children");
  int r1 = find(bend, ASCOPE_TRACE_RELEASE_BEGIN, parent);
  int r0 = find(r1 + 1, ASCOPE_TRACE_RELEASE_BEGIN, parent);
  cr_assert_eq(evs[r1].id, 1);
  cr_assert_eq(evs[r0].id, 0);
  cr_assert_eq(evs[r0].outcome, 0);
  cr_assert_eq(evs[find(r0, ASCOPE_TRACE_RELEASE_END, parent)].status, 0);
  int end = find(r0, ASCOPE_TRACE_SCOPE_END, parent);
  cr_assert_eq(end, nev - 1, "the parent's end is the last event");
  cr_assert_eq(evs[end].status, 0);

  /* every begin has its end; the clock never goes back */
  for (int k = ASCOPE_TRACE_SCOPE_BEGIN; k <= ASCOPE_TRACE_OP_END; k += 2)
    cr_assert_eq(count(k, 0), count(k + 1, 0), "kind %d", k);
  cr_assert_eq(count(ASCOPE_TRACE_SCOPE_BEGIN, 0), 3);
  for (int k = 1; k < nev; k++) chk(evs[k].ts >= evs[k - 1].ts, k);
}

Test(trace, off_means_no_events) {
  nev = 0;
  cr_assert_eq(ascope_rt_set_trace(NULL, record, NULL), UV_EINVAL);
  cr_assert_eq(ascope_rt_set_trace(rt, record, NULL), 0);
  cr_assert_eq(ascope_rt_set_trace(rt, NULL, NULL), 0);
  struct scenario sc;
  run_scenario(&sc);
  cr_assert_eq(nev, 0);
}

/* A hook that turns itself off at the first error: the next event does not
 * reach it. */
static void off_at_error(const ascope_trace_event *ev, void *ud) {
  record(ev, ud);
  if (ev->kind == ASCOPE_TRACE_ERROR) ascope_rt_set_trace(rt, NULL, NULL);
}

Test(trace, a_hook_may_turn_itself_off) {
  nev = 0;
  cr_assert_eq(ascope_rt_set_trace(rt, off_at_error, NULL), 0);
  struct scenario sc;
  run_scenario(&sc);
  cr_assert_gt(nev, 0);
  cr_assert_eq(evs[nev - 1].kind, ASCOPE_TRACE_ERROR);
  cr_assert_eq(count(ASCOPE_TRACE_ERROR, 0), 1);
}

/* ---- targets ---------------------------------------------------------------- */

static void str_acquire(ascope_res *r, const void *arg, const char *options) {
  (void)arg;
  (void)options;
  ascope_res_done(r, 0, NULL, NULL);
}
static void str_release(ascope_res *r, int outcome) {
  (void)outcome;
  ascope_res_done(r, 0, NULL, NULL);
}
static const ascope_driver str_driver = {
    .abi = ASCOPE_DRIVER_ABI,
    .name = "strdrv",
    .acquire = str_acquire,
    .release = str_release,
};

static void redacts(const char *in, const char *want) {
  char buf[256];
  int n = ascope_trace_redact(in, buf, sizeof buf);
  cr_assert_str_eq(buf, want, "%s", in);
  cr_assert_eq(n, (int)strlen(want));
}

Test(trace, redact_hides_passwords_and_secrets) {
  redacts("postgres://bob:hunter2@db.example/app?sslmode=require",
          "postgres://bob:***@db.example/app?sslmode=require");
  redacts("postgresql://bob:p@ss:w@rd@h1,h2/app", "postgresql://bob:***@h1,h2/app");
  redacts("postgres://bob@db/app", "postgres://bob@db/app");
  redacts("https://api.example/v1?q=1&access_token=abc&x=2",
          "https://api.example/v1?q=1&access_token=***&x=2");
  redacts("host=db user=bob password=hunter2 dbname=app",
          "host=db user=bob password=*** dbname=app");
  redacts("host=db password = 'a b \\' c' dbname=app", "host=db password=*** dbname=app");
  redacts("host=db PassWord=x,sslkey=/k.pem,port=5", "host=db PassWord=***,sslkey=***,port=5");
  redacts("app.db", "app.db");
  redacts("file:app.db?mode=ro&cache=shared", "file:app.db?mode=ro&cache=shared");
  redacts("", "");
  /* snprintf's contract: cut and terminated, the whole length returned */
  char small[8];
  cr_assert_eq(ascope_trace_redact("user=bob password=x", small, sizeof small), 21);
  cr_assert_str_eq(small, "user=bo");
  cr_assert_eq(ascope_trace_redact("abc", NULL, 0), 3);
}

Test(trace, string_targets_reach_the_trace_redacted) {
  nev = 0;
  cr_assert_eq(ascope_rt_set_trace(rt, record, NULL), 0);
  ascope *s = ascope_new(rt);
  char dsn[] = "postgres://bob:hunter2@db/app?password=again";
  cr_assert_eq(ascope_use_str(s, &str_driver, dsn, NULL), 0);
  memset(dsn, 'x', sizeof dsn - 1); /* the target was copied */
  rec r = {0};
  cr_assert_eq(rec_start(s, &r), 0);
  cr_assert_eq(ascope_rt_run(rt), 0);
  assert_done(&r, 0);
  int k = find(0, ASCOPE_TRACE_ACQUIRE_BEGIN, 0);
  cr_assert_str_eq(evs[k].driver, "strdrv");
  cr_assert_str_eq(evs[k].target, "postgres://bob:***@db/app?password=***");
  cr_assert_str_eq(evs[find(0, ASCOPE_TRACE_RELEASE_END, 0)].target,
                   "postgres://bob:***@db/app?password=***");
  for (int i = 0; i < nev; i++) cr_assert(strstr(evs[i].target, "hunter2") == NULL);
}

/* ---- the JSON writer -------------------------------------------------------- */

static char *slurp(const char *path) {
  FILE *f = fopen(path, "rb");
  cr_assert_not_null(f);
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  char *buf = malloc((size_t)n + 1);
  cr_assert_eq(fread(buf, 1, (size_t)n, f), (size_t)n);
  buf[n] = '\0';
  fclose(f);
  return buf;
}

/* Checks the file with Python's json module and the format's rules: the
 * object form, each event's ph/pid/tid/ts, "B"/"E" balanced and nested per
 * thread in time order, "X" with a dur, "i" thread-scoped, names for every
 * thread. Prints "ok <events> <unfinished>" into the out file. */
static const char *checker =
    "import json,sys\n"
    "d=json.load(open(sys.argv[1]))\n"
    "ev=d['traceEvents']; assert isinstance(ev,list) and ev\n"
    "stacks={}; names=set(); tids=set(); last={}; unf=0\n"
    "for e in ev:\n"
    "  ph=e['ph']; assert isinstance(e['pid'],int) and isinstance(e['tid'],int)\n"
    "  if ph=='M':\n"
    "    assert e['name'] in ('process_name','thread_name','process_sort_index',"
    "'thread_sort_index'), e\n"
    "    if e['name']=='thread_name': names.add((e['pid'],e['tid']))\n"
    "    continue\n"
    "  assert isinstance(e['ts'],(int,float)) and e['ts']>=0, e\n"
    "  k=(e['pid'],e['tid']); tids.add(k)\n"
    "  unf+=int(e.get('args',{}).get('unfinished',False))\n"
    "  if ph=='X': assert e['dur']>=0 and e['name']; continue\n"
    "  assert e['ts']>=last.get(k,0), e\n"
    "  last[k]=e['ts']\n"
    "  if ph=='B': assert e['name']; stacks.setdefault(k,[]).append(e)\n"
    "  elif ph=='E': assert stacks.get(k), e; stacks[k].pop()\n"
    "  elif ph=='i': assert e['s']=='t' and e['name']\n"
    "  else: raise AssertionError(e)\n"
    "assert not any(stacks.values()), stacks\n"
    "assert tids<=names, tids-names\n"
    "open(sys.argv[2],'w').write('ok %d %d'%(len(ev),unf))\n";

/* 1: the checker passed (*unfinished: its count), 0: it failed, -1: no
 * python3 here (the C checks still run). */
static int check_json(const char *path, int *unfinished) {
  if (system("python3 -c 'import json' >/dev/null 2>&1") != 0) return -1;
  char dir[256], script[300];
  cr_assert_not_null(t_temp_dir(dir, sizeof dir, "ascope-trace-check"));
  snprintf(script, sizeof script, "%s/check.py", dir);
  int fd = open(script, O_WRONLY | O_CREAT | O_EXCL, 0600);
  cr_assert_geq(fd, 0);
  cr_assert_eq(write(fd, checker, strlen(checker)), (ssize_t)strlen(checker));
  close(fd);
  char out[320], cmd[1024];
  snprintf(out, sizeof out, "%s.out", script);
  snprintf(cmd, sizeof cmd, "python3 %s %s %s", script, path, out);
  int rc = system(cmd);
  unlink(script);
  if (rc != 0) return 0;
  char *res = slurp(out);
  unlink(out);
  rmdir(dir);
  int n = 0, u = 0;
  int ok = sscanf(res, "ok %d %d", &n, &u) == 2 && n > 0;
  free(res);
  if (unfinished) *unfinished = u;
  return ok;
}

static void tmp_path(char *buf, size_t cap, const char *tag) {
  snprintf(buf, cap, "%s/ascope_trace_%s_%d.json", t_temp_root(), tag, (int)getpid());
}

Test(trace, json_of_the_scenario_is_a_valid_trace) {
  char path[320];
  tmp_path(path, sizeof path, "scenario");
  ascope_trace_json *w = NULL;
  cr_assert_eq(ascope_trace_json_open(rt, path, &w), 0);
  cr_assert_not_null(w);
  struct scenario sc;
  run_scenario(&sc);
  cr_assert_eq(ascope_trace_json_close(w), 0);
  int unfinished = -1;
  cr_assert_neq(check_json(path, &unfinished), 0, "the checker rejected %s", path);
  char *j = slurp(path);
  cr_assert(strncmp(j, "{\"traceEvents\":[", 16) == 0);
  /* the tracks */
  cr_assert(strstr(j, "\"name\":\"process_name\",\"args\":{\"name\":\"parent #"));
  cr_assert(strstr(j, "\"name\":\"thread_name\",\"args\":{\"name\":\"late #"));
  cr_assert(strstr(j, "\"name\":\"thread_name\",\"args\":{\"name\":\"doomed #"));
  /* the spans and instants */
  cr_assert(strstr(j, "\"ph\":\"B\""));
  cr_assert(strstr(j, "\"cat\":\"acquire\",\"name\":\"acquire test\""));
  cr_assert(strstr(j, "\"cat\":\"release\",\"name\":\"release test\""));
  cr_assert(strstr(j, "\"cat\":\"body\",\"name\":\"body\""));
  cr_assert(strstr(j, "\"ph\":\"X\",") && strstr(j, "\"name\":\"test op\""));
  cr_assert(strstr(j, "\"ph\":\"i\",") && strstr(j, "\"cat\":\"deadline\",\"name\":\"deadline\""));
  cr_assert(strstr(j, "\"timeout_ms\":20"));
  cr_assert(strstr(j, "\"cat\":\"cancel\",\"name\":\"cancel\""));
  cr_assert(strstr(j, "\"by\":\"ascope_cancel\""));
  cr_assert(strstr(j, "\"status\":\"ETIMEDOUT\""));
  cr_assert(strstr(j, "\"status\":\"ECANCELED\""));
  cr_assert(strstr(j, "\"unfinished\"") == NULL);
  if (unfinished >= 0) cr_assert_eq(unfinished, 0);
  free(j);
  unlink(path);
}

/* Closed while a scope waits on a hanging operation, then opened again
 * over the same scope still running: both files balanced. */
struct open_close {
  char path1[128], path2[128];
  ascope_trace_json *w;
  td_manual op;
  ascope *s;
};

static void body_close_writer(ascope *s, rec *r) {
  struct open_close *oc = r->arg;
  cr_assert_eq(td_manual_start(s, &oc->op), 0);
  cr_assert_eq(td_op_start(s, TD_HANG, 0, 0, NULL, NULL, NULL), 0);
  /* the writer closes with the scope, its body and two operations open */
  cr_assert_eq(ascope_trace_json_close(oc->w), 0);
  /* a second writer sees the rest: ends without beginnings */
  cr_assert_eq(ascope_trace_json_open(rt, oc->path2, &oc->w), 0);
  td_manual_end(&oc->op, 0);
  ascope_cancel(s);
}

Test(trace, json_stays_balanced_when_closed_or_opened_mid_scope) {
  static struct open_close oc;
  memset(&oc, 0, sizeof oc);
  tmp_path(oc.path1, sizeof oc.path1, "before");
  tmp_path(oc.path2, sizeof oc.path2, "after");
  cr_assert_eq(ascope_trace_json_open(rt, oc.path1, &oc.w), 0);
  td_spec sp = {.name = "u"};
  ascope *s = ascope_new(rt);
  cr_assert_eq(ascope_set_name(s, "quote\" and \\ and \x01 and \xff"), 0);
  cr_assert_eq(td_use(s, &sp), 0);
  rec r = {.body = body_close_writer, .arg = &oc};
  cr_assert_eq(rec_start(s, &r), 0);
  cr_assert_eq(ascope_rt_run(rt), 0);
  assert_done(&r, ASCOPE_ECANCELED);
  cr_assert_eq(ascope_trace_json_close(oc.w), 0);

  int unfinished = -1;
  int rc = check_json(oc.path1, &unfinished);
  cr_assert_neq(rc, 0, "the checker rejected %s", oc.path1);
  if (rc > 0) cr_assert_eq(unfinished, 4, "scope, body and two operations"); /* E, E, X, X */
  char *j = slurp(oc.path1);
  cr_assert(strstr(j, "\"unfinished\":true"));
  cr_assert(strstr(j, "quote\\\" and \\\\ and \\u0001 and \\ufffd"), "escaped: %s", j);
  free(j);
  rc = check_json(oc.path2, &unfinished);
  cr_assert_neq(rc, 0, "the checker rejected %s", oc.path2);
  j = slurp(oc.path2);
  cr_assert(strstr(j, "\"ph\":\"B\",") && strstr(j, "\"name\":\"release test\""));
  cr_assert(strstr(j, "\"cat\":\"cancel\""));
  /* operations and spans that began before it: their ends are left out */
  cr_assert(strstr(j, "\"name\":\"test op\"") == NULL);
  cr_assert(strstr(j, "\"unfinished\"") == NULL);
  free(j);
  unlink(oc.path1);
  unlink(oc.path2);
}

Test(trace, json_writer_outlives_its_runtime) {
  char path[320];
  tmp_path(path, sizeof path, "rtfree");
  ascope_rt *rt2 = ascope_rt_new(NULL);
  ascope_trace_json *w;
  cr_assert_eq(ascope_trace_json_open(rt2, path, &w), 0);
  td_spec sp = {.name = "x"};
  ascope *s = ascope_new(rt2);
  cr_assert_eq(td_use(s, &sp), 0);
  rec r = {0};
  cr_assert_eq(rec_start(s, &r), 0);
  cr_assert_eq(ascope_rt_run(rt2), 0);
  cr_assert_eq(ascope_rt_free(rt2), 0);
  cr_assert_eq(ascope_trace_json_close(w), 0); /* must not touch the freed runtime */
  cr_assert_neq(check_json(path, NULL), 0);
  unlink(path);
}

/* A writer replaced by another hook forgets its runtime, which may then be
 * freed before the writer closes; a writer installed by hand is removed by
 * its close. (Under AddressSanitizer, a slip here is a use after free.) */
Test(trace, json_writer_replaced_or_installed_by_hand) {
  char path[320];
  tmp_path(path, sizeof path, "replaced");
  ascope_rt *rt2 = ascope_rt_new(NULL);
  ascope_trace_json *w;
  cr_assert_eq(ascope_trace_json_open(rt2, path, &w), 0);
  td_spec sp0 = {.name = "before"};
  ascope *s0 = ascope_new(rt2);
  cr_assert_eq(td_use(s0, &sp0), 0);
  rec r0 = {0};
  cr_assert_eq(rec_start(s0, &r0), 0);
  cr_assert_eq(ascope_rt_run(rt2), 0);
  cr_assert_eq(ascope_rt_set_trace(rt2, record, NULL), 0);
  cr_assert_eq(ascope_rt_free(rt2), 0);
  cr_assert_eq(ascope_trace_json_close(w), 0);
  cr_assert_neq(check_json(path, NULL), 0);

  cr_assert_eq(ascope_trace_json_open(NULL, path, &w), 0);
  cr_assert_eq(ascope_rt_set_trace(rt, ascope_trace_json_event, w), 0);
  cr_assert_eq(ascope_trace_json_close(w), 0);
  td_spec sp = {.name = "after"};
  ascope *s = ascope_new(rt);
  cr_assert_eq(td_use(s, &sp), 0);
  rec r = {0};
  cr_assert_eq(rec_start(s, &r), 0);
  cr_assert_eq(ascope_rt_run(rt), 0); /* no event reaches the closed writer */
  assert_done(&r, 0);
  unlink(path);
}

Test(trace, json_open_errors) {
  ascope_trace_json *w = (void *)1;
  cr_assert_eq(ascope_trace_json_open(rt, NULL, &w), UV_EINVAL);
  cr_assert_null(w);
  cr_assert_eq(ascope_trace_json_open(rt, "/nonexistent-dir/x.json", &w), UV_ENOENT);
  cr_assert_null(w);
  cr_assert_eq(ascope_trace_json_close(NULL), UV_EINVAL);
  /* a writer that is not installed takes events through its hook */
  char path[320];
  tmp_path(path, sizeof path, "manual");
  cr_assert_eq(ascope_trace_json_open(NULL, path, &w), 0);
  cr_assert_eq(ascope_rt_set_trace(rt, ascope_trace_json_event, w), 0);
  td_spec sp = {.name = "m"};
  ascope *s = ascope_new(rt);
  cr_assert_eq(td_use(s, &sp), 0);
  rec r = {0};
  cr_assert_eq(rec_start(s, &r), 0);
  cr_assert_eq(ascope_rt_run(rt), 0);
  cr_assert_eq(ascope_rt_set_trace(rt, NULL, NULL), 0);
  cr_assert_eq(ascope_trace_json_close(w), 0);
  char *j = slurp(path);
  cr_assert(strstr(j, "\"name\":\"acquire test\""));
  free(j);
  cr_assert_neq(check_json(path, NULL), 0);
  unlink(path);
}

/* ---- counters ---------------------------------------------------------------- */

static int64_t st(const char *name) {
  return ascope_rt_stat(rt, name);
}

struct live_seen {
  int64_t scopes_live, ops_live;
};

static void body_reads_live(ascope *s, rec *r) {
  struct live_seen *ls = r->arg;
  cr_assert_eq(td_op_start(s, TD_OK_LATE, 1, 0, NULL, NULL, NULL), 0);
  ls->scopes_live = st("scopes_live");
  ls->ops_live = st("ops_live");
}

Test(trace, counters_count) {
  cr_assert_eq(st("scopes"), 0);
  cr_assert_eq(st("errors.ETIMEDOUT"), 0);
  struct scenario sc;
  run_scenario(&sc);
  cr_assert_eq(st("scopes"), 3);
  cr_assert_eq(st("scopes_live"), 0);
  cr_assert_eq(st("ops"), 3);
  cr_assert_eq(st("ops_live"), 0);
  cr_assert_eq(st("acquires"), UV_EINVAL);
  cr_assert_eq(st("errors"), 2);
  cr_assert_eq(st("errors.ETIMEDOUT"), 1);
  cr_assert_eq(st("errors.ECANCELED"), 1);
  cr_assert_eq(st("errors.ASCOPE_EDRIVER"), 0);
  cr_assert_eq(st("cancelled"), 1);
  cr_assert_eq(st("timed_out"), 1);
  cr_assert_eq(st("aborted"), 0);
  cr_assert_eq(st("acquire_ns"), 0, "not timed unless asked");
  cr_assert_eq(st("release_ns"), 0);

  /* live counts from inside a body; a failure by a driver */
  struct live_seen ls = {0};
  td_spec f = {.name = "f", .acquire = TD_FAIL};
  ascope *a = ascope_new(rt), *b = ascope_new(rt);
  rec ra = {.body = body_reads_live, .arg = &ls}, rb = {0};
  cr_assert_eq(td_use(b, &f), 0);
  cr_assert_eq(rec_start(a, &ra), 0);
  cr_assert_eq(rec_start(b, &rb), 0);
  cr_assert_eq(ascope_rt_run(rt), 0);
  assert_done(&rb, ASCOPE_EDRIVER);
  cr_assert_eq(ls.scopes_live, 2);
  cr_assert_eq(ls.ops_live, 1);
  cr_assert_eq(st("errors"), 3);
  cr_assert_eq(st("errors.ASCOPE_EDRIVER"), 1);

  /* names that are not counters */
  cr_assert_eq(st("nope"), UV_EINVAL);
  cr_assert_eq(st("errors."), UV_EINVAL);
  cr_assert_eq(st("errors.NOPE"), UV_EINVAL);
  cr_assert_eq(st("errors.OK"), UV_EINVAL);
  cr_assert_eq(st("Scopes"), UV_EINVAL);
  cr_assert_eq(st(NULL), UV_EINVAL);
  cr_assert_eq(ascope_rt_stat(NULL, "scopes"), UV_EINVAL);
  cr_assert_eq(st("errors.UNKNOWN"), 0);
}

Test(trace, timing_counts_acquire_and_release_time) {
  cr_assert_eq(ascope_rt_set_timing(NULL, 1), UV_EINVAL);
  cr_assert_eq(ascope_rt_set_timing(rt, 1), 0);
  td_spec sp = {.name = "slow", .acquire = TD_OK_LATE, .release = TD_OK_LATE, .delay_ms = 5};
  ascope *s = ascope_new(rt);
  cr_assert_eq(td_use(s, &sp), 0);
  rec r = {0};
  cr_assert_eq(rec_start(s, &r), 0);
  cr_assert_eq(ascope_rt_run(rt), 0);
  assert_done(&r, 0);
  /* Each began before its 5 ms timer was armed and ended once it was due
   * (see td_spec): at least due - armed, nearly 5 ms on an idle machine,
   * less when the loop turn that armed it had been preempted. */
  int64_t acq = st("acquire_ns"), rel = st("release_ns");
  cr_assert_geq(acq, (int64_t)(sp.acquire_due_ns - sp.acquire_armed_ns), "acquire_ns %lld",
                (long long)acq);
  cr_assert_geq(rel, (int64_t)(sp.release_due_ns - sp.release_armed_ns), "release_ns %lld",
                (long long)rel);
  cr_assert_gt(acq, 0);
  cr_assert_gt(rel, 0);
  cr_assert_lt(acq, 5000000000LL);
  /* off again: nothing more is added */
  cr_assert_eq(ascope_rt_set_timing(rt, 0), 0);
  s = ascope_new(rt);
  td_spec sp2 = sp;
  cr_assert_eq(td_use(s, &sp2), 0);
  rec r2 = {0};
  cr_assert_eq(rec_start(s, &r2), 0);
  cr_assert_eq(ascope_rt_run(rt), 0);
  cr_assert_eq(st("acquire_ns"), acq);
  cr_assert_eq(st("release_ns"), rel);
}

static void abort_seen(const ascope_trace_event *ev, void *ud) {
  record(ev, ud);
}

Test(trace, a_release_past_its_timeout_is_traced_and_counted) {
  nev = 0;
  cr_assert_eq(ascope_rt_set_release_timeout(rt, 10), 0);
  cr_assert_eq(ascope_rt_set_trace(rt, abort_seen, NULL), 0);
  td_spec sp = {.name = "stuck", .release = TD_HANG};
  ascope *s = ascope_new(rt);
  cr_assert_eq(td_use(s, &sp), 0);
  rec r = {0};
  cr_assert_eq(rec_start(s, &r), 0);
  cr_assert_eq(ascope_rt_run(rt), 0);
  assert_done(&r, ASCOPE_ETIMEDOUT);
  cr_assert_eq(st("aborted"), 1);
  int ab = find(0, ASCOPE_TRACE_ABORT, 0);
  cr_assert_geq(ab, 0);
  cr_assert_str_eq(evs[ab].driver, "test");
  int re = find(ab, ASCOPE_TRACE_RELEASE_END, 0);
  cr_assert_eq(evs[re].status, ASCOPE_ETIMEDOUT);
  cr_assert_eq(evs[find(re, ASCOPE_TRACE_SCOPE_END, 0)].status, ASCOPE_ETIMEDOUT);
}

Test(trace, set_name_rules) {
  cr_assert_eq(ascope_set_name(NULL, "x"), UV_EINVAL);
  ascope *s = ascope_new(rt);
  char longname[100];
  memset(longname, 'n', sizeof longname - 1);
  longname[99] = '\0';
  cr_assert_eq(ascope_set_name(s, longname), 0);
  nev = 0;
  cr_assert_eq(ascope_rt_set_trace(rt, record, NULL), 0);
  rec r = {0};
  cr_assert_eq(rec_start(s, &r), 0);
  cr_assert_eq(ascope_rt_run(rt), 0);
  cr_assert_eq(strlen(evs[0].name), 47);
  s = ascope_new(rt);
  cr_assert_eq(ascope_set_name(s, "x"), 0);
  cr_assert_eq(ascope_set_name(s, NULL), 0);
  nev = 0;
  rec r2 = {0};
  cr_assert_eq(rec_start(s, &r2), 0);
  cr_assert_eq(ascope_rt_run(rt), 0);
  cr_assert_str_eq(evs[0].name, "");
}
