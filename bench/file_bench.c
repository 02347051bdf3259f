/* bench/file_bench: streaming a file through ascope, beside cat.
 *
 * Makes a file (1 GiB by default) in a temporary directory, then reads it
 * with `cat FILE > /dev/null` and with ascope_file_stream() in 64 KiB and
 * 1 MiB chunks, in the same run and from the same page cache: nothing is
 * dropped from the cache; cat runs once first to warm it, then the three
 * readers alternate for a number of rounds and each keeps its best time.
 * The stream's item callback touches one byte per 4 KiB page, so the figure
 * includes handing every chunk to the caller, not only reading it.
 *
 * Then the same for lines: a text file of the same size (lines of random
 * length, 63 bytes on average, like a log) read by `wc -l FILE`, by a
 * getline(3) loop in this process (what Python's `for line in f` does,
 * minus Python), and by ascope_file_lines() with its defaults. Both line
 * readers do the least a caller does, count the lines and look at each
 * one's length and first byte, so the figures are those of the line
 * machinery itself. The files and the directory are removed at the end.
 *
 *   bench/file_bench [size_mib [rounds]]     (default 1024 MiB, 5 rounds)
 */
#include <ascope/file.h>

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static double now(void) {
  return (double)uv_hrtime() / 1e9;
}

/* Random bytes, or with `lines` random lines of letters, ending with a
 * newline (so every reader counts the same lines). */
static int make_file(const char *path, size_t size, int lines) {
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
  if (fd < 0) return -1;
  size_t blk = 1u << 20;
  unsigned char *b = malloc(blk);
  uint64_t x = 0x9e3779b97f4a7c15u;
  for (size_t i = 0; i < blk; i++)
    x = x * 6364136223846793005u + 1, b[i] = (unsigned char)(x >> 56);
  for (size_t i = 0; lines && i < blk; i++) /* a \n one time in 64 */
    b[i] = b[i] < 4 || i == blk - 1 ? '\n' : (unsigned char)('a' + b[i] % 26);
  for (size_t off = 0; off < size; off += blk) {
    size_t n = size - off < blk ? size - off : blk;
    if (write(fd, b, n) != (ssize_t)n) {
      free(b);
      close(fd);
      return -1;
    }
  }
  free(b);
  return close(fd);
}

/* ---- cat -------------------------------------------------------------------- */

static double run_cat(const char *path) {
  char cmd[600];
  snprintf(cmd, sizeof cmd, "cat '%s' > /dev/null", path);
  double t0 = now();
  if (system(cmd) != 0) {
    fprintf(stderr, "file_bench: cat failed\n");
    exit(1);
  }
  return now() - t0;
}

static double run_wc(const char *path) {
  char cmd[600];
  snprintf(cmd, sizeof cmd, "wc -l '%s' > /dev/null", path);
  double t0 = now();
  if (system(cmd) != 0) {
    fprintf(stderr, "file_bench: wc failed\n");
    exit(1);
  }
  return now() - t0;
}

/* The plain C way: stdio's buffer and getline(3). */
static double run_getline(const char *path, uint64_t *nlines) {
  double t0 = now();
  FILE *f = fopen(path, "r");
  if (f == NULL) {
    perror("file_bench: fopen");
    exit(1);
  }
  char *line = NULL;
  size_t cap = 0;
  ssize_t n;
  uint64_t count = 0;
  unsigned sum = 0;
  while ((n = getline(&line, &cap, f)) >= 0) {
    count++;
    sum += (unsigned)n + (unsigned char)line[0];
  }
  free(line);
  fclose(f);
  double t = now() - t0;
  *nlines = count + (sum == 1); /* sum is used, so the loop is not dropped */
  return t;
}

/* ---- ascope ----------------------------------------------------------------- */

struct stream_run {
  const char *path;
  size_t chunk; /* 0: lines */
  uint64_t bytes, lines;
  unsigned sum; /* the touched bytes, so the reads are not for nothing */
  int status;
};

static int on_chunk(ascope *s, int status, const char *data, size_t len, void *ud) {
  (void)s;
  struct stream_run *r = ud;
  if (data == NULL) return status;
  for (size_t i = 0; i < len; i += 4096) r->sum += (unsigned char)data[i];
  r->bytes += len;
  return ASCOPE_CONTINUE;
}

static int on_line(ascope *s, int status, const char *data, size_t len, void *ud) {
  (void)s;
  struct stream_run *r = ud;
  if (data == NULL) return status;
  r->sum += (unsigned)len + (len ? (unsigned char)data[0] : 0u);
  r->bytes += len + 1;
  r->lines++;
  return ASCOPE_CONTINUE;
}

static void body(ascope *s, void *ud) {
  struct stream_run *r = ud;
  int rc = r->chunk ? ascope_file_stream(s, ascope_resource(s, 0), r->chunk, 0, on_chunk, r, NULL)
                    : ascope_file_lines(s, ascope_resource(s, 0), NULL, on_line, r, NULL);
  if (rc) ascope_fail(s, rc, "ascope_file_stream refused");
}

static void done(ascope *s, int status, void *ud) {
  (void)s;
  ((struct stream_run *)ud)->status = status;
}

