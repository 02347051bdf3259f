/* The file driver as a plugin: ascope-file.so, a shim over libascope-file
 * that ascope_driver_find("file") loads when the program was not linked with
 * the driver (plugins/ in a build tree, lib/ascope/drivers once installed). */
#include <ascope/driver.h>
#include <ascope/file.h>

ASCOPE_EXTERN const ascope_driver *ascope_driver_entry(void) {
  return ascope_file_driver();
}
