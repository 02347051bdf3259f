/* The plugin loader: a driver built as a shared object exports one symbol,
 * ascope_driver_entry, returning its vtable. */
#include "internal.h"

#include <dlfcn.h>
#include <stdarg.h>
#include <stdio.h>

/* Writes the reason for a failure into a caller's error buffer, if any. */
void core_say(char *buf, size_t len, const char *fmt, ...) {
  if (buf == NULL || len == 0) return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, len, fmt, ap);
  va_end(ap);
}

const ascope_driver *ascope_driver_load(const char *path, char *errbuf, size_t errlen) {
  core_say(errbuf, errlen, "%s", "");
  if (path == NULL || *path == '\0') {
    core_say(errbuf, errlen, "no plugin path given");
    return NULL;
  }
  /* RTLD_LOCAL: two plugins may use the same internal names. The handle is
   * never closed: a driver's code must outlive every resource it made. */
  void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
  if (h == NULL) {
    const char *why = dlerror();
    core_say(errbuf, errlen, "cannot load plugin %s: %s", path, why ? why : "unknown error");
    return NULL;
  }
  dlerror();
  void *sym = dlsym(h, "ascope_driver_entry");
  if (sym == NULL) {
    core_say(errbuf, errlen, "plugin %s has no symbol ascope_driver_entry", path);
    dlclose(h);
    return NULL;
  }
  ascope_driver_entry_fn entry;
  memcpy(&entry, &sym, sizeof entry); /* object-to-function pointer, as POSIX allows */
  const ascope_driver *drv = entry();
  if (drv == NULL) {
    core_say(errbuf, errlen, "plugin %s: ascope_driver_entry returned NULL", path);
    dlclose(h);
    return NULL;
  }
  if (drv->abi < ASCOPE_DRIVER_ABI_MIN) {
    core_say(errbuf, errlen, "plugin %s: driver ABI version %u, this library needs %u or later",
             path, (unsigned)drv->abi, (unsigned)ASCOPE_DRIVER_ABI_MIN);
    dlclose(h);
    return NULL;
  }
  if (drv->name == NULL || drv->acquire == NULL || drv->release == NULL) {
    core_say(errbuf, errlen, "plugin %s: driver lacks a name, acquire or release", path);
    dlclose(h);
    return NULL;
  }
  return drv;
}
