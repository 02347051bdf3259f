# The storm: thousands of scopes over every driver at once, cancelled at
# random moments or given short deadlines while PostgreSQL backends are
# terminated under them (tests/test_storm.c). It needs all four drivers and
# both servers (scripts/pg-start, scripts/http-start); ASCOPE_STORM_SCOPES
# and ASCOPE_STORM_SEED tune it.
if(TARGET ascope-file AND TARGET ascope-sqlite AND TARGET ascope-postgres AND TARGET ascope-http)
  ascope_test(test_storm ${CMAKE_CURRENT_SOURCE_DIR}/test_storm.c
    LIBS ascope-file ascope-sqlite ascope-postgres ascope-http PkgConfig::LIBPQ PkgConfig::SQLITE3
    LABELS "postgres;http;sqlite;file;storm")
endif()
