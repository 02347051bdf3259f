/* SQL drivers by name, and connections given by URL.
 *
 * As Go's sql.Open picks its driver by name and sqlx's AnyPool by the
 * URL's scheme, a program can name its database in one string from its
 * configuration and never link a driver itself: the driver is looked up
 * in the registry (core/registry.c), which loads it as a plugin when no
 * linked library registered it.
 */
#include "internal.h"

#include <stdio.h>
#include <string.h>

const ascope_sql_driver *ascope_sql_driver_find(const char *name, char *errbuf, size_t errlen) {
  const ascope_driver *d = ascope_driver_find(name, errbuf, errlen);
  if (d == NULL) return NULL;
  /* base is the SQL table's first member: the same address */
  const ascope_sql_driver *drv = (const ascope_sql_driver *)d;
  if (d->abi < 2 || d->family == NULL || strcmp(d->family, "sql") != 0 || !sql_driver_ok(drv)) {
    if (errbuf && errlen) snprintf(errbuf, errlen, "the driver \"%s\" is not a SQL driver", name);
    return NULL;
  }
  return drv;
}

/* The scheme names the driver; postgresql:// is the name libpq documents
 * for its URIs, sqlite3 a common spelling. The target handed to the
 * driver: PostgreSQL takes the whole URI (libpq parses it); SQLite a path,
 * the part after "sqlite:" or "sqlite://" ("sqlite:///abs/db" is
 * "/abs/db", "sqlite:rel/db" is "rel/db", "sqlite::memory:" is
 * ":memory:"); any other driver the whole URL. */
struct url_parts {
  char driver[32];
  const char *target;
};

static int url_split(const char *url, struct url_parts *u) {
  const char *colon = strchr(url, ':');
  size_t n = colon ? (size_t)(colon - url) : 0;
  if (n == 0 || n >= sizeof u->driver) return UV_EINVAL;
  for (size_t i = 0; i < n; i++) {
    char ch = url[i];
    if (ch >= 'A' && ch <= 'Z') ch = (char)(ch - 'A' + 'a');
    if (!((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '+' || ch == '-' ||
          ch == '.'))
      return UV_EINVAL;
    u->driver[i] = ch;
  }
  u->driver[n] = '\0';
  u->target = url;
  if (strcmp(u->driver, "postgresql") == 0) snprintf(u->driver, sizeof u->driver, "postgres");
  if (strcmp(u->driver, "sqlite3") == 0) snprintf(u->driver, sizeof u->driver, "sqlite");
  if (strcmp(u->driver, "sqlite") == 0) {
    u->target = colon + 1;
    if (strncmp(u->target, "//", 2) == 0) u->target += 2;
    if (*u->target == '\0') return UV_EINVAL;
  }
  return 0;
}

/* A use that can only fail: the URL named a driver that is nowhere. Its
 * acquire says so, with the reason, through the scope's done like any
 * failed connect, instead of a bare code from the call that added it. */
static void missing_acquire(ascope_res *r, const void *arg, const char *options) {
  (void)options;
  ascope_res_done(r, UV_ENOENT, NULL, arg);
}

static void missing_release(ascope_res *r, int outcome) {
  (void)outcome;
  ascope_res_done(r, 0, NULL, NULL);
}

static const ascope_driver missing_driver = {
    .abi = ASCOPE_DRIVER_ABI,
    .name = "sql",
    .acquire = missing_acquire,
    .release = missing_release,
};

int ascope_use_sql_url(ascope *s, const char *url, const char *options) {
  struct url_parts u;
  if (s == NULL || url == NULL || url_split(url, &u) != 0) return UV_EINVAL;
  char why[512];
  const ascope_sql_driver *drv = ascope_sql_driver_find(u.driver, why, sizeof why);
  if (drv == NULL) return ascope_use_str(s, &missing_driver, why, NULL);
  return ascope_use_sql(s, drv, u.target, options);
}

/* ---- pools ---------------------------------------------------------------------------------- */

ascope_pool *ascope_sql_pool_new(ascope_rt *rt, const ascope_sql_driver *drv, const char *target,
                                 const char *options) {
  if (!sql_driver_ok(drv)) return NULL;
  if (target == NULL) return ascope_pool_new(rt, &drv->base, NULL, options);
  return ascope_pool_new_str(rt, &drv->base, target, options);
}

ascope_pool *ascope_sql_pool_new_url(ascope_rt *rt, const char *url, const char *options,
                                     char *errbuf, size_t errlen) {
  struct url_parts u;
  if (url == NULL || url_split(url, &u) != 0) {
    if (errbuf && errlen) snprintf(errbuf, errlen, "not a URL with a scheme");
    return NULL;
  }
  const ascope_sql_driver *drv = ascope_sql_driver_find(u.driver, errbuf, errlen);
  if (drv == NULL) return NULL;
  ascope_pool *p = ascope_sql_pool_new(rt, drv, u.target, options);
  if (p == NULL && errbuf && errlen) snprintf(errbuf, errlen, "bad pool options or out of memory");
  return p;
}

int ascope_use_sql_pool(ascope *s, ascope_pool *pool) {
  const ascope_driver *d = ascope_pool_driver(pool);
  if (d == NULL || d->abi < 2 || d->family == NULL || strcmp(d->family, "sql") != 0)
    return UV_EINVAL;
  return ascope_use_pool(s, pool);
}
