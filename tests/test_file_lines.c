/* The file driver's line streams (ascope_file_lines), on real files in a
 * temporary directory: lines cut by every read boundary, empty lines, a
 * last line without a delimiter, CRLF, other delimiters, the line length
 * limit, flow control, cancellation, deadlines, FIFOs, a 64 MiB file in
 * bounded memory, and every refusal. */
#include <criterion/criterion.h>

#include <ascope/file.h>

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <malloc.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "temp_dir.h"

/* ---- the temporary directory --------------------------------------------- */

static char dir[256];

static int rm_entry(const char *p, const struct stat *sb, int flag, struct FTW *ftw) {
  (void)sb, (void)flag, (void)ftw;
  return remove(p);
}

/* In /dev/shm when there is one: a real file system (tmpfs) whose files
 * never wait for a disk. On a machine whose disk is busy with others'
 * writes, the kernel throttles every writer, and writing the 64 MiB test
 * file to /tmp was seen to take minutes. */
static void dir_setup(void) {
  snprintf(dir, sizeof dir, "/dev/shm/ascope-lines-XXXXXX");
  if (mkdtemp(dir)) return;
  cr_assert_not_null(t_temp_dir(dir, sizeof dir, "ascope-lines"));
}

static void dir_teardown(void) {
  nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

TestSuite(lines, .init = dir_setup, .fini = dir_teardown);

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
  cr_assert_geq(fd, 0);
  cr_assert_eq(write(fd, data, len), (ssize_t)len);
  close(fd);
}

/* A one-shot timer: fn(arg) after ms. */
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

/* Heap bytes in use, from the sanitizer's allocator when there is one. */
extern size_t __sanitizer_get_current_allocated_bytes(void) __attribute__((weak));
static size_t heap_now(void) {
  if (__sanitizer_get_current_allocated_bytes) return __sanitizer_get_current_allocated_bytes();
  struct mallinfo2 mi = mallinfo2();
  return mi.uordblks + mi.hblkhd;
}

/* ---- a line stream's record --------------------------------------------------- */

typedef struct lctx lctx;
struct lctx {
  /* set by the test */
  const char *path, *mode, *opts;
  uint64_t timeout;
  int pause_every, stop_after, fail_at, cancel_at;
  bool resume_inside, pause_forever, keep_lines;
  bool (*check)(lctx *c, const char *data, size_t len); /* per line, instead of keeping */
  /* seen */
  ascope_rt *rt;
  ascope *s;
  ascope_op *op;
  char **lines;
  size_t *lens, nlines, cap;
  int items, finals, final_status, pauses, resumes, bad;
  int wrong_calls;    /* a line with a status, after the final call or while paused */
  int items_at_pause; /* to show nothing arrives while paused */
  bool paused;
  int status, done_calls, body_calls, start_rc;
  char msg[600], code[48];
  size_t heap0, heap_peak;
};

static void keep(lctx *c, const char *data, size_t len) {
  if (c->nlines == c->cap) {
    c->cap = c->cap ? c->cap * 2 : 64;
    c->lines = realloc(c->lines, c->cap * sizeof *c->lines);
    c->lens = realloc(c->lens, c->cap * sizeof *c->lens);
  }
  c->lines[c->nlines] = malloc(len + 1);
  memcpy(c->lines[c->nlines], data, len);
  c->lines[c->nlines][len] = '\0';
  c->lens[c->nlines++] = len;
}

static void forget(lctx *c) {
  for (size_t i = 0; i < c->nlines; i++) free(c->lines[i]);
  free(c->lines);
  free(c->lens);
  c->lines = NULL;
  c->lens = NULL;
  c->nlines = c->cap = 0;
}

static void resume_later(void *arg) {
  lctx *c = arg;
  cr_assert_eq(c->items, c->items_at_pause, "a line arrived while paused");
  c->resumes++;
  c->paused = false;
  cr_assert_eq(ascope_op_resume(c->op), 0);
}

static int on_line(ascope *s, int status, const char *data, size_t len, void *ud) {
  lctx *c = ud;
  if (data == NULL) {
    cr_assert_eq(len, 0);
    c->finals++;
    c->final_status = status;
    return status;
  }
  /* Counted, not asserted: Criterion reports every assertion, passing ones
   * too, to its runner (--full-stats), which per line of 64 MiB of lines
   * takes minutes. done() asserts the count. */
  if (status != 0 || c->finals || c->paused) c->wrong_calls++;
  c->items++;
  if (c->check) {
    if (!c->check(c, data, len)) c->bad++;
  } else {
    keep(c, data, len);
  }
  size_t h = heap_now();
  if (h > c->heap_peak) c->heap_peak = h;
  if (c->fail_at && c->items == c->fail_at) return UV_EPROTO;
  if (c->cancel_at && c->items == c->cancel_at) {
    ascope_cancel(s);
    return ASCOPE_CONTINUE;
  }
  if (c->stop_after && c->items == c->stop_after) return ASCOPE_STOP;
  if (c->pause_forever) return ASCOPE_PAUSE;
  if (c->resume_inside && c->items % 2 == 0) {
    if (ascope_op_resume(c->op) != 0) c->wrong_calls++; /* beats the PAUSE below */
    return ASCOPE_PAUSE;
  }
  if (c->pause_every && c->items % c->pause_every == 0) {
    c->pauses++;
    c->paused = true;
    c->items_at_pause = c->items;
    after(c->rt, 1, resume_later, c);
    return ASCOPE_PAUSE;
  }
  return ASCOPE_CONTINUE;
}

