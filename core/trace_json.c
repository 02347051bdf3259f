/* The Chrome / Perfetto trace-event writer: {"traceEvents":[...]}.
 *
 * Tracks: each top-level scope tree is a process (pid), each scope in it a
 * thread (tid) named "<name> #<id>", and a scope's operations, which may
 * overlap one another, go to extra "ops" threads of the scope, one per
 * operation in flight at once. On a scope's own thread everything nests:
 * the scope's "B"/"E" span holds its acquires, its body, its releases, one
 * after the other, and instants ("i") mark deadlines, cancels and errors.
 * Operations are complete events ("X") written when they end.
 *
 * The writer knows which spans are open, so it writes an "E" only for a
 * "B" it wrote, and at close ends every open span ("unfinished": true):
 * the file is balanced and valid JSON whatever state the program was in,
 * and whenever tracing was turned on. */
#include "internal.h"

#include <errno.h>
#include <stdio.h>

/* ---- a map from ids to records (open addressing, linear probing) -------- */

struct map {
  uint64_t *keys; /* 0: empty; ids start at 1 */
  void **vals;
  size_t cap, n;
};

static size_t map_home(const struct map *m, uint64_t k) {
  return (size_t)((k * 0x9E3779B97F4A7C15ull) >> 32) & (m->cap - 1);
}

static void *map_get(const struct map *m, uint64_t k) {
  if (m->cap == 0) return NULL;
  for (size_t i = map_home(m, k);; i = (i + 1) & (m->cap - 1)) {
    if (m->keys[i] == k) return m->vals[i];
    if (m->keys[i] == 0) return NULL;
  }
}

static void map_insert(struct map *m, uint64_t k, void *v) {
  size_t i = map_home(m, k);
  while (m->keys[i]) i = (i + 1) & (m->cap - 1);
  m->keys[i] = k;
  m->vals[i] = v;
  m->n++;
}

static int map_put(struct map *m, uint64_t k, void *v) {
  if ((m->n + 1) * 2 > m->cap) {
    struct map g = {NULL, NULL, m->cap ? m->cap * 2 : 64, 0};
    g.keys = ascope__malloc(g.cap * sizeof *g.keys);
    g.vals = ascope__malloc(g.cap * sizeof *g.vals);
    if (g.keys == NULL || g.vals == NULL) {
      ascope__free(g.keys);
      ascope__free(g.vals);
      return UV_ENOMEM;
    }
    memset(g.keys, 0, g.cap * sizeof *g.keys);
    for (size_t i = 0; i < m->cap; i++)
      if (m->keys[i]) map_insert(&g, m->keys[i], m->vals[i]);
    ascope__free(m->keys);
    ascope__free(m->vals);
    *m = g;
  }
  map_insert(m, k, v);
  return 0;
}

/* Deletes by shifting the entries behind back, so lookups need no
 * tombstones and the table never clogs. */
static void map_del(struct map *m, uint64_t k) {
  if (m->cap == 0) return;
  size_t mask = m->cap - 1, i = map_home(m, k);
  while (m->keys[i] != k) {
    if (m->keys[i] == 0) return;
    i = (i + 1) & mask;
  }
  m->keys[i] = 0;
  m->n--;
  for (size_t j = (i + 1) & mask; m->keys[j]; j = (j + 1) & mask) {
    size_t h = map_home(m, m->keys[j]);
    /* the entry at j may move to the hole at i unless its home lies in (i, j] */
    bool stays = i <= j ? (h > i && h <= j) : (h > i || h <= j);
    if (stays) continue;
    m->keys[i] = m->keys[j];
    m->vals[i] = m->vals[j];
    m->keys[j] = 0;
    i = j;
  }
}

/* ---- the writer ------------------------------------------------------------ */

#define LABEL_CAP 64

struct jlane { /* an "ops" thread of a scope */
  unsigned tid;
  uint64_t op; /* the operation on it, 0: free */
};

struct jscope {
  uint64_t id;
  unsigned pid, tid;
  bool open_scope, open_body, open_phase;
  char label[LABEL_CAP]; /* "<name> #<id>" */
  struct jlane *lanes;
  size_t nlanes, lanes_cap;
  struct jscope *next_free;
};

