/* Tracing, timing and the runtime's counters.
 *
 * The core calls trace_*() only behind OBSERVED(rt), so everything here is
 * the "on" path: it may read the clock, build an event and call the hook.
 * The counters themselves are plain increments in the core. */
#include "internal.h"

#include <ctype.h>
#include <stdio.h>

/* ---- switches ------------------------------------------------------------- */

static void observe_update(ascope_rt *rt) {
  rt->observed = rt->trace_fn != NULL || rt->timing;
}

int ascope_rt_set_trace(ascope_rt *rt, ascope_trace_fn fn, void *ud) {
  if (rt == NULL) return UV_EINVAL;
  if (rt->trace_fn == ascope_trace_json_event && (fn != rt->trace_fn || ud != rt->trace_ud))
    trace_json_attach(rt->trace_ud, NULL);
  if (fn == ascope_trace_json_event) trace_json_attach(ud, rt);
  rt->trace_fn = fn;
  rt->trace_ud = fn ? ud : NULL;
  observe_update(rt);
  return 0;
}

int ascope_rt_set_timing(ascope_rt *rt, int on) {
  if (rt == NULL) return UV_EINVAL;
  rt->timing = on != 0;
  observe_update(rt);
  return 0;
}

/* ---- events --------------------------------------------------------------- */

/* A scope's id, given at its first event: numbering every scope would
 * cost the untraced ones too. A parent is numbered before its child. */
static uint64_t scope_id(ascope *s) {
  if (s->id == 0) s->id = ++s->rt->next_scope_id;
  return s->id;
}

static void event_init(ascope_trace_event *ev, int kind, ascope *s, uint64_t now) {
  memset(ev, 0, sizeof *ev);
  ev->size = sizeof *ev;
  ev->kind = kind;
  ev->ts_ns = now;
  ev->parent_id = s->parent ? scope_id(s->parent) : 0;
  ev->scope_id = scope_id(s);
  ev->scope_name = s->name[0] ? s->name : NULL;
}

void trace_scope(ascope *s, int kind, int status, uint64_t id, const char *driver, const char *code,
                 const char *message) {
  ascope_rt *rt = s->rt;
  if (rt->trace_fn == NULL) return; /* observed for timing only */
  ascope_trace_event ev;
  event_init(&ev, kind, s, uv_hrtime());
  ev.status = status;
  ev.id = id;
  ev.driver = driver;
  ev.code = code && *code ? code : NULL;
  ev.message = message;
  rt->trace_fn(&ev, rt->trace_ud);
}

/* The target of a use appended by ascope_use_str: use_add copies it into
 * optbuf after the options and makes the copy the arg, so an arg pointing
 * there is that copy (no caller can hold a pointer into optbuf). */
static const char *str_target(const ascope_res *r) {
  if (r->optbuf == NULL) return NULL;
  const char *copy = r->optbuf + (r->options ? strlen(r->options) + 1 : 0);
  return r->arg == copy ? copy : NULL;
}

void trace_res(ascope_res *r, int kind, int status) {
  ascope *s = r->scope;
  ascope_rt *rt = r->rt;
  uint64_t now = uv_hrtime();
  /* Timing: one acquire or release is in flight per scope at a time, so
   * the scope keeps its start. 0 means it began while nobody was timing. */
  if (kind == ASCOPE_TRACE_ACQUIRE_BEGIN || kind == ASCOPE_TRACE_RELEASE_BEGIN) {
    s->phase_ts = now;
  } else if ((kind == ASCOPE_TRACE_ACQUIRE_END || kind == ASCOPE_TRACE_RELEASE_END) &&
             s->phase_ts) {
    uint64_t *total =
        kind == ASCOPE_TRACE_ACQUIRE_END ? &rt->stats.acquire_ns : &rt->stats.release_ns;
    *total += now - s->phase_ts;
    s->phase_ts = 0;
  }
  if (rt->trace_fn == NULL) return;
  ascope_trace_event ev;
  event_init(&ev, kind, s, now);
  ev.status = status;
  ev.driver = r->drv->name;
  /* The use's index and its target are found now rather than stored by
   * ascope_use: an untraced use pays nothing for them. */
  for (struct aq *q = s->uses.next; q != &r->node; q = q->next) ev.id++;
  if (kind == ASCOPE_TRACE_RELEASE_BEGIN || kind == ASCOPE_TRACE_RELEASE_END ||
      kind == ASCOPE_TRACE_ABORT)
    ev.outcome = s->status;
  /* Redacted into the stack: tracing stays allocation-free, and a long
   * target is cut (ascope_trace_redact terminates it). */
  char target[512];
  const char *t = str_target(r);
  if (t) {
    ascope_trace_redact(t, target, sizeof target);
    ev.target = target;
  }
  rt->trace_fn(&ev, rt->trace_ud);
}