static void body(ascope *s, void *ud) {
  lctx *c = ud;
  c->body_calls++;
  c->s = s;
  c->start_rc = ascope_file_lines(s, ascope_resource(s, 0), c->opts, on_line, c, &c->op);
  if (c->start_rc == 0) cr_assert_not_null(c->op);
}

static void done(ascope *s, int status, void *ud) {
  lctx *c = ud;
  cr_assert_eq(c->wrong_calls, 0, "lines with a status, after the end or while paused");
  c->done_calls++;
  c->status = status;
  const ascope_err *e = ascope_error(s);
  cr_assert_eq(e == NULL, status == 0);
  if (e) {
    snprintf(c->msg, sizeof c->msg, "%s", ascope_err_message(e));
    snprintf(c->code, sizeof c->code, "%s", ascope_err_code(e) ? ascope_err_code(e) : "");
  }
}

/* One scope over one file with one line stream, run to the end. */
static void run_lines(ascope_rt *rt, lctx *c) {
  c->rt = rt;
  c->heap0 = c->heap_peak = heap_now();
  ascope *s = ascope_new(rt);
  cr_assert_eq(ascope_use_file(s, c->path, c->mode ? c->mode : "r"), 0);
  if (c->timeout) ascope_set_timeout(s, c->timeout);
  cr_assert_eq(ascope_start(s, body, done, c), 0);
  cr_assert_eq(ascope_rt_run(rt), 0);
  cr_assert_eq(c->done_calls, 1);
}

#define assert_status(c, want)                                                                     \
  cr_assert_eq((c)->status, (want), "status %s (%s), want %s", ascope_err_name((c)->status),       \
               (c)->msg, ascope_err_name(want))

/* The lines seen are exactly want[0..n). */
static void assert_lines(lctx *c, const char *const *want, size_t n, const char *what) {
  cr_assert_eq(c->nlines, n, "%s: %zu lines, want %zu", what, c->nlines, n);
  for (size_t i = 0; i < n; i++) {
    size_t wl = strlen(want[i]);
    cr_assert(c->lens[i] == wl && memcmp(c->lines[i], want[i], wl) == 0,
              "%s: line %zu is '%s' (%zu bytes), want '%s'", what, i, c->lines[i], c->lens[i],
              want[i]);
  }
}

/* Streams `content` with `opts` and checks the lines and a clean end. */
static void expect(ascope_rt *rt, const char *content, const char *opts, const char *const *want,
                   size_t n) {
  put(in_dir("f"), content, strlen(content));
  lctx c = {.path = in_dir("f"), .opts = opts};
  run_lines(rt, &c);
  assert_status(&c, 0);
  cr_assert_eq(c.start_rc, 0);
  cr_assert_eq(c.finals, 1);
  cr_assert_eq(c.final_status, 0);
  assert_lines(&c, want, n, opts ? opts : "(defaults)");
  forget(&c);
}

#define EXPECT(rt, content, opts, ...)                                                             \
  do {                                                                                             \
    static const char *const want_[] = {__VA_ARGS__};                                              \
    expect(rt, content, opts, want_, sizeof want_ / sizeof want_[0]);                              \
  } while (0)

/* ---- what the lines are ------------------------------------------------------ */

Test(lines, simple_lines_empty_lines_and_no_trailing_delimiter) {
  ascope_rt *rt = ascope_rt_new(NULL);
  EXPECT(rt, "one\ntwo\nthree\n", NULL, "one", "two", "three");
  EXPECT(rt, "one\ntwo\nthree", NULL, "one", "two", "three"); /* no trailing \n */
  EXPECT(rt, "\n\n\nx\n\n", NULL, "", "", "", "x", "");
  EXPECT(rt, "\n", NULL, "");
  EXPECT(rt, "x", NULL, "x");
  EXPECT(rt, "a\n\nb", "read_size=1", "a", "", "b");
  cr_assert_eq(ascope_rt_free(rt), 0);
}

Test(lines, an_empty_file_has_no_lines) {
  ascope_rt *rt = ascope_rt_new(NULL);
  put(in_dir("empty"), "", 0);
  lctx c = {.path = in_dir("empty")};
  run_lines(rt, &c);
  assert_status(&c, 0);
  cr_assert_eq(c.items, 0);
  cr_assert_eq(c.finals, 1);
  cr_assert_eq(c.final_status, 0);
  cr_assert_eq(ascope_rt_free(rt), 0);
}

Test(lines, crlf_is_dropped_by_default_and_kept_when_asked) {
  ascope_rt *rt = ascope_rt_new(NULL);
  const char *text = "a\r\nb\r\n\r\nc\rd\n\re\r";
  /* only a \r right before the \n goes; a last line has no delimiter, so
   * its \r stays */
  EXPECT(rt, text, NULL, "a", "b", "", "c\rd", "\re\r");
  EXPECT(rt, text, "read_size=1", "a", "b", "", "c\rd", "\re\r");
  EXPECT(rt, text, "crlf=0", "a\r", "b\r", "\r", "c\rd", "\re\r");
  EXPECT(rt, text, "keep_delim=1", "a\r\n", "b\r\n", "\r\n", "c\rd\n", "\re\r");
  EXPECT(rt, text, "keep_delim=1 read_size=2", "a\r\n", "b\r\n", "\r\n", "c\rd\n", "\re\r");
  /* another delimiter: no \r is dropped unless asked */
  EXPECT(rt, "a\r;b;", "delim=;", "a\r", "b");
  EXPECT(rt, "a\r;b;", "delim=; crlf=1", "a", "b");
  cr_assert_eq(ascope_rt_free(rt), 0);
}