struct jop {
  uint64_t id, begin_ns;
  struct jscope *scope;
  size_t lane;
  const char *driver; /* a driver's static name */
  struct jop *next_free;
};

struct ascope_trace_json {
  FILE *f;
  ascope_rt *rt; /* NULL: not installed, or the runtime is gone */
  uint64_t t0, last_ns;
  unsigned next_track;
  bool first;
  bool args_open; /* inside an event's "args" object */
  int err;        /* the first write error */
  char *out;      /* OUT_CAP bytes */
  size_t nout;
  uint64_t dropped; /* events lost for want of memory */
  struct map scopes, ops;
  struct jscope *free_scopes;
  struct jop *free_ops;
};

/* ---- output ------------------------------------------------------------------ */

/* The length of a valid UTF-8 sequence at s, or 0: JSON must be UTF-8, and
 * a path or a message may not be. */
static size_t utf8_seq(const unsigned char *s) {
  unsigned c = s[0];
  if (c < 0x80) return 1;
  size_t n;
  unsigned lo = 0x80, hi = 0xBF;
  if (c >= 0xC2 && c <= 0xDF)
    n = 2;
  else if (c >= 0xE0 && c <= 0xEF)
    n = 3, lo = c == 0xE0 ? 0xA0 : 0x80, hi = c == 0xED ? 0x9F : 0xBF;
  else if (c >= 0xF0 && c <= 0xF4)
    n = 4, lo = c == 0xF0 ? 0x90 : 0x80, hi = c == 0xF4 ? 0x8F : 0xBF;
  else
    return 0;
  if (s[1] < lo || s[1] > hi) return 0;
  for (size_t i = 2; i < n; i++)
    if (s[i] < 0x80 || s[i] > 0xBF) return 0;
  return n;
}

/* Output goes through the writer's own 64 KiB buffer, handed to stdio
 * whole: an event is a dozen short pieces, and a stdio call per piece
 * (with its lock, and printf's parsing) cost more than the rest of the
 * writer together. */
#define OUT_CAP (1 << 16)

static void out_flush(ascope_trace_json *w) {
  if (w->nout && fwrite(w->out, 1, w->nout, w->f) != w->nout && w->err == 0)
    w->err = errno ? -errno : UV_EIO;
  w->nout = 0;
}

static void out(ascope_trace_json *w, const char *s, size_t n) {
  if (n > OUT_CAP - w->nout) {
    out_flush(w);
    if (n > OUT_CAP) {
      if (fwrite(s, 1, n, w->f) != n && w->err == 0) w->err = errno ? -errno : UV_EIO;
      return;
    }
  }
  memcpy(w->out + w->nout, s, n);
  w->nout += n;
}

static void outs(ascope_trace_json *w, const char *s) {
  out(w, s, strlen(s));
}

static void outc(ascope_trace_json *w, char c) {
  if (w->nout == OUT_CAP) out_flush(w);
  w->out[w->nout++] = c;
}

static void outu(ascope_trace_json *w, uint64_t v) {
  char buf[24], *p = buf + sizeof buf;
  do *--p = (char)('0' + v % 10);
  while ((v /= 10) != 0);
  out(w, p, (size_t)(buf + sizeof buf - p));
}

/* Nanoseconds as microseconds with three decimals: the format's unit,
 * nothing of the clock's precision lost, no floating point. */
static void out_us(ascope_trace_json *w, uint64_t ns) {
  outu(w, ns / 1000);
  char frac[4] = {'.', (char)('0' + ns / 100 % 10), (char)('0' + ns / 10 % 10),
                  (char)('0' + ns % 10)};
  out(w, frac, 4);
}

static void jstr(ascope_trace_json *w, const char *s) {
  static const char hex[] = "0123456789abcdef";
  outc(w, '"');
  const unsigned char *p = (const unsigned char *)(s ? s : "");
  while (*p) {
    if (*p == '"' || *p == '\\') {
      outc(w, '\\');
      outc(w, (char)*p++);
    } else if (*p < 0x20) {
      char esc[6] = {'\\', 'u', '0', '0', hex[*p >> 4], hex[*p & 15]};
      out(w, esc, 6);
      p++;
    } else if (*p < 0x80) { /* a run of plain ASCII, copied at once */
      const unsigned char *q = p + 1;
      while (*q >= 0x20 && *q < 0x80 && *q != '"' && *q != '\\') q++;
      out(w, (const char *)p, (size_t)(q - p));
      p = q;
    } else {
      size_t n = utf8_seq(p);
      if (n == 0) {
        outs(w, "\\ufffd");
        p++;
      } else {
        out(w, (const char *)p, n);
        p += n;
      }
    }
  }
  outc(w, '"');
}