void trace_res_done(ascope_res *r, int status) {
  /* Completions nothing waits for (after an abort, a driver's bug) are
   * not events. */
  if (r->phase == RES_ACQUIRING) trace_res(r, ASCOPE_TRACE_ACQUIRE_END, status);
  if (r->phase == RES_RELEASING) trace_res(r, ASCOPE_TRACE_RELEASE_END, status);
}

void trace_op(ascope_op *op, int kind, int status) {
  ascope_rt *rt = op->scope->rt;
  if (rt->trace_fn == NULL) return;
  ascope_trace_event ev;
  event_init(&ev, kind, op->scope, uv_hrtime());
  ev.status = status;
  ev.id = op->id;
  ev.driver = op->drv ? op->drv->name : NULL;
  rt->trace_fn(&ev, rt->trace_ud);
}

void ascope_res_note(ascope_res *r, const char *code, const char *message) {
  if (r == NULL || r->rt->trace_fn == NULL) return;
  ascope_trace_event ev;
  if (r->scope) {
    event_init(&ev, ASCOPE_TRACE_NOTE, r->scope, uv_hrtime());
  } else { /* a pool's idle or opening resource */
    memset(&ev, 0, sizeof ev);
    ev.size = sizeof ev;
    ev.kind = ASCOPE_TRACE_NOTE;
    ev.ts_ns = uv_hrtime();
  }
  ev.driver = r->drv->name;
  ev.code = code;
  ev.message = message;
  r->rt->trace_fn(&ev, r->rt->trace_ud);
}

void trace_rt_free(ascope_rt *rt) {
  if (rt->trace_fn) {
    ascope_trace_event ev;
    memset(&ev, 0, sizeof ev);
    ev.size = sizeof ev;
    ev.kind = ASCOPE_TRACE_RT_FREE;
    ev.ts_ns = uv_hrtime();
    rt->trace_fn(&ev, rt->trace_ud);
  }
  ascope_rt_set_trace(rt, NULL, NULL);
}

/* ---- redacting targets ------------------------------------------------- */

/* Appends to a bounded buffer the way snprintf counts: `at` grows past the
 * capacity, the buffer holds what fits. */
struct out {
  char *buf;
  size_t len, at;
};

static void put(struct out *o, const char *s, size_t n) {
  if (o->at < o->len) {
    size_t room = o->len - o->at - 1;
    memcpy(o->buf + o->at, s, n < room ? n : room);
  }
  o->at += n;
}

static bool contains_ci(const char *s, size_t n, const char *word) {
  size_t w = strlen(word);
  for (size_t i = 0; i + w <= n; i++) {
    size_t j = 0;
    while (j < w && tolower((unsigned char)s[i + j]) == word[j]) j++;
    if (j == w) return true;
  }
  return false;
}

static bool secret_key(const char *k, size_t n) {
  static const char *const words[] = {"pass",       "pwd", "secret",    "token",
                                      "credential", "key", "signature", "auth"};
  for (size_t i = 0; i < sizeof words / sizeof words[0]; i++)
    if (contains_ci(k, n, words[i])) return true;
  return false;
}

static bool is_sep(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '&' || c == '?' || c == ';' ||
         c == ',';
}

/* The end of a value beginning at v: a quoted one ('...' or "...", with
 * backslash escapes, as libpq reads them) up to its closing quote, any
 * other up to the next separator. */
static const char *value_end(const char *v) {
  if (*v == '\'' || *v == '"') {
    char q = *v++;
    while (*v && *v != q) v += v[0] == '\\' && v[1] ? 2 : 1;
    return *v ? v + 1 : v;
  }
  while (*v && !is_sep(*v) && *v != '#') v++;
  return v;
}

/* "scheme://user:pass@host...": the length of the scheme and the "://",
 * or 0 when s does not begin so. */
static size_t url_prefix(const char *s) {
  size_t i = 0;
  if (!isalpha((unsigned char)s[0])) return 0;
  while (isalnum((unsigned char)s[i]) || s[i] == '+' || s[i] == '-' || s[i] == '.') i++;
  return strncmp(s + i, "://", 3) == 0 ? i + 3 : 0;
}

