/* ascope — the file driver: `async with open(path, mode) as f`.
 *
 * A file is one more use in a scope's list. It is opened when the scope
 * acquires it and closed, exactly once, when the scope releases it. With the
 * `atomic` flag a write goes to a temporary file beside the target, and the
 * scope's outcome decides: success renames it over the target (after fsync),
 * anything else removes it and leaves the target untouched.
 *
 * All I/O runs on libuv's threadpool (uv_fs_*): the loop thread never blocks.
 * Every call is made on the loop thread. A call that returns an error does
 * nothing else: its callback never runs and the scope is not failed.
 * docs/drivers/file.md describes each function.
 */
#ifndef ASCOPE_FILE_H
#define ASCOPE_FILE_H

#include "driver.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The resource: what ascope_resource(s, i) returns for a file use. Opaque;
 * valid from the body until the scope releases it. */
typedef struct ascope_file ascope_file;

/* The driver's vtable, for ascope_use() and pools, as every driver gives
 * it: a function. Its `arg` is the path (which must stay valid until the
 * file is acquired; the driver copies it) and its `options` are the mode
 * string. Its name, for ascope_driver_find(), is "file". */
ASCOPE_EXTERN const ascope_driver *ascope_file_driver(void);

/* Appends a file to the scope's uses. `mode` is an fopen mode — "r", "r+",
 * "w", "w+", "a", "a+", "x", "x+" ("b" is accepted and ignored) — optionally
 * followed by " atomic" with "w", "w+", "x" or "x+". `path` is copied: the
 * caller's string need not outlive the call. Returns 0, UV_EINVAL for a bad
 * mode or a NULL argument, or what ascope_use() returns. */
ASCOPE_EXTERN int ascope_use_file(ascope *s, const char *path, const char *mode);
/* The index-th use as a file, once acquired; NULL if that use is not a
 * file (or not held). */
static inline ascope_file *ascope_file_resource(ascope *s, size_t index) {
  return (ascope_file *)ascope_resource_of(s, index, ascope_file_driver());
}

/* Operation callbacks. The return value decides, as for every operation:
 * 0 = carry on (an error was handled), negative = fail the scope with it.
 * A NULL callback means "fail the scope on error". */
typedef int (*ascope_file_cb)(ascope *s, int status, void *ud);
/* data is valid until the callback returns. For ascope_file_read_all it is
 * followed by a NUL byte not counted in len. For stream items the return
 * value may also be ASCOPE_CONTINUE, ASCOPE_PAUSE or ASCOPE_STOP; the final
 * call of a stream has data == NULL, len == 0 and the end status. */
typedef int (*ascope_file_data_cb)(ascope *s, int status, const char *data, size_t len, void *ud);
typedef int (*ascope_file_stat_cb)(ascope *s, int status, const uv_stat_t *st, void *ud);

/* Reads up to len bytes at offset (-1: at the file position, for pipes);
 * fewer at the end of the file, 0 past it. Needs a readable mode. */
ASCOPE_EXTERN int ascope_file_read(ascope *s, ascope_file *f, size_t len, int64_t offset,
                                   ascope_file_data_cb cb, void *ud);

/* The same into the caller's buf, which must stay valid and untouched until
 * cb has run (data == buf then; no NUL is added). Cancelling cannot stop a
 * read the threadpool has begun: cb still runs only once it has finished
 * with buf. */
ASCOPE_EXTERN int ascope_file_read_into(ascope *s, ascope_file *f, void *buf, size_t len,
                                        int64_t offset, ascope_file_data_cb cb, void *ud);

/* Reads the whole file. Fails with UV_EFBIG if it holds more than max bytes
 * (SIZE_MAX: no limit). Needs a readable mode. */
ASCOPE_EXTERN int ascope_file_read_all(ascope *s, ascope_file *f, size_t max,
                                       ascope_file_data_cb cb, void *ud);

/* The `async for`: delivers the file from offset to its end in chunks of
 * `chunk` bytes (the last may be shorter), in order, through cb. cb returns
 * ASCOPE_CONTINUE, ASCOPE_PAUSE (until ascope_op_resume(*op_out)) or
 * ASCOPE_STOP; then one final call with data == NULL carries the end status
 * (0 at the end of the file or after a stop). The stream holds
 * ascope_file_stream_memory(chunk) bytes, however large the file and however
 * long it is paused. op_out (may be NULL) receives the operation, valid
 * until the final call returns. Pipes and character devices are read in
 * order, one chunk at a time, and offset is ignored. */
ASCOPE_EXTERN int ascope_file_stream(ascope *s, ascope_file *f, size_t chunk, int64_t offset,
                                     ascope_file_data_cb cb, void *ud, ascope_op **op_out);

/* The bytes a stream of `chunk`-byte chunks holds: two reads in flight
 * (read-ahead), each of the chunk or, for chunks under 2 MiB, of a multiple
 * of it of at least 2 MiB. 0 for an invalid chunk size. */
ASCOPE_EXTERN size_t ascope_file_stream_memory(size_t chunk);

/* `async for line in file`: the stream of ascope_file_stream, cut at a
 * delimiter instead of every `chunk` bytes. cb gets each line, in order,
 * without its delimiter (data is never NULL; an empty line has len 0), then
 * the final call as for ascope_file_stream; the same ASCOPE_CONTINUE,
 * ASCOPE_PAUSE, ASCOPE_STOP. A last line without a delimiter is delivered
 * too. options (NULL: all defaults), "key=value" separated by spaces,
 * tabs or commas:
 *   delim=\n        the delimiter: one byte, or \n \r \t \0 \\ \xHH
 *   crlf=1|0        drop a \r before the delimiter (default: 1 for \n only)
 *   keep_delim=0|1  deliver each line as in the file, delimiter (and \r)
 *                   included
 *   max_line=65536  the longest line, delimiter (and dropped \r) excluded;
 *                   a longer one ends the stream with UV_E2BIG
 *   read_size=2097152  bytes per read
 *   offset=0        where to start (ignored for pipes)
 * UV_EINVAL for a bad or repeated option or a NULL cb. */
ASCOPE_EXTERN int ascope_file_lines(ascope *s, ascope_file *f, const char *options,
                                    ascope_file_data_cb cb, void *ud, ascope_op **op_out);

/* The most bytes a line stream with these options holds: two reads in
 * flight and one line carried across reads. 0 for invalid options. */
ASCOPE_EXTERN size_t ascope_file_lines_memory(const char *options);

/* Writes all of data (copied: the caller may reuse it at once) at offset, or
 * with offset -1 after the previous write (in mode "a": at the end of the
 * file). Writes and syncs of one file run one at a time, in the order they
 * were called; a partial write is completed. Reads do not wait for writes:
 * to read what was written, start the read from the write's callback.
 * Needs a writable mode. */
ASCOPE_EXTERN int ascope_file_write(ascope *s, ascope_file *f, const void *data, size_t len,
                                    int64_t offset, ascope_file_cb cb, void *ud);

/* fsync(2), after every write called before it. */
ASCOPE_EXTERN int ascope_file_sync(ascope *s, ascope_file *f, ascope_file_cb cb, void *ud);

/* fstat(2) of the open file (for an atomic write: of the temporary file). */
ASCOPE_EXTERN int ascope_file_stat(ascope *s, ascope_file *f, ascope_file_stat_cb cb, void *ud);

/* The path the file was opened with. */
ASCOPE_EXTERN const char *ascope_file_path(const ascope_file *f);

#ifdef __cplusplus
}
#endif
#endif /* ASCOPE_FILE_H */
