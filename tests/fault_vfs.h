/* A SQLite VFS for the SQLite driver's tests that fails what SQLite itself
 * gives no way to fail on demand: reads of a rollback journal, as a disk
 * failing under a transaction would. It wraps the default VFS and becomes
 * the default, so connections the driver opens use it with no option.
 * Unarmed it only passes calls through. The flag is atomic: the driver
 * reads on pool threads while the test arms it from the loop thread. */
#ifndef ASCOPE_FAULT_VFS_H
#define ASCOPE_FAULT_VFS_H

#include <stdbool.h>

void t_vfs_install(void);               /* once per test process; asserts */
void t_vfs_fail_journal_reads(bool on); /* every journal read fails from now on (or not) */
int t_vfs_failed_reads(void);           /* reads failed so far */

#endif
