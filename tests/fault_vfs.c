/* The fault-injecting VFS (fault_vfs.h). Each file is the default VFS's
 * file, placed right after a small header that remembers which kind of
 * file it is; every method but xRead passes straight through. */
#include "fault_vfs.h"

#include <criterion/criterion.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <string.h>

struct fault_file {
  sqlite3_file base; /* methods: fault_io */
  bool journal;      /* opened as SQLITE_OPEN_MAIN_JOURNAL */
  sqlite3_file *real;
};

static sqlite3_vfs fault_vfs, *real_vfs;
static sqlite3_io_methods fault_io;
static atomic_bool fail_journal_reads;
static atomic_int failed_reads;

static sqlite3_file *real(sqlite3_file *f) {
  return ((struct fault_file *)f)->real;
}

static int f_read(sqlite3_file *f, void *buf, int n, sqlite3_int64 off) {
  if (((struct fault_file *)f)->journal && atomic_load(&fail_journal_reads)) {
    atomic_fetch_add(&failed_reads, 1);
    return SQLITE_IOERR_READ;
  }
  return real(f)->pMethods->xRead(real(f), buf, n, off);
}

static int f_close(sqlite3_file *f) {
  return real(f)->pMethods->xClose(real(f));
}
static int f_write(sqlite3_file *f, const void *buf, int n, sqlite3_int64 off) {
  return real(f)->pMethods->xWrite(real(f), buf, n, off);
}
static int f_truncate(sqlite3_file *f, sqlite3_int64 size) {
  return real(f)->pMethods->xTruncate(real(f), size);
}
static int f_sync(sqlite3_file *f, int flags) {
  return real(f)->pMethods->xSync(real(f), flags);
}
static int f_file_size(sqlite3_file *f, sqlite3_int64 *size) {
  return real(f)->pMethods->xFileSize(real(f), size);
}
static int f_lock(sqlite3_file *f, int level) {
  return real(f)->pMethods->xLock(real(f), level);
}
static int f_unlock(sqlite3_file *f, int level) {
  return real(f)->pMethods->xUnlock(real(f), level);
}
static int f_check_reserved(sqlite3_file *f, int *out) {
  return real(f)->pMethods->xCheckReservedLock(real(f), out);
}
static int f_file_control(sqlite3_file *f, int op, void *arg) {
  return real(f)->pMethods->xFileControl(real(f), op, arg);
}
static int f_sector_size(sqlite3_file *f) {
  return real(f)->pMethods->xSectorSize(real(f));
}
static int f_device(sqlite3_file *f) {
  return real(f)->pMethods->xDeviceCharacteristics(real(f));
}
static int f_shm_map(sqlite3_file *f, int i, int size, int extend, void volatile **p) {
  return real(f)->pMethods->xShmMap(real(f), i, size, extend, p);
}
static int f_shm_lock(sqlite3_file *f, int off, int n, int flags) {
  return real(f)->pMethods->xShmLock(real(f), off, n, flags);
}
static void f_shm_barrier(sqlite3_file *f) {
  real(f)->pMethods->xShmBarrier(real(f));
}
static int f_shm_unmap(sqlite3_file *f, int del) {
  return real(f)->pMethods->xShmUnmap(real(f), del);
}
/* No memory-mapped reads: a journal is never mapped, and the database's
 * pages then go through xRead like everything else. */
static int f_fetch(sqlite3_file *f, sqlite3_int64 off, int n, void **p) {
  (void)f, (void)off, (void)n;
  *p = NULL;
  return SQLITE_OK;
}
static int f_unfetch(sqlite3_file *f, sqlite3_int64 off, void *p) {
  (void)f, (void)off, (void)p;
  return SQLITE_OK;
}

static int f_open(sqlite3_vfs *vfs, const char *name, sqlite3_file *file, int flags, int *out) {
  (void)vfs;
  struct fault_file *f = (struct fault_file *)file;
  f->real = (sqlite3_file *)(f + 1);
  f->journal = (flags & SQLITE_OPEN_MAIN_JOURNAL) != 0;
  int rc = real_vfs->xOpen(real_vfs, name, f->real, flags, out);
  /* A failed open leaves pMethods NULL: SQLite then never calls xClose. */
  f->base.pMethods = rc == SQLITE_OK && f->real->pMethods ? &fault_io : NULL;
  return rc;
}

static int f_delete(sqlite3_vfs *v, const char *name, int sync) {
  (void)v;
  return real_vfs->xDelete(real_vfs, name, sync);
}
static int f_access(sqlite3_vfs *v, const char *name, int flags, int *out) {
  (void)v;
  return real_vfs->xAccess(real_vfs, name, flags, out);
}
static int f_full_path(sqlite3_vfs *v, const char *name, int n, char *out) {
  (void)v;
  return real_vfs->xFullPathname(real_vfs, name, n, out);
}
static int f_randomness(sqlite3_vfs *v, int n, char *out) {
  (void)v;
  return real_vfs->xRandomness(real_vfs, n, out);
}
static int f_sleep(sqlite3_vfs *v, int us) {
  (void)v;
  return real_vfs->xSleep(real_vfs, us);
}
static int f_time(sqlite3_vfs *v, double *out) {
  (void)v;
  return real_vfs->xCurrentTime(real_vfs, out);
}
static int f_last_error(sqlite3_vfs *v, int n, char *out) {
  (void)v;
  return real_vfs->xGetLastError(real_vfs, n, out);
}
static int f_time64(sqlite3_vfs *v, sqlite3_int64 *out) {
  (void)v;
  return real_vfs->xCurrentTimeInt64(real_vfs, out);
}

void t_vfs_install(void) {
  if (real_vfs) return;
  real_vfs = sqlite3_vfs_find(NULL);
  cr_assert_not_null(real_vfs);
  cr_assert_geq(real_vfs->iVersion, 2);
  fault_io = (sqlite3_io_methods){
      .iVersion = 3,
      .xClose = f_close,
      .xRead = f_read,
      .xWrite = f_write,
      .xTruncate = f_truncate,
      .xSync = f_sync,
      .xFileSize = f_file_size,
      .xLock = f_lock,
      .xUnlock = f_unlock,
      .xCheckReservedLock = f_check_reserved,
      .xFileControl = f_file_control,
      .xSectorSize = f_sector_size,
      .xDeviceCharacteristics = f_device,
      .xShmMap = f_shm_map,
      .xShmLock = f_shm_lock,
      .xShmBarrier = f_shm_barrier,
      .xShmUnmap = f_shm_unmap,
      .xFetch = f_fetch,
      .xUnfetch = f_unfetch,
  };
  fault_vfs = (sqlite3_vfs){
      .iVersion = 2,
      .szOsFile = (int)sizeof(struct fault_file) + real_vfs->szOsFile,
      .mxPathname = real_vfs->mxPathname,
      .zName = "ascope-test-fault",
      .xOpen = f_open,
      .xDelete = f_delete,
      .xAccess = f_access,
      .xFullPathname = f_full_path,
      .xRandomness = f_randomness,
      .xSleep = f_sleep,
      .xCurrentTime = f_time,
      .xGetLastError = f_last_error,
      .xCurrentTimeInt64 = f_time64,
  };
  cr_assert_eq(sqlite3_vfs_register(&fault_vfs, 1), SQLITE_OK);
}

void t_vfs_fail_journal_reads(bool on) {
  atomic_store(&fail_journal_reads, on);
}

int t_vfs_failed_reads(void) {
  return atomic_load(&failed_reads);
}
