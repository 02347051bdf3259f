/* The options string: "key=value" pairs separated by spaces or commas.
 *
 * Parsed on the loop thread when the connection is acquired, before any
 * work is queued, so a typo fails the acquire at once with a message that
 * names the key, instead of opening a database with settings nobody asked
 * for. Unknown keys are errors for the same reason. */
#include "internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const struct sq_options defaults = {
    .mode = MODE_RWC,
    .wal = false,
    .foreign_keys = -1,
    .synchronous = -1,
    .busy_ms = 5000,
    .cache = 32,
    .batch = 256,
};

static int parse_pick(const char *v, const char *const *names, int n) {
  for (int i = 0; v && i < n; i++)
    if (!strcmp(v, names[i])) return i;
  return -1;
}

static int apply(struct sq_options *o, const char *key, const char *val) {
  static const char *const modes[] = {"rwc", "rw", "ro", "memory"};
  static const char *const syncs[] = {"off", "normal", "full"};
  int b;
  uint64_t u;
  int k;
  if (!strcmp(key, "mode") && (k = parse_pick(val, modes, 4)) >= 0)
    o->mode = (enum sq_mode)k;
  else if (!strcmp(key, "wal") && ascope_opt_bool(val, &b) == 0)
    o->wal = b;
  else if ((!strcmp(key, "busy_timeout_ms") || !strcmp(key, "busy_timeout")) &&
           ascope_opt_uint(val, 86400000, &u) == 0)
    o->busy_ms = u;
  else if (!strcmp(key, "cache") && ascope_opt_uint(val, 100000, &u) == 0)
    o->cache = u;
  else if (!strcmp(key, "batch") && ascope_opt_uint(val, 1000000, &u) == 0 && u > 0)
    o->batch = u;
  else if (!strcmp(key, "foreign_keys") && ascope_opt_bool(val, &b) == 0)
    o->foreign_keys = b;
  else if (!strcmp(key, "synchronous") && (k = parse_pick(val, syncs, 3)) >= 0)
    o->synchronous = k;
  else
    return -1;
  return 0;
}

int sq_options_parse(struct sq_options *o, const char *s, char *err, size_t errlen) {
  *o = defaults;
  char buf[128], *key, *val;
  while (s && (s = ascope_opt_next(s, buf, sizeof buf, &key, &val)) != NULL) {
    if (apply(o, key, val) != 0) {
      snprintf(err, errlen, "bad sqlite option \"%s%s%s\"", key, val ? "=" : "", val ? val : "");
      return UV_EINVAL;
    }
  }
  return 0;
}

int sq_tx_options_parse(const char *s, enum sq_begin *mode) {
  static const char *const begins[] = {"deferred", "immediate", "exclusive"};
  char buf[128], *key, *val;
  *mode = BEGIN_DEFERRED;
  while (s && (s = ascope_opt_next(s, buf, sizeof buf, &key, &val)) != NULL) {
    int k;
    if (strcmp(key, "begin") || (k = parse_pick(val, begins, 3)) < 0) return UV_EINVAL;
    *mode = (enum sq_begin)k;
  }
  return 0;
}