Test(lines, other_delimiters) {
  ascope_rt *rt = ascope_rt_new(NULL);
  EXPECT(rt, "a;b;;c", "delim=;", "a", "b", "", "c");
  EXPECT(rt, "a\nb;c\n;", "delim=;", "a\nb", "c\n");
  EXPECT(rt, "a,b,c", "delim=\\x2c", "a", "b", "c"); /* a comma separates options */
  EXPECT(rt, "a\tb", "delim=\\t", "a", "b");
  EXPECT(rt, "a b", "delim=\\x20", "a", "b");
  EXPECT(rt, "a\rb\r", "delim=\\r", "a", "b");
  EXPECT(rt, "a\\b", "delim=\\\\", "a", "b");
  EXPECT(rt, "a\nb\n", "delim=\\n", "a", "b");
  EXPECT(rt, "aXbX", "delim=X keep_delim=1", "aX", "bX");
  /* NUL-separated, as find -print0 writes */
  put(in_dir("z"), "one\0two words\0\0three", 21);
  static const char *const want[] = {"one", "two words", "", "three"};
  for (int rs = 1; rs <= 8; rs++) {
    char opts[64];
    snprintf(opts, sizeof opts, "delim=\\0 read_size=%d", rs);
    lctx c = {.path = in_dir("z"), .opts = opts};
    run_lines(rt, &c);
    assert_status(&c, 0);
    assert_lines(&c, want, 4, opts);
    forget(&c);
  }
  cr_assert_eq(ascope_rt_free(rt), 0);
}

/* Lines that begin, end or lie exactly on read boundaries. */
Test(lines, lines_exactly_at_read_boundaries) {
  ascope_rt *rt = ascope_rt_new(NULL);
  const char *text = "abcd\nefgh\nijkl\n";
  /* 5: each read is one line; 4: each read after the first begins with a
   * delimiter; 10: two lines a read; 15: the file, then an empty read */
  static const char *const rs[] = {"read_size=5",  "read_size=4",  "read_size=6",
                                   "read_size=10", "read_size=15", "read_size=16"};
  for (size_t i = 0; i < sizeof rs / sizeof rs[0]; i++)
    EXPECT(rt, text, rs[i], "abcd", "efgh", "ijkl");
  /* the \r of a CRLF ends one read, the \n begins the next */
  EXPECT(rt, "ab\r\ncd\r\n", "read_size=3", "ab", "cd");
  EXPECT(rt, "ab\r\ncd\r\n", "read_size=3 crlf=0", "ab\r", "cd\r");
  cr_assert_eq(ascope_rt_free(rt), 0);
}

/* A text of lines of every length from 0 to 40, some CRLF: split here, in
 * the simplest way, and by the stream with every small read size. */
static char *make_text(size_t *len) {
  size_t cap = 4096, n = 0;
  char *t = malloc(cap);
  uint32_t x = 12345;
  for (int line = 0; line < 120; line++) {
    x = x * 1103515245u + 12345u;
    size_t ll = (x >> 16) % 41;
    if (n + ll + 8 > cap) t = realloc(t, cap *= 2); /* room for the tail too */
    for (size_t j = 0; j < ll; j++) t[n++] = (char)('a' + (line + j) % 26);
    if ((x >> 8) % 5 == 0) t[n++] = '\r';
    t[n++] = '\n';
  }
  memcpy(t + n - 1, "tail", 4); /* and a last line without a delimiter */
  n += 3;
  *len = n;
  return t;
}

static size_t reference_split(const char *t, size_t len, bool crlf, bool keep_delim,
                              const char **lines, size_t *lens) {
  size_t n = 0, start = 0;
  for (size_t i = 0; i <= len; i++) {
    if (i < len && t[i] != '\n') continue;
    if (i == len && start == len) break;
    size_t l = i - start;
    if (i < len && keep_delim)
      l++;
    else if (i < len && crlf && l > 0 && t[i - 1] == '\r')
      l--;
    lines[n] = t + start;
    lens[n++] = l;
    start = i + 1;
  }
  return n;
}

