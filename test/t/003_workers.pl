# The background workers: the launcher starts one maintenance worker per
# database listed in throttle_jobs.databases; a reload changes the
# maintenance interval; leases expire without anyone calling maintain(); a
# launcher killed with SIGTERM comes back without duplicating the
# maintenance workers; a hot standby runs none of them until it is promoted;
# and without worker slots for executors there is one WARNING, and the
# maintenance worker does not run handler jobs itself (lease reaping does not
# wait behind a handler); run_jobs() runs them.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);

# Every wait here normally ends within seconds: give up on one after 30 s
# (not the default 180 s), so that a failure leaves time for the other
# checks within test/run's limit per file.
$PostgreSQL::Test::Utils::timeout_default = 30
  unless $ENV{PG_TEST_TIMEOUT_DEFAULT};

# Count of the throttle_jobs processes of each type, as "launcher/maintenance/executor".
my $counts_sql = q{
	SELECT count(*) FILTER (WHERE backend_type = 'throttle_jobs launcher') || '/' ||
	       count(*) FILTER (WHERE backend_type = 'throttle_jobs maintenance') || '/' ||
	       count(*) FILTER (WHERE backend_type = 'throttle_jobs executor')
	FROM pg_stat_activity};

# The databases that have a maintenance worker, one entry per worker.
my $maint_dbs_sql = q{
	SELECT string_agg(datname, ',' ORDER BY datname) FROM pg_stat_activity
	WHERE backend_type = 'throttle_jobs maintenance'};

# How many lines of $node's log (from byte $offset, default 0) match $re.
sub log_count
{
	my ($node, $re, $offset) = @_;
	my $log = slurp_file($node->logfile, $offset // 0);
	return scalar(grep { /$re/ } split /\n/, $log);
}

my $primary = PostgreSQL::Test::Cluster->new('primary');
$primary->init(allows_streaming => 1);
$primary->append_conf('postgresql.conf', q{
shared_preload_libraries = 'throttle_jobs'
throttle_jobs.databases = 'postgres, db2'
throttle_jobs.maintenance_interval = 200
});
$primary->start;

$primary->safe_psql('postgres', 'CREATE DATABASE db2');
$primary->safe_psql($_, 'CREATE EXTENSION throttle_jobs') for qw(postgres db2);

# ---------------------------------------------------------------- start
ok( $primary->poll_query_until('postgres', $maint_dbs_sql, 'db2,postgres'),
	'one maintenance worker in each listed database');
is($primary->safe_psql('postgres', $counts_sql),
	'1/2/0', 'one launcher, two maintenance workers, no executor (no handler queue)');
is(log_count($primary, qr/LOG:\s+throttle_jobs launcher started$/),
	1, 'the launcher logged its start once');

# ---------------------------------------------------------------- reload
my $offset = -s $primary->logfile;
$primary->safe_psql('postgres', q{
	ALTER SYSTEM SET throttle_jobs.maintenance_interval = 300;
	SELECT pg_reload_conf();
});
ok( eval {
		$primary->wait_for_log(
			qr/LOG:\s+throttle_jobs: maintenance interval is now 300 ms/, $offset);
	},
	'a reload changes the maintenance interval (logged by the workers)');
is($primary->safe_psql('postgres', 'SHOW throttle_jobs.maintenance_interval'),
	'300ms', 'the new interval is in effect');

# ---------------------------------------------------------------- lease expiry
# A job is reserved with a 1 s lease and never completed; nobody calls
# maintain(): the maintenance worker finds the expired lease, counts the
# attempt and makes the job available again.
$primary->safe_psql('postgres', q{
	SELECT throttle_jobs.create_queue('lease_q', backoff_base => '100 ms',
	                                  backoff_jitter => 0, max_attempts => 5)});
my $lease_id = $primary->safe_psql('postgres',
	q{SELECT throttle_jobs.enqueue('lease_q', '{"lease": 1}')});
is($primary->safe_psql('postgres',
		q{SELECT count(*) FROM throttle_jobs.reserve('lease_q', 'forgetful', 1, lease => '1 s')}),
	'1', 'a job is reserved with a 1 s lease');
is($primary->safe_psql('postgres',
		"SELECT state || '/' || attempt FROM throttle_jobs.jobs WHERE id = $lease_id"),
	'running/1', 'the job is running, attempt 1');
ok( $primary->poll_query_until('postgres', qq{
		SELECT state = 'available' AND attempt = 1 AND worker IS NULL
		       AND last_error LIKE '%lease%'
		FROM throttle_jobs.jobs WHERE id = $lease_id}),
	'the expired lease is failed by the maintenance worker: available again, attempt counted, error names the lease');

# ---------------------------------------------------------------- launcher SIGTERM
my $launcher_pid = $primary->safe_psql('postgres',
	q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'throttle_jobs launcher'});
