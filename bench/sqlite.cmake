# bench/sqlite_bench: the SQLite driver beside raw synchronous sqlite3, in one
# binary (inserts queued in one transaction, latency-bound lookups, lookups
# from 64 concurrent scopes).
add_executable(sqlite_bench ${CMAKE_CURRENT_SOURCE_DIR}/sqlite_bench.c)
target_link_libraries(sqlite_bench PRIVATE ascope-sqlite PkgConfig::SQLITE3)
