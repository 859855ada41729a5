# Loading throttle_jobs through shared_preload_libraries, creating the
# extension and a queue, and finding the queue again after a restart.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('main');
$node->init;
$node->append_conf('postgresql.conf',
	"shared_preload_libraries = 'throttle_jobs'");
$node->start;

is( $node->safe_psql('postgres',
		"SELECT setting FROM pg_settings WHERE name = 'shared_preload_libraries'"),
	'throttle_jobs',
	'throttle_jobs is preloaded');

$node->safe_psql('postgres', 'CREATE EXTENSION throttle_jobs');
is( $node->safe_psql('postgres',
		"SELECT count(*) FROM pg_extension WHERE extname = 'throttle_jobs'"),
	'1',
	'extension created');

my ($ret, $stdout, $stderr) =
  $node->psql('postgres', "SELECT throttle_jobs.create_queue('t')");
is($ret, 0, 'create_queue succeeds') or diag($stderr);

is($node->safe_psql('postgres', 'SELECT count(*) FROM throttle_jobs.queues'),
	'1', 'one queue exists');

$node->restart;

is($node->safe_psql('postgres', 'SELECT count(*) FROM throttle_jobs.queues'),
	'1', 'queue survives a restart');

$node->stop;

done_testing();