int ascope_trace_redact(const char *target, char *buf, size_t len) {
  struct out o = {buf, buf ? len : 0, 0};
  if (target == NULL) target = "";
  const char *p = target;
  size_t pre = url_prefix(p);
  if (pre) {
    put(&o, p, pre);
    p += pre;
    size_t auth = strcspn(p, "/?#");
    const char *at = NULL;
    for (size_t i = 0; i < auth; i++)
      if (p[i] == '@') at = p + i; /* the last '@': a password may hold one */
    if (at) {
      const char *colon = memchr(p, ':', (size_t)(at - p));
      if (colon) {
        put(&o, p, (size_t)(colon - p));
        put(&o, ":***", 4);
      } else {
        put(&o, p, (size_t)(at - p));
      }
      p = at;
    }
  }
  /* key=value pairs anywhere after: a DSN's list, a URL's query. */
  bool at_key = true;
  while (*p) {
    if (is_sep(*p)) {
      put(&o, p++, 1);
      at_key = true;
      continue;
    }
    if (!at_key) {
      put(&o, p++, 1);
      continue;
    }
    at_key = false;
    size_t k = 0;
    while (p[k] && p[k] != '=' && !is_sep(p[k]) && p[k] != '#') k++;
    /* libpq allows blanks around '=' */
    size_t eq = k;
    while (p[eq] == ' ' || p[eq] == '\t') eq++;
    if (p[eq] != '=' || !secret_key(p, k)) {
      put(&o, p, k);
      p += k;
      continue;
    }
    eq++;
    while (p[eq] == ' ' || p[eq] == '\t') eq++;
    put(&o, p, k);
    put(&o, "=***", 4);
    p = value_end(p + eq);
  }
  if (o.len) o.buf[o.at < o.len ? o.at : o.len - 1] = '\0';
  return o.at > INT32_MAX ? INT32_MAX : (int)o.at;
}

/* ---- counters --------------------------------------------------------- */

static int stat_slot(int status) {
#define SLOT(name, _)                                                                              \
  case UV_##name:                                                                                  \
    return STAT_ERR_##name;
  switch (status) {
  case ASCOPE_EDRIVER:
    return STAT_ERR_ASCOPE_EDRIVER;
  case ASCOPE_ECLOSED:
    return STAT_ERR_ASCOPE_ECLOSED;
  case ASCOPE_EBUSY:
    return STAT_ERR_ASCOPE_EBUSY;
    UV_ERRNO_MAP(SLOT)
  default:
    return STAT_ERR_UNKNOWN; /* what ascope_err_name() calls it */
  }
#undef SLOT
}

void stat_scope_end(ascope_rt *rt, int status) {
  rt->stats.errors++;
  rt->stats.by_status[stat_slot(status)]++;
}

#define NAME(name, _) #name,
static const char *const slot_names[STAT_ERR_COUNT] = {"ASCOPE_EDRIVER", "ASCOPE_ECLOSED",
                                                       "ASCOPE_EBUSY", UV_ERRNO_MAP(NAME)};
#undef NAME

int64_t ascope_rt_stat(ascope_rt *rt, const char *name) {
  if (rt == NULL || name == NULL) return UV_EINVAL;
  const struct rt_stats *st = &rt->stats;
  static const struct {
    const char *name;
    size_t off;
  } plain[] = {
      {"scopes", offsetof(struct rt_stats, scopes)},
      {"ops", offsetof(struct rt_stats, ops)},
      {"ops_live", offsetof(struct rt_stats, ops_live)},
      {"errors", offsetof(struct rt_stats, errors)},
      {"cancelled", offsetof(struct rt_stats, cancelled)},
      {"timed_out", offsetof(struct rt_stats, timed_out)},
      {"aborted", offsetof(struct rt_stats, aborted)},
      {"acquire_ns", offsetof(struct rt_stats, acquire_ns)},
      {"release_ns", offsetof(struct rt_stats, release_ns)},
  };
  uint64_t v;
  if (strcmp(name, "scopes_live") == 0) return (int64_t)rt->pending;
  for (size_t i = 0; i < sizeof plain / sizeof plain[0]; i++) {
    if (strcmp(name, plain[i].name) == 0) {
      memcpy(&v, (const char *)st + plain[i].off, sizeof v);
      return v > INT64_MAX ? INT64_MAX : (int64_t)v;
    }
  }
  if (strncmp(name, "errors.", 7) == 0) {
    for (int i = 0; i < STAT_ERR_COUNT; i++) {
      if (strcmp(name + 7, slot_names[i]) == 0) {
        v = st->by_status[i];
        return v > INT64_MAX ? INT64_MAX : (int64_t)v;
      }
    }
    return UV_EINVAL; /* the core's: no driver publishes under "errors" */
  }
  return rt_driver_stat(rt, name); /* "<driver>.<counter>", or UV_EINVAL */
}
