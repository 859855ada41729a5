# throttle_jobs: PGXS build.  The test suite is test/run; see README.md.

EXTENSION = throttle_jobs
EXTVERSION = $(shell sed -n "s/^default_version *= *'\(.*\)'/\1/p" $(EXTENSION).control)

MODULE_big = $(EXTENSION)
OBJS = $(patsubst %.c,%.o,$(sort $(wildcard src/*.c)))

DATA = $(filter-out $(wildcard sql/*--*--*.sql),$(wildcard sql/$(EXTENSION)--*.sql)) \
       $(wildcard sql/$(EXTENSION)--*--*.sql)

# pg_regress inputs in sql/, outputs in expected/ (one topic per file, in order)
REGRESS = install queues enqueue reserve complete work backoff dead_letters \
          maintain run_jobs views hot_updates limits fairness adaptive stats privileges bad_input
REGRESS_OPTS = --inputdir=. --temp-config=test/throttle_jobs.conf

PG_CFLAGS = -Wall -Wextra -Werror -Wno-unused-parameter -Wno-missing-field-initializers \
            -Wno-sign-compare -Wno-cast-function-type

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)
$(OBJS): src/throttle_jobs.h
