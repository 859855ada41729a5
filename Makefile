# throttle_jobs: PGXS build.  The test suite is test/run, the orchestration
# around "make installcheck" below; see README.md.

EXTENSION = throttle_jobs
EXTVERSION = $(shell sed -n "s/^default_version *= *'\(.*\)'/\1/p" $(EXTENSION).control)

MODULE_big = $(EXTENSION)
OBJS = $(patsubst %.c,%.o,$(sort $(wildcard src/*.c)))

# The shipped scripts sit beside the control file (sql/ holds only the
# pg_regress inputs): the released install scripts and every upgrade script
# are shipped as they are; the install script of the current version is
# built (below).
DATA = $(filter-out $(EXTENSION)--$(EXTVERSION).sql,$(wildcard $(EXTENSION)--*.sql))
DATA_built = $(EXTENSION)--$(EXTVERSION).sql

# The tests, for "make installcheck" against a running server that preloads
# the installed library with test/throttle_jobs.conf (test/run starts one;
# README's development section).  PGXS has no "make check".  The expected output
# names the superuser "postgres" (initdb -U postgres), so every tool
# connects as it; PGHOST and PGPORT (or EXTRA_REGRESS_OPTS) name the server.
#
# pg_regress inputs in sql/, outputs in expected/ (one topic per file, in
# order; install creates the extension and runs first).
REGRESS = install queues enqueue reserve ready_hint complete work backoff dead_letters \
          maintain run_jobs views hot_updates limits fairness adaptive waiting stats privileges bad_input \
          handler_security search_path queue_grants hardening maintenance options api handler_leftovers max_running
REGRESS_OPTS = --user=postgres
# Isolation specs: test/isolation/specs/NAME.spec with their output in
# test/isolation/expected/NAME.out; each runs in a database that has the extension already.
ISOLATION = $(sort $(basename $(notdir $(wildcard test/isolation/specs/*.spec))))
ISOLATION_OPTS = --inputdir=test/isolation --load-extension=$(EXTENSION) --user=postgres
# TAP tests (test/t/NNN_name.pl): each starts its own nodes with the server
# of PG_CONFIG, so the extension must be installed in that tree.
TAP_TESTS = 1
PROVE_TESTS ?= test/t/*.pl

# compat.h names the module and its version in the magic block (18)
PG_CPPFLAGS = -DTJ_EXTVERSION='"$(EXTVERSION)"'
PG_CFLAGS = -Wall -Wextra -Werror -Wno-unused-parameter -Wno-missing-field-initializers \
            -Wno-sign-compare -Wno-cast-function-type

# src/build_stamp.h: see the build stamp below
EXTRA_CLEAN = src/build_stamp.h

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

# "make prove_installcheck": the TAP tests alone (PGXS runs them at the end
# of "make installcheck"; PROVE_TESTS=test/t/008_upgrade.pl picks one).
.PHONY: prove_installcheck
prove_installcheck:
	$(prove_installcheck)
# Every object, and the bitcode PGXS builds beside it when the server was
# built with LLVM (with_llvm: "make" builds each .bc from its .c, on its own).
BITCODE = $(patsubst %.o,%.bc,$(OBJS))
$(OBJS) $(BITCODE): src/throttle_jobs.h

# The build stamp (SHOW throttle_jobs.build_stamp, src/build_stamp.c): a new
# one, UTC time and random digits, whenever any other object of the library
# was rebuilt; test/run reads it back from src/build_stamp.h.
src/build_stamp.h: $(filter-out src/build_stamp.o,$(OBJS))
	printf '#define TJ_BUILD_STAMP "%s-%s"\n' "$$(date -u +%Y%m%dT%H%M%SZ)" \
	  "$$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')" > $@
src/build_stamp.o src/build_stamp.bc: src/build_stamp.h

# The install script of the current version: the upgrade script's install
# guard first (it refuses a schema that someone prepared), then the released
# 0.1.0 script and the upgrade script, so that a fresh install runs exactly
# the statements that an update runs.
$(EXTENSION)--$(EXTVERSION).sql: $(EXTENSION)--0.1.0.sql $(EXTENSION)--0.1.0--$(EXTVERSION).sql
	{ echo '-- throttle_jobs $(EXTVERSION): install script, built by make from the two scripts below.'; \
	  printf '%s\n' '\echo Use "CREATE EXTENSION throttle_jobs" to load this file. \quit'; \
	  sed -n '/^-- BEGIN install guard/,/^-- END install guard/p' $(EXTENSION)--0.1.0--$(EXTVERSION).sql; \
	  cat $(EXTENSION)--0.1.0.sql $(EXTENSION)--0.1.0--$(EXTVERSION).sql; } > $@
