/* The sqlite driver as a plugin: ascope-sqlite.so, a shim over libascope-sqlite
 * that ascope_driver_find("sqlite") loads when the program was not linked with
 * the driver (plugins/ in a build tree, lib/ascope/drivers once installed). */
#include <ascope/driver.h>
#include <ascope/sqlite.h>
#include <ascope/sql_driver.h>

ASCOPE_EXTERN const ascope_driver *ascope_driver_entry(void) {
  return &ascope_sqlite()->base;
}