static void ts_us(ascope_trace_json *w, uint64_t ns) {
  out_us(w, ns > w->t0 ? ns - w->t0 : 0);
}

/* Begins an event object up to its args: `{"ph":..,"cat":..,"name":..`.
 * ph and cat are the writer's own literals: no escaping needed. */
static void ev_head(ascope_trace_json *w, const char *ph, const char *cat, const char *name,
                    const char *name2, unsigned pid, unsigned tid) {
  outs(w, w->first ? "\n{\"ph\":\"" : ",\n{\"ph\":\"");
  w->first = false;
  outs(w, ph);
  outs(w, "\",\"pid\":");
  outu(w, pid);
  outs(w, ",\"tid\":");
  outu(w, tid);
  if (cat) {
    outs(w, ",\"cat\":\"");
    outs(w, cat);
    outc(w, '"');
  }
  if (name) {
    outs(w, ",\"name\":");
    if (name2) {
      char buf[LABEL_CAP + 32];
      snprintf(buf, sizeof buf, "%s%s", name, name2);
      jstr(w, buf);
    } else {
      jstr(w, name);
    }
  }
}

/* The real-time events of a thread (B, E, i) get strictly increasing
 * timestamps: two events in the same nanosecond would otherwise sort in
 * either order, and a viewer could end a span before it began. */
static void ev_ts(ascope_trace_json *w, uint64_t ns) {
  if (ns <= w->last_ns) ns = w->last_ns + 1;
  w->last_ns = ns;
  outs(w, ",\"ts\":");
  ts_us(w, ns);
}

static void arg_key(ascope_trace_json *w, const char *k) {
  outs(w, w->args_open ? ",\"" : ",\"args\":{\"");
  w->args_open = true;
  outs(w, k); /* the writer's own literals */
  outs(w, "\":");
}
static void arg_str(ascope_trace_json *w, const char *k, const char *v) {
  if (v == NULL) return;
  arg_key(w, k);
  jstr(w, v);
}
static void arg_u64(ascope_trace_json *w, const char *k, uint64_t v) {
  arg_key(w, k);
  outu(w, v);
}
static void arg_status(ascope_trace_json *w, const char *k, int status) {
  arg_key(w, k);
  jstr(w, status ? ascope_err_name(status) : "OK");
}
static void arg_true(ascope_trace_json *w, const char *k) {
  arg_key(w, k);
  outs(w, "true");
}
static void ev_end(ascope_trace_json *w) {
  outs(w, w->args_open ? "}}" : "}");
  w->args_open = false;
}

static void meta(ascope_trace_json *w, const char *what, unsigned pid, unsigned tid,
                 const char *name, unsigned sort) {
  ev_head(w, "M", NULL, what, NULL, pid, tid);
  arg_str(w, "name", name);
  ev_end(w);
  ev_head(w, "M", NULL, tid ? "thread_sort_index" : "process_sort_index", NULL, pid, tid);
  arg_u64(w, "sort_index", sort);
  ev_end(w);
}

/* ---- scopes and lanes ------------------------------------------------------ */

static struct jscope *scope_of(ascope_trace_json *w, const ascope_trace_event *ev) {
  struct jscope *j = map_get(&w->scopes, ev->scope_id);
  if (j) return j;
  /* The first event of a scope: its SCOPE_BEGIN, or any event of a scope
   * that began before the writer. */
  j = w->free_scopes;
  if (j) {
    w->free_scopes = j->next_free;
  } else {
    j = ascope__malloc(sizeof *j);
    if (j == NULL) return NULL;
    memset(j, 0, sizeof *j);
  }
  if (map_put(&w->scopes, ev->scope_id, j)) {
    j->next_free = w->free_scopes;
    w->free_scopes = j;
    return NULL;
  }
  j->id = ev->scope_id;
  j->open_scope = j->open_body = j->open_phase = false;
  j->nlanes = 0;
  snprintf(j->label, sizeof j->label, "%.46s #%llu", ev->scope_name ? ev->scope_name : "scope",
           (unsigned long long)ev->scope_id);
  j->tid = ++w->next_track;
  struct jscope *parent = ev->parent_id ? map_get(&w->scopes, ev->parent_id) : NULL;
  if (parent) {
    j->pid = parent->pid;
  } else {
    j->pid = j->tid; /* a new tree: its root's thread is the process's main one */
    meta(w, "process_name", j->pid, 0, j->label, j->pid);
  }
  meta(w, "thread_name", j->pid, j->tid, j->label, j->tid);
  return j;
}

