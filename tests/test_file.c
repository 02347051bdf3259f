/* The file driver, on real files in a temporary directory (mkdtemp, removed
 * after each test): every mode, atomic replace under every outcome, streams
 * with back-pressure and bounded memory, clean errors, 1,000 files at once,
 * and the release-exactly-once rules when acquire, operations or release
 * fail, time out or are cancelled. */
#include <criterion/criterion.h>

#include <ascope/file.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <malloc.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "test_driver.h"
#include "temp_dir.h"

/* ---- the temporary directory --------------------------------------------- */

static char dir[256];

static int rm_entry(const char *p, const struct stat *sb, int flag, struct FTW *ftw) {
  (void)sb, (void)flag, (void)ftw;
  return remove(p);
}

static void dir_setup(void) {
  cr_assert_not_null(t_temp_dir(dir, sizeof dir, "ascope-file"));
}

static void unblock_pool(void);

static void dir_teardown(void) {
  unblock_pool(); /* a failed test may leave the threadpool blocked */
  nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

TestSuite(file, .init = dir_setup, .fini = dir_teardown);

/* A path in the directory; each call gets its own buffer (up to 8 alive). */
static const char *in_dir(const char *name) {
  static char bufs[8][512];
  static int i;
  char *b = bufs[i++ % 8];
  snprintf(b, sizeof bufs[0], "%s/%s", dir, name);
  return b;
}

static void put(const char *path, const void *data, size_t len) {
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  cr_assert_geq(fd, 0, "open %s: %s", path, strerror(errno));
  cr_assert_eq(write(fd, data, len), (ssize_t)len);
  close(fd);
}

/* The whole file, NUL-terminated; *len its size. NULL if it does not exist. */
static char *get(const char *path, size_t *len) {
  int fd = open(path, O_RDONLY);
  if (fd < 0) return NULL;
  struct stat st;
  fstat(fd, &st);
  char *b = malloc((size_t)st.st_size + 1);
  ssize_t n = read(fd, b, (size_t)st.st_size);
  close(fd);
  cr_assert_eq(n, st.st_size);
  b[n] = '\0';
  if (len) *len = (size_t)n;
  return b;
}

static void assert_content(const char *path, const void *want, size_t len) {
  size_t n;
  char *got = get(path, &n);
  cr_assert_not_null(got, "%s does not exist", path);
  cr_assert_eq(n, len, "%s: %zu bytes, want %zu", path, n, len);
  cr_assert(memcmp(got, want, len) == 0, "%s: content differs", path);
  free(got);
}

static unsigned perm_of(const char *path) {
  struct stat st;
  cr_assert_eq(stat(path, &st), 0);
  return st.st_mode & 07777;
}

/* Entries in the test directory: a temporary file left behind shows here. */
static int entries(void) {
  DIR *d = opendir(dir);
  int n = 0;
  struct dirent *e;
  while ((e = readdir(d)))
    if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) n++;
  closedir(d);
  return n;
}

static int open_fds(void) {
  DIR *d = opendir("/proc/self/fd");
  int n = 0;
  while (readdir(d)) n++;
  closedir(d);
  return n;
}

/* ---- a scope's record ----------------------------------------------------- */

typedef struct run run;
struct run {
  int body_calls, done_calls, status;
  char driver[32], code[48], msg[600];
  int nerr, err2_status; /* the error chain: its length and second status */
  void (*body)(ascope *s, run *r);
  ascope *s;
  /* per test */
  int calls, finals, final_status, cb_status;
  size_t bytes;
  char buf[256];
  void *p;
};

static void run_body(ascope *s, void *ud) {
  run *r = ud;
  r->body_calls++;
  r->s = s;
  if (r->body) r->body(s, r);
}

static void run_done(ascope *s, int status, void *ud) {
  run *r = ud;
  r->done_calls++;
  r->status = status;
  const ascope_err *e = ascope_error(s);
  cr_assert_eq(e == NULL, status == 0);
  if (e) {
    snprintf(r->driver, sizeof r->driver, "%s", ascope_err_driver(e) ? ascope_err_driver(e) : "");
    snprintf(r->code, sizeof r->code, "%s", ascope_err_code(e) ? ascope_err_code(e) : "");
    snprintf(r->msg, sizeof r->msg, "%s", ascope_err_message(e));
    cr_assert_eq(ascope_err_status(e), status);
    for (r->nerr = 0; e; e = ascope_err_next(e), r->nerr++)
      if (r->nerr == 1) r->err2_status = ascope_err_status(e);
  }
}

static int start(ascope *s, run *r) {
  return ascope_start(s, run_body, run_done, r);
}

/* One scope over one file, run to the end. */
static void run_file(ascope_rt *rt, const char *path, const char *mode, run *r) {
  ascope *s = ascope_new(rt);
  cr_assert_eq(ascope_use_file(s, path, mode), 0, "mode %s", mode);
  cr_assert_eq(start(s, r), 0);
  cr_assert_eq(ascope_rt_run(rt), 0);
  cr_assert_eq(r->done_calls, 1, "done ran %d times", r->done_calls);
}

#define assert_status(r, want)                                                                     \
  cr_assert_eq((r)->status, (want), "status %s (%s), want %s", ascope_err_name((r)->status),       \
               (r)->msg, ascope_err_name(want))

static ascope_file *file0(ascope *s) {
  ascope_file *f = ascope_resource(s, 0);
  cr_assert_not_null(f);
  return f;
}

/* A one-shot timer: fn(arg) after ms. Heap-allocated, freed on close. */
struct tmr {
  uv_timer_t t;
  void (*fn)(void *);
  void *arg;
};
static void tmr_closed(uv_handle_t *h) {
  free(h->data);
}
static void tmr_fire(uv_timer_t *t) {
  struct tmr *x = t->data;
  x->fn(x->arg);
  uv_close((uv_handle_t *)t, tmr_closed);
}
static void after(ascope_rt *rt, uint64_t ms, void (*fn)(void *), void *arg) {
  struct tmr *x = calloc(1, sizeof *x);
  uv_timer_init(ascope_rt_loop(rt), &x->t);
  x->t.data = x;
  x->fn = fn;
  x->arg = arg;
  uv_timer_start(&x->t, tmr_fire, ms, 0);
}
static void cancel_scope(void *s) {
  ascope_cancel(s);
}

/* after(), but counted from the end of the loop's first iteration, when a
 * scope started before ascope_rt_run has begun acquiring: a plain timer
 * armed before the loop runs could fire first on a loaded machine. */
struct tmr_start {
  uv_check_t c;
  ascope_rt *rt;
  uint64_t ms;
  void (*fn)(void *);
  void *arg;
};
static void tmr_start_closed(uv_handle_t *h) {
  free(h->data);
}
static void tmr_start_check(uv_check_t *c) {
  struct tmr_start *x = c->data;
  after(x->rt, x->ms, x->fn, x->arg);
  uv_check_stop(c);
  uv_close((uv_handle_t *)c, tmr_start_closed);
}
static void after_start(ascope_rt *rt, uint64_t ms, void (*fn)(void *), void *arg) {
  struct tmr_start *x = calloc(1, sizeof *x);
  *x = (struct tmr_start){.rt = rt, .ms = ms, .fn = fn, .arg = arg};
  uv_check_init(ascope_rt_loop(rt), &x->c);
  x->c.data = x;
  uv_check_start(&x->c, tmr_start_check);
}

/* Callbacks that record what they saw. */
static int keep_data(ascope *s, int status, const char *data, size_t len, void *ud) {
  (void)s;
  run *r = ud;
  r->calls++;
  r->cb_status = status;
  r->bytes = len;
  if (data) snprintf(r->buf, sizeof r->buf, "%.*s", (int)len, data);
  return status;
}

static int count_cb(ascope *s, int status, void *ud) {
  (void)s;
  run *r = ud;
  r->calls++;
  r->cb_status = status;
  return status;
}

/* ---- modes ---------------------------------------------------------------- */

static void body_read_range(ascope *s, run *r) {
  cr_assert_eq(ascope_file_read(s, file0(s), 5, 6, keep_data, r), 0);
}

Test(file, mode_r_reads_a_range) {
  put(in_dir("a.txt"), "hello world", 11);
  ascope_rt *rt = ascope_rt_new(NULL);
  run r = {.body = body_read_range};
  run_file(rt, in_dir("a.txt"), "r", &r);
  assert_status(&r, 0);
  cr_assert_eq(r.calls, 1);
  cr_assert_str_eq(r.buf, "world");
  cr_assert_eq(ascope_rt_free(rt), 0);
}

static void body_read_all(ascope *s, run *r) {
  cr_assert_eq(ascope_file_read_all(s, file0(s), SIZE_MAX, keep_data, r), 0);
}

Test(file, mode_r_reads_all_and_past_the_end) {
  put(in_dir("a.txt"), "hello world", 11);
  ascope_rt *rt = ascope_rt_new(NULL);
  run r = {.body = body_read_all};
  run_file(rt, in_dir("a.txt"), "rb", &r);
  assert_status(&r, 0);
  cr_assert_str_eq(r.buf, "hello world");
  cr_assert_eq(r.bytes, 11);
  /* past the end: 0 bytes, not an error */
  run r2 = {.body = body_read_range};
  put(in_dir("a.txt"), "hi", 2);
  run_file(rt, in_dir("a.txt"), "r", &r2);
  assert_status(&r2, 0);
  cr_assert_eq(r2.bytes, 0);
  cr_assert_eq(ascope_rt_free(rt), 0);
}

