# Skip hints (src/ready_hint.c) on a database still at 0.1.0: the 0.2.0
# library runs it between the restart onto the new library and ALTER
# EXTENSION UPDATE, and 0.1.0 has no job_ready_* triggers, so nothing
# publishes a job made ready behind a hint.  Reservation must then walk as
# it did without hints: a job enqueued due before the jobs already taken is
# the next one reserved.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('hint_010');
$node->init;
$node->append_conf('postgresql.conf',
	"shared_preload_libraries = 'throttle_jobs'");
$node->start;

$node->safe_psql('postgres', q{
	SET client_min_messages = warning;
	CREATE EXTENSION throttle_jobs VERSION '0.1.0';
	SELECT throttle_jobs.create_queue('h');
	SELECT throttle_jobs.enqueue('h', '{"n": "a"}', run_at => now() - interval '4 hours');
	SELECT throttle_jobs.enqueue('h', '{"n": "b"}', run_at => now() - interval '3 hours');
	SELECT throttle_jobs.enqueue('h', '{"n": "c"}', run_at => now() - interval '2 hours');});

# One session: its first reservation learns the queue id, the second finds
# the queue's levels, the third walks the level from its start, and the
# fourth would start at the hint, past c.
is( $node->safe_psql('postgres', q{
		SELECT payload->>'n' FROM throttle_jobs.reserve('h', 'w');
		SELECT payload->>'n' FROM throttle_jobs.reserve('h', 'w');
		SELECT payload->>'n' FROM throttle_jobs.reserve('h', 'w');
		SELECT throttle_jobs.enqueue('h', '{"n": "early"}', run_at => now() - interval '5 hours') > 0;
		SELECT coalesce((SELECT payload->>'n' FROM throttle_jobs.reserve('h', 'w')), 'none');}),
	"a\nb\nc\nt\nearly",
	'at 0.1.0, a job due before the ones taken is the next one reserved');

$node->stop;
done_testing();
