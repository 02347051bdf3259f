/* lines_to_sqlite FILE URL: a text file into SQLite in one transaction, a
 * query, and a URL fetched, all under one deadline.
 *
 *   async with asyncio.timeout(10):
 *       async with aiofiles.open(path) as f, aiosqlite.connect("lines.db") as db,
 *                  db.transaction(), aiohttp.ClientSession() as http:
 *           async for line in f:
 *               await db.execute("INSERT INTO line VALUES (?)", (line,))
 *           print(await db.fetchval("SELECT count(*) FROM line"))
 *           print((await http.get(url)).status)
 *
 * If anything fails (the file, a statement, the URL, the deadline), the
 * transaction rolls back and every resource is released, in reverse. */
#include <ascope/file.h>
#include <ascope/http.h>
#include <ascope/sqlite.h>

#include <stdio.h>

static size_t in, db, http;
static const char *url;

static int on_count(ascope *s, int status, ascope_rows *rows, void *ud) {
  (void)s, (void)ud;
  if (status == 0) printf("%lld lines\n", (long long)ascope_rows_int64(rows, 0, 0));
  return status;
}

static int on_page(ascope *s, int status, ascope_http_resp *r, void *ud) {
  (void)s, (void)ud;
  if (status == 0) printf("%s: %d\n", url, ascope_http_resp_status(r));
  return status ? status : ascope_http_resp_status(r) == 200 ? 0 : ASCOPE_EDRIVER;
}

static int on_line(ascope *s, int status, const char *line, size_t len, void *ud) {
  ascope_sql *sql = ud;
  if (status) return status; /* the file's error: pass it up */
  if (line == NULL) {        /* the end of the file */
    ascope_sql_query(s, sql, "SELECT count(*) FROM line", NULL, on_count, NULL);
    return ascope_http_get(s, ascope_http_resource(s, http), url, on_page, NULL);
  }
  ascope_sql_params *p = ascope_sql_params_new();
  ascope_sql_params_add_text(p, line, len);
  status = ascope_sql_exec(s, sql, "INSERT INTO line VALUES (?)", p, NULL, NULL);
  ascope_sql_params_free(p);
  return status;
}

static void body(ascope *s, void *ud) {
  (void)ud;
  ascope_sql *sql = ascope_sql_resource(s, db);
  ascope_sql_exec(s, sql, "CREATE TABLE IF NOT EXISTS line (text TEXT)", NULL, NULL, NULL);
  ascope_file_lines(s, ascope_file_resource(s, in), NULL, on_line, sql, NULL);
}

static void done(ascope *s, int status, void *ud) {
  char err[512];
  *(int *)ud = status;
  if (ascope_err_format(ascope_error(s), err, sizeof err)) fprintf(stderr, "%s\n", err);
}

int main(int argc, char **argv) {
  if (argc != 3) return fprintf(stderr, "usage: lines_to_sqlite FILE URL\n"), 2;
  url = argv[2];
  int status = 0;
  ascope_rt *rt = ascope_rt_new(NULL);
  ascope *s = ascope_new(rt);
  in = ascope_use_count(s), ascope_use_file(s, argv[1], "r");
  db = ascope_use_count(s), ascope_use_sqlite(s, "lines.db", NULL);
  ascope_use_sql_tx_at(s, ascope_sqlite(), db, NULL);
  http = ascope_use_count(s), ascope_use_http(s, NULL);
  ascope_set_timeout(s, 10000);
  if (ascope_start(s, body, done, &status) == 0) ascope_rt_run(rt);
  ascope_rt_free(rt);
  return status ? 1 : 0;
}