/* chunk 0: a line stream, whose bytes must add up to size too. */
static double run_stream(ascope_rt *rt, const char *path, size_t chunk, size_t size,
                         uint64_t *nlines) {
  struct stream_run r = {.path = path, .chunk = chunk, .status = 1};
  ascope *s = ascope_new(rt);
  double t0 = now();
  if (ascope_use_file(s, path, "r") || ascope_start(s, body, done, &r)) {
    fprintf(stderr, "file_bench: cannot start a scope\n");
    exit(1);
  }
  ascope_rt_run(rt);
  double t = now() - t0;
  if (r.status || r.bytes != size) {
    fprintf(stderr, "file_bench: stream ended with %s after %llu bytes\n",
            ascope_err_name(r.status), (unsigned long long)r.bytes);
    exit(1);
  }
  if (nlines) *nlines = r.lines;
  return t;
}

/* ---- the run ---------------------------------------------------------------- */

int main(int argc, char **argv) {
  size_t mib = argc > 1 ? strtoul(argv[1], NULL, 10) : 1024;
  int rounds = argc > 2 ? atoi(argv[2]) : 5;
  if (mib == 0 || rounds < 1) {
    fprintf(stderr, "usage: %s [size_mib [rounds]]\n", argv[0]);
    return 2;
  }
  size_t size = mib << 20;
  const char *tmp = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
  char dir[512], path[600];
  snprintf(dir, sizeof dir, "%s/ascope-file-bench-XXXXXX", tmp);
  if (mkdtemp(dir) == NULL) {
    perror("mkdtemp");
    return 1;
  }
  snprintf(path, sizeof path, "%s/data", dir);
  if (make_file(path, size, 0) != 0) {
    perror("writing the file");
    rmdir(dir);
    return 1;
  }
  ascope_rt *rt = ascope_rt_new(NULL);
  const size_t chunks[2] = {64u << 10, 1u << 20};
  double best_cat = run_cat(path); /* the warm-up; its time counts only if best */
  double best[2] = {1e30, 1e30};
  for (int i = 0; i < rounds; i++) {
    double t = run_cat(path);
    if (t < best_cat) best_cat = t;
    for (int c = 0; c < 2; c++) {
      t = run_stream(rt, path, chunks[c], size, NULL);
      if (t < best[c]) best[c] = t;
    }
  }
  double mb = (double)size / 1e6;
  printf("file_bench: %zu MiB file from the page cache, best of %d rounds (cat first, then "
         "alternating)\n\n",
         mib, rounds);
  printf("| %-36s | %10s | %9s | %8s |\n", "reader", "chunk", "MB/s", "vs cat");
  printf("|--------------------------------------|------------|-----------|----------|\n");
  printf("| %-36s | %10s | %9.0f | %7.2fx |\n", "cat FILE > /dev/null", "(cat's)", mb / best_cat,
         1.0);
  for (int c = 0; c < 2; c++) {
    char ch[32], name[64];
    snprintf(ch, sizeof ch, "%zu KiB", chunks[c] >> 10);
    snprintf(name, sizeof name, "ascope_file_stream (holds %zu KiB)",
             ascope_file_stream_memory(chunks[c]) >> 10);
    printf("| %-36s | %10s | %9.0f | %7.2fx |\n", name, ch, mb / best[c], best_cat / best[c]);
  }

  /* Lines: a text file in place of the random one. */
  unlink(path);
  if (make_file(path, size, 1) != 0) {
    perror("writing the text file");
    rmdir(dir);
    return 1;
  }
  uint64_t n_getline = 0, n_lines = 0;
  double best_wc = run_wc(path), best_gl = 1e30, best_ln = 1e30;
  for (int i = 0; i < rounds; i++) {
    double t = run_wc(path);
    if (t < best_wc) best_wc = t;
    if ((t = run_getline(path, &n_getline)) < best_gl) best_gl = t;
    if ((t = run_stream(rt, path, 0, size, &n_lines)) < best_ln) best_ln = t;
  }
  if (n_lines != n_getline) {
    fprintf(stderr, "file_bench: %llu lines, getline saw %llu\n", (unsigned long long)n_lines,
            (unsigned long long)n_getline);
    return 1;
  }
  printf("\n%llu lines of random length (%.1f bytes on average), best of %d rounds\n\n",
         (unsigned long long)n_lines, (double)size / (double)n_lines - 1, rounds);
  printf("| %-36s | %9s | %10s | %11s |\n", "reader", "MB/s", "Mlines/s", "vs getline");
  printf("|--------------------------------------|-----------|------------|-------------|\n");
  printf("| %-36s | %9.0f | %10.1f | %10.2fx |\n", "wc -l FILE (counts, no lines handed)",
         mb / best_wc, (double)n_lines / 1e6 / best_wc, best_gl / best_wc);
  printf("| %-36s | %9.0f | %10.1f | %10.2fx |\n", "fopen + getline(3) loop", mb / best_gl,
         (double)n_lines / 1e6 / best_gl, 1.0);
  char name[64];
  snprintf(name, sizeof name, "ascope_file_lines (holds %zu KiB)",
           ascope_file_lines_memory(NULL) >> 10);
  printf("| %-36s | %9.0f | %10.1f | %10.2fx |\n", name, mb / best_ln,
         (double)n_lines / 1e6 / best_ln, best_gl / best_ln);
  ascope_rt_free(rt);
  unlink(path);
  rmdir(dir);
  return 0;
}
