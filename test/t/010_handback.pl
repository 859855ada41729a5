# Hand-backs at shutdown are bounded.  An executor that receives SIGTERM
# lets the job in hand finish for throttle_jobs.shutdown_grace, then
# cancels it and hands it back without counting the attempt.  A handler
# whose run makes its own executor receive SIGTERM (here it terminates its
# own backend; an outside watchdog that terminates long-running backends
# does the same) was handed back, and started again by the next executor,
# for ever, with its attempt always 1.  A job is handed back at most 3 times
# without counting; after that an interrupted run fails its attempt, so the
# poison job ends in the dead letters within bounded time.  A job that an
# ordinary shutdown interrupts once is handed back and runs to completion.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

# Every wait here normally ends within seconds: give up on one after 60 s.
$PostgreSQL::Test::Utils::timeout_default = 60
  unless $ENV{PG_TEST_TIMEOUT_DEFAULT};

my $node = PostgreSQL::Test::Cluster->new('handback');
$node->init;
$node->append_conf('postgresql.conf', q{
shared_preload_libraries = 'throttle_jobs'
throttle_jobs.databases = 'postgres'
throttle_jobs.maintenance_interval = 200
throttle_jobs.executor_workers = 1
throttle_jobs.shutdown_grace = 300
throttle_jobs.allow_superuser_handlers = on
});
$node->start;

# The poison handler terminates its own backend (an executor: SIGTERM) and
# sleeps past the grace.  Only a superuser may signal the executor's
# backend, so the queue is a superuser's (allowed above).  The handler
# counts its starts in a sequence (the job's transaction rolls back).  The
# patient handler sleeps at its first start, and is interrupted by the test
# terminating its executor.
$node->safe_psql('postgres', q{
	CREATE EXTENSION throttle_jobs;
	CREATE SEQUENCE poison_starts;
	CREATE SEQUENCE patient_starts;
	CREATE FUNCTION poison(p jsonb) RETURNS void
	LANGUAGE plpgsql SET search_path = public, pg_temp AS $$
	BEGIN
		PERFORM nextval('poison_starts');
		PERFORM pg_terminate_backend(pg_backend_pid());
		PERFORM pg_sleep(60);
	END
	$$;
	CREATE FUNCTION patient(p jsonb) RETURNS jsonb
	LANGUAGE plpgsql SET search_path = public, pg_temp AS $$
	BEGIN
		IF nextval('patient_starts') = 1 THEN
			PERFORM pg_sleep(60);
		END IF;
		RETURN '"done"';
	END
	$$;
	SELECT throttle_jobs.create_queue('patient_q', handler => 'patient(jsonb)',
	                                  max_attempts => 1, lease => '2 min');
});

# An ordinary shutdown of the executor: the job in hand is handed back,
# its attempt not counted, and runs again to completion.
my $patient = $node->safe_psql('postgres', q{SELECT throttle_jobs.enqueue('patient_q', '{}')});
ok( $node->poll_query_until('postgres', q{
		SELECT count(*) = 1 FROM pg_stat_activity
		WHERE backend_type = 'throttle_jobs executor' AND query LIKE '%patient_q%'}),
	'the patient job is running in an executor');
$node->safe_psql('postgres', q{
	SELECT pg_terminate_backend(pid) FROM pg_stat_activity
	WHERE backend_type = 'throttle_jobs executor'});
ok( $node->poll_query_until('postgres', qq{
		SELECT state = 'completed' FROM throttle_jobs.archived_jobs WHERE id = $patient}),
	'the patient job, handed back once, completes');
is( $node->safe_psql('postgres', qq{
		SELECT attempt, jsonb_array_length(errors),
		       errors->0->>'handed_back', errors->0->>'error' ~ '^handed back: .* \\(hand-back 1 of 3 '
		FROM throttle_jobs.archived_jobs WHERE id = $patient}),
	'1|1|true|t', 'its hand-back did not count the attempt (max_attempts 1) and is noted in its errors');

# The poison job: three hand-backs, then each interrupted run is a failed
# attempt; with max_attempts 2 it is dead after five starts.
$node->safe_psql('postgres', q{
	SELECT throttle_jobs.create_queue('poison_q', handler => 'poison(jsonb)',
	                                  max_attempts => 2, backoff_base => '100 ms',
	                                  backoff_jitter => 0, lease => '2 min');
});
my $t0 = time;
my $poison = $node->safe_psql('postgres', q{SELECT throttle_jobs.enqueue('poison_q', '{}')});
ok( $node->poll_query_until('postgres', qq{
		SELECT EXISTS (SELECT FROM throttle_jobs.dead_letters WHERE id = $poison)}),
	'the poison job ends in the dead letters');
my $took = time - $t0;
cmp_ok($took, '<', 30, "within bounded time ($took s)");
is( $node->safe_psql('postgres', qq{
		SELECT attempt, reason,
		       (SELECT count(*) FROM jsonb_array_elements(errors) e WHERE e ? 'handed_back'),
		       (SELECT count(*) FROM jsonb_array_elements(errors) e WHERE NOT e ? 'handed_back'
		           AND e->>'error' ~ 'interrupted by a shutdown of its worker \\(SIGTERM\\) after 3 hand-backs; counted as a failed attempt')
		FROM throttle_jobs.dead_letters WHERE id = $poison}),
	'2|attempts exhausted|3|2', 'three hand-backs, then two counted attempts');
is($node->safe_psql('postgres', q{SELECT last_value FROM poison_starts}),
	'5', 'the poison handler started five times');

$node->stop;
done_testing();
