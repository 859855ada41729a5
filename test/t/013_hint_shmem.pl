# Skip hints (src/ready_hint.c) keep at most 1,024 queues, of all databases,
# in shared memory, and never more: when the table is full, the entry read
# longest ago makes room before a new one is made, and the server's spare
# shared memory (into which the lock table grows) is left alone.  Queues
# made, reserved from and dropped in turn fill the table.  A node of its
# own: it leaves the table full of queues that are gone.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('hint_shmem');
$node->init;
$node->append_conf('postgresql.conf',
	"shared_preload_libraries = 'throttle_jobs'");
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION throttle_jobs');

# A queue's entry is made by its first reservation on the limited path (a
# limit exists, on a key no job has).
$node->safe_psql('postgres',
	"SELECT throttle_jobs.set_concurrency_limit('hint_shmem_key', 1)");

# $n queues named $prefix$i made, reserved from and dropped, in one transaction
sub churn
{
	my ($prefix, $n) = @_;
	$node->safe_psql('postgres', qq{
		DO \$\$
		BEGIN
		  FOR i IN 1..$n LOOP
		    PERFORM throttle_jobs.create_queue('$prefix' || i);
		    PERFORM throttle_jobs.reserve('$prefix' || i, 'w');
		    PERFORM throttle_jobs.drop_queue('$prefix' || i);
		  END LOOP;
		END
		\$\$});
}

sub spare
{
	return $node->safe_psql('postgres',
		'SELECT allocated_size FROM pg_shmem_allocations WHERE name IS NULL');
}

# 4200 fill the table many times over (and the lock table takes what such
# a loop needs)
churn('hint_shmem_', 4200);
my $before = spare();
churn('hint_shmem_more_', 300);
is(spare(), $before, '300 queues past the bound take no spare shared memory');

# reservation still works
$node->safe_psql('postgres', "SELECT throttle_jobs.drop_limit('hint_shmem_key')");
$node->safe_psql('postgres', qq{
	SELECT throttle_jobs.create_queue('past_bound');
	SELECT throttle_jobs.enqueue('past_bound', '{"n": 1}');
	SELECT throttle_jobs.enqueue('past_bound', '{"n": 2}');});
is( $node->safe_psql('postgres', qq{
		SELECT string_agg(payload->>'n', ',')
		  FROM (SELECT * FROM throttle_jobs.reserve('past_bound', 'w')
		        UNION ALL SELECT * FROM throttle_jobs.reserve('past_bound', 'w')) r}),
	'1,2',
	'a queue made after them reserves its jobs in order');

$node->stop;
done_testing();
