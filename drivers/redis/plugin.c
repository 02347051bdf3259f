/* The redis driver as a plugin: ascope-redis.so, a shim over libascope-redis
 * that ascope_driver_find("redis") loads when the program was not linked with
 * the driver (plugins/ in a build tree, lib/ascope/drivers once installed). */
#include <ascope/driver.h>
#include <ascope/redis.h>

ASCOPE_EXTERN const ascope_driver *ascope_driver_entry(void) {
  return ascope_redis_driver();
}
