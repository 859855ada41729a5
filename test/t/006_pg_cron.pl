# throttle_jobs without preloading, driven by pg_cron: the managed-Postgres
# recipe.  Only pg_cron is in shared_preload_libraries, so there are no
# throttle_jobs workers; run_jobs() called by hand by a throttle_jobs_worker
# member runs the handler jobs and says how many, and pg_cron, at its first
# firing, runs the handler jobs with run_jobs(), calls maintain(), and
# enqueues a periodic job from two schedules exactly once, thanks to a
# unique_key derived from the minute; cron.schedule_in_database runs
# maintain() in a database other than cron.database_name.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

# Waits other than the one for pg_cron normally end within seconds.
$PostgreSQL::Test::Utils::timeout_default = 30
  unless $ENV{PG_TEST_TIMEOUT_DEFAULT};

my $node = PostgreSQL::Test::Cluster->new('cron');
$node->init;
$node->append_conf('postgresql.conf', q{
shared_preload_libraries = 'pg_cron'
cron.database_name = 'postgres'
cron.use_background_workers = on
max_worker_processes = 20
timezone = 'UTC'
});
$node->start;

is($node->safe_psql('postgres', 'SHOW shared_preload_libraries'),
	'pg_cron', 'only pg_cron is preloaded');

$node->safe_psql('postgres', 'CREATE EXTENSION pg_cron');
# Loading the library in a backend (not at server start) must work: nothing
# else here can run otherwise.
my ($ret, $stdout, $stderr) = $node->psql('postgres', q{
	CREATE EXTENSION throttle_jobs;
	SELECT throttle_jobs.create_queue('probe_q');
	SELECT throttle_jobs.drop_queue('probe_q');
});
is($ret, 0, 'CREATE EXTENSION throttle_jobs and a call into the library work without preloading')
  or diag($stderr);
if ($ret != 0)
{
	$node->stop;
	done_testing();
	exit;
}

$node->safe_psql('postgres', q{
	CREATE ROLE app NOLOGIN;
	GRANT throttle_jobs_admin TO app;
	CREATE ROLE jobrunner LOGIN;
	GRANT throttle_jobs_worker TO jobrunner;
	CREATE TABLE public.cron_seen (n int, cur_user name, sess_user name, pid int);
	GRANT INSERT ON public.cron_seen TO app;
	CREATE FUNCTION public.cron_handler(p jsonb) RETURNS void LANGUAGE plpgsql AS $$
	BEGIN
		INSERT INTO public.cron_seen
		VALUES ((p->>'n')::int, current_user, session_user, pg_backend_pid());
	END
	$$;
	REVOKE ALL ON FUNCTION public.cron_handler(jsonb) FROM PUBLIC;
	GRANT EXECUTE ON FUNCTION public.cron_handler(jsonb) TO app;
	SET ROLE app;
	SELECT throttle_jobs.create_queue('cron_q', handler => 'public.cron_handler(jsonb)');
	RESET ROLE;
	-- the periodic job's queue: nobody consumes it here
	SELECT throttle_jobs.create_queue('reports');
});
is($node->safe_psql('postgres', q{
		SELECT count(*) FROM pg_stat_activity WHERE backend_type LIKE 'throttle_jobs%'}),
	'0', 'no throttle_jobs worker runs (not preloaded)');

# Queues in another database than cron.database_name: pg_cron's tables live
# in cron.database_name only, and cron.schedule_in_database (pg_cron 1.4)
# runs a command in another database.
$node->safe_psql('postgres', 'CREATE DATABASE cron_other');
$node->safe_psql('cron_other', q{
	SET client_min_messages = warning;
	CREATE EXTENSION throttle_jobs;
	SELECT throttle_jobs.create_queue('other_q');
	SELECT throttle_jobs.enqueue('other_q', '{}');
});
is($node->safe_psql('cron_other', q{
		SELECT depth_as_of IS NULL FROM throttle_jobs.queue_stats WHERE queue = 'other_q'}),
	't', 'cron_other: no maintain() has counted its queue yet');