static void scope_forget(ascope_trace_json *w, struct jscope *j) {
  map_del(&w->scopes, j->id);
  j->next_free = w->free_scopes;
  w->free_scopes = j;
}

/* A free "ops" thread of the scope, or a new one: its index, or -1. */
static long lane_take(ascope_trace_json *w, struct jscope *j, uint64_t op) {
  for (size_t i = 0; i < j->nlanes; i++) {
    if (j->lanes[i].op == 0) {
      j->lanes[i].op = op;
      return (long)i;
    }
  }
  if (j->nlanes == j->lanes_cap) {
    size_t cap = j->lanes_cap ? j->lanes_cap * 2 : 2;
    struct jlane *l = ascope__realloc(j->lanes, cap * sizeof *l);
    if (l == NULL) return -1;
    j->lanes = l;
    j->lanes_cap = cap;
  }
  /* A lane's thread number lives as long as the writer: a later scope
   * reusing this record gets new ones, so names never clash. */
  struct jlane *l = &j->lanes[j->nlanes];
  l->tid = ++w->next_track;
  l->op = op;
  char name[LABEL_CAP + 16];
  if (j->nlanes == 0)
    snprintf(name, sizeof name, "%s ops", j->label);
  else
    snprintf(name, sizeof name, "%s ops %zu", j->label, j->nlanes + 1);
  meta(w, "thread_name", j->pid, l->tid, name, l->tid);
  return (long)j->nlanes++;
}

static void op_write(ascope_trace_json *w, struct jop *o, uint64_t end_ns, int status,
                     bool unfinished) {
  struct jscope *j = o->scope;
  ev_head(w, "X", "op", o->driver ? o->driver : "op", o->driver ? " op" : NULL, j->pid,
          j->lanes[o->lane].tid);
  outs(w, ",\"ts\":");
  ts_us(w, o->begin_ns);
  outs(w, ",\"dur\":");
  out_us(w, end_ns > o->begin_ns ? end_ns - o->begin_ns : 0);
  arg_u64(w, "op_id", o->id);
  arg_str(w, "driver", o->driver);
  if (unfinished) {
    arg_true(w, "unfinished");
  } else {
    arg_status(w, "status", status);
  }
  ev_end(w);
  j->lanes[o->lane].op = 0;
  map_del(&w->ops, o->id);
  o->next_free = w->free_ops;
  w->free_ops = o;
}

static void op_begin(ascope_trace_json *w, struct jscope *j, const ascope_trace_event *ev) {
  struct jop *o = w->free_ops;
  if (o) {
    w->free_ops = o->next_free;
  } else if ((o = ascope__malloc(sizeof *o)) == NULL) {
    w->dropped++;
    return;
  }
  long lane = lane_take(w, j, ev->id);
  if (lane < 0 || map_put(&w->ops, ev->id, o)) {
    if (lane >= 0) j->lanes[lane].op = 0;
    o->next_free = w->free_ops;
    w->free_ops = o;
    w->dropped++;
    return;
  }
  o->id = ev->id;
  o->begin_ns = ev->ts_ns;
  o->scope = j;
  o->lane = (size_t)lane;
  o->driver = ev->driver;
}

/* ---- events ------------------------------------------------------------------ */

static void span_end(ascope_trace_json *w, struct jscope *j, bool *open, uint64_t ns, int status,
                     bool unfinished) {
  if (!*open) return;
  *open = false;
  ev_head(w, "E", NULL, NULL, NULL, j->pid, j->tid);
  ev_ts(w, ns);
  if (unfinished) {
    arg_true(w, "unfinished");
  } else {
    arg_status(w, "status", status);
  }
  ev_end(w);
}