Test(lines, lines_across_every_read_boundary) {
  ascope_rt *rt = ascope_rt_new(NULL);
  size_t len;
  char *text = make_text(&len);
  put(in_dir("t"), text, len);
  const char *want[200];
  size_t wlen[200];
  static const char *const modes[] = {"", "crlf=0", "keep_delim=1"};
  static const size_t sizes[] = {1, 2, 3, 4, 5, 7, 8, 13, 16, 40, 41, 42, 64, 100, 4096, 0};
  for (int m = 0; m < 3; m++) {
    size_t n = reference_split(text, len, m != 1, m == 2, want, wlen);
    cr_assert_eq(n, 120);
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
      char opts[64];
      if (sizes[k])
        snprintf(opts, sizeof opts, "%s read_size=%zu", modes[m], sizes[k]);
      else
        snprintf(opts, sizeof opts, "%s", modes[m]);
      lctx c = {.path = in_dir("t"), .opts = opts, .pause_every = sizes[k] == 3 ? 7 : 0};
      run_lines(rt, &c);
      assert_status(&c, 0);
      cr_assert_eq(c.nlines, n, "%s: %zu lines", opts, c.nlines);
      size_t total = 0, i = 0;
      while (i < n && c.lens[i] == wlen[i] && memcmp(c.lines[i], want[i], wlen[i]) == 0)
        total += c.lens[i++];
      /* the message is formatted even when the assertion holds (i == n) */
      cr_assert_eq(i, n, "%s: line %zu is '%s', want '%.*s'", opts, i, i < n ? c.lines[i] : "",
                   i < n ? (int)wlen[i] : 0, i < n ? want[i] : "");
      if (m == 2) cr_assert_eq(total, len, "keep_delim=1: the lines are the file"); /* lossless */
      forget(&c);
    }
  }
  free(text);
  cr_assert_eq(ascope_rt_free(rt), 0);
}

Test(lines, from_an_offset) {
  ascope_rt *rt = ascope_rt_new(NULL);
  EXPECT(rt, "first\nsecond\nthird", "offset=6", "second", "third");
  EXPECT(rt, "first\nsecond\nthird", "offset=8 read_size=2", "cond", "third");
  put(in_dir("f"), "abc\n", 4);
  lctx c = {.path = in_dir("f"), .opts = "offset=100"};
  run_lines(rt, &c);
  assert_status(&c, 0);
  cr_assert_eq(c.items, 0);
  cr_assert_eq(c.finals, 1);
  cr_assert_eq(ascope_rt_free(rt), 0);
}

/* ---- the length limit ------------------------------------------------------- */

/* A line of exactly max_line passes; one byte more ends the stream with
 * UV_E2BIG after every line before it, and a message naming the limit and
 * the line's offset. */
Test(lines, a_line_of_max_passes_and_max_plus_one_fails_with_e2big) {
  ascope_rt *rt = ascope_rt_new(NULL);
  const char *text = "first\n0123456789\n0123456789A\nafter\n";
  static const char *const rs[] = {"",
                                   "read_size=1",
                                   "read_size=3",
                                   "read_size=11",
                                   "read_size=12",
                                   "read_size=17",
                                   "read_size=28"};
  for (size_t i = 0; i < sizeof rs / sizeof rs[0]; i++) {
    char opts[64];
    snprintf(opts, sizeof opts, "max_line=10 %s", rs[i]);
    put(in_dir("f"), text, strlen(text));
    lctx c = {.path = in_dir("f"), .opts = opts};
    run_lines(rt, &c);
    static const char *const want[] = {"first", "0123456789"};
    assert_lines(&c, want, 2, opts);
    cr_assert_eq(c.finals, 1);
    cr_assert_eq(c.final_status, UV_E2BIG);
    assert_status(&c, UV_E2BIG);
    cr_assert_str_eq(c.code, "E2BIG");
    cr_assert(strstr(c.msg, "line longer than 10 bytes at offset 17") != NULL, "message: %s",
              c.msg);
    cr_assert(strstr(c.msg, in_dir("f")) != NULL, "the message names the file: %s", c.msg);
    forget(&c);
  }
  /* a last line without a delimiter is held to the same limit */
  EXPECT(rt, "0123456789", "max_line=10", "0123456789");
  EXPECT(rt, "0123456789", "max_line=10 read_size=4", "0123456789");
  put(in_dir("f"), "ab\n0123456789A", 14);
  lctx c = {.path = in_dir("f"), .opts = "max_line=10 read_size=4"};
  run_lines(rt, &c);
  assert_status(&c, UV_E2BIG);
  cr_assert_eq(c.nlines, 1);
  cr_assert(strstr(c.msg, "at offset 3") != NULL, "%s", c.msg);
  forget(&c);
  cr_assert_eq(ascope_rt_free(rt), 0);
}

Test(lines, the_limit_counts_what_the_caller_gets) {
  ascope_rt *rt = ascope_rt_new(NULL);
  /* a dropped \r does not count; a kept one does */
  EXPECT(rt, "0123456789\r\n", "max_line=10", "0123456789");
  EXPECT(rt, "0123456789\r\n", "max_line=10 read_size=5", "0123456789");
  EXPECT(rt, "0123456789\r\n", "max_line=10 read_size=11", "0123456789");
  EXPECT(rt, "0123456789\n", "max_line=10 keep_delim=1", "0123456789\n");
  put(in_dir("f"), "0123456789\r\n", 12);
  static const char *const opts[] = {"max_line=10 crlf=0", "max_line=10 crlf=0 read_size=5"};
  for (int i = 0; i < 2; i++) {
    lctx c = {.path = in_dir("f"), .opts = opts[i]};
    run_lines(rt, &c);
    assert_status(&c, UV_E2BIG);
    cr_assert_eq(c.items, 0);
  }
  /* without a \r behind it, the byte the \r allowance would take fails */
  put(in_dir("f"), "0123456789AB\n", 13);
  lctx c = {.path = in_dir("f"), .opts = "max_line=10 read_size=3"};
  run_lines(rt, &c);
  assert_status(&c, UV_E2BIG);
  cr_assert_eq(ascope_rt_free(rt), 0);
}