static void body_write_abc(ascope *s, run *r) {
  cr_assert_eq(ascope_file_write(s, file0(s), "abc", 3, -1, count_cb, r), 0);
}

Test(file, mode_w_truncates_and_creates_with_umask) {
  put(in_dir("w.txt"), "a much longer old content", 25);
  ascope_rt *rt = ascope_rt_new(NULL);
  run r = {.body = body_write_abc};
  run_file(rt, in_dir("w.txt"), "w", &r);
  assert_status(&r, 0);
  assert_content(in_dir("w.txt"), "abc", 3);
  mode_t old = umask(027);
  run r2 = {.body = body_write_abc};
  run_file(rt, in_dir("new.txt"), "w", &r2);
  umask(old);
  assert_status(&r2, 0);
  cr_assert_eq(perm_of(in_dir("new.txt")), 0640, "perm %o", perm_of(in_dir("new.txt")));
  cr_assert_eq(ascope_rt_free(rt), 0);
}

static void body_append(ascope *s, run *r) {
  (void)r;
  ascope_file *f = file0(s);
  cr_assert_eq(ascope_file_write(s, f, "two\n", 4, -1, NULL, NULL), 0);
  cr_assert_eq(ascope_file_write(s, f, "three\n", 6, 0, NULL, NULL), 0); /* "a": still the end */
  cr_assert_eq(ascope_file_write(s, f, "four\n", 5, -1, NULL, NULL), 0);
}

Test(file, mode_a_appends_in_order) {
  put(in_dir("log"), "one\n", 4);
  ascope_rt *rt = ascope_rt_new(NULL);
  run r = {.body = body_append};
  run_file(rt, in_dir("log"), "a", &r);
  assert_status(&r, 0);
  assert_content(in_dir("log"), "one\ntwo\nthree\nfour\n", 19);
  cr_assert_eq(ascope_rt_free(rt), 0);
}

Test(file, mode_x_creates_and_refuses_an_existing_file) {
  ascope_rt *rt = ascope_rt_new(NULL);
  run r = {.body = body_write_abc};
  run_file(rt, in_dir("x.txt"), "x", &r);
  assert_status(&r, 0);
  assert_content(in_dir("x.txt"), "abc", 3);
  run r2 = {.body = body_write_abc};
  run_file(rt, in_dir("x.txt"), "wx", &r2);
  assert_status(&r2, UV_EEXIST);
  cr_assert_str_eq(r2.driver, "file");
  cr_assert_str_eq(r2.code, "EEXIST");
  cr_assert(strstr(r2.msg, in_dir("x.txt")), "message: %s", r2.msg);
  cr_assert_eq(r2.body_calls, 0);
  assert_content(in_dir("x.txt"), "abc", 3);
  cr_assert_eq(ascope_rt_free(rt), 0);
}

static int rplus_written(ascope *s, int status, void *ud) {
  cr_assert_eq(status, 0);
  cr_assert_eq(ascope_file_read_all(s, file0(s), 100, keep_data, ud), 0);
  return 0;
}

static void body_rplus(ascope *s, run *r) {
  cr_assert_eq(ascope_file_write(s, file0(s), "ab", 2, 2, rplus_written, r), 0);
}

Test(file, mode_r_plus_overwrites_in_place) {
  put(in_dir("r+"), "0123456789", 10);
  ascope_rt *rt = ascope_rt_new(NULL);
  run r = {.body = body_rplus};
  run_file(rt, in_dir("r+"), "r+", &r);
  assert_status(&r, 0);
  cr_assert_str_eq(r.buf, "01ab456789");
  assert_content(in_dir("r+"), "01ab456789", 10);
  run r2 = {.body = body_rplus};
  run_file(rt, in_dir("w+"), "w+", &r2);
  assert_status(&r2, 0);
  cr_assert_eq(r2.bytes, 4); /* a hole, then "ab" */
  cr_assert(memcmp(r2.buf, "\0\0", 2) == 0 || r2.buf[0] == '\0');
  cr_assert_eq(ascope_rt_free(rt), 0);
}

Test(file, bad_modes_and_arguments_are_refused) {
  ascope_rt *rt = ascope_rt_new(NULL);
  ascope *s = ascope_new(rt);
  const char *bad[] = {"",
                       " ",
                       "q",
                       "rw",
                       "r++",
                       "w+a",
                       "r atomic",
                       "r+ atomic",
                       "a atomic",
                       "a+ atomic",
                       "w atomc",
                       "w atomic x",
                       "w\n",
                       "w atomic atomic",
                       "w  atomic atomic ",
                       "w++",
                       "wbb",
                       "wxx",
                       "xx",
                       "rx",
                       "ax",
                       "w +",
                       "w atomic ATOMIC"};
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
    cr_assert_eq(ascope_use_file(s, in_dir("f"), bad[i]), UV_EINVAL, "mode '%s'", bad[i]);
  cr_assert_eq(ascope_use_file(s, NULL, "r"), UV_EINVAL);
  cr_assert_eq(ascope_use_file(s, "", "r"), UV_EINVAL);
  cr_assert_eq(ascope_use_file(s, in_dir("f"), NULL), UV_EINVAL);
  cr_assert_eq(ascope_use_file(NULL, in_dir("f"), "r"), UV_EINVAL);
  const char *good[] = {"r",  "rb",       "r+",        "rb+",      "r+b",       "w",
                        "w+", "wb",       "a",         "a+",       "x",         "x+",
                        "wx", "w atomic", "w+ atomic", "x atomic", "wb atomic", "  w   atomic  "};
  for (size_t i = 0; i < sizeof good / sizeof *good; i++)
    cr_assert_eq(ascope_use_file(s, in_dir("f"), good[i]), 0, "mode '%s'", good[i]);
  ascope_discard(s);
  cr_assert_eq(ascope_rt_free(rt), 0);
}

/* Through the vtable the mode reaches the acquire, which fails with a
 * message saying what is wrong with it; nothing is created. */
Test(file, a_bad_mode_through_the_vtable_says_why) {
  static const struct {
    const char *mode, *why;
  } cases[] = {
      {"w atomic atomic", "the flag 'atomic' is given twice"},
      {"w++", "the letter '+' is given twice"},
      {"wbb", "the letter 'b' is given twice"},
      {"wxx", "the letter 'x' is given twice"},
      {"a atomic", "'atomic' replaces the whole file"},
      {"w atomik", "unknown flag"},
      {"q", "unknown mode"},
  };
  ascope_rt *rt = ascope_rt_new(NULL);
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
    run r = {0};
    ascope *s = ascope_new(rt);
    cr_assert_eq(ascope_use(s, ascope_file_driver(), in_dir("m.txt"), cases[i].mode), 0);
    cr_assert_eq(start(s, &r), 0);
    cr_assert_eq(ascope_rt_run(rt), 0);
    assert_status(&r, UV_EINVAL);
    cr_assert_eq(r.body_calls, 0);
    cr_assert(strstr(r.msg, "invalid mode"), "%s", r.msg);
    cr_assert(strstr(r.msg, cases[i].mode), "%s", r.msg);
    cr_assert(strstr(r.msg, cases[i].why), "%s: %s", cases[i].mode, r.msg);
  }
  cr_assert_eq(entries(), 0, "nothing was created");
  cr_assert_eq(ascope_rt_free(rt), 0);
}

/* Operations refuse a mode that cannot do them, and bad arguments; a refused
 * call does nothing: no callback, no failure. */
static void body_refusals(ascope *s, run *r) {
  ascope_file *f = file0(s);
  cr_assert_eq(ascope_file_write(s, f, "x", 1, -1, count_cb, r), UV_EBADF);
  cr_assert_eq(ascope_file_read(s, f, 1, 0, keep_data, r), 0); /* fine */
  cr_assert_eq(ascope_file_read(s, f, 1, -2, keep_data, r), UV_EINVAL);
  cr_assert_eq(ascope_file_stream(s, f, 0, 0, keep_data, r, NULL), UV_EINVAL);
  cr_assert_eq(ascope_file_stream(s, f, 16, 0, NULL, r, NULL), UV_EINVAL);
  cr_assert_eq(ascope_file_read(s, NULL, 1, 0, keep_data, r), UV_EINVAL);
  cr_assert_eq(ascope_file_read(s, (ascope_file *)r, 1, 0, keep_data, r), UV_EINVAL);
  cr_assert_str_eq(ascope_file_path(f), in_dir("a.txt"));
}

static void body_refusals_w(ascope *s, run *r) {
  ascope_file *f = file0(s);
  cr_assert_eq(ascope_file_read(s, f, 1, 0, keep_data, r), UV_EBADF);
  cr_assert_eq(ascope_file_read_all(s, f, 10, keep_data, r), UV_EBADF);
  cr_assert_eq(ascope_file_stream(s, f, 16, 0, keep_data, r, NULL), UV_EBADF);
  cr_assert_eq(ascope_file_write(s, f, NULL, 1, -1, count_cb, r), UV_EINVAL);
}