my $maint_pids_sql = q{
	SELECT string_agg(pid::text, ',' ORDER BY pid) FROM pg_stat_activity
	WHERE backend_type = 'throttle_jobs maintenance'};
my $maint_pids = $primary->safe_psql('postgres', $maint_pids_sql);
ok($launcher_pid =~ /^\d+$/, 'the launcher has a pid')
  or die "no launcher pid, cannot signal it";

$offset = -s $primary->logfile;
kill 'TERM', $launcher_pid;
ok( $primary->poll_query_until('postgres', qq{
		SELECT count(*) = 1 AND bool_and(pid <> $launcher_pid)
		FROM pg_stat_activity WHERE backend_type = 'throttle_jobs launcher'}),
	'the launcher comes back with a new pid after SIGTERM');
ok(eval { $primary->wait_for_log(qr/LOG:\s+throttle_jobs launcher started$/m, $offset) },
	'the new launcher logged its start');

# The new launcher naps 1 s between rounds: watch it for a few rounds.  The
# maintenance workers are the same processes, and none is started twice.
my $stable = 1;
for (1 .. 30)
{
	my $now = $primary->safe_psql('postgres', $maint_pids_sql);
	my $dbs = $primary->safe_psql('postgres', $maint_dbs_sql);
	if ($now ne $maint_pids || $dbs ne 'db2,postgres')
	{
		diag("maintenance workers changed: pids '$now' (were '$maint_pids'), databases '$dbs'");
		$stable = 0;
		last;
	}
	usleep(100_000);
}
ok($stable, 'the maintenance workers are neither restarted nor duplicated by the new launcher');
is(log_count($primary, qr/LOG:\s+throttle_jobs maintenance worker started$/),
	2, 'only two maintenance workers ever started');

# ---------------------------------------------------------------- hot standby
$primary->backup('b1');
my $standby = PostgreSQL::Test::Cluster->new('standby');
$standby->init_from_backup($primary, 'b1', has_streaming => 1);
$standby->start;

# Something the standby must replay, written after the primary's workers are
# known to be up.
ok($primary->poll_query_until('postgres', $maint_dbs_sql, 'db2,postgres'),
	'the primary still has its maintenance workers');
$primary->safe_psql('postgres',
	q{SELECT throttle_jobs.enqueue('lease_q', '{"after_backup": 1}')});
$primary->wait_for_catchup($standby);
is($standby->safe_psql('postgres', q{
		SELECT count(*) FROM throttle_jobs.jobs WHERE payload ? 'after_backup'}),
	'1', 'the standby has replayed past the primary\'s workers');

# Several launcher rounds' worth of looking: none of our processes.
my $seen_on_standby = '';
for (1 .. 20)
{
	my $r = $standby->safe_psql('postgres', qq{
		SELECT pg_is_in_recovery() || ' ' || ($counts_sql)});
	if ($r ne 'true 0/0/0' && $r ne 't 0/0/0')
	{
		$seen_on_standby = $r;
		last;
	}
	usleep(100_000);
}
is($seen_on_standby, '', 'no throttle_jobs process on the standby while in recovery');
is(log_count($standby, qr/LOG:\s+throttle_jobs (launcher|maintenance worker) started$/),
	0, 'the standby log shows no worker start');

$offset = -s $standby->logfile;
$standby->promote;
ok($standby->poll_query_until('postgres', 'SELECT NOT pg_is_in_recovery()'),
	'the standby is promoted');
ok( $standby->poll_query_until('postgres', qq{
		SELECT ($counts_sql) = '1/2/0' AND ($maint_dbs_sql) = 'db2,postgres'}),
	'the promoted node runs the launcher and a maintenance worker in each listed database');
is(log_count($standby, qr/LOG:\s+throttle_jobs launcher started$/, $offset),
	1, 'the promoted node logged the launcher\'s start');

$standby->stop;
$primary->stop;

