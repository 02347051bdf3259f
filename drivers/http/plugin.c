/* The http driver as a plugin: ascope-http.so, a shim over libascope-http
 * that ascope_driver_find("http") loads when the program was not linked with
 * the driver (plugins/ in a build tree, lib/ascope/drivers once installed). */
#include <ascope/driver.h>
#include <ascope/http.h>

ASCOPE_EXTERN const ascope_driver *ascope_driver_entry(void) {
  return ascope_http_driver();
}