Test(file, operations_check_the_mode) {
  put(in_dir("a.txt"), "a", 1);
  ascope_rt *rt = ascope_rt_new(NULL);
  run r = {.body = body_refusals};
  run_file(rt, in_dir("a.txt"), "r", &r);
  assert_status(&r, 0);
  cr_assert_eq(r.calls, 1);
  run r2 = {.body = body_refusals_w};
  run_file(rt, in_dir("a.txt"), "a", &r2);
  assert_status(&r2, 0);
  cr_assert_eq(r2.calls, 0);
  cr_assert_eq(ascope_rt_free(rt), 0);
}

Test(file, the_path_is_copied_at_use) {
  put(in_dir("real"), "real", 4);
  ascope_rt *rt = ascope_rt_new(NULL);
  char path[512];
  snprintf(path, sizeof path, "%s", in_dir("real"));
  ascope *s = ascope_new(rt);
  cr_assert_eq(ascope_use_file(s, path, "r"), 0);
  snprintf(path, sizeof path, "%s", in_dir("nope")); /* the caller reuses its buffer */
  run r = {.body = body_read_all};
  cr_assert_eq(start(s, &r), 0);
  ascope_rt_run(rt);
  assert_status(&r, 0);
  cr_assert_str_eq(r.buf, "real");
  cr_assert_eq(ascope_rt_free(rt), 0);
}

/* ascope_use() with the vtable: arg is the path, options the mode. */
Test(file, the_vtable_works_with_ascope_use) {
  put(in_dir("v"), "vtable", 6);
  ascope_rt *rt = ascope_rt_new(NULL);
  ascope *s = ascope_new(rt);
  cr_assert_eq(ascope_use(s, ascope_file_driver(), in_dir("v"), "r"), 0);
  run r = {.body = body_read_all};
  cr_assert_eq(start(s, &r), 0);
  ascope_rt_run(rt);
  assert_status(&r, 0);
  cr_assert_str_eq(r.buf, "vtable");
  s = ascope_new(rt);
  cr_assert_eq(ascope_use(s, ascope_file_driver(), in_dir("v"), "r bogus"), 0);
  run r2 = {0};
  cr_assert_eq(start(s, &r2), 0);
  ascope_rt_run(rt);
  assert_status(&r2, UV_EINVAL);
  cr_assert_str_eq(r2.driver, "file");
  cr_assert_eq(ascope_rt_free(rt), 0);
}

/* ---- stat, sync, read_all's limit, write order ----------------------------- */

static int on_stat(ascope *s, int status, const uv_stat_t *st, void *ud) {
  (void)s;
  run *r = ud;
  r->calls++;
  cr_assert_eq(status, 0);
  r->bytes = (size_t)st->st_size;
  return 0;
}

static int synced(ascope *s, int status, void *ud) {
  cr_assert_eq(status, 0);
  cr_assert_eq(ascope_file_stat(s, file0(s), on_stat, ud), 0);
  return 0;
}

static void body_stat_sync(ascope *s, run *r) {
  ascope_file *f = file0(s);
  static char big[123];
  memset(big, 'z', sizeof big);
  cr_assert_eq(ascope_file_write(s, f, big, sizeof big, -1, NULL, NULL), 0);
  cr_assert_eq(ascope_file_sync(s, f, synced, r), 0); /* after the write */
}

Test(file, sync_follows_writes_and_stat_sees_them) {
  ascope_rt *rt = ascope_rt_new(NULL);
  run r = {.body = body_stat_sync};
  run_file(rt, in_dir("s"), "w", &r);
  assert_status(&r, 0);
  cr_assert_eq(r.calls, 1);
  cr_assert_eq(r.bytes, 123);
  cr_assert_eq(ascope_rt_free(rt), 0);
}

static void body_read_all_100(ascope *s, run *r) {
  cr_assert_eq(ascope_file_read_all(s, file0(s), (size_t)(uintptr_t)r->p, keep_data, r), 0);
}

static void body_read_all_nocb(ascope *s, run *r) {
  cr_assert_eq(ascope_file_read_all(s, file0(s), (size_t)(uintptr_t)r->p, NULL, NULL), 0);
}

Test(file, read_all_enforces_its_limit) {
  char data[100];
  memset(data, 'q', sizeof data);
  put(in_dir("h"), data, sizeof data);
  ascope_rt *rt = ascope_rt_new(NULL);
  run ok = {.body = body_read_all_100, .p = (void *)100};
  run_file(rt, in_dir("h"), "r", &ok);
  assert_status(&ok, 0);
  cr_assert_eq(ok.bytes, 100);
  run over = {.body = body_read_all_100, .p = (void *)99};
  run_file(rt, in_dir("h"), "r", &over);
  assert_status(&over, UV_EFBIG);
  cr_assert_eq(over.cb_status, UV_EFBIG);
  cr_assert_str_eq(over.code, "EFBIG");
  run nocb = {.body = body_read_all_nocb, .p = (void *)0};
  run_file(rt, in_dir("h"), "r", &nocb);
  assert_status(&nocb, UV_EFBIG);
  cr_assert(strstr(nocb.msg, in_dir("h")), "%s", nocb.msg);
  cr_assert_eq(ascope_rt_free(rt), 0);
}

static void body_many_writes(ascope *s, run *r) {
  (void)r;
  ascope_file *f = file0(s);
  char line[32];
  for (int i = 0; i < 500; i++) {
    int n = snprintf(line, sizeof line, "line %d\n", i);
    cr_assert_eq(ascope_file_write(s, f, line, (size_t)n, -1, NULL, NULL), 0);
  }
  size_t big = 8u << 20;
  char *b = malloc(big);
  memset(b, 'B', big);
  cr_assert_eq(ascope_file_write(s, f, b, big, -1, NULL, NULL), 0);
  free(b); /* copied: the caller may free at once */
  cr_assert_eq(ascope_file_write(s, f, "end\n", 4, -1, NULL, NULL), 0);
}

Test(file, writes_land_in_call_order) {
  ascope_rt *rt = ascope_rt_new(NULL);
  run r = {.body = body_many_writes};
  run_file(rt, in_dir("lines"), "w", &r);
  assert_status(&r, 0);
  size_t n;
  char *got = get(in_dir("lines"), &n);
  char *p = got;
  for (int i = 0; i < 500; i++) {
    char want[32];
    int k = snprintf(want, sizeof want, "line %d\n", i);
    cr_assert(strncmp(p, want, (size_t)k) == 0, "line %d out of order", i);
    p += k;
  }
  for (size_t i = 0; i < (8u << 20); i++)
    if (p[i] != 'B') cr_assert(0, "big write damaged at %zu", i);
  cr_assert_str_eq(p + (8u << 20), "end\n");
  free(got);
  cr_assert_eq(ascope_rt_free(rt), 0);
}

/* ---- atomic replace -------------------------------------------------------- */

static const char OLD[] = "OLD CONTENT\0with a NUL and \xff\xfe bytes\n";
#define OLDLEN (sizeof OLD - 1)

/* While the scope runs, the target is still the old file. */
static int atomic_written(ascope *s, int status, void *ud) {
  (void)s;
  run *r = ud;
  cr_assert_eq(status, 0);
  assert_content(in_dir("target"), OLD, OLDLEN);
  cr_assert_eq(entries(), 2, "the target and the temporary file");
  r->calls++;
  return 0;
}

static void body_atomic_write(ascope *s, run *r) {
  cr_assert_eq(ascope_file_write(s, file0(s), "new content\n", 12, -1, atomic_written, r), 0);
}

Test(file, atomic_ok_replaces_and_keeps_the_mode) {
  put(in_dir("target"), OLD, OLDLEN);
  chmod(in_dir("target"), 0640);
  struct stat before;
  stat(in_dir("target"), &before);
  ascope_rt *rt = ascope_rt_new(NULL);
  run r = {.body = body_atomic_write};
  run_file(rt, in_dir("target"), "w atomic", &r);
  assert_status(&r, 0);
  cr_assert_eq(r.calls, 1);
  assert_content(in_dir("target"), "new content\n", 12);
  cr_assert_eq(perm_of(in_dir("target")), 0640, "perm %o", perm_of(in_dir("target")));
  struct stat after;
  stat(in_dir("target"), &after);
  cr_assert_neq(before.st_ino, after.st_ino, "replaced by rename, not rewritten");
  cr_assert_eq(entries(), 1, "no temporary file left");
  cr_assert_eq(ascope_rt_free(rt), 0);
}

static void body_atomic_new(ascope *s, run *r) {
  (void)r;
  cr_assert_eq(ascope_file_write(s, file0(s), "fresh", 5, -1, NULL, NULL), 0);
}

Test(file, atomic_ok_creates_a_new_file_with_the_umask) {
  mode_t old = umask(022);
  ascope_rt *rt = ascope_rt_new(NULL);
  run r = {.body = body_atomic_new};
  run_file(rt, in_dir("fresh"), "w atomic", &r);
  umask(old);
  assert_status(&r, 0);
  assert_content(in_dir("fresh"), "fresh", 5);
  cr_assert_eq(perm_of(in_dir("fresh")), 0644, "perm %o", perm_of(in_dir("fresh")));
  cr_assert_eq(entries(), 1);
  /* "x atomic": a second time finds it there */
  run r2 = {.body = body_atomic_new};
  run_file(rt, in_dir("fresh"), "x atomic", &r2);
  assert_status(&r2, UV_EEXIST);
  cr_assert_eq(entries(), 1);
  cr_assert_eq(ascope_rt_free(rt), 0);
}