/* A handled E2BIG (the final call returns 0) does not fail the scope. */
static int swallow(ascope *s, int status, const char *data, size_t len, void *ud) {
  lctx *c = ud;
  int rc = on_line(s, status, data, len, ud);
  return data == NULL && c->final_status == UV_E2BIG ? 0 : rc;
}

static void body_swallow(ascope *s, void *ud) {
  lctx *c = ud;
  c->s = s;
  cr_assert_eq(ascope_file_lines(s, ascope_resource(s, 0), c->opts, swallow, c, &c->op), 0);
}

/* /dev/zero never has a newline: the stream ends at max_line, having held
 * no more than max_line of it. */
Test(lines, an_endless_line_fails_in_bounded_memory) {
  ascope_rt *rt = ascope_rt_new(NULL);
  lctx c = {.rt = rt, .opts = "max_line=1000000 read_size=65536"};
  c.heap0 = c.heap_peak = heap_now();
  ascope *s = ascope_new(rt);
  cr_assert_eq(ascope_use_file(s, "/dev/zero", "r"), 0);
  cr_assert_eq(ascope_start(s, body_swallow, done, &c), 0);
  cr_assert_eq(ascope_rt_run(rt), 0);
  cr_assert_eq(c.done_calls, 1);
  assert_status(&c, 0);
  cr_assert_eq(c.items, 0);
  cr_assert_eq(c.finals, 1);
  cr_assert_eq(c.final_status, UV_E2BIG);
  cr_assert_eq(ascope_rt_free(rt), 0);
}

/* ---- flow control -------------------------------------------------------------- */

/* Lines of a 1 MiB-ish text, each checked without being kept: line i is
 * "<i>:" then letters, i % 97 of them. */
static size_t numbered_line(uint64_t i, char *out) {
  int n = sprintf(out, "%llu:", (unsigned long long)i);
  size_t len = (size_t)n + i % 97;
  for (size_t j = (size_t)n; j < len; j++) out[j] = (char)('a' + (i + j) % 26);
  return len;
}

static size_t make_numbered(const char *path, uint64_t nlines) {
  FILE *f = fopen(path, "w");
  cr_assert_not_null(f);
  char b[256];
  size_t total = 0, put_n = 0; /* checked once: see wrong_calls */
  for (uint64_t i = 0; i < nlines; i++) {
    size_t n = numbered_line(i, b);
    b[n++] = '\n';
    put_n += fwrite(b, 1, n, f);
    total += n;
  }
  cr_assert_eq(fclose(f), 0);
  cr_assert_eq(put_n, total);
  return total;
}

static bool check_numbered(lctx *c, const char *data, size_t len) {
  char b[256];
  size_t n = numbered_line((uint64_t)c->items - 1, b);
  return n == len && memcmp(b, data, n) == 0;
}

Test(lines, pause_resume_and_resume_inside) {
  ascope_rt *rt = ascope_rt_new(NULL);
  make_numbered(in_dir("n"), 20000);
  lctx c = {
      .path = in_dir("n"), .opts = "read_size=65536", .pause_every = 997, .check = check_numbered};
  run_lines(rt, &c);
  assert_status(&c, 0);
  cr_assert_eq(c.items, 20000);
  cr_assert_eq(c.bad, 0);
  cr_assert_eq(c.pauses, 20);
  cr_assert_eq(c.resumes, c.pauses);
  cr_assert_eq(c.finals, 1);
  lctx c2 = {
      .path = in_dir("n"), .opts = "read_size=100", .resume_inside = true, .check = check_numbered};
  run_lines(rt, &c2);
  assert_status(&c2, 0);
  cr_assert_eq(c2.items, 20000);
  cr_assert_eq(c2.bad, 0);
  cr_assert_eq(ascope_rt_free(rt), 0);
}

/* Pausing on the last line holds the final call until the resume. */
static bool pause_last_seen;
static int pause_on_last(ascope *s, int status, const char *data, size_t len, void *ud) {
  lctx *c = ud;
  int rc = on_line(s, status, data, len, ud);
  if (data && len == 4 && memcmp(data, "last", 4) == 0) {
    pause_last_seen = true;
    c->paused = true;
    c->items_at_pause = c->items;
    after(c->rt, 20, resume_later, c);
    return ASCOPE_PAUSE;
  }
  if (data == NULL) cr_assert_eq(c->resumes, 1, "the final call waited for the resume");
  return rc;
}

static void body_pause_last(ascope *s, void *ud) {
  lctx *c = ud;
  cr_assert_eq(ascope_file_lines(s, ascope_resource(s, 0), c->opts, pause_on_last, c, &c->op), 0);
}

Test(lines, a_pause_on_the_last_line_holds_the_end) {
  static const char *const texts[] = {"a\nlast", "a\nlast\n"};
  for (int i = 0; i < 2; i++) {
    ascope_rt *rt = ascope_rt_new(NULL);
    put(in_dir("f"), texts[i], strlen(texts[i]));
    lctx c = {.rt = rt, .opts = "read_size=3"};
    ascope *s = ascope_new(rt);
    cr_assert_eq(ascope_use_file(s, in_dir("f"), "r"), 0);
    pause_last_seen = false;
    cr_assert_eq(ascope_start(s, body_pause_last, done, &c), 0);
    cr_assert_eq(ascope_rt_run(rt), 0);
    assert_status(&c, 0);
    cr_assert(pause_last_seen);
    cr_assert_eq(c.items, 2);
    cr_assert_eq(c.finals, 1);
    forget(&c);
    cr_assert_eq(ascope_rt_free(rt), 0);
  }
}

