# Executors that die in the middle of a job.  A kill -9 of an executor
# crash-restarts the server: the jobs committed before are still there, the
# job in hand comes back with its attempt counted and an error saying its
# worker exited, and nothing completes twice.  A job that kills its executor
# every time ends in the dead letters instead of looping.  An immediate stop
# under load loses no committed enqueue, duplicates none, and every job
# finishes after the restart.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;

# Every wait here normally ends within seconds: give up on one after 30 s
# (not the default 180 s), so that a failure leaves time for the other
# checks within test/run's limit per file.
$PostgreSQL::Test::Utils::timeout_default = 30
  unless $ENV{PG_TEST_TIMEOUT_DEFAULT};

my $node = PostgreSQL::Test::Cluster->new('exec_crash');
$node->init;
$node->append_conf('postgresql.conf', q{
shared_preload_libraries = 'throttle_jobs'
restart_after_crash = on
throttle_jobs.databases = 'postgres'
throttle_jobs.maintenance_interval = 200
throttle_jobs.executor_workers = 2
});
$node->start;

# The handler records each job it completes in a plain table (so a double
# completion would show as a duplicate), and waits while its job's number
# is in the hold table (so the test can find the executor running it).
$node->safe_psql('postgres', q{
	CREATE EXTENSION throttle_jobs;
	CREATE ROLE crash_owner NOLOGIN;
	GRANT throttle_jobs_admin TO crash_owner;
	CREATE TABLE seen (n int, pid int);
	CREATE TABLE hold (n int);
	GRANT INSERT ON seen TO crash_owner;
	GRANT SELECT ON hold TO crash_owner;
	CREATE FUNCTION crash_handler(p jsonb) RETURNS void LANGUAGE plpgsql AS $$
	BEGIN
		WHILE EXISTS (SELECT FROM public.hold h WHERE h.n = (p->>'n')::int) LOOP
			PERFORM pg_sleep(0.05);
		END LOOP;
		INSERT INTO public.seen VALUES ((p->>'n')::int, pg_backend_pid());
	END
	$$;
	REVOKE ALL ON FUNCTION crash_handler(jsonb) FROM PUBLIC;
	GRANT EXECUTE ON FUNCTION crash_handler(jsonb) TO crash_owner;
	SET ROLE crash_owner;
	SELECT throttle_jobs.create_queue('crash_q', handler => 'crash_handler(jsonb)',
	                                  backoff_base => '100 ms', backoff_jitter => 0,
	                                  lease => '30 s', max_attempts => 5);
	SELECT throttle_jobs.create_queue('load_q', handler => 'crash_handler(jsonb)',
	                                  backoff_base => '100 ms', backoff_jitter => 0,
	                                  lease => '30 s', max_attempts => 5);
	RESET ROLE;
});

# Waits until the server has gone through a crash restart logged after
# byte $offset of its log, and accepts connections again.
sub wait_for_crash_restart
{
	my ($offset) = @_;
	my $ok = eval {
		$node->wait_for_log(
			qr/all server processes terminated; reinitializing.*database system is ready to accept connections/s,
			$offset);
		1;
	};
	diag($@) unless $ok;
	return $ok && $node->poll_query_until('postgres', 'SELECT 1', '1');
}

# Waits until job $id runs in an executor at attempt $attempt, and returns
# that executor's pid (or undef).
sub executor_of
{
	my ($id, $attempt) = @_;
	return undef
	  unless $node->poll_query_until('postgres', qq{
		SELECT count(*) = 1 FROM throttle_jobs.jobs
		WHERE id = $id AND state = 'running' AND attempt = $attempt
		  AND worker LIKE 'throttle_jobs/executor/%'});
	my ($pid) = $node->safe_psql('postgres',
		"SELECT worker FROM throttle_jobs.jobs WHERE id = $id") =~
	  m{^throttle_jobs/executor/(\d+)$};
	return $pid;
}

# ---------------------------------------------------------------- kill -9 mid-job
my @before = split /\n/, $node->safe_psql('postgres', q{
	SELECT throttle_jobs.enqueue('crash_q', jsonb_build_object('n', n))
	FROM generate_series(1, 20) n});
my $before_ids = join(',', @before);
ok( $node->poll_query_until('postgres', q{
		SELECT count(*) FROM throttle_jobs.archived_jobs WHERE queue = 'crash_q'}, '20'),
	'executors complete 20 jobs');

$node->safe_psql('postgres', 'INSERT INTO hold VALUES (100)');
my $victim = $node->safe_psql('postgres',
	q{SELECT throttle_jobs.enqueue('crash_q', '{"n": 100}')});