/* Each failing outcome: the target keeps its old bytes, no temporary file. */
/* Reads run beside writes: read what was written from the write's callback. */
static int then_read_over_limit(ascope *s, int status, void *ud) {
  (void)ud;
  cr_assert_eq(status, 0);
  cr_assert_eq(ascope_file_read_all(s, file0(s), 1, NULL, NULL), 0);
  return 0;
}

static void body_atomic_then(ascope *s, run *r) {
  ascope_file *f = file0(s);
  ascope_file_cb cb = r->calls == 1 ? then_read_over_limit : NULL;
  cr_assert_eq(ascope_file_write(s, f, "PARTIAL NEW CONTENT", 19, -1, cb, NULL), 0);
  switch (r->calls) {
  case 1: /* an operation fails: read_all over its limit, after the write */
    break;
  case 2:
    ascope_fail(s, UV_EPROTO, "the body gave up");
    break;
  case 3: /* the deadline: something that never ends */
  case 4: /* cancelled from outside */
    cr_assert_eq(td_op_start(s, TD_HANG, 0, 0, NULL, NULL, NULL), 0);
    if (r->calls == 4) after(ascope_scope_rt(s), 30, cancel_scope, s);
    break;
  case 5: /* a write callback turns success into failure */
    cr_assert_eq(ascope_file_write(s, f, "more", 4, -1, count_cb, r), 0);
    break;
  }
}

static int fail_after_write(ascope *s, int status, void *ud) {
  (void)s, (void)ud;
  return status ? status : UV_EIO;
}

static void body_atomic_cb_fails(ascope *s, run *r) {
  (void)r;
  cr_assert_eq(ascope_file_write(s, file0(s), "NEW", 3, -1, fail_after_write, NULL), 0);
}

Test(file, atomic_failures_leave_the_target_byte_for_byte) {
  const int want[] = {0, UV_EFBIG, UV_EPROTO, ASCOPE_ETIMEDOUT, ASCOPE_ECANCELED};
  ascope_rt *rt = ascope_rt_new(NULL);
  for (int i = 1; i <= 5; i++) {
    put(in_dir("target"), OLD, OLDLEN);
    chmod(in_dir("target"), 0600);
    ascope *s = ascope_new(rt);
    cr_assert_eq(ascope_use_file(s, in_dir("target"), i == 1 ? "w+ atomic" : "w atomic"), 0);
    if (i == 3) ascope_set_timeout(s, 50);
    run r = {.body = i == 5 ? body_atomic_cb_fails : body_atomic_then, .calls = i};
    cr_assert_eq(start(s, &r), 0);
    ascope_rt_run(rt);
    cr_assert_eq(r.done_calls, 1);
    assert_status(&r, i == 5 ? UV_EIO : want[i]);
    assert_content(in_dir("target"), OLD, OLDLEN);
    cr_assert_eq(perm_of(in_dir("target")), 0600);
    cr_assert_eq(entries(), 1, "case %d: a temporary file was left", i);
  }
  cr_assert_eq(ascope_rt_free(rt), 0);
}

/* A later use failing to acquire: the body never runs, the file is released
 * with the failure and discards what it had. */
Test(file, atomic_discards_when_a_later_use_fails) {
  put(in_dir("target"), OLD, OLDLEN);
  td_reset();
  ascope_rt *rt = ascope_rt_new(NULL);
  ascope *s = ascope_new(rt);
  td_spec bad = {.name = "bad", .acquire = TD_FAIL};
  cr_assert_eq(ascope_use_file(s, in_dir("target"), "w atomic"), 0);
  cr_assert_eq(td_use(s, &bad), 0);
  run r = {0};
  cr_assert_eq(start(s, &r), 0);
  ascope_rt_run(rt);
  assert_status(&r, ASCOPE_EDRIVER);
  cr_assert_eq(r.body_calls, 0);
  assert_content(in_dir("target"), OLD, OLDLEN);
  cr_assert_eq(entries(), 1);
  cr_assert_eq(ascope_rt_free(rt), 0);
}

/* The rename itself fails (the target became a directory): the release's
 * error is the scope's, and the temporary file is removed. */
static void body_target_becomes_dir(ascope *s, run *r) {
  (void)r;
  cr_assert_eq(ascope_file_write(s, ascope_resource(s, 1), "data", 4, -1, NULL, NULL), 0);
  cr_assert_eq(mkdir(in_dir("target"), 0755), 0);
  put(in_dir("target/inside"), "x", 1);
}

Test(file, atomic_commit_failure_is_reported_and_cleaned) {
  ascope_rt *rt = ascope_rt_new(NULL);
  td_reset();
  td_spec guard = {.name = "guard"};
  ascope *s = ascope_new(rt);
  cr_assert_eq(td_use(s, &guard), 0);
  cr_assert_eq(ascope_use_file(s, in_dir("target"), "w atomic"), 0);
  run r = {.body = body_target_becomes_dir};
  cr_assert_eq(start(s, &r), 0);
  ascope_rt_run(rt);
  cr_assert_eq(r.done_calls, 1);
  assert_status(&r, UV_EISDIR);
  cr_assert_str_eq(r.driver, "file");
  cr_assert_str_eq(r.code, "EISDIR");
  cr_assert(strstr(r.msg, "rename"), "%s", r.msg);
  cr_assert_eq(guard.release_calls, 1);
  cr_assert_eq(guard.release_outcome, UV_EISDIR, "later releases see the status as it stands");
  cr_assert_eq(entries(), 1, "only the directory: the temporary file is gone");
  assert_content(in_dir("target/inside"), "x", 1);
  cr_assert_eq(ascope_rt_free(rt), 0);
}

/* "x atomic" never replaces: a file that appears meanwhile wins. */
static void body_someone_else_writes(ascope *s, run *r) {
  (void)r;
  cr_assert_eq(ascope_file_write(s, file0(s), "mine", 4, -1, NULL, NULL), 0);
  put(in_dir("excl"), "theirs", 6);
}

Test(file, atomic_exclusive_never_replaces) {
  ascope_rt *rt = ascope_rt_new(NULL);
  run r = {.body = body_someone_else_writes};
  run_file(rt, in_dir("excl"), "x atomic", &r);
  assert_status(&r, UV_EEXIST);
  assert_content(in_dir("excl"), "theirs", 6);
  cr_assert_eq(entries(), 1);
  cr_assert_eq(ascope_rt_free(rt), 0);
}

Test(file, atomic_refuses_directories_and_devices) {
  mkdir(in_dir("d"), 0755);
  ascope_rt *rt = ascope_rt_new(NULL);
  run r = {0};
  run_file(rt, in_dir("d"), "w atomic", &r);
  assert_status(&r, UV_EISDIR);
  run r2 = {0};
  run_file(rt, "/dev/null", "w atomic", &r2); /* never replace a device */
  assert_status(&r2, UV_EINVAL);
  cr_assert(strstr(r2.msg, "not a regular file"), "%s", r2.msg);
  struct stat st;
  cr_assert_eq(stat("/dev/null", &st), 0);
  cr_assert(S_ISCHR(st.st_mode));
  run r3 = {0};
  run_file(rt, in_dir("nodir/f"), "w atomic", &r3);
  assert_status(&r3, UV_ENOENT);
  cr_assert_eq(entries(), 1);
  cr_assert_eq(ascope_rt_free(rt), 0);
}

/* ---- errors ---------------------------------------------------------------- */

Test(file, enoent_and_eisdir_are_clean_errors) {
  mkdir(in_dir("d"), 0755);
  ascope_rt *rt = ascope_rt_new(NULL);
  int fds = open_fds();
  run r = {0};
  run_file(rt, in_dir("missing"), "r", &r);
  assert_status(&r, UV_ENOENT);
  cr_assert_str_eq(r.driver, "file");
  cr_assert_str_eq(r.code, "ENOENT");
  cr_assert(strstr(r.msg, in_dir("missing")), "%s", r.msg);
  cr_assert_eq(r.body_calls, 0);
  const char *modes[] = {"r", "r+", "w", "a"};
  for (int i = 0; i < 4; i++) {
    run d = {0};
    run_file(rt, in_dir("d"), modes[i], &d);
    assert_status(&d, UV_EISDIR);
    cr_assert_str_eq(d.code, "EISDIR");
    cr_assert(strstr(d.msg, in_dir("d")), "%s", d.msg);
  }
  cr_assert_eq(open_fds(), fds, "a failed acquire closed what it opened");
  cr_assert_eq(ascope_rt_free(rt), 0);
}

static void body_dev_full(ascope *s, run *r) {
  static char block[4096];
  ascope_file *full = ascope_resource(s, 1);
  ascope_file *keep = ascope_resource(s, 2);
  cr_assert_eq(ascope_file_write(s, keep, "kept", 4, -1, NULL, NULL), 0);
  cr_assert_eq(ascope_file_write(s, full, block, sizeof block, -1, r->p ? count_cb : NULL, r), 0);
}

