# bench/pg_bench: the PostgreSQL driver beside raw libpq against the same
# server in the same run (sequential queries; 64 scopes in flight on one
# connection beside raw pipeline mode). Needs ASCOPE_PG_DSN (scripts/pg-start).
pkg_check_modules(LIBPQ_B REQUIRED IMPORTED_TARGET libpq)
add_executable(pg_bench ${CMAKE_CURRENT_SOURCE_DIR}/pg_bench.c)
target_link_libraries(pg_bench PRIVATE ascope-postgres PkgConfig::LIBPQ_B)
# bench/pool_bench: the pool's own cost on a no-op driver, and a PostgreSQL
# pool of 8 beside raw libpq on 8 connections, in one run.
add_executable(pool_bench ${CMAKE_CURRENT_SOURCE_DIR}/pool_bench.c)
target_link_libraries(pool_bench PRIVATE ascope-postgres PkgConfig::LIBPQ_B)
