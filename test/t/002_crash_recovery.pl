# Nothing committed is lost across a crash: an immediate stop while workers
# hold reservations in open transactions and others have committed theirs.
# After restart every committed enqueue, completion and failure is there,
# and every uncommitted reservation is undone (the job is available, its
# attempt not counted).
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('crash');
$node->init;
$node->append_conf('postgresql.conf',
	"shared_preload_libraries = 'throttle_jobs'\nrestart_after_crash = on");
$node->start;

$node->safe_psql('postgres', q{
	CREATE EXTENSION throttle_jobs;
	SELECT throttle_jobs.create_queue('crash_q', retain_completed => '1 day');
	SELECT throttle_jobs.enqueue('crash_q', jsonb_build_object('n', n))
	FROM generate_series(1, 500) n;
});

# 100 jobs completed and 50 failed, committed.
$node->safe_psql('postgres', q{
	SELECT count(throttle_jobs.complete(id, lease_token))
	FROM throttle_jobs.reserve('crash_q', 'done', 100);
});
$node->safe_psql('postgres', q{
	SELECT count(throttle_jobs.fail(id, lease_token, 'boom', retry_in => '1 hour'))
	FROM throttle_jobs.reserve('crash_q', 'failer', 50);
});

# A worker holds 20 reservations in an open transaction, another has
# completed 10 jobs but not committed yet.
my $open1 = $node->background_psql('postgres');
$open1->query_safe('BEGIN');
is($open1->query_safe(
		"SELECT count(*) FROM throttle_jobs.reserve('crash_q', 'inflight', 20)"),
	'20', 'in-flight worker reserved 20 jobs');
my $open2 = $node->background_psql('postgres');
$open2->query_safe('BEGIN');
is($open2->query_safe(
		"SELECT count(throttle_jobs.complete(id, lease_token)) FROM throttle_jobs.reserve('crash_q', 'uncommitted', 10)"),
	'10', 'uncommitted worker completed 10 jobs');

# And an enqueue that never commits.
my $open3 = $node->background_psql('postgres');
$open3->query_safe('BEGIN');
$open3->query_safe("SELECT throttle_jobs.enqueue('crash_q', '{\"ghost\": true}')");

$node->stop('immediate');
$open1->{run}->kill_kill;
$open2->{run}->kill_kill;
$open3->{run}->kill_kill;
$node->start;

is($node->safe_psql('postgres', q{
	SELECT count(*) FROM throttle_jobs.archived_jobs WHERE queue = 'crash_q'}),
	'100', 'the 100 committed completions are archived');
is($node->safe_psql('postgres', q{
	SELECT count(*) FROM throttle_jobs.jobs
	WHERE queue = 'crash_q' AND state = 'scheduled' AND attempt = 1
	  AND last_error = 'boom'}),
	'50', 'the 50 committed failures wait for their retry');
is($node->safe_psql('postgres', q{
	SELECT count(*) FROM throttle_jobs.jobs
	WHERE queue = 'crash_q' AND state = 'available' AND attempt = 0}),
	'350', 'uncommitted reservations and completions were undone');
is($node->safe_psql('postgres', q{
	SELECT count(*) FROM throttle_jobs.jobs WHERE state = 'running'}),
	'0', 'no job is left running');
is($node->safe_psql('postgres', q{
	SELECT count(*) FROM throttle_jobs.jobs WHERE payload ? 'ghost'}),
	'0', 'the uncommitted enqueue is gone');
is($node->safe_psql('postgres', q{
	SELECT count(*) || '/' || count(DISTINCT n) FROM (
		SELECT payload->>'n' AS n FROM throttle_jobs.jobs
		UNION ALL SELECT payload->>'n' FROM throttle_jobs.archived_jobs) s}),
	'500/500', 'every committed job exists exactly once');

# The queue works on after the crash.
is($node->safe_psql('postgres', q{
	SELECT count(throttle_jobs.complete(id, lease_token))
	FROM throttle_jobs.reserve('crash_q', 'after', 1000)}),
	'350', 'all available jobs can be reserved and completed after restart');

$node->stop;
done_testing();