/* Writing to /dev/full: ENOSPC reaches the callback (or fails the scope),
 * and the scope's other files are unharmed: the atomic one keeps its old
 * content, nothing is half-written. */
Test(file, enospc_on_dev_full_is_reported_and_loses_nothing) {
  put(in_dir("target"), OLD, OLDLEN);
  ascope_rt *rt = ascope_rt_new(NULL);
  for (int withcb = 0; withcb < 2; withcb++) {
    ascope *s = ascope_new(rt);
    cr_assert_eq(ascope_use_file(s, in_dir("target"), "w atomic"), 0);
    cr_assert_eq(ascope_use_file(s, "/dev/full", "w"), 0);
    cr_assert_eq(ascope_use_file(s, in_dir("plain"), "w"), 0);
    run r = {.body = body_dev_full, .p = withcb ? (void *)1 : NULL};
    cr_assert_eq(start(s, &r), 0);
    ascope_rt_run(rt);
    assert_status(&r, UV_ENOSPC);
    cr_assert_str_eq(r.driver, "file");
    cr_assert_str_eq(r.code, "ENOSPC");
    cr_assert(strstr(r.msg, "/dev/full"), "%s", r.msg);
    if (withcb) cr_assert_eq(r.cb_status, UV_ENOSPC);
    assert_content(in_dir("target"), OLD, OLDLEN);
    cr_assert_eq(entries(), 2, "the target and the plain file, no temporary file");
  }
  cr_assert_eq(ascope_rt_free(rt), 0);
}

static int handled(ascope *s, int status, void *ud) {
  (void)s;
  ((run *)ud)->cb_status = status;
  return 0; /* handled: the scope carries on */
}

static void body_handled(ascope *s, run *r) {
  static char block[100];
  cr_assert_eq(ascope_file_write(s, file0(s), block, sizeof block, -1, handled, r), 0);
}

Test(file, a_handled_error_does_not_fail_the_scope) {
  ascope_rt *rt = ascope_rt_new(NULL);
  run r = {.body = body_handled};
  run_file(rt, "/dev/full", "a", &r);
  assert_status(&r, 0);
  cr_assert_eq(r.cb_status, UV_ENOSPC);
  cr_assert_eq(ascope_rt_free(rt), 0);
}

/* ---- streams ---------------------------------------------------------------- */

static uint8_t pat(uint64_t i) {
  return (uint8_t)((i >> 12) * 31 + i * 7 + (i >> 20));
}

static void make_pattern_file(const char *path, size_t size) {
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  cr_assert_geq(fd, 0);
  size_t blk = 1u << 20;
  uint8_t *b = malloc(blk);
  for (size_t off = 0; off < size; off += blk) {
    size_t n = size - off < blk ? size - off : blk;
    for (size_t i = 0; i < n; i++) b[i] = pat(off + i);
    cr_assert_eq(write(fd, b, n), (ssize_t)n);
  }
  free(b);
  close(fd);
}

/* Heap bytes in use, from the sanitizer's allocator when there is one. */
extern size_t __sanitizer_get_current_allocated_bytes(void) __attribute__((weak));
static size_t heap_now(void) {
  if (__sanitizer_get_current_allocated_bytes) return __sanitizer_get_current_allocated_bytes();
  struct mallinfo2 mi = mallinfo2();
  return mi.uordblks + mi.hblkhd;
}

static size_t rss_now(void) {
  long pages = 0, rss = 0;
  FILE *f = fopen("/proc/self/statm", "r");
  if (f) {
    if (fscanf(f, "%ld %ld", &pages, &rss) != 2) rss = 0;
    fclose(f);
  }
  return (size_t)rss * (size_t)sysconf(_SC_PAGESIZE);
}

typedef struct sctx {
  ascope_op *op;
  ascope_rt *rt;
  size_t chunk;
  uint64_t pos, expect_total;
  int items, finals, final_status, pauses, resumes;
  int pause_every, stop_after, fail_at;
  int bad_bytes;
  size_t heap0, heap_peak, rss0, rss_peak;
  bool resume_inside, pause_forever;
  ascope *cancel_when_paused; /* cancelled once paused: the state, not a delay */
} sctx;

static void resume_later(void *arg) {
  sctx *c = arg;
  c->resumes++;
  cr_assert_eq(ascope_op_resume(c->op), 0);
}

static int on_chunk(ascope *s, int status, const char *data, size_t len, void *ud) {
  (void)s;
  sctx *c = ud;
  if (data == NULL) {
    c->finals++;
    c->final_status = status;
    return status;
  }
  cr_assert_eq(status, 0);
  cr_assert_leq(len, c->chunk);
  for (size_t i = 0; i < len; i++)
    if ((uint8_t)data[i] != pat(c->pos + i)) c->bad_bytes++;
  c->pos += len;
  c->items++;
  size_t h = heap_now(), rss = rss_now();
  if (h > c->heap_peak) c->heap_peak = h;
  if (rss > c->rss_peak) c->rss_peak = rss;
  if (c->fail_at && c->items == c->fail_at) return UV_EPROTO;
  if (c->pause_forever) {
    if (c->cancel_when_paused && c->items == 1)
      after(c->rt, 0, cancel_scope, c->cancel_when_paused);
    return ASCOPE_PAUSE;
  }
  if (c->stop_after && c->items == c->stop_after) return ASCOPE_STOP;
  if (c->resume_inside && c->items % 3 == 0) {
    cr_assert_eq(ascope_op_resume(c->op), 0); /* beats the PAUSE below */
    return ASCOPE_PAUSE;
  }
  if (c->pause_every && c->items % c->pause_every == 0) {
    c->pauses++;
    after(c->rt, 1, resume_later, c);
    return ASCOPE_PAUSE;
  }
  return ASCOPE_CONTINUE;
}

static void body_stream(ascope *s, run *r) {
  sctx *c = r->p;
  cr_assert_eq(ascope_file_stream(s, file0(s), c->chunk, (int64_t)c->pos, on_chunk, c, &c->op), 0);
  cr_assert_not_null(c->op);
}

static void stream_file(ascope_rt *rt, const char *path, sctx *c, run *r) {
  c->rt = rt;
  r->body = body_stream;
  r->p = c;
  c->heap0 = c->heap_peak = heap_now();
  c->rss0 = c->rss_peak = rss_now();
  run_file(rt, path, "r", r);
}

static void stream_big(size_t chunk) {
  size_t size = 64u << 20;
  make_pattern_file(in_dir("big"), size);
  ascope_rt *rt = ascope_rt_new(NULL);
  sctx c = {.chunk = chunk, .pause_every = chunk >= (1u << 20) ? 7 : 97};
  run r = {0};
  stream_file(rt, in_dir("big"), &c, &r);
  assert_status(&r, 0);
  cr_assert_eq(c.pos, size);
  cr_assert_eq(c.items, (int)(size / chunk));
  cr_assert_eq(c.bad_bytes, 0, "chunks out of order or damaged");
  cr_assert_eq(c.finals, 1);
  cr_assert_eq(c.final_status, 0);
  cr_assert_gt(c.pauses, 0);
  cr_assert_eq(c.resumes, c.pauses);
  /* The bound: the stream's slots, plus slack for libuv and the test. */
  size_t slots = ascope_file_stream_memory(chunk);
  size_t heap = c.heap_peak - c.heap0, rss = c.rss_peak > c.rss0 ? c.rss_peak - c.rss0 : 0;
  fprintf(stderr, "stream, chunk %zu: heap +%zu (slots %zu), rss +%zu\n", chunk, heap, slots, rss);
  cr_assert_leq(heap, slots + (256u << 10), "heap grew by %zu, slots are %zu", heap, slots);
  /* RSS is coarser (a sanitizer's shadow memory grows with the slots too) but
   * must stay well below the file's size. */
  cr_assert_leq(rss, 4 * slots + (24u << 20), "rss grew by %zu for a %zu-byte file", rss, size);
  cr_assert_eq(ascope_rt_free(rt), 0);
}

Test(file, stream_64mib_in_64kib_chunks_with_pauses_in_bounded_memory) {
  stream_big(64u << 10);
}

Test(file, stream_64mib_in_1mib_chunks_with_pauses_in_bounded_memory) {
  stream_big(1u << 20);
}

Test(file, stream_stops_early) {
  make_pattern_file(in_dir("f"), 1u << 20);
  ascope_rt *rt = ascope_rt_new(NULL);
  sctx c = {.chunk = 4096, .stop_after = 10};
  run r = {0};
  stream_file(rt, in_dir("f"), &c, &r);
  assert_status(&r, 0);
  cr_assert_eq(c.items, 10);
  cr_assert_eq(c.finals, 1);
  cr_assert_eq(c.final_status, 0);
  cr_assert_eq(c.bad_bytes, 0);
  cr_assert_eq(ascope_rt_free(rt), 0);
}

