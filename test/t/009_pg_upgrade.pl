# pg_upgrade accepts a cluster that uses throttle_jobs.  pg_upgrade --check
# refuses every table column of a reg* type whose OIDs an upgrade does not
# keep (regprocedure among them); 0.1.0's queue.handler was one, so a
# database at 0.1.0 fails the check even with no queue at all.  Since 0.2.0
# the handler is stored as the function's qualified signature (text).
#
# One cluster (the old) holds: db_new, at the current version, with handler
# queues (a function and a procedure handler, owned by a role that is not a
# superuser) and their jobs; db_old at 0.1.0 with no queue.  The check of an
# upgrade to a second, empty cluster (old and new bin dir: the same
# PostgreSQL tree, the one test/run built) fails on db_old's regprocedure
# column; after ALTER EXTENSION throttle_jobs UPDATE in db_old it passes.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $old = PostgreSQL::Test::Cluster->new('old');
$old->init;
$old->start;
my $bindir = $old->config_data('--bindir');

$old->safe_psql('postgres', 'CREATE DATABASE db_new');
$old->safe_psql('postgres', 'CREATE DATABASE db_old');
$old->safe_psql('db_old', q{
	SET client_min_messages = warning;
	CREATE EXTENSION throttle_jobs VERSION '0.1.0';
});
$old->safe_psql('db_new', q{
	SET client_min_messages = warning;
	CREATE EXTENSION throttle_jobs;
	CREATE ROLE pu_owner NOLOGIN;
	GRANT throttle_jobs_admin TO pu_owner;
	CREATE SCHEMA pu AUTHORIZATION pu_owner;
	SET ROLE pu_owner;
	CREATE FUNCTION pu.handler(payload jsonb) RETURNS jsonb
	LANGUAGE sql SET search_path = pg_catalog, pg_temp AS 'SELECT payload';
	CREATE PROCEDURE pu.proc(payload jsonb)
	LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS 'BEGIN END';
	SELECT throttle_jobs.create_queue('pu_f', handler => 'pu.handler(jsonb)');
	SELECT throttle_jobs.create_queue('pu_p', handler => 'pu.proc(jsonb)');
	SELECT throttle_jobs.enqueue('pu_f', '{"n": 1}');
	SELECT throttle_jobs.enqueue('pu_p', '{"n": 2}');
});
is( $old->safe_psql('db_new', q{
		SELECT string_agg(format('%s %s', name, handler), ', ' ORDER BY name) FROM throttle_jobs.queues}),
	'pu_f pu.handler(pg_catalog.jsonb), pu_p pu.proc(pg_catalog.jsonb)',
	'db_new has two handler queues, stored by qualified signature');
is( $old->safe_psql('db_new', q{
		SELECT count(*) FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
		WHERE c.relnamespace = 'throttle_jobs'::regnamespace AND c.relkind IN ('r', 'p', 'm')
		  AND a.attnum > 0 AND NOT a.attisdropped
		  AND a.atttypid IN ('regproc'::regtype, 'regprocedure'::regtype, 'regoper'::regtype,
		                     'regoperator'::regtype, 'regconfig'::regtype, 'regdictionary'::regtype,
		                     'regnamespace'::regtype, 'regcollation'::regtype)}),
	'0', 'no table of the current version has a column of a reg* type pg_upgrade refuses');
$old->stop;

my $new = PostgreSQL::Test::Cluster->new('new');
$new->init;

# pg_upgrade --check as test/run's PostgreSQL tree would run it; its
# sockets and output go to a directory of their own.
sub upgrade_check
{
	my $dir = PostgreSQL::Test::Utils::tempdir_short;
	my ($stdout, $stderr);
	my $ok = IPC::Run::run(
		[
			"$bindir/pg_upgrade", '--check', '--no-sync',
			'-b', $bindir, '-B', $bindir,
			'-d', $old->data_dir, '-D', $new->data_dir,
			'-p', $old->port, '-P', $new->port,
			'-s', $dir
		],
		'>', \$stdout, '2>', \$stderr,
		init => sub { chdir $dir or die "chdir $dir: $!" });
	return ($ok, $stdout . $stderr);
}

my ($ok, $out) = upgrade_check();
ok(!$ok, 'pg_upgrade --check fails while db_old is at 0.1.0 (queue.handler is a regprocedure)');
like($out, qr/reg\* data types in user tables/,
	'... and the check that fails is the one on reg* data types in user tables')
  or diag($out);

$old->start;
$old->safe_psql('db_old', 'ALTER EXTENSION throttle_jobs UPDATE');
$old->stop;

($ok, $out) = upgrade_check();
ok($ok, 'pg_upgrade --check passes once db_old is updated (db_new has handler queues)')
  or diag($out);
like($out, qr/Clusters are compatible/, '... and says the clusters are compatible');

# The old cluster still works after the check: the handler jobs run.
$old->start;
is($old->safe_psql('db_new', q{SELECT throttle_jobs.run_jobs()}),
	'2', 'the handler jobs of both queues run');
is($old->safe_psql('db_new', q{SELECT count(*) FROM throttle_jobs.archived_jobs WHERE state = 'completed'}),
	'2', 'and are completed');
$old->stop;

done_testing();
