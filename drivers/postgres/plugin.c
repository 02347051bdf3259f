/* The postgres driver as a plugin: ascope-postgres.so, a shim over libascope-postgres
 * that ascope_driver_find("postgres") loads when the program was not linked with
 * the driver (plugins/ in a build tree, lib/ascope/drivers once installed). */
#include <ascope/driver.h>
#include <ascope/postgres.h>
#include <ascope/sql_driver.h>

ASCOPE_EXTERN const ascope_driver *ascope_driver_entry(void) {
  return &ascope_postgres()->base;
}