Test(file, stream_of_an_empty_file_and_from_an_offset) {
  put(in_dir("empty"), "", 0);
  make_pattern_file(in_dir("f"), 5000);
  ascope_rt *rt = ascope_rt_new(NULL);
  sctx c = {.chunk = 1000};
  run r = {0};
  stream_file(rt, in_dir("empty"), &c, &r);
  assert_status(&r, 0);
  cr_assert_eq(c.items, 0);
  cr_assert_eq(c.finals, 1);
  sctx c2 = {.chunk = 3000, .pos = 1000};
  run r2 = {0};
  stream_file(rt, in_dir("f"), &c2, &r2);
  assert_status(&r2, 0);
  cr_assert_eq(c2.items, 2); /* 3000 + 1000 */
  cr_assert_eq(c2.pos, 5000);
  cr_assert_eq(c2.bad_bytes, 0);
  sctx c3 = {.chunk = 777, .resume_inside = true};
  run r3 = {0};
  stream_file(rt, in_dir("f"), &c3, &r3);
  assert_status(&r3, 0);
  cr_assert_eq(c3.pos, 5000);
  cr_assert_eq(c3.bad_bytes, 0);
  cr_assert_eq(ascope_rt_free(rt), 0);
}

Test(file, stream_item_error_fails_the_scope) {
  make_pattern_file(in_dir("f"), 100000);
  ascope_rt *rt = ascope_rt_new(NULL);
  sctx c = {.chunk = 1000, .fail_at = 5};
  run r = {0};
  stream_file(rt, in_dir("f"), &c, &r);
  assert_status(&r, UV_EPROTO);
  cr_assert_eq(c.items, 5);
  cr_assert_eq(c.finals, 1);
  cr_assert_eq(c.final_status, UV_EPROTO);
  cr_assert_eq(ascope_rt_free(rt), 0);
}

static void body_stream_pause_cancel(ascope *s, run *r) {
  sctx *c = r->p;
  c->rt = ascope_scope_rt(s);
  c->cancel_when_paused = s; /* on the loop turn after the first chunk paused it */
  cr_assert_eq(ascope_file_stream(s, file0(s), c->chunk, 0, on_chunk, c, &c->op), 0);
}

Test(file, stream_cancelled_while_paused) {
  make_pattern_file(in_dir("f"), 1u << 20);
  ascope_rt *rt = ascope_rt_new(NULL);
  sctx c = {.chunk = 4096, .pause_forever = true};
  run r = {.body = body_stream_pause_cancel, .p = &c};
  run_file(rt, in_dir("f"), "r", &r);
  assert_status(&r, ASCOPE_ECANCELED);
  cr_assert_eq(c.items, 1);
  cr_assert_eq(c.finals, 1);
  cr_assert_eq(c.final_status, ASCOPE_ECANCELED);
  cr_assert_eq(ascope_rt_free(rt), 0);
}

/* A FIFO: no offsets, read in order as the writer (a thread) produces. */
static void *fifo_writer(void *arg) {
  const char *path = arg;
  int fd = open(path, O_WRONLY);
  uint8_t b[1000];
  for (uint64_t off = 0; off < 300000; off += sizeof b) {
    for (size_t i = 0; i < sizeof b; i++) b[i] = pat(off + i);
    if (write(fd, b, sizeof b) != (ssize_t)sizeof b) break;
  }
  close(fd);
  return NULL;
}

Test(file, stream_of_a_fifo_reads_in_order_to_the_end) {
  cr_assert_eq(mkfifo(in_dir("fifo"), 0600), 0);
  static char path[512];
  snprintf(path, sizeof path, "%s", in_dir("fifo"));
  pthread_t t;
  pthread_create(&t, NULL, fifo_writer, path);
  ascope_rt *rt = ascope_rt_new(NULL);
  sctx c = {.chunk = 4096, .pause_every = 5};
  run r = {0};
  stream_file(rt, path, &c, &r);
  pthread_join(t, NULL);
  assert_status(&r, 0);
  cr_assert_eq(c.pos, 300000);
  cr_assert_eq(c.bad_bytes, 0);
  cr_assert_eq(c.finals, 1);
  cr_assert_eq(ascope_rt_free(rt), 0);
}

/* ---- many at once ------------------------------------------------------------ */

/* A gate: each body holds an operation open until every body has run, so
 * all the files are open at the same moment. */
enum { THOUSAND = 1000 };
static const ascope_driver gate_driver = {
    .abi = ASCOPE_DRIVER_ABI, .name = "gate", .acquire = NULL, .release = NULL};
static ascope_op *gate[THOUSAND];
static int gate_n, gate_fds;

static void body_write_index(ascope *s, run *r) {
  int n = snprintf(r->buf, sizeof r->buf, "file %d\n", r->calls);
  cr_assert_eq(ascope_file_write(s, file0(s), r->buf, (size_t)n, -1, NULL, NULL), 0);
  gate[gate_n] = ascope_op_begin(s, &gate_driver, NULL, NULL);
  cr_assert_not_null(gate[gate_n]);
  if (++gate_n < THOUSAND) return;
  gate_fds = open_fds(); /* every file is open now */
  for (int i = 0; i < THOUSAND; i++) ascope_op_end(gate[i], 0, NULL, NULL);
}

