/* The options string: "key=value" pairs separated by spaces or commas.
 *
 * Parsed when the connection is acquired, before anything is resolved or
 * sent, so a typo fails the acquire at once with a message naming the key.
 * Unknown keys are errors for the same reason. The DSN is libpq's business
 * and never passes through here. */
#include "internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const struct pg_options defaults = {
    .connect_ms = 0,
    .cancel_ms = 5000,
    .cache = 64,
    .batch = 256,
    .text_only = false,
    .names = NAMES_AUTO,
};

static int apply(struct pg_options *o, const char *key, const char *val) {
  uint64_t u;
  if ((!strcmp(key, "connect_timeout_ms") || !strcmp(key, "connect_timeout")) &&
      ascope_opt_uint(val, 86400000, &u) == 0 && u > 0)
    o->connect_ms = u;
  else if ((!strcmp(key, "cancel_timeout_ms") || !strcmp(key, "cancel_timeout")) &&
           ascope_opt_uint(val, 86400000, &u) == 0 && u > 0)
    o->cancel_ms = u;
  else if (!strcmp(key, "cache") && ascope_opt_uint(val, 100000, &u) == 0)
    o->cache = (unsigned)u;
  else if (!strcmp(key, "batch") && ascope_opt_uint(val, 1000000, &u) == 0 && u > 0)
    o->batch = (unsigned)u;
  else if (!strcmp(key, "results") && val && !strcmp(val, "auto"))
    o->text_only = false;
  else if (!strcmp(key, "results") && val && !strcmp(val, "text"))
    o->text_only = true;
  else if (!strcmp(key, "sync") && val && !strcmp(val, "statement"))
    o->batch_sync = false;
  else if (!strcmp(key, "sync") && val && !strcmp(val, "batch"))
    o->batch_sync = true;
  else if (!strcmp(key, "statement_cache") && val && !strcmp(val, "auto"))
    o->names = NAMES_AUTO;
  else if (!strcmp(key, "statement_cache") && val && !strcmp(val, "on"))
    o->names = NAMES_ON;
  else if (!strcmp(key, "statement_cache") && val && !strcmp(val, "off"))
    o->names = NAMES_OFF;
  else
    return -1;
  return 0;
}

int pg_options_parse(struct pg_options *o, const char *s, char *err, size_t errlen) {
  *o = defaults;
  char buf[128], *key, *val;
  while (s && (s = ascope_opt_next(s, buf, sizeof buf, &key, &val)) != NULL) {
    if (apply(o, key, val) != 0) {
      snprintf(err, errlen, "bad postgres option \"%s%s%s\"", key, val ? "=" : "", val ? val : "");
      return UV_EINVAL;
    }
  }
  return 0;
}

/* The outermost BEGIN, from the transaction use's options. The words are
 * picked from fixed lists, never copied from the options. */
int pg_tx_begin_sql(const char *s, char *out, size_t cap) {
  static const char *const levels[] = {"read_committed", "repeatable_read", "serializable"};
  static const char *const sql_levels[] = {"READ COMMITTED", "REPEATABLE READ", "SERIALIZABLE"};
  int level = -1, ro = -1, def = -1;
  char buf[128], *key, *val;
  while (s && (s = ascope_opt_next(s, buf, sizeof buf, &key, &val)) != NULL) {
    int b;
    if (!strcmp(key, "isolation")) {
      level = -1;
      for (int i = 0; val && i < 3; i++) /* repeatable_read, or as SQL writes it */
        if (!strcmp(val, levels[i]) || !strcasecmp(val, sql_levels[i])) level = i;
      if (level < 0) return UV_EINVAL;
    } else if (!strcmp(key, "read_only") && ascope_opt_bool(val, &b) == 0) {
      ro = b;
    } else if (!strcmp(key, "deferrable") && ascope_opt_bool(val, &b) == 0) {
      def = b;
    } else {
      return UV_EINVAL;
    }
  }
  snprintf(out, cap, "BEGIN%s%s%s%s", level >= 0 ? " ISOLATION LEVEL " : "",
           level >= 0 ? sql_levels[level] : "",
           ro < 0 ? ""
           : ro   ? " READ ONLY"
                  : " READ WRITE",
           def < 0 ? ""
           : def   ? " DEFERRABLE"
                   : " NOT DEFERRABLE");
  return 0;
}