static void instant(ascope_trace_json *w, struct jscope *j, const char *name,
                    const ascope_trace_event *ev) {
  ev_head(w, "i", name, name, NULL, j->pid, j->tid);
  ev_ts(w, ev->ts_ns);
  outs(w, ",\"s\":\"t\"");
  if (ev->status) arg_status(w, "status", ev->status);
  arg_str(w, "driver", ev->driver);
  arg_str(w, "code", ev->code);
  arg_str(w, "message", ev->message);
  arg_str(w, "target", ev->target);
  if (ev->kind == ASCOPE_TRACE_DEADLINE) arg_u64(w, "timeout_ms", ev->id);
  if (ev->kind == ASCOPE_TRACE_CANCEL) arg_str(w, "by", ev->id ? "its parent" : "ascope_cancel");
  if (ev->kind == ASCOPE_TRACE_ABORT) arg_u64(w, "use", ev->id);
  ev_end(w);
}

void ascope_trace_json_event(const ascope_trace_event *ev, void *ud) {
  ascope_trace_json *w = ud;
  if (w == NULL || ev == NULL ||
      ev->size < offsetof(ascope_trace_event, message) + sizeof ev->message)
    return;
  if (ev->kind == ASCOPE_TRACE_RT_FREE) {
    w->rt = NULL;
    return;
  }
  if (ev->scope_id == 0) return;
  struct jscope *j = scope_of(w, ev);
  if (j == NULL) {
    w->dropped++;
    return;
  }
  const char *verb = NULL;
  switch (ev->kind) {
  case ASCOPE_TRACE_SCOPE_BEGIN:
    ev_head(w, "B", "scope", ev->scope_name ? ev->scope_name : "scope", NULL, j->pid, j->tid);
    ev_ts(w, ev->ts_ns);
    arg_u64(w, "scope_id", ev->scope_id);
    if (ev->parent_id) arg_u64(w, "parent_id", ev->parent_id);
    ev_end(w);
    j->open_scope = true;
    break;
  case ASCOPE_TRACE_SCOPE_END:
    span_end(w, j, &j->open_phase, ev->ts_ns, 0, true);
    span_end(w, j, &j->open_body, ev->ts_ns, 0, true);
    if (j->open_scope) {
      j->open_scope = false;
      ev_head(w, "E", NULL, NULL, NULL, j->pid, j->tid);
      ev_ts(w, ev->ts_ns);
      arg_status(w, "status", ev->status);
      arg_str(w, "driver", ev->driver);
      arg_str(w, "code", ev->code);
      arg_str(w, "error", ev->message);
      ev_end(w);
    }
    scope_forget(w, j);
    break;
  case ASCOPE_TRACE_ACQUIRE_BEGIN:
  case ASCOPE_TRACE_RELEASE_BEGIN:
    span_end(w, j, &j->open_phase, ev->ts_ns, 0, true); /* never: one at a time */
    verb = ev->kind == ASCOPE_TRACE_ACQUIRE_BEGIN ? "acquire " : "release ";
    ev_head(w, "B", verb[0] == 'a' ? "acquire" : "release", verb, ev->driver, j->pid, j->tid);
    ev_ts(w, ev->ts_ns);
    arg_u64(w, "use", ev->id);
    arg_str(w, "driver", ev->driver);
    arg_str(w, "target", ev->target);
    if (ev->kind == ASCOPE_TRACE_RELEASE_BEGIN) arg_status(w, "outcome", ev->outcome);
    ev_end(w);
    j->open_phase = true;
    break;
  case ASCOPE_TRACE_ACQUIRE_END:
  case ASCOPE_TRACE_RELEASE_END:
    span_end(w, j, &j->open_phase, ev->ts_ns, ev->status, false);
    break;
  case ASCOPE_TRACE_BODY_BEGIN:
    ev_head(w, "B", "body", "body", NULL, j->pid, j->tid);
    ev_ts(w, ev->ts_ns);
    ev_end(w);
    j->open_body = true;
    break;
  case ASCOPE_TRACE_BODY_END:
    span_end(w, j, &j->open_body, ev->ts_ns, ev->status, false);
    break;
  case ASCOPE_TRACE_OP_BEGIN:
    op_begin(w, j, ev);
    break;
  case ASCOPE_TRACE_OP_END: {
    struct jop *o = map_get(&w->ops, ev->id);
    if (o) op_write(w, o, ev->ts_ns, ev->status, false);
    break;
  }
  case ASCOPE_TRACE_DEADLINE:
    instant(w, j, "deadline", ev);
    break;
  case ASCOPE_TRACE_CANCEL:
    instant(w, j, "cancel", ev);
    break;
  case ASCOPE_TRACE_ERROR:
    instant(w, j, "error", ev);
    break;
  case ASCOPE_TRACE_ABORT:
    instant(w, j, "abort", ev);
    break;
  case ASCOPE_TRACE_NOTE:
    instant(w, j, "note", ev);
    break;
  default:
    break; /* a kind this writer does not know */
  }
}