my $pid = executor_of($victim, 1);
ok(defined $pid, 'the held job runs in an executor')
  or die "no executor runs job $victim, nothing to kill";
is($node->safe_psql('postgres', "SELECT backend_type FROM pg_stat_activity WHERE pid = $pid"),
	'throttle_jobs executor', 'its worker name gives the executor\'s pid');

# More work for the other executor, so that it is busy when the crash comes.
$node->safe_psql('postgres', q{
	SELECT count(throttle_jobs.enqueue('crash_q', jsonb_build_object('n', n)))
	FROM generate_series(1001, 1200) n});
$node->poll_query_until('postgres', q{
	SELECT count(*) >= 30 FROM throttle_jobs.archived_jobs WHERE queue = 'crash_q'});

my $offset = -s $node->logfile;
kill 'KILL', $pid;
ok(wait_for_crash_restart($offset), 'the server restarts after the executor is killed');

is($node->safe_psql('postgres', qq{
		SELECT count(*) FROM throttle_jobs.archived_jobs
		WHERE id IN ($before_ids) AND state = 'completed'}),
	'20', 'the jobs completed before the crash are still archived');
ok( $node->poll_query_until('postgres', qq{
		SELECT attempt >= 1 AND errors::text LIKE
		       '%worker throttle_jobs/executor/$pid exited while the job ran%'
		FROM throttle_jobs.jobs WHERE id = $victim}),
	'the killed job is live again, its attempt counted, its error naming the dead executor');

$node->safe_psql('postgres', 'DELETE FROM hold WHERE n = 100');
ok( $node->poll_query_until('postgres', q{
		SELECT count(*) = 0 FROM throttle_jobs.jobs WHERE queue = 'crash_q'}),
	'every job of the queue finishes after the restart');
is($node->safe_psql('postgres', qq{
		SELECT state || '/' || attempt || '/' ||
		       (errors -> 0 ->> 'error' LIKE '%exited while the job ran%')
		FROM throttle_jobs.archived_jobs WHERE id = $victim}),
	'completed/2/true', 'the killed job completed at its second attempt');
is($node->safe_psql('postgres', q{
		SELECT count(*) || '/' || count(DISTINCT n) FROM seen}),
	'221/221', 'the handler completed each of the 221 jobs exactly once');
is($node->safe_psql('postgres', q{
		SELECT count(*) || '/' || count(DISTINCT id) || '/' ||
		       count(*) FILTER (WHERE state = 'completed')
		FROM throttle_jobs.archived_jobs WHERE queue = 'crash_q'}),
	'221/221/221', 'each job is archived once, completed');

# ---------------------------------------------------------------- poison job
# A job whose executor dies at every attempt: with max_attempts 2 it is dead
# after the second crash, and does not crash the server a third time.
$node->safe_psql('postgres', 'INSERT INTO hold VALUES (200)');
my $poison = $node->safe_psql('postgres',
	q{SELECT throttle_jobs.enqueue('crash_q', '{"n": 200}', max_attempts => 2)});
my @killed;
for my $attempt (1, 2)
{
	my $p = executor_of($poison, $attempt);
	ok(defined $p, "the poison job runs in an executor, attempt $attempt");
	last unless defined $p;
	push @killed, $p;
	$offset = -s $node->logfile;
	kill 'KILL', $p;
	ok(wait_for_crash_restart($offset), "the server restarts after kill $attempt");
}
ok( $node->poll_query_until('postgres', qq{
		SELECT count(*) = 1 FROM throttle_jobs.dead_letters
		WHERE id = $poison AND attempt = 2}),
	'the poison job ends in the dead letters after two attempts');
is($node->safe_psql('postgres', qq{
		SELECT count(*) FROM throttle_jobs.dead_letters d,
		       jsonb_array_elements(d.errors) e
		WHERE d.id = $poison AND e ->> 'error' LIKE '%exited while the job ran%'}),
	'2', 'both attempts are recorded as the worker exiting');
is($node->safe_psql('postgres', qq{
		SELECT (SELECT count(*) FROM throttle_jobs.jobs WHERE id = $poison) + (SELECT count(*) FROM seen WHERE n = 200)}),
	'0', 'the poison job is no longer live and never completed');
$node->safe_psql('postgres', 'DELETE FROM hold');

