/* Drivers by name: a small registry, and the plugin search behind it.
 *
 * In-tree drivers register themselves from a constructor, so a program
 * linked with a driver's library finds it by name without a call of its
 * own; one that is not finds the same driver built as a plugin. The table
 * is process-wide (drivers are code, shared by every runtime) and never
 * shrinks: a driver's code must outlive every resource it made, so a
 * loaded plugin is never unloaded either.
 */
#include "internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifndef ASCOPE_PLUGIN_DIR
#define ASCOPE_PLUGIN_DIR "/usr/local/lib/ascope/drivers"
#endif

#define NAME_CAP 32
#define REGISTRY_CAP 64

static struct {
  char name[NAME_CAP];
  const ascope_driver *drv;
} registry[REGISTRY_CAP];
static int registered;
static uv_mutex_t registry_lock;
static uv_once_t registry_once = UV_ONCE_INIT;

static void registry_init(void) {
  if (uv_mutex_init(&registry_lock) != 0) abort(); /* as libuv does when a mutex cannot be made */
}

/* Names become file names (ascope-<name>.so): nothing that could climb
 * out of a folder or need quoting. */
static bool name_ok(const char *name) {
  size_t n = name ? strlen(name) : 0;
  if (n == 0 || n >= NAME_CAP) return false;
  for (size_t i = 0; i < n; i++) {
    char ch = name[i];
    if (!((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '_' || ch == '-'))
      return false;
  }
  return true;
}

/* Under the lock. */
static const ascope_driver *lookup(const char *name) {
  for (int i = 0; i < registered; i++)
    if (strcmp(registry[i].name, name) == 0) return registry[i].drv;
  return NULL;
}

const char *ascope_driver_dir(void) {
  return ASCOPE_PLUGIN_DIR;
}

int ascope_driver_register(const ascope_driver *drv) {
  if (drv == NULL || drv->abi < ASCOPE_DRIVER_ABI_MIN || !name_ok(drv->name) ||
      drv->acquire == NULL || drv->release == NULL)
    return UV_EINVAL;
  uv_once(&registry_once, registry_init);
  uv_mutex_lock(&registry_lock);
  const ascope_driver *had = lookup(drv->name);
  int rc = 0;
  if (had && had != drv)
    rc = UV_EEXIST;
  else if (had == NULL && registered == REGISTRY_CAP)
    rc = UV_ENOSPC;
  else if (had == NULL) {
    snprintf(registry[registered].name, NAME_CAP, "%s", drv->name);
    registry[registered++].drv = drv;
  }
  uv_mutex_unlock(&registry_lock);
  return rc;
}

/* ascope-<name>.so in dir (len bytes of it): the driver, or NULL with
 * errbuf saying why when the file is there but does not load. */
static const ascope_driver *try_dir(const char *dir, size_t len, const char *name, char *errbuf,
                                    size_t errlen, bool *tried) {
  char path[4096];
  if (len == 0 || len + strlen(name) + 16 > sizeof path) return NULL;
  snprintf(path, sizeof path, "%.*s/ascope-%s.so", (int)len, dir, name);
  if (access(path, R_OK) != 0) return NULL;
  *tried = true;
  const ascope_driver *drv = ascope_driver_load(path, errbuf, errlen);
  if (drv && strcmp(drv->name, name) != 0) {
    core_say(errbuf, errlen, "plugin %s holds the driver \"%s\", not \"%s\"", path, drv->name,
             name);
    return NULL;
  }
  if (drv && ascope_driver_register(drv) == UV_EEXIST) {
    core_say(errbuf, errlen, "plugin %s: another driver named \"%s\" is registered", path, name);
    return NULL;
  }
  return drv;
}

const ascope_driver *ascope_driver_find(const char *name, char *errbuf, size_t errlen) {
  core_say(errbuf, errlen, "%s", "");
  if (!name_ok(name)) {
    core_say(errbuf, errlen, "bad driver name \"%.40s\": 1-31 characters of a-z, 0-9, _ and -",
             name ? name : "(null)");
    return NULL;
  }
  uv_once(&registry_once, registry_init);
  uv_mutex_lock(&registry_lock);
  const ascope_driver *drv = lookup(name);
  uv_mutex_unlock(&registry_lock);
  if (drv) return drv;
  bool tried = false;
  const char *path = getenv("ASCOPE_DRIVER_PATH");
  for (const char *p = path; p && *p && drv == NULL && !tried;) {
    const char *end = strchr(p, ':');
    size_t len = end ? (size_t)(end - p) : strlen(p);
    drv = try_dir(p, len, name, errbuf, errlen, &tried);
    p = end ? end + 1 : NULL;
  }
  if (drv == NULL && !tried)
    drv = try_dir(ASCOPE_PLUGIN_DIR, strlen(ASCOPE_PLUGIN_DIR), name, errbuf, errlen, &tried);
  if (drv == NULL && !tried)
    core_say(errbuf, errlen,
             "no driver named \"%s\": none registered, and no ascope-%s.so in ASCOPE_DRIVER_PATH "
             "(%s) or %s",
             name, name, path && *path ? path : "unset", ASCOPE_PLUGIN_DIR);
  return drv;
}