void trace_json_attach(void *writer, ascope_rt *rt) {
  ascope_trace_json *w = writer;
  if (w) w->rt = rt;
}

/* ---- open and close ------------------------------------------------------------ */

int ascope_trace_json_open(ascope_rt *rt, const char *path, ascope_trace_json **out) {
  if (out) *out = NULL;
  if (path == NULL || out == NULL) return UV_EINVAL;
  ascope_trace_json *w = ascope__malloc(sizeof *w);
  if (w == NULL) return UV_ENOMEM;
  memset(w, 0, sizeof *w);
  w->f = fopen(path, "w");
  if (w->f == NULL) {
    int err = errno ? -errno : UV_EIO;
    ascope__free(w);
    return err;
  }
  w->out = ascope__malloc(OUT_CAP);
  if (w->out == NULL) {
    fclose(w->f);
    ascope__free(w);
    return UV_ENOMEM;
  }
  setvbuf(w->f, NULL, _IONBF, 0); /* the writer buffers: no second copy */
  w->first = true;
  w->t0 = uv_hrtime();
  outs(w, "{\"traceEvents\":[");
  if (rt) ascope_rt_set_trace(rt, ascope_trace_json_event, w);
  *out = w;
  return 0;
}

int ascope_trace_json_close(ascope_trace_json *w) {
  if (w == NULL) return UV_EINVAL;
  if (w->rt) ascope_rt_set_trace(w->rt, NULL, NULL); /* still its hook: see attach */
  uint64_t now = uv_hrtime();
  if (now <= w->last_ns) now = w->last_ns + 1;
  /* Operations first: they may hold the last references to lanes. */
  for (size_t i = 0; i < w->ops.cap; i++) {
    while (w->ops.keys[i]) { /* map_del shifts a later entry into slot i */
      op_write(w, w->ops.vals[i], now, 0, true);
    }
  }
  for (size_t i = 0; i < w->scopes.cap; i++) {
    while (w->scopes.keys[i]) {
      struct jscope *j = w->scopes.vals[i];
      span_end(w, j, &j->open_phase, now, 0, true);
      span_end(w, j, &j->open_body, now, 0, true);
      span_end(w, j, &j->open_scope, now, 0, true);
      scope_forget(w, j);
    }
  }
  outs(w, "\n],\"displayTimeUnit\":\"ms\",\"otherData\":{\"library\":\"ascope ");
  outu(w, ASCOPE_VERSION_MAJOR);
  outc(w, '.');
  outu(w, ASCOPE_VERSION_MINOR);
  outc(w, '.');
  outu(w, ASCOPE_VERSION_PATCH);
  outc(w, '"');
  if (w->dropped) {
    outs(w, ",\"dropped_events\":");
    outu(w, w->dropped);
  }
  outs(w, "}}\n");
  out_flush(w);
  int rc = w->err;
  if (fclose(w->f) != 0 && rc == 0) rc = errno ? -errno : UV_EIO;
  if (rc == 0 && w->dropped) rc = UV_ENOMEM;
  ascope__free(w->out);
  for (struct jscope *j = w->free_scopes, *next; j; j = next) {
    next = j->next_free;
    ascope__free(j->lanes);
    ascope__free(j);
  }
  for (struct jop *o = w->free_ops, *next; o; o = next) {
    next = o->next_free;
    ascope__free(o);
  }
  ascope__free(w->scopes.keys);
  ascope__free(w->scopes.vals);
  ascope__free(w->ops.keys);
  ascope__free(w->ops.vals);
  ascope__free(w);
  return rc;
}