Test(lines, stop_ends_with_success_and_an_error_fails_the_scope) {
  ascope_rt *rt = ascope_rt_new(NULL);
  make_numbered(in_dir("n"), 1000);
  lctx c = {.path = in_dir("n"), .stop_after = 10, .check = check_numbered};
  run_lines(rt, &c);
  assert_status(&c, 0);
  cr_assert_eq(c.items, 10);
  cr_assert_eq(c.bad, 0);
  cr_assert_eq(c.finals, 1);
  cr_assert_eq(c.final_status, 0);
  lctx c2 = {.path = in_dir("n"), .fail_at = 5, .opts = "read_size=7", .check = check_numbered};
  run_lines(rt, &c2);
  assert_status(&c2, UV_EPROTO);
  cr_assert_eq(c2.items, 5);
  cr_assert_eq(c2.finals, 1);
  cr_assert_eq(c2.final_status, UV_EPROTO);
  cr_assert_eq(ascope_rt_free(rt), 0);
}

/* ---- cancellation and deadlines ---------------------------------------------- */

Test(lines, cancelled_mid_file_delivers_nothing_more) {
  ascope_rt *rt = ascope_rt_new(NULL);
  make_numbered(in_dir("n"), 100000);
  lctx c = {.path = in_dir("n"), .cancel_at = 500, .check = check_numbered};
  run_lines(rt, &c);
  assert_status(&c, ASCOPE_ECANCELED);
  cr_assert_eq(c.items, 500);
  cr_assert_eq(c.finals, 1);
  cr_assert_eq(c.final_status, ASCOPE_ECANCELED);
  cr_assert_eq(ascope_rt_free(rt), 0);
}

static void cancel_scope(void *s) {
  ascope_cancel(s);
}

/* Cancels once the stream has paused, whenever that is. */
static int pause_then_cancel(ascope *s, int status, const char *data, size_t len, void *ud) {
  lctx *c = ud;
  int rc = on_line(s, status, data, len, ud);
  if (data && c->items == 1) after(c->rt, 10, cancel_scope, s);
  return rc;
}

static void body_pause_cancel(ascope *s, void *ud) {
  lctx *c = ud;
  cr_assert_eq(ascope_file_lines(s, ascope_resource(s, 0), NULL, pause_then_cancel, c, &c->op), 0);
}

Test(lines, cancelled_while_paused) {
  ascope_rt *rt = ascope_rt_new(NULL);
  make_numbered(in_dir("n"), 100000);
  lctx c = {.rt = rt, .pause_forever = true, .check = check_numbered};
  ascope *s = ascope_new(rt);
  cr_assert_eq(ascope_use_file(s, in_dir("n"), "r"), 0);
  cr_assert_eq(ascope_start(s, body_pause_cancel, done, &c), 0);
  cr_assert_eq(ascope_rt_run(rt), 0);
  assert_status(&c, ASCOPE_ECANCELED);
  cr_assert_eq(c.items, 1);
  cr_assert_eq(c.finals, 1);
  cr_assert_eq(c.final_status, ASCOPE_ECANCELED);
  cr_assert_eq(ascope_rt_free(rt), 0);
}

Test(lines, a_deadline_ends_a_paused_stream) {
  ascope_rt *rt = ascope_rt_new(NULL);
  make_numbered(in_dir("n"), 100000);
  lctx c = {.path = in_dir("n"), .pause_forever = true, .timeout = 200, .check = check_numbered};
  uint64_t t0 = uv_hrtime();
  run_lines(rt, &c);
  assert_status(&c, ASCOPE_ETIMEDOUT);
  cr_assert_geq((uv_hrtime() - t0) / 1000000, 190);
  /* one line, then the pause until the deadline; none on a machine so busy
   * that the deadline came before the first read did */
  cr_assert_leq(c.items, 1);
  cr_assert_eq(c.finals, 1);
  cr_assert_eq(c.final_status, ASCOPE_ECANCELED);
  cr_assert_eq(ascope_rt_free(rt), 0);
}

/* ---- pipes -------------------------------------------------------------------- */

/* A writer thread sends the numbered lines in pieces that cut them anywhere. */
static void *fifo_writer(void *arg) {
  const char *path = arg;
  int fd = open(path, O_WRONLY);
  char b[256];
  for (uint64_t i = 0; i < 3000; i++) {
    size_t n = numbered_line(i, b);
    b[n++] = '\n';
    size_t cut = i % (n + 1);
    if (write(fd, b, cut) != (ssize_t)cut || write(fd, b + cut, n - cut) != (ssize_t)(n - cut))
      break;
  }
  close(fd);
  return NULL;
}