# ---------------------------------------------------------------- immediate stop under load
# A client enqueues 2 jobs per statement (autocommit), 2000 statements, while
# the executors run them; psql prints the ids of each statement once it has
# committed.  The server is stopped with -m immediate in the middle, while
# one executor is sure to be in a job (n = 10100 is held).  Three quarters of
# the way, the client waits for an advisory lock that the test holds, so the
# stop cannot come after the last enqueue.
$node->safe_psql('postgres', 'INSERT INTO hold VALUES (10100)');
my $barrier = $node->background_psql('postgres');
$barrier->query_safe('SELECT pg_advisory_lock(4242)');
my $nstmt = 2000;
my $sqlfile = "${PostgreSQL::Test::Utils::tmp_check}/load.sql";
open my $fh, '>', $sqlfile or die "could not write $sqlfile: $!";
for my $i (0 .. $nstmt - 1)
{
	my $n = 10000 + 2 * $i;
	print $fh "SELECT throttle_jobs.enqueue('load_q', jsonb_build_object('n', n)) "
	  . "FROM generate_series($n, $n + 1) n;\n";
	print $fh "SELECT pg_advisory_lock(4242);\n" if $i == $nstmt * 3 / 4;
}
close $fh;

my ($load_out, $load_err) = ('', '');
my $load = IPC::Run::start(
	[ 'psql', '-XAtq', '-d', $node->connstr('postgres'), '-f', $sqlfile ],
	'<', \undef, '>', \$load_out, '2>', \$load_err);
ok( $node->poll_query_until('postgres', q{
		SELECT count(*) >= 300 FROM throttle_jobs.archived_jobs WHERE queue = 'load_q'}),
	'executors are working through the load');
my $held = $node->safe_psql('postgres', q{
	SELECT id FROM throttle_jobs.jobs
	WHERE queue = 'load_q' AND payload = '{"n": 10100}' AND state = 'running'});
ok($held =~ /^\d+$/, 'an executor is in the held job');
$node->stop('immediate');
$load->finish;
$barrier->{run}->kill_kill;
my @committed = grep { /^\d+$/ } split /\n/, $load_out;
note(scalar(@committed) . " ids committed before the stop; psql said: $load_err");
ok(@committed > 0 && @committed < 2 * $nstmt,
	'the stop came in the middle of the enqueues');

$node->start;
my $ids = '{' . join(',', @committed) . '}';
is($node->safe_psql('postgres', qq{
		SELECT count(*) FROM unnest('$ids'::bigint[]) c(id)
		WHERE (SELECT count(*) FROM (
		         SELECT id FROM throttle_jobs.jobs
		         UNION ALL SELECT id FROM throttle_jobs.archived_jobs
		         UNION ALL SELECT id FROM throttle_jobs.dead_letters) a
		       WHERE a.id = c.id) <> 1}),
	'0', 'every committed enqueue is there exactly once (live, archived or dead)');
is($node->safe_psql('postgres', q{
		SELECT count(*) - count(DISTINCT n) FROM seen}),
	'0', 'no job was completed twice by the handler');
$node->safe_psql('postgres', 'DELETE FROM hold');
ok( $node->poll_query_until('postgres', q{
		SELECT count(*) = 0 FROM throttle_jobs.jobs WHERE queue = 'load_q'}),
	'after the restart every job of the load finishes');
is($node->safe_psql('postgres', qq{
		SELECT count(*) FROM unnest('$ids'::bigint[]) c(id)
		WHERE c.id NOT IN (SELECT id FROM throttle_jobs.archived_jobs
		                   WHERE queue = 'load_q' AND state = 'completed')}),
	'0', 'every committed job of the load is archived as completed');
is($node->safe_psql('postgres', q{
		SELECT count(*) || '/' || count(DISTINCT a.id) || '/' || count(s.n)
		FROM throttle_jobs.archived_jobs a
		LEFT JOIN seen s ON s.n = (a.payload ->> 'n')::int
		WHERE a.queue = 'load_q'}),
	$node->safe_psql('postgres', q{
		SELECT c || '/' || c || '/' || c FROM (
		  SELECT count(*) AS c FROM throttle_jobs.archived_jobs WHERE queue = 'load_q') x}),
	'each archived job of the load was archived once and handled once');
is($node->safe_psql('postgres', q{
		SELECT count(*) - count(DISTINCT n) FROM seen}),
	'0', 'still no job completed twice');
is($node->safe_psql('postgres', qq{
		SELECT attempt || '/' || (errors -> 0 ->> 'error' LIKE '%exited while the job ran%')
		FROM throttle_jobs.archived_jobs WHERE id = ${\($held || 0)}}),
	'2/true', 'the job in hand at the stop was failed as orphaned, then completed at its second attempt');
my $retried = $node->safe_psql('postgres', q{
	SELECT count(*) FROM throttle_jobs.archived_jobs
	WHERE queue = 'load_q' AND errors::text LIKE '%exited while the job ran%'});
note("$retried jobs of the load were in an executor's hands at the stop");

$node->stop;
done_testing();
