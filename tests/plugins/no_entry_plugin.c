/* A shared object without ascope_driver_entry. */
__attribute__((visibility("default"))) int not_a_driver(void) {
  return 7;
}