Test(lines, a_fifo_is_read_in_order_to_the_end) {
  cr_assert_eq(mkfifo(in_dir("fifo"), 0600), 0);
  static char path[512];
  snprintf(path, sizeof path, "%s", in_dir("fifo"));
  pthread_t t;
  pthread_create(&t, NULL, fifo_writer, path);
  ascope_rt *rt = ascope_rt_new(NULL);
  lctx c = {.path = path, .opts = "read_size=100", .pause_every = 101, .check = check_numbered};
  run_lines(rt, &c);
  pthread_join(t, NULL);
  assert_status(&c, 0);
  cr_assert_eq(c.items, 3000);
  cr_assert_eq(c.bad, 0);
  cr_assert_eq(c.finals, 1);
  cr_assert_eq(ascope_rt_free(rt), 0);
}

/* ---- memory -------------------------------------------------------------------- */

/* 64 MiB of lines, with now and then a line of 100 KiB that crosses reads:
 * the heap grows by the stream's bound and no more. */
static size_t big_line(uint64_t i, char *out) {
  if (i % 5000 == 4999) {
    memset(out, 'x', 100000);
    return 100000;
  }
  return numbered_line(i, out);
}

static bool check_big(lctx *c, const char *data, size_t len) {
  static char b[100001];
  size_t n = big_line((uint64_t)c->items - 1, b);
  return n == len && memcmp(b, data, n) == 0;
}

Test(lines, a_64mib_file_of_lines_with_pauses_in_bounded_memory) {
  size_t size = 64u << 20, total = 0;
  uint64_t nlines = 0;
  FILE *f = fopen(in_dir("big"), "w");
  cr_assert_not_null(f);
  static char b[100002];
  size_t put_n = 0; /* checked once: see wrong_calls */
  while (total < size) {
    size_t n = big_line(nlines++, b);
    b[n++] = '\n';
    put_n += fwrite(b, 1, n, f);
    total += n;
  }
  cr_assert_eq(fclose(f), 0);
  cr_assert_eq(put_n, total);
  ascope_rt *rt = ascope_rt_new(NULL);
  const char *opts = "max_line=131072";
  lctx c = {.path = in_dir("big"), .opts = opts, .pause_every = 9973, .check = check_big};
  run_lines(rt, &c);
  unlink(in_dir("big")); /* now: a failed assertion below may skip the clean-up */
  assert_status(&c, 0);
  cr_assert_eq((uint64_t)c.items, nlines);
  cr_assert_eq(c.bad, 0, "lines out of order or damaged");
  cr_assert_gt(c.pauses, 0);
  cr_assert_eq(c.resumes, c.pauses);
  cr_assert_eq(c.finals, 1);
  size_t bound = ascope_file_lines_memory(opts);
  size_t heap = c.heap_peak - c.heap0;
  fprintf(stderr, "lines, %zu bytes: heap +%zu (bound %zu)\n", total, heap, bound);
  cr_assert_leq(heap, bound + (256u << 10), "heap grew by %zu, the bound is %zu", heap, bound);
  cr_assert_eq(ascope_rt_free(rt), 0);
}

Test(lines, the_memory_bound) {
  cr_assert_eq(ascope_file_lines_memory(NULL), 2 * (2u << 20) + 65536 + 2);
  cr_assert_eq(ascope_file_lines_memory("read_size=4096 max_line=100"), 2 * 4096 + 102);
  cr_assert_eq(ascope_file_lines_memory("max_line=0"), 0);
}

/* ---- refusals and errors --------------------------------------------------------- */

static const char *const bad_opts[] = {
    "delim=",
    "delim=ab",
    "delim=\\q",
    "delim=\\x4",
    "delim=\\xg0",
    "delim=\\x411",
    "delim=\\nn",
    "delim",
    "max_line=0",
    "read_size=0",
    "max_line=-1",
    "offset=-1",
    "bogus=1",
    "crlf=maybe",
    "keep_delim=2",
    "delim=; delim=;",
    "max_line=1073741825",
    "read_size=1073741825",
    "offset=1x",
    "max_line=10 max_line=10",
};

static void body_refusals(ascope *s, void *ud) {
  lctx *c = ud;
  ascope_file *f = ascope_resource(s, 0);
  for (size_t i = 0; i < sizeof bad_opts / sizeof bad_opts[0]; i++) {
    cr_assert_eq(ascope_file_lines(s, f, bad_opts[i], on_line, c, NULL), UV_EINVAL, "%s",
                 bad_opts[i]);
    cr_assert_eq(ascope_file_lines_memory(bad_opts[i]), 0, "%s", bad_opts[i]);
  }
  cr_assert_eq(ascope_file_lines(s, f, NULL, NULL, c, NULL), UV_EINVAL);
  cr_assert_eq(ascope_file_lines(NULL, f, NULL, on_line, c, NULL), UV_EINVAL);
  cr_assert_eq(ascope_file_lines(s, NULL, NULL, on_line, c, NULL), UV_EINVAL);
  cr_assert_eq(ascope_file_lines(s, (ascope_file *)c, NULL, on_line, c, NULL), UV_EINVAL);
  /* separators and an empty string are fine */
  cr_assert_eq(ascope_file_lines(s, f, "", on_line, c, NULL), 0);
  cr_assert_eq(ascope_file_lines(s, f, " delim=;,max_line=5\tcrlf=yes ", on_line, c + 1, NULL), 0);
}