# ---------------------------------------------------------------- run_jobs by hand
$node->safe_psql('postgres', q{
	SELECT throttle_jobs.enqueue('cron_q', jsonb_build_object('n', n))
	FROM generate_series(1, 3) n});
my ($pid, $ran) = split /\|/, $node->safe_psql('postgres',
	'SELECT pg_backend_pid(), throttle_jobs.run_jobs()',
	extra_params => [ '-U', 'jobrunner' ]);
is($ran, '3', 'run_jobs() by a throttle_jobs_worker member runs the 3 ready jobs and returns 3');
is($node->safe_psql('postgres', qq{
		SELECT count(*) FROM throttle_jobs.archived_jobs
		WHERE queue = 'cron_q' AND state = 'completed' AND attempt = 1
		  AND worker = 'run_jobs/$pid'}),
	'3', 'the 3 jobs are archived as completed by run_jobs/<pid of that session>');
is($node->safe_psql('postgres', q{
		SELECT string_agg(DISTINCT cur_user || '/' || sess_user, ',') || ' ' || count(*)
		FROM cron_seen WHERE n <= 3}),
	'app/jobrunner 3', 'the handler ran as the queue owner, in the caller\'s session');
is($node->safe_psql('postgres', 'SELECT throttle_jobs.run_jobs()',
		extra_params => [ '-U', 'jobrunner' ]),
	'0', 'run_jobs() returns 0 when nothing is ready');

# ---------------------------------------------------------------- pg_cron
$node->safe_psql('postgres', q{
	SELECT throttle_jobs.enqueue('cron_q', jsonb_build_object('n', n))
	FROM generate_series(101, 105) n});

# Schedule far enough from the end of a minute that pg_cron has read the
# new jobs before the next minute starts: a single firing is waited for.
$node->poll_query_until('postgres',
	'SELECT extract(second FROM clock_timestamp()) < 45');
my $enqueue_cmd =
  q{SELECT throttle_jobs.enqueue('reports', '{"kind": "report"}', unique_key => 'report:' || to_char(date_trunc('minute', now()), 'YYYY-MM-DD HH24:MI'))};
my ($scheduled_at, $run_id, $maint_id, $rep_a, $rep_b, $other_id) = split /\n/,
  $node->safe_psql('postgres', qq{
	SELECT clock_timestamp();
	SELECT cron.schedule('run-jobs', '* * * * *', 'SELECT throttle_jobs.run_jobs()');
	SELECT cron.schedule('maintain', '* * * * *', 'SELECT throttle_jobs.maintain()');
	SELECT cron.schedule('report-a', '* * * * *', \$cmd\$$enqueue_cmd\$cmd\$);
	SELECT cron.schedule('report-b', '* * * * *', \$cmd\$$enqueue_cmd\$cmd\$);
	SELECT cron.schedule_in_database('maintain-other', '* * * * *',
	                                 'SELECT throttle_jobs.maintain()', 'cron_other');
});
note("scheduled at $scheduled_at: cron jobs $run_id, $maint_id, $rep_a, $rep_b");
my $ids = join(',', $run_id, $maint_id, $rep_a, $rep_b);

# The first firing: each of the four cron jobs has a finished run.
{
	local $PostgreSQL::Test::Utils::timeout_default = 130
	  unless $ENV{PG_TEST_TIMEOUT_DEFAULT};
	ok( $node->poll_query_until('postgres', qq{
			SELECT count(DISTINCT jobid) = 5 FROM cron.job_run_details
			WHERE jobid IN ($ids, $other_id) AND status IN ('succeeded', 'failed')}),
		'pg_cron fired all five jobs');
}
my $minute = $node->safe_psql('postgres', qq{
	SELECT date_trunc('minute', min(start_time)) FROM cron.job_run_details
	WHERE jobid IN ($ids)});
note("first firing in the minute of $minute");
is($node->safe_psql('postgres', qq{
		SELECT string_agg(j.jobname || ':' || d.status, ',' ORDER BY j.jobname)
		FROM cron.job j JOIN cron.job_run_details d USING (jobid)
		WHERE jobid IN ($ids) AND date_trunc('minute', d.start_time) = '$minute'}),
	'maintain:succeeded,report-a:succeeded,report-b:succeeded,run-jobs:succeeded',
	'in that minute each cron job ran once and succeeded (maintain() included)');