# ---------------------------------------------------------------- no slots
# max_worker_processes = 3: the logical replication launcher, our launcher
# and the maintenance worker take all three slots, so no executor can start.
# The maintenance worker does not run handler jobs itself (it did, and lease
# reaping then waited behind the handler): an expired lease is reaped on
# time while a long handler job waits, and run_jobs() runs the handler jobs.
my $small = PostgreSQL::Test::Cluster->new('small');
$small->init;
$small->append_conf('postgresql.conf', q{
shared_preload_libraries = 'throttle_jobs'
throttle_jobs.databases = 'postgres'
throttle_jobs.maintenance_interval = 100
max_worker_processes = 3
max_parallel_workers_per_gather = 0
});
$small->start;
$small->safe_psql('postgres', q{
	CREATE EXTENSION throttle_jobs;
	CREATE ROLE slot_owner NOLOGIN;
	GRANT throttle_jobs_admin TO slot_owner;
	CREATE TABLE slot_seen (n int, pid int);
	GRANT INSERT ON slot_seen TO slot_owner;
	CREATE FUNCTION slot_handler(p jsonb) RETURNS void LANGUAGE plpgsql AS $$
	BEGIN
		PERFORM pg_catalog.pg_sleep(coalesce((p->>'sleep')::float8, 0));
		INSERT INTO public.slot_seen VALUES ((p->>'n')::int, pg_backend_pid());
	END
	$$;
	REVOKE ALL ON FUNCTION slot_handler(jsonb) FROM PUBLIC;
	GRANT EXECUTE ON FUNCTION slot_handler(jsonb) TO slot_owner;
	SET ROLE slot_owner;
	SELECT throttle_jobs.create_queue('slot_q', handler => 'slot_handler(jsonb)',
	                                  backoff_base => '100 ms', lease => '30 s');
	RESET ROLE;
	SELECT throttle_jobs.create_queue('slot_plain', backoff_base => '100 ms', backoff_jitter => 0);
});
ok( $small->poll_query_until('postgres', q{
		SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'logical replication launcher'}, '1'),
	'the logical replication launcher takes a slot');
ok($small->poll_query_until('postgres', $counts_sql, '1/1/0'),
	'the launcher and the maintenance worker run, no executor');

# A long handler job (5 s), then a job reserved with a 1 s lease and
# abandoned: its lease is reaped about 1 s later, not after the handler.
$small->safe_psql('postgres', q{
	SELECT throttle_jobs.enqueue('slot_q', '{"n": 0, "sleep": 5}')});
my $abandoned = $small->safe_psql('postgres', q{
	SELECT throttle_jobs.enqueue('slot_plain', '{}');
	SELECT id FROM throttle_jobs.reserve('slot_plain', 'gone-worker', lease => '1 s')});
$abandoned = (split /\n/, $abandoned)[-1];
my $t0 = Time::HiRes::time();
ok( $small->poll_query_until('postgres', qq{
		SELECT state <> 'running' AND attempt = 1 FROM throttle_jobs.jobs WHERE id = $abandoned}),
	'the expired lease is reaped');
my $reaped_after = Time::HiRes::time() - $t0;
cmp_ok($reaped_after, '<', 3.5,
	sprintf('within about a second of its expiry (%.1f s), not behind the 5 s handler', $reaped_after));
is($small->safe_psql('postgres', q{
		SELECT count(*) FROM slot_seen}), '0', 'no background worker ran the handler job');

# Jobs due over 1 s: the maintenance worker makes many passes, each trying
# (quietly) to start executors again; run_jobs() runs them all.
$small->safe_psql('postgres', q{
	SELECT throttle_jobs.enqueue('slot_q', jsonb_build_object('n', n),
	                             run_at => now() + n * interval '50 ms')
	FROM generate_series(1, 20) n});
ok( $small->poll_query_until('postgres', q{
		SELECT count(*) FROM throttle_jobs.jobs WHERE queue = 'slot_q' AND state = 'available'}, '21'),
	'the handler jobs are due');
is($small->safe_psql('postgres', q{SELECT throttle_jobs.run_jobs('slot_q')}), '21',
	'run_jobs() runs the handler jobs');
is($small->safe_psql('postgres', q{
		SELECT (SELECT count(*) || '/' || count(DISTINCT n) FROM slot_seen) || '/' ||
		       (SELECT count(*) FROM throttle_jobs.archived_jobs
		        WHERE queue = 'slot_q' AND worker LIKE 'run_jobs/%' AND attempt = 1)}),
	'21/21/21', 'each once, by run_jobs, one attempt each');
is($small->safe_psql('postgres', $counts_sql), '1/1/0', 'still no executor');

my $small_log = slurp_file($small->logfile);
is(log_count($small, qr/WARNING:\s+throttle_jobs: out of background worker slots/),
	1, 'exactly one out-of-slots WARNING despite many retries');
like($small_log,
	qr/WARNING:\s+throttle_jobs: out of background worker slots, could not start an executor[^\n]*\n(?:[^\n]*DETAIL:[^\n]*\n)?[^\n]*HINT:[^\n]*max_worker_processes/,
	'the WARNING is about an executor and its HINT names max_worker_processes');

$small->stop;

done_testing();