Test(lines, bad_options_and_arguments_are_refused) {
  ascope_rt *rt = ascope_rt_new(NULL);
  put(in_dir("f"), "a\n", 2);
  lctx c[2] = {{.rt = rt}, {.rt = rt}}; /* the two streams that start */
  ascope *s = ascope_new(rt);
  cr_assert_eq(ascope_use_file(s, in_dir("f"), "r"), 0);
  cr_assert_eq(ascope_start(s, body_refusals, done, c), 0);
  cr_assert_eq(ascope_rt_run(rt), 0);
  assert_status(&c[0], 0);
  static const char *const want0[] = {"a"}, *const want1[] = {"a\n"};
  assert_lines(&c[0], want0, 1, "defaults");
  assert_lines(&c[1], want1, 1, "delim=;");
  cr_assert_eq(c[0].finals + c[1].finals, 2);
  forget(&c[0]);
  forget(&c[1]);
  /* a file opened for writing only */
  lctx w = {.path = in_dir("w"), .mode = "w"};
  run_lines(rt, &w);
  cr_assert_eq(w.start_rc, UV_EBADF);
  assert_status(&w, 0);
  cr_assert_eq(w.items + w.finals, 0);
  cr_assert_eq(ascope_rt_free(rt), 0);
}

Test(lines, a_file_that_does_not_exist) {
  ascope_rt *rt = ascope_rt_new(NULL);
  lctx c = {.path = in_dir("missing")};
  run_lines(rt, &c);
  assert_status(&c, UV_ENOENT);
  cr_assert_eq(c.body_calls, 0);
  cr_assert_eq(c.items + c.finals, 0);
  cr_assert(strstr(c.msg, "missing") != NULL, "%s", c.msg);
  cr_assert_eq(ascope_rt_free(rt), 0);
}

/* Back-pressure: a paused stream reads nothing more. A writer thread fills a
 * FIFO without blocking; once the stream pauses, the pipe fills and the
 * writer sees EAGAIN, having written no more than the pipe holds plus the
 * one read the stream made. A stream that read on would drain the pipe and
 * let the writer write on. */
static struct {
  _Atomic size_t written;
  _Atomic bool blocked;
  uv_timer_t check;
  ascope *s;
  size_t bound;
  bool checked;
  const int *items; /* the stream's lines delivered so far */
} bp;

static void *bp_writer(void *arg) {
  const char *path = arg;
  int fd = open(path, O_WRONLY); /* returns once the stream's open has */
  if (fd < 0) return NULL;
  fcntl(fd, F_SETFL, O_NONBLOCK);
  char line[100];
  memset(line, 'x', sizeof line - 1);
  line[sizeof line - 1] = '\n';
  while (bp.written < (4u << 20)) {
    ssize_t n = write(fd, line, sizeof line); /* under PIPE_BUF: all or nothing */
    if (n > 0) {
      bp.written += (size_t)n;
    } else if (errno == EAGAIN) {
      bp.blocked = true;
      struct pollfd p = {.fd = fd, .events = POLLOUT};
      poll(&p, 1, -1);
    } else {
      break; /* EPIPE: the stream closed the FIFO */
    }
  }
  close(fd);
  return NULL;
}

/* Waits for the condition (the writer blocked), checks, then ends it all. */
static void bp_check(uv_timer_t *t) {
  /* both states: the writer blocked, and the stream paused on its first
   * line (a busy machine may open the FIFO late) */
  if (!bp.blocked || *bp.items < 1) return;
  size_t w = bp.written;
  cr_assert_leq(w, bp.bound, "the writer got %zu bytes in, the bound is %zu", w, bp.bound);
  bp.checked = true;
  uv_timer_stop(t);
  uv_close((uv_handle_t *)t, NULL);
  ascope_cancel(bp.s);
}

static void body_bp(ascope *s, void *ud) {
  body(s, ud);
  bp.s = s;
  uv_timer_init(ascope_rt_loop(ascope_scope_rt(s)), &bp.check);
  uv_timer_start(&bp.check, bp_check, 2, 2);
}

Test(lines, a_paused_stream_reads_nothing_more) {
  signal(SIGPIPE, SIG_IGN);
  cr_assert_eq(mkfifo(in_dir("fifo"), 0600), 0);
  static char path[512];
  snprintf(path, sizeof path, "%s", in_dir("fifo"));
  /* the pipe's capacity, asked of a pipe like the FIFO's */
  int p[2];
  cr_assert_eq(pipe(p), 0);
  int cap = fcntl(p[0], F_GETPIPE_SZ);
  close(p[0]);
  close(p[1]);
  cr_assert_gt(cap, 0);
  bp.bound = (size_t)cap + 4096 + 100;
  pthread_t t;
  pthread_create(&t, NULL, bp_writer, path);
  ascope_rt *rt = ascope_rt_new(NULL);
  lctx c = {.rt = rt, .opts = "read_size=4096", .pause_forever = true};
  bp.items = &c.items;
  ascope *s = ascope_new(rt);
  cr_assert_eq(ascope_use_file(s, path, "r"), 0);
  cr_assert_eq(ascope_start(s, body_bp, done, &c), 0);
  cr_assert_eq(ascope_rt_run(rt), 0);
  pthread_join(t, NULL);
  cr_assert(bp.checked);
  assert_status(&c, ASCOPE_ECANCELED);
  cr_assert_eq(c.items, 1);
  cr_assert_eq(c.finals, 1);
  forget(&c);
  cr_assert_eq(ascope_rt_free(rt), 0);
}