# (pg_cron may take up a job scheduled in another database a minute
# earlier or later than the others: every run of it, whatever its minute.)
is($node->safe_psql('postgres', qq{
		SELECT string_agg(DISTINCT d.database || ':' || d.status, ',') FROM cron.job_run_details d
		WHERE d.jobid = $other_id}),
	'cron_other:succeeded', 'cron.schedule_in_database ran maintain() in cron_other (every run succeeded)');
is($node->safe_psql('cron_other', q{
		SELECT available || '/' || (depth_as_of IS NOT NULL)
		FROM throttle_jobs.queue_stats WHERE queue = 'other_q'}),
	'1/true', 'and that maintain() counted cron_other\'s queue');

my $cron_pid = $node->safe_psql('postgres', qq{
	SELECT job_pid FROM cron.job_run_details
	WHERE jobid = $run_id AND date_trunc('minute', start_time) = '$minute'});
is($node->safe_psql('postgres', qq{
		SELECT count(*) FROM throttle_jobs.archived_jobs
		WHERE queue = 'cron_q' AND (payload->>'n')::int > 100
		  AND state = 'completed' AND attempt = 1 AND worker = 'run_jobs/$cron_pid'}),
	'5', 'the 5 handler jobs were run by the cron job\'s run_jobs() (worker run_jobs/<its pid>)');
is($node->safe_psql('postgres', q{
		SELECT count(*) || '/' || count(DISTINCT n) || '/' || string_agg(DISTINCT cur_user, ',')
		FROM cron_seen WHERE n > 100}),
	'5/5/app', 'the handler ran each job once, as the queue owner');
is($node->safe_psql('postgres', q{
		SELECT count(*) FROM throttle_jobs.jobs WHERE queue = 'cron_q'}),
	'0', 'no handler job is left');

is($node->safe_psql('postgres', qq{
		SELECT count(*) FROM throttle_jobs.jobs
		WHERE queue = 'reports'
		  AND unique_key = 'report:' || to_char(timestamptz '$minute', 'YYYY-MM-DD HH24:MI')}),
	'1', 'the periodic job of that minute was enqueued exactly once from the two schedules');
is($node->safe_psql('postgres', qq{
		SELECT count(*) FROM throttle_jobs.jobs
		WHERE queue = 'reports' AND date_trunc('minute', enqueued_at) = '$minute'}),
	'1', 'and no other job was enqueued into the queue in that minute');

is($node->safe_psql('postgres', q{
		SELECT count(*) FROM pg_stat_activity WHERE backend_type LIKE 'throttle_jobs%'}),
	'0', 'still no throttle_jobs worker: pg_cron did the work');

# Statistics without preloading: the depth comes from the last maintain(),
# the event counters are not kept, and reset_stats() says why it cannot.
$node->safe_psql('postgres', 'SELECT throttle_jobs.maintain()');
# (one report job per minute in which the cron jobs fired: one, or two
# when the first firing of some jobs fell in the next minute)
is($node->safe_psql('postgres', q{
		SELECT (available = (SELECT count(*) FROM throttle_jobs.jobs
		                     WHERE queue = 'reports' AND state = 'available'))
		       || '/' || (available >= 1) || '/' || running || '/' || (depth_as_of IS NOT NULL)
		       || '/' || (completed IS NULL)
		FROM throttle_jobs.queue_stats WHERE queue = 'reports'}),
	'true/true/0/true/true', 'queue_stats without preloading: depth from the last maintain(), no event counters');
my ($rc, $stdout, $stderr) = $node->psql('postgres',
	"SELECT throttle_jobs.reset_stats('reports')", extra_params => ['-v', 'VERBOSITY=verbose']);
like($stderr, qr/55000/, 'reset_stats() without preloading fails with SQLSTATE 55000');

$node->safe_psql('postgres', qq{SELECT cron.unschedule(jobid) FROM cron.job WHERE jobid IN ($ids, $other_id)});
$node->stop;
done_testing();