Test(file, a_thousand_files_in_concurrent_scopes) {
  enum { N = THOUSAND };
  struct rlimit rl;
  getrlimit(RLIMIT_NOFILE, &rl);
  if (rl.rlim_cur < N + 64 && rl.rlim_max >= N + 64) {
    rl.rlim_cur = N + 64;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
  ascope_rt *rt = ascope_rt_new(NULL);
  int fds = open_fds();
  run *runs = calloc(N, sizeof *runs);
  for (int i = 0; i < N; i++) {
    char name[32];
    snprintf(name, sizeof name, "f%04d", i);
    if (i % 2) put(in_dir(name), "old", 3);
    ascope *s = ascope_new(rt);
    cr_assert_eq(ascope_use_file(s, in_dir(name), i % 2 ? "w atomic" : "w"), 0);
    runs[i].body = body_write_index;
    runs[i].calls = i;
    cr_assert_eq(start(s, &runs[i]), 0);
  }
  cr_assert_eq(ascope_rt_run(rt), 0);
  for (int i = 0; i < N; i++) {
    cr_assert_eq(runs[i].done_calls, 1);
    assert_status(&runs[i], 0);
    char name[32], want[32];
    snprintf(name, sizeof name, "f%04d", i);
    int n = snprintf(want, sizeof want, "file %d\n", i);
    assert_content(in_dir(name), want, (size_t)n);
  }
  cr_assert_geq(gate_fds, fds + N, "all %d files were open at once (%d fds)", N, gate_fds);
  cr_assert_eq(entries(), N, "no temporary file left");
  cr_assert_eq(open_fds(), fds, "every file closed");
  free(runs);
  cr_assert_eq(ascope_rt_free(rt), 0);
}

/* ---- release exactly once ---------------------------------------------------
 * Each case: a guard use before the file (td_driver, which counts), and
 * checks that done ran once, the guard was acquired and released once, the
 * file's fd is closed and no temporary file is left. */

/* Occupies every threadpool thread, so requests queue behind it: then a
 * cancel finds them queued. */
#define POOL 4
static uv_sem_t pool_sem;
static uv_work_t pool_work[POOL];
static bool pool_blocked;
static void block_cb(uv_work_t *w) {
  (void)w;
  uv_sem_wait(&pool_sem);
}
static void block_after(uv_work_t *w, int status) {
  (void)w, (void)status;
}
static void block_pool(uv_loop_t *loop) {
  uv_sem_init(&pool_sem, 0);
  for (int i = 0; i < POOL; i++) uv_queue_work(loop, &pool_work[i], block_cb, block_after);
  pool_blocked = true;
}
static void unblock_pool(void) {
  if (!pool_blocked) return;
  pool_blocked = false;
  for (int i = 0; i < POOL; i++) uv_sem_post(&pool_sem);
}
static void unblock_pool_cb(void *arg) {
  (void)arg;
  unblock_pool();
}

static void pool_init(void) {
  setenv("UV_THREADPOOL_SIZE", "4", 1); /* before the pool starts in this process */
}

typedef struct once_case {
  td_spec guard;
  ascope_rt *rt;
  int fds;
  int writer_fd; /* a FIFO's other end, held by the test */
  int entries;
  bool no_reader; /* the FIFO's open never ran (see open_writer) */
} once_case;

static void once_begin(once_case *k) {
  pool_init();
  td_reset();
  memset(&k->guard, 0, sizeof k->guard);
  k->guard.name = "guard";
  /* libuv keeps a few process-wide fds from its first loop on: count after. */
  ascope_rt_free(ascope_rt_new(NULL));
  k->fds = open_fds();
  k->rt = ascope_rt_new(NULL);
  k->writer_fd = -1;
  k->no_reader = false;
  k->entries = entries();
}

static ascope *once_scope(once_case *k, const char *path, const char *mode, uint64_t timeout) {
  ascope *s = ascope_new(k->rt);
  cr_assert_eq(td_use(s, &k->guard), 0);
  cr_assert_eq(ascope_use_file(s, path, mode), 0);
  if (timeout) ascope_set_timeout(s, timeout);
  return s;
}

static void once_end(once_case *k, run *r, int want) {
  cr_assert_eq(r->done_calls, 1, "done ran %d times", r->done_calls);
  assert_status(r, want);
  cr_assert_eq(k->guard.acquire_calls, 1);
  cr_assert_eq(k->guard.release_calls, 1, "guard released %d times", k->guard.release_calls);
  cr_assert_eq(td_live(), 0);
  unblock_pool();
  if (k->writer_fd >= 0) close(k->writer_fd);
  cr_assert_eq(ascope_rt_free(k->rt), 0); /* runs what is left on the loop */
  cr_assert_eq(open_fds(), k->fds, "an fd leaked: %d open, %d before", open_fds(), k->fds);
  cr_assert_eq(entries(), k->entries, "a temporary file was left");
}

/* Opens the FIFO's writing end, which lets a reader's open return. ENXIO
 * means no reader: on a loaded machine the threadpool had not started the
 * driver's open before the cancel, so uv_cancel stopped it while queued.
 * That is a correct outcome too; the test notes which path it took. */
static void open_writer(void *arg) {
  once_case *k = arg;
  k->writer_fd = open(in_dir("fifo"), O_WRONLY | O_NONBLOCK);
  if (k->writer_fd < 0) {
    cr_assert_eq(errno, ENXIO, "%s", strerror(errno));
    k->no_reader = true;
  }
}

/* acquire fails */
Test(file, once_when_acquire_fails) {
  once_case k;
  once_begin(&k);
  ascope *s = once_scope(&k, in_dir("missing"), "r", 0);
  run r = {0};
  cr_assert_eq(start(s, &r), 0);
  ascope_rt_run(k.rt);
  cr_assert_eq(r.body_calls, 0);
  cr_assert_eq(k.guard.release_outcome, UV_ENOENT);
  once_end(&k, &r, UV_ENOENT);
}

/* acquire times out while its open runs (a FIFO's open waits for a writer):
 * the running open finishes, the driver closes what it opened. */
Test(file, once_when_a_running_acquire_times_out) {
  cr_assert_eq(mkfifo(in_dir("fifo"), 0600), 0);
  once_case k;
  once_begin(&k);
  ascope *s = once_scope(&k, in_dir("fifo"), "r", 100);
  after_start(k.rt, 250, open_writer, &k);
  run r = {0};
  uint64_t t0 = uv_hrtime();
  cr_assert_eq(start(s, &r), 0);
  ascope_rt_run(k.rt);
  uint64_t ms = (uv_hrtime() - t0) / 1000000;
  cr_assert_eq(r.body_calls, 0);
  once_end(&k, &r, ASCOPE_ETIMEDOUT);
  if (!k.no_reader) cr_assert_geq(ms, 240, "the running open was waited for");
}

/* acquire cancelled while its open is still queued: uv_cancel stops it. */
static void block_then_cancel(void *arg) {
  ascope_cancel(arg);
}

Test(file, once_when_a_queued_acquire_is_cancelled) {
  once_case k;
  once_begin(&k);
  block_pool(ascope_rt_loop(k.rt));
  ascope *s = once_scope(&k, in_dir("new"), "w atomic", 0);
  after_start(k.rt, 20, block_then_cancel, s);
  run r = {0};
  cr_assert_eq(start(s, &r), 0);
  ascope_rt_run(k.rt);
  cr_assert_eq(r.body_calls, 0);
  cr_assert_eq(access(in_dir("new"), F_OK), -1);
  once_end(&k, &r, ASCOPE_ECANCELED);
}

Test(file, once_when_a_running_acquire_is_cancelled) {
  cr_assert_eq(mkfifo(in_dir("fifo"), 0600), 0);
  once_case k;
  once_begin(&k);
  ascope *s = once_scope(&k, in_dir("fifo"), "r", 0);
  after_start(k.rt, 20, block_then_cancel, s);
  after_start(k.rt, 80, open_writer, &k);
  run r = {0};
  cr_assert_eq(start(s, &r), 0);
  ascope_rt_run(k.rt);
  once_end(&k, &r, ASCOPE_ECANCELED);
}

/* an operation fails */
static void body_full(ascope *s, run *r) {
  (void)r;
  cr_assert_eq(ascope_file_write(s, ascope_resource(s, 1), "x", 1, -1, NULL, NULL), 0);
}

Test(file, once_when_an_operation_fails) {
  once_case k;
  once_begin(&k);
  ascope *s = once_scope(&k, "/dev/full", "w", 0);
  run r = {.body = body_full};
  cr_assert_eq(start(s, &r), 0);
  ascope_rt_run(k.rt);
  cr_assert_eq(k.guard.release_outcome, UV_ENOSPC);
  once_end(&k, &r, UV_ENOSPC);
}

/* an operation times out while its read runs (a FIFO with no data): the read
 * finishes when data comes, and the operation reports ECANCELED. */
static void feed_fifo(void *arg) {
  once_case *k = arg;
  cr_assert_eq(write(k->writer_fd, "late", 4), 4);
}

static void body_fifo_stream(ascope *s, run *r) {
  sctx *c = r->p;
  cr_assert_eq(ascope_file_stream(s, ascope_resource(s, 1), 64, 0, on_chunk, c, NULL), 0);
}

static void body_fifo_read(ascope *s, run *r) {
  cr_assert_eq(ascope_file_read(s, ascope_resource(s, 1), 64, -1, keep_data, r), 0);
}

static void fifo_op_case(bool stream, bool cancel) {
  cr_assert_eq(mkfifo(in_dir("fifo"), 0600), 0);
  once_case k;
  once_begin(&k);
  k.writer_fd = open(in_dir("fifo"), O_RDWR | O_NONBLOCK); /* both ends: opens at once */
  cr_assert_geq(k.writer_fd, 0);
  /* The operation must be running when the deadline or the cancel comes: a
   * second leaves a busy machine time to open the FIFO first, and the data
   * comes well after. */
  ascope *s = once_scope(&k, in_dir("fifo"), "r", cancel ? 0 : 1000);
  if (cancel) after_start(k.rt, 1000, cancel_scope, s);
  after_start(k.rt, 2500, feed_fifo, &k);
  sctx c = {.chunk = 64};
  run r = {.body = stream ? body_fifo_stream : body_fifo_read, .p = &c};
  cr_assert_eq(start(s, &r), 0);
  ascope_rt_run(k.rt);
  if (stream) {
    cr_assert_eq(c.items, 0, "nothing delivered after the cancel");
    cr_assert_eq(c.finals, 1);
    cr_assert_eq(c.final_status, ASCOPE_ECANCELED);
  } else {
    cr_assert_eq(r.calls, 1);
    cr_assert_eq(r.cb_status, ASCOPE_ECANCELED);
  }
  cr_assert_eq(k.guard.release_outcome, cancel ? ASCOPE_ECANCELED : ASCOPE_ETIMEDOUT);
  once_end(&k, &r, cancel ? ASCOPE_ECANCELED : ASCOPE_ETIMEDOUT);
}

Test(file, once_when_a_running_stream_times_out) {
  fifo_op_case(true, false);
}

Test(file, once_when_a_running_read_is_cancelled) {
  fifo_op_case(false, true);
}

/* operations still queued when the scope is cancelled: uv_cancel stops
 * them, every callback reports ECANCELED once. */
static void cancel_and_unblock(void *s) {
  ascope_cancel(s);
  unblock_pool(); /* the release's close needs a thread */
}

static int count_stat(ascope *s, int status, const uv_stat_t *st, void *ud) {
  (void)s, (void)st;
  run *r = ud;
  r->calls++;
  r->cb_status = status;
  return status;
}

static void body_queued_ops(ascope *s, run *r) {
  ascope_file *f = ascope_resource(s, 1);
  block_pool(ascope_rt_loop(ascope_scope_rt(s)));
  for (int i = 0; i < 3; i++) {
    cr_assert_eq(ascope_file_write(s, f, "w", 1, -1, count_cb, r), 0);
    cr_assert_eq(ascope_file_sync(s, f, count_cb, r), 0);
    cr_assert_eq(ascope_file_read(s, f, 10, 0, keep_data, r), 0);
    cr_assert_eq(ascope_file_stat(s, f, count_stat, r), 0);
  }
  after(ascope_scope_rt(s), 20, cancel_and_unblock, s);
}

Test(file, once_when_queued_operations_are_cancelled) {
  put(in_dir("f"), OLD, OLDLEN);
  once_case k;
  once_begin(&k);
  ascope *s = once_scope(&k, in_dir("f"), "r+", 0);
  run r = {.body = body_queued_ops};
  cr_assert_eq(start(s, &r), 0);
  ascope_rt_run(k.rt);
  cr_assert_eq(r.calls, 12, "every operation's callback ran once");
  cr_assert_eq(r.cb_status, ASCOPE_ECANCELED);
  once_end(&k, &r, ASCOPE_ECANCELED);
  assert_content(in_dir("f"), OLD, OLDLEN);
}

/* the release times out (its fsync is stuck behind a busy threadpool): the
 * core aborts it; the abort closes the fd and removes the temporary file
 * synchronously, and the target keeps its old content. */
static void body_block_before_release(ascope *s, run *r) {
  (void)r;
  cr_assert_eq(ascope_file_write(s, ascope_resource(s, 1), "new", 3, -1, count_cb, r), 0);
}

static int written_then_block(ascope *s, int status, void *ud) {
  cr_assert_eq(status, 0);
  ((run *)ud)->calls++;
  block_pool(ascope_rt_loop(ascope_scope_rt(s)));
  return 0;
}

static void body_block(ascope *s, run *r) {
  cr_assert_eq(ascope_file_write(s, ascope_resource(s, 1), "new", 3, -1, written_then_block, r), 0);
}

Test(file, once_when_the_release_times_out) {
  put(in_dir("target"), OLD, OLDLEN);
  once_case k;
  once_begin(&k);
  ascope_rt_set_release_timeout(k.rt, 50);
  ascope *s = once_scope(&k, in_dir("target"), "w atomic", 0);
  run r = {.body = body_block};
  cr_assert_eq(start(s, &r), 0);
  ascope_rt_run(k.rt);
  cr_assert_eq(r.calls, 1);
  cr_assert_str_eq(r.driver, "file");
  cr_assert_eq(k.guard.release_outcome, ASCOPE_ETIMEDOUT);
  cr_assert_eq(entries(), 1, "the abort removed the temporary file at once");
  once_end(&k, &r, ASCOPE_ETIMEDOUT);
  assert_content(in_dir("target"), OLD, OLDLEN);
  (void)body_block_before_release;
  (void)unblock_pool_cb;
}

/* Misuse made safe: an operation from an unrelated scope still running when
 * the file's own scope ends is cancelled, and the release waits for it. */
typedef struct cross {
  ascope_file *f;
  run other;
  sctx c;
} cross;

static void body_other(ascope *s, run *r) {
  cross *x = r->p;
  cr_assert_eq(ascope_file_stream(s, x->f, 64, 0, on_chunk, &x->c, NULL), 0);
}

static void body_owner(ascope *s, run *r) {
  cross *x = r->p;
  x->f = file0(s);
  ascope *o = ascope_new(ascope_scope_rt(s));
  x->other.body = body_other;
  x->other.p = x;
  cr_assert_eq(start(o, &x->other), 0);
  /* the owner lives a little longer, until the other stream runs */
  cr_assert_eq(td_op_start(s, TD_OK_LATE, 30, 0, NULL, NULL, NULL), 0);
}

static void feed_fd(void *arg) {
  cr_assert_eq(write(*(int *)arg, "late", 4), 4);
}

Test(file, an_outside_operation_is_cancelled_by_the_release) {
  cr_assert_eq(mkfifo(in_dir("fifo"), 0600), 0);
  int wfd = open(in_dir("fifo"), O_RDWR | O_NONBLOCK);
  ascope_rt *rt = ascope_rt_new(NULL);
  cross x = {.c = {.chunk = 64}};
  run r = {.body = body_owner, .p = &x};
  after_start(rt, 250, feed_fd, &wfd);
  after_start(rt, 500, feed_fd, &wfd); /* in case the first came before the read */
  run_file(rt, in_dir("fifo"), "r", &r);
  assert_status(&r, 0);
  cr_assert_eq(x.other.done_calls, 1);
  assert_status(&x.other, ASCOPE_ECANCELED);
  cr_assert_eq(x.c.finals, 1);
  cr_assert_eq(x.c.final_status, ASCOPE_ECANCELED);
  cr_assert_eq(ascope_rt_free(rt), 0); /* the second feed fires here */
  close(wfd);
}

/* A short read restarts the reads after the bytes it returned: a file that
 * grows while the stream is paused is read to its new end, in order. */
static void grow_file(void *arg) {
  sctx *c = arg;
  int fd = open(in_dir("grow"), O_WRONLY | O_APPEND);
  uint8_t b[2500];
  for (size_t i = 0; i < sizeof b; i++) b[i] = pat(1500 + i);
  cr_assert_eq(write(fd, b, sizeof b), (ssize_t)sizeof b);
  close(fd);
  cr_assert_eq(ascope_op_resume(c->op), 0);
}

static int pause_once(ascope *s, int status, const char *data, size_t len, void *ud) {
  sctx *c = ud;
  int rc = on_chunk(s, status, data, len, ud);
  if (data && c->items == 1) {
    after(c->rt, 10, grow_file, c);
    return ASCOPE_PAUSE;
  }
  return rc;
}

static void body_grow(ascope *s, run *r) {
  sctx *c = r->p;
  cr_assert_eq(ascope_file_stream(s, file0(s), 1000, 0, pause_once, c, &c->op), 0);
}

Test(file, stream_follows_a_file_that_grows_after_a_short_read) {
  make_pattern_file(in_dir("grow"), 1500);
  ascope_rt *rt = ascope_rt_new(NULL);
  sctx c = {.chunk = 1000, .rt = rt};
  run r = {.body = body_grow, .p = &c};
  run_file(rt, in_dir("grow"), "r", &r);
  assert_status(&r, 0);
  cr_assert_eq(c.pos, 4000);
  cr_assert_eq(c.bad_bytes, 0);
  cr_assert_eq(c.items, 5); /* 1000, 500; then 1000, 1000, 500 from the restarted read */
  cr_assert_eq(c.finals, 1);
  cr_assert_eq(ascope_rt_free(rt), 0);
}

/* ---- ascope_file_read_into: the caller's buffer ----------------------------- */

struct into {
  char buf[16];
  const char *data[4];
  size_t len[4];
  int status[4], calls;
  int rc_null, rc_mode;
};

static int into_cb(ascope *s, int status, const char *data, size_t len, void *ud) {
  (void)s;
  struct into *x = ud;
  cr_assert_lt(x->calls, 4);
  x->data[x->calls] = data;
  x->len[x->calls] = len;
  x->status[x->calls++] = status;
  return 0;
}

/* One scope over the file with body; x is its record. */
static void run_into(struct into *x, void (*body)(ascope *, run *), const char *path,
                     const char *mode) {
  ascope_rt *rt = ascope_rt_new(NULL);
  memset(x, 0, sizeof *x);
  run r = {.body = body, .p = x};
  run_file(rt, path, mode, &r);
  assert_status(&r, 0);
  cr_assert_eq(ascope_rt_free(rt), 0);
}

static void body_into(ascope *s, run *r) {
  struct into *x = r->p;
  ascope_file *f = file0(s);
  /* in order: a range, a read cut short by the end, one past the end */
  cr_assert_eq(ascope_file_read_into(s, f, x->buf, 5, 6, into_cb, x), 0);
  cr_assert_eq(ascope_file_read_into(s, f, x->buf + 5, 8, 8, into_cb, x), 0);
  cr_assert_eq(ascope_file_read_into(s, f, x->buf + 13, 3, 40, into_cb, x), 0);
  x->rc_null = ascope_file_read_into(s, f, NULL, 3, 0, into_cb, x);
}

Test(file, read_into_fills_the_callers_buffer) {
  put(in_dir("a.txt"), "hello world", 11);
  struct into x;
  run_into(&x, body_into, in_dir("a.txt"), "r");
  cr_assert_eq(x.calls, 3);
  cr_assert_eq(x.rc_null, UV_EINVAL);
  /* each read's own answer, whatever the order the pool finished them in */
  for (int i = 0; i < 3; i++) {
    cr_assert_eq(x.status[i], 0);
    if (x.data[i] == x.buf) {
      cr_assert_eq(x.len[i], 5);
    } else if (x.data[i] == x.buf + 5) {
      cr_assert_eq(x.len[i], 3);
    } else {
      cr_assert_eq(x.data[i], x.buf + 13);
      cr_assert_eq(x.len[i], 0);
    }
  }
  cr_assert_eq(memcmp(x.buf, "worldrld", 8), 0);
}

static void body_into_wrong_mode(ascope *s, run *r) {
  struct into *x = r->p;
  x->rc_mode = ascope_file_read_into(s, file0(s), x->buf, 4, 0, into_cb, x);
}

Test(file, read_into_needs_a_readable_mode) {
  struct into x;
  run_into(&x, body_into_wrong_mode, in_dir("w.txt"), "w");
  cr_assert_eq(x.rc_mode, UV_EBADF);
  cr_assert_eq(x.calls, 0);
}

/* Cancelled while queued behind a busy threadpool: the read never touches
 * the buffer, and its callback runs once, with ECANCELED. */
static void body_into_cancel(ascope *s, run *r) {
  struct into *x = r->p;
  block_pool(ascope_rt_loop(ascope_scope_rt(s))); /* every thread taken: the read waits */
  cr_assert_eq(ascope_file_read_into(s, file0(s), x->buf, 5, 0, into_cb, x), 0);
  ascope_cancel(s);
  unblock_pool(); /* the release's close needs a thread */
}

Test(file, read_into_cancelled_while_queued_leaves_the_buffer_alone, .init = pool_init) {
  put(in_dir("a.txt"), "hello world", 11);
  ascope_rt *rt = ascope_rt_new(NULL);
  struct into x;
  memset(&x, 0, sizeof x);
  memcpy(x.buf, "untouched", 10);
  ascope *s = ascope_new(rt);
  cr_assert_eq(ascope_use_file(s, in_dir("a.txt"), "r"), 0);
  run r = {.body = body_into_cancel, .p = &x};
  cr_assert_eq(start(s, &r), 0);
  cr_assert_eq(ascope_rt_run(rt), 0);
  cr_assert_eq(r.done_calls, 1);
  assert_status(&r, ASCOPE_ECANCELED);
  cr_assert_eq(x.calls, 1);
  cr_assert_eq(x.status[0], ASCOPE_ECANCELED);
  cr_assert_null(x.data[0]);
  cr_assert_str_eq(x.buf, "untouched");
  cr_assert_eq(ascope_rt_free(rt), 0);
}
