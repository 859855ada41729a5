# The restore marker holds maintenance off only for a superuser's pg_restore
# session: a role that is not a superuser cannot keep it off by its name.
#
# 1. The restore marker: while a dump is restored, maintain() does nothing
#    as long as the restoring session, or any session of the database named
#    "pg_restore" (pg_restore -j's workers), is connected.  Any role that
#    may connect can name its session "pg_restore" (SET application_name
#    needs no privilege): held open across a restore, it kept maintenance
#    (lease expiry, the waiting lists' sweep, retention, dead-letter purges)
#    off in that database for as long as it liked.  Only a superuser's
#    session may count as a restore's (CREATE EXTENSION throttle_jobs, which
#    left the marker, needs one; pg_restore -j's workers log in as the same
#    role).
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

$PostgreSQL::Test::Utils::timeout_default = 30
  unless $ENV{PG_TEST_TIMEOUT_DEFAULT};

my $node = PostgreSQL::Test::Cluster->new('attack3');
$node->init;
$node->append_conf('postgresql.conf', q{
shared_preload_libraries = 'throttle_jobs'
});
$node->start;

# ---------------------------------------------------------------- 1. restore marker
$node->safe_psql('postgres', q{
	CREATE DATABASE a3r;
	CREATE ROLE a3_nobody LOGIN;
});
# A restore of a plain dump: row_security = off, then CREATE EXTENSION; the
# restoring session then ends.
$node->safe_psql('a3r', q{
	SET row_security = off;
	CREATE EXTENSION throttle_jobs;
});
is($node->safe_psql('a3r', 'SELECT count(*) FROM throttle_jobs.restore_marker'),
	'1', 'the restore left its marker');

my $restored = q{SELECT throttle_jobs.maintain() ? 'restore_in_progress'};
my $age_marker = q{UPDATE throttle_jobs.restore_marker SET seen_at = now() - interval '1 hour'};

# A superuser's session named pg_restore (a worker of pg_restore -j) holds
# maintenance off.
my $worker = $node->background_psql('a3r');
$worker->query_safe(q{SET application_name = 'pg_restore'});
$node->safe_psql('a3r', $age_marker);
is($node->safe_psql('a3r', $restored), 't',
	'a superuser session named pg_restore: the restore is still in progress');
$worker->quit;

# A role with no privileges at all names its session pg_restore and stays.
my $nobody = $node->background_psql('a3r', extra_params => [ '-U', 'a3_nobody' ]);
$nobody->query_safe(q{SET application_name = 'pg_restore'});
is($nobody->query_safe('SELECT current_user'), 'a3_nobody', 'the attacker is connected');
$node->safe_psql('a3r', $age_marker);
is($node->safe_psql('a3r', $restored), 'f',
	'a session named pg_restore by a role that is no superuser does not stop maintenance');
is($node->safe_psql('a3r', 'SELECT count(*) FROM throttle_jobs.restore_marker'),
	'0', 'and the marker of the restore that ended is gone');
$nobody->quit;

$node->stop;
done_testing();
