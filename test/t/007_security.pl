# Attacks on the background workers and run_jobs by roles that are not
# superusers, with the workers running.  Each must be refused (with the
# documented SQLSTATE where an error is its refusal), no role may gain
# rolsuper or a table grant, and normal handler jobs keep running:
#
# 1. code that a handler leaves to run at commit (a deferred constraint
#    trigger, a WITH HOLD cursor) would run as the executor's superuser;
# 2. operators planted in public would be picked by the workers' own SQL;
# 3. session state (advisory locks, prepared statements, currval, dblink
#    connections, the random() seed) left by one owner's handler would be
#    there for the next owner's job;
# 4. a handler that catches query_canceled in a loop would hold its
#    executor for ever: other queues starve, pg_terminate_backend and a
#    fast shutdown do nothing;
# 5. executors would keep running after their database left
#    throttle_jobs.databases;
# and run_jobs in a session with a temporary table that shadows the name a
# handler writes to would run the caller's trigger as the handler's owner.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);

# Every wait here normally ends within seconds: give up on one after 30 s
# (not the default 180 s), so that a failure leaves time for the other
# checks within test/run's limit per file.
$PostgreSQL::Test::Utils::timeout_default = 30
  unless $ENV{PG_TEST_TIMEOUT_DEFAULT};

# One executor to begin with (so that consecutive jobs of two owners run in
# the same process), two from part 4 on; a 1 s shutdown grace.
my $node = PostgreSQL::Test::Cluster->new('security');
$node->init;
$node->append_conf('postgresql.conf', q{
shared_preload_libraries = 'throttle_jobs'
throttle_jobs.databases = 'postgres'
throttle_jobs.maintenance_interval = 200
throttle_jobs.executor_workers = 1
throttle_jobs.shutdown_grace = 1000
});
$node->start;

my $su = $node->safe_psql('postgres', 'SELECT current_user');

sub sql { return $node->safe_psql('postgres', $_[0]); }

# Runs $sql in a session of $role (a LOGIN role that is not a superuser).
sub as_role
{
	my ($role, $sql) = @_;
	return $node->safe_psql('postgres', $sql, extra_params => [ '-U', $role ]);
}

# Polls until job $id is no longer live; returns "completed", or
# "dead: <last error>" (or '' on timeout).
sub outcome
{
	my ($id) = @_;
	$node->poll_query_until('postgres',
		"SELECT count(*) = 0 FROM throttle_jobs.jobs WHERE id = $id")
	  or return '';
	return sql(qq{
		SELECT coalesce((SELECT 'completed' FROM throttle_jobs.archived_jobs WHERE id = $id),
		                (SELECT 'dead: ' || last_error FROM throttle_jobs.dead_letters WHERE id = $id))});
}

# The pid of the executor running job $id (waits until one does), or undef.
sub executor_of
{
	my ($id) = @_;
	return undef
	  unless $node->poll_query_until('postgres', qq{
		SELECT count(*) = 1 FROM throttle_jobs.jobs
		WHERE id = $id AND state = 'running' AND worker LIKE 'throttle_jobs/executor/%'});
	my ($pid) = sql("SELECT worker FROM throttle_jobs.jobs WHERE id = $id") =~
	  m{^throttle_jobs/executor/(\d+)$};
	return $pid;
}

# ---------------------------------------------------------------- setup
# mallory: a queue admin, and (as on clusters created before PostgreSQL 15)
# allowed to create in public.  alice, bob and carol: queue owners (carol's
# handler will not stop; the roles are apart so that each attack shows on
# its own).  wendy: a worker who calls run_jobs.  public.calls records every call of the
# functions the attackers planted, with current_user.
sql(q{
	CREATE EXTENSION throttle_jobs;
	CREATE ROLE mallory LOGIN;
	CREATE ROLE alice LOGIN;
	CREATE ROLE bob LOGIN;
	CREATE ROLE carol LOGIN;
	CREATE ROLE wendy LOGIN;
	GRANT throttle_jobs_admin TO mallory, alice, bob, carol;
	GRANT throttle_jobs_worker TO wendy;
	GRANT CREATE ON SCHEMA public TO mallory;
	CREATE SCHEMA mallory AUTHORIZATION mallory;
	CREATE SCHEMA alice AUTHORIZATION alice;
	CREATE SCHEMA bob AUTHORIZATION bob;
	CREATE SCHEMA carol AUTHORIZATION carol;
	CREATE TABLE public.calls (what text, who name, at timestamptz DEFAULT clock_timestamp());
	GRANT INSERT ON public.calls TO PUBLIC;
	CREATE TABLE public.seen (who name, pid int, found text);
	GRANT INSERT ON public.seen TO PUBLIC;
});

# mallory's escalation: records the call, and makes mallory a superuser if
# it runs as one.
as_role('mallory', q{
	CREATE FUNCTION mallory.escalate(what text) RETURNS int LANGUAGE plpgsql AS $$
	BEGIN
		INSERT INTO public.calls (what, who) VALUES (what, current_user);
		IF (SELECT r.rolsuper FROM pg_catalog.pg_roles r
		    WHERE r.rolname OPERATOR(pg_catalog.=) current_user) THEN
			EXECUTE 'ALTER ROLE mallory SUPERUSER';
		END IF;
		RETURN 1;
	END $$;
	GRANT USAGE ON SCHEMA mallory TO PUBLIC;
	GRANT EXECUTE ON FUNCTION mallory.escalate(text) TO PUBLIC;
});

# ---------------------------------------------------------------- 2. operators in public
# Planted before any handler queue exists, so that the executors prepare
# their statements with these in sight.  *(float8, int4) is what the
# executors' queue scan used (date_part(...) * 1000); the others shadow
# exact matches, for good measure.
as_role('mallory', q{
	CREATE FUNCTION public.evil_mul(a float8, b int4) RETURNS float8 LANGUAGE plpgsql AS $$
	BEGIN PERFORM mallory.escalate('operator *(float8,int4)'); RETURN a OPERATOR(pg_catalog.*) b::float8; END $$;
	CREATE OPERATOR public.* (LEFTARG = float8, RIGHTARG = int4, FUNCTION = public.evil_mul);
	CREATE FUNCTION public.evil_eq(a text, b text) RETURNS bool LANGUAGE plpgsql AS $$
	BEGIN PERFORM mallory.escalate('operator =(text,text)'); RETURN a OPERATOR(pg_catalog.=) b; END $$;
	CREATE OPERATOR public.= (LEFTARG = text, RIGHTARG = text, FUNCTION = public.evil_eq);
	CREATE FUNCTION public.evil_ne(a text, b text) RETURNS bool LANGUAGE plpgsql AS $$
	BEGIN PERFORM mallory.escalate('operator <>(text,text)'); RETURN a OPERATOR(pg_catalog.<>) b; END $$;
	CREATE OPERATOR public.<> (LEFTARG = text, RIGHTARG = text, FUNCTION = public.evil_ne);
	CREATE FUNCTION public.evil_le(a timestamptz, b timestamptz) RETURNS bool LANGUAGE plpgsql AS $$
	BEGIN PERFORM mallory.escalate('operator <=(timestamptz,timestamptz)'); RETURN a OPERATOR(pg_catalog.<=) b; END $$;
	CREATE OPERATOR public.<= (LEFTARG = timestamptz, RIGHTARG = timestamptz, FUNCTION = public.evil_le);
	CREATE FUNCTION public.evil_cat(a text, b text) RETURNS text LANGUAGE plpgsql AS $$
	BEGIN PERFORM mallory.escalate('operator ||(text,text)'); RETURN a OPERATOR(pg_catalog.||) b; END $$;
	CREATE OPERATOR public.|| (LEFTARG = text, RIGHTARG = text, FUNCTION = public.evil_cat);
});

# ---------------------------------------------------------------- 1. code run at commit
# A deferred constraint trigger on a table mallory's handler writes to, and
# a WITH HOLD cursor whose query calls escalate().
as_role('mallory', q{
	CREATE FUNCTION mallory.escalate_trigger() RETURNS trigger LANGUAGE plpgsql AS $$
	BEGIN PERFORM mallory.escalate('deferred trigger'); RETURN NULL; END $$;
	CREATE TABLE mallory.trap (n int);
	CREATE CONSTRAINT TRIGGER trap_escalates AFTER INSERT ON mallory.trap
		DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION mallory.escalate_trigger();
	CREATE FUNCTION mallory.handler(p jsonb) RETURNS void LANGUAGE plpgsql AS $$
	BEGIN
		CASE p->>'do'
		WHEN 'trap' THEN
			INSERT INTO mallory.trap VALUES (1);
		WHEN 'trap_deferred' THEN
			SET CONSTRAINTS ALL DEFERRED;
			INSERT INTO mallory.trap VALUES (2);
		WHEN 'cursor' THEN
			EXECUTE 'DECLARE c CURSOR WITH HOLD FOR SELECT mallory.escalate(''cursor'')';
		WHEN 'temp' THEN
			CREATE TEMP TABLE t (n int);
		END CASE;
	END $$;
	SELECT throttle_jobs.create_queue('mallory_q', handler => 'mallory.handler(jsonb)', max_attempts => 1);
});
my %attack1;
$attack1{$_} = sql(qq{SELECT throttle_jobs.enqueue('mallory_q', '{"do": "$_"}')})
  for qw(trap trap_deferred cursor temp);
is(outcome($attack1{trap}), 'completed',
	'a handler writing to a table with a deferred constraint trigger completes (the trigger fires at once)');
is(sql(q{SELECT string_agg(DISTINCT who, ',') FROM calls WHERE what = 'deferred trigger'}),
	'mallory', 'the deferred constraint trigger ran as the queue owner, never as a superuser');
is(outcome($attack1{trap_deferred}),
	'dead: cannot fire deferred trigger within security-restricted operation (SQLSTATE 42501)',
	'a handler that sets constraints DEFERRED cannot queue the trigger (42501)');
is(outcome($attack1{cursor}),
	'dead: cannot create a cursor WITH HOLD within security-restricted operation (SQLSTATE 42501)',
	'a WITH HOLD cursor is refused (42501)');
is(outcome($attack1{temp}),
	'dead: cannot create temporary table within security-restricted operation (SQLSTATE 42501)',
	'a temporary table is refused (42501)');
is(sql(q{SELECT count(*) FROM calls WHERE what = 'cursor'}), '0', 'the cursor\'s query never ran');
is(sql(q{SELECT rolsuper FROM pg_roles WHERE rolname = 'mallory'}), 'f', 'mallory is not a superuser');

# ---------------------------------------------------------------- 3. session state
# alice's handler leaves a session advisory lock and a currval behind, and
# tries to leave a prepared statement (PREPARE is refused inside the
# security-restricted operation); bob's handler, next on the same (only)
# executor, looks for each of them.
sql(q{
	CREATE SEQUENCE alice.seq;
	ALTER SEQUENCE alice.seq OWNER TO alice;
	GRANT USAGE ON SCHEMA alice TO bob;
	GRANT SELECT ON SEQUENCE alice.seq TO bob;
});
as_role('alice', q{
	CREATE FUNCTION alice.leave_state(p jsonb) RETURNS void LANGUAGE plpgsql AS $$
	DECLARE
		prepared text := 'prepared';
	BEGIN
		PERFORM pg_advisory_lock(42);
		PERFORM nextval('alice.seq');
		BEGIN
			EXECUTE 'PREPARE alice_stmt AS SELECT 42';
		EXCEPTION WHEN insufficient_privilege THEN
			prepared := SQLERRM;
		END;
		INSERT INTO public.seen VALUES (current_user, pg_backend_pid(), prepared);
	END $$;
	SELECT throttle_jobs.create_queue('alice_q', handler => 'alice.leave_state(jsonb)');
});
as_role('bob', q{
	CREATE FUNCTION bob.look(p jsonb) RETURNS void LANGUAGE plpgsql AS $$
	DECLARE
		found text := '';
	BEGIN
		IF EXISTS (SELECT FROM pg_prepared_statements) THEN
			found := found || 'prepared statement;';
		END IF;
		IF EXISTS (SELECT FROM pg_locks l WHERE l.locktype = 'advisory' AND l.pid = pg_backend_pid()) THEN
			found := found || 'advisory lock;';
		END IF;
		BEGIN
			EXECUTE 'EXECUTE alice_stmt';
			found := found || 'executed alice_stmt;';
		EXCEPTION WHEN OTHERS THEN
		END;
		BEGIN
			PERFORM currval('alice.seq');
			found := found || 'currval;';
		EXCEPTION WHEN OTHERS THEN
		END;
		INSERT INTO public.seen VALUES (current_user, pg_backend_pid(), found);
	END $$;
	SELECT throttle_jobs.create_queue('bob_q', handler => 'bob.look(jsonb)');
});
my $a_job = sql(q{SELECT throttle_jobs.enqueue('alice_q', '{}')});
is(outcome($a_job), 'completed', 'alice\'s job completes');
my $a_pid = sql(q{SELECT pid FROM seen WHERE who = 'alice'}) || 0;
is(sql(q{SELECT found FROM seen WHERE who = 'alice'}),
	'cannot execute PREPARE within security-restricted operation',
	'alice\'s handler may not PREPARE (42501)');
ok( $node->poll_query_until('postgres', qq{
		SELECT count(*) = 0 FROM pg_locks WHERE locktype = 'advisory' AND pid = $a_pid}),
	'after alice\'s job the executor holds no advisory lock');
my $b_job = sql(q{SELECT throttle_jobs.enqueue('bob_q', '{}')});
is(outcome($b_job), 'completed', 'bob\'s job completes');
is(sql(q{SELECT pid FROM seen WHERE who = 'bob'}), $a_pid, 'bob\'s job ran in the same executor');
is(sql(q{SELECT found FROM seen WHERE who = 'bob'}), '',
	'bob\'s handler found no prepared statement, advisory lock or currval of alice\'s');

# ---------------------------------------------------------------- 3b. dblink connections, random seed
# alice's handler opens a named dblink connection ("keep") and an unnamed
# one, leaves both open, and seeds random(); bob's handler, next on the
# same (only) executor, looks for the connections and draws random().
# dblink requires a password of non-superusers: the connections log in as
# alice_link, whom pg_hba.conf (first line) makes give one.
my $hba = $node->data_dir . '/pg_hba.conf';
my $hba_old = slurp_file($hba);
open(my $hba_fh, '>', $hba) or die "could not write $hba: $!";
print $hba_fh "local all alice_link scram-sha-256\n$hba_old";
close($hba_fh);
$node->reload;
sql(q{
	CREATE ROLE alice_link LOGIN PASSWORD 'link-secret';
	CREATE SCHEMA dblink;
	CREATE EXTENSION dblink SCHEMA dblink;
	GRANT USAGE ON SCHEMA dblink TO PUBLIC;
	CREATE TABLE public.linkseen (who name, pid int, found text);
	GRANT INSERT ON public.linkseen TO PUBLIC;
});
my $link_conn = sprintf('host=%s port=%d dbname=postgres user=alice_link password=link-secret',
	$node->host, $node->port);
# random() right after setseed(0.42), in any session.
my $seeded = (split /\n/, sql(q{SELECT setseed(0.42); SELECT random()}))[-1];
like($seeded, qr/^0\.\d+$/, 'random() right after setseed(0.42) is known');
as_role('alice', q{
	CREATE FUNCTION alice.link(p jsonb) RETURNS void LANGUAGE plpgsql AS $$
	BEGIN
		PERFORM dblink.dblink_connect('keep', p->>'conn');
		PERFORM dblink.dblink_connect(p->>'conn');
		PERFORM setseed(0.42);
		INSERT INTO public.linkseen VALUES (current_user, pg_backend_pid(),
			dblink.dblink_get_connections()::text || '|'
			|| (SELECT r FROM dblink.dblink('SELECT current_user') AS t(r name)));
	END $$;
	SELECT throttle_jobs.create_queue('alice_link_q', handler => 'alice.link(jsonb)');
});
as_role('bob', q{
	CREATE FUNCTION bob.look_link(p jsonb) RETURNS void LANGUAGE plpgsql AS $$
	DECLARE
		found text := coalesce('named: ' || dblink.dblink_get_connections()::text || ';', '');
	BEGIN
		BEGIN
			PERFORM * FROM dblink.dblink('SELECT 1') AS t(x int);
			found := found || 'unnamed;';
		EXCEPTION WHEN OTHERS THEN
		END;
		INSERT INTO public.linkseen VALUES (current_user, pg_backend_pid(), found || '|' || random());
	END $$;
	SELECT throttle_jobs.create_queue('bob_link_q', handler => 'bob.look_link(jsonb)');
});
my $l_job = sql(qq{SELECT throttle_jobs.enqueue('alice_link_q', jsonb_build_object('conn', '$link_conn'))});
is(outcome($l_job), 'completed', 'alice\'s dblink job completes');
is(sql(q{SELECT found FROM linkseen WHERE who = 'alice'}), '{keep}|alice_link',
	'alice\'s handler opened the named connection "keep" (and an unnamed one) as alice_link');
my $lb_job = sql(q{SELECT throttle_jobs.enqueue('bob_link_q', '{}')});
is(outcome($lb_job), 'completed', 'bob\'s next job completes');
is(sql(q{SELECT pid FROM linkseen WHERE who = 'bob'}),
	sql(q{SELECT pid FROM linkseen WHERE who = 'alice'}), 'bob\'s job ran in the same executor');
is(sql(q{SELECT split_part(found, '|', 1) FROM linkseen WHERE who = 'bob'}), '',
	'bob\'s handler found neither of alice\'s dblink connections');
isnt(sql(q{SELECT split_part(found, '|', 2) FROM linkseen WHERE who = 'bob'}), $seeded,
	'bob\'s random() is not the one after alice\'s setseed(0.42)');

# ---------------------------------------------------------------- 4. a handler that will not stop
# carol's spin catches every cancel.  loop_q's lease (the handler's time
# limit) is 2 s; loop_long_q's is an hour (only SIGTERM stops it).  Two
# executors from now on.
sql(q{
	ALTER SYSTEM SET throttle_jobs.executor_workers = 2;
	SELECT pg_reload_conf();
});
as_role('carol', q{
	CREATE FUNCTION carol.spin(p jsonb) RETURNS void LANGUAGE plpgsql AS $$
	BEGIN
		LOOP
			BEGIN
				PERFORM pg_sleep(0.1);
			EXCEPTION WHEN query_canceled THEN
			END;
		END LOOP;
	END $$;
	SELECT throttle_jobs.create_queue('loop_q', handler => 'carol.spin(jsonb)', lease => '2 s',
	                                  max_attempts => 2, backoff_base => '1 s', backoff_jitter => 0);
	SELECT throttle_jobs.create_queue('loop_long_q', handler => 'carol.spin(jsonb)', lease => '1 hour',
	                                  max_attempts => 2, backoff_base => '1 s', backoff_jitter => 0);
});
ok( $node->poll_query_until('postgres', q{
		SELECT count(*) = 2 FROM pg_stat_activity WHERE backend_type = 'throttle_jobs executor'}),
	'two executors run after the reload');

my $offset = -s $node->logfile;
my $spin = sql(q{SELECT throttle_jobs.enqueue('loop_q', '{}')});
ok(defined executor_of($spin), 'the spinning job runs in an executor');
my @bob_jobs = split /\n/, sql(q{
	SELECT throttle_jobs.enqueue('bob_q', jsonb_build_object('n', n)) FROM generate_series(1, 3) n});
ok( $node->poll_query_until('postgres', q{
		SELECT count(*) = 4 FROM throttle_jobs.archived_jobs WHERE queue = 'bob_q'}),
	'bob\'s jobs complete meanwhile');
is(sql(qq{SELECT count(*) FROM throttle_jobs.jobs WHERE id = $spin}), '1',
	'(while the spinning job was still live)');
like(outcome($spin), qr/^dead: /, 'the spinning job ends dead');
my $free = sql(q{SELECT throttle_jobs.enqueue('bob_q', '{}')});
is(outcome($free), 'completed', 'and no executor is held by it any more: the next job of bob runs');
is(sql(qq{SELECT attempt || '/' || jsonb_array_length(errors) FROM throttle_jobs.dead_letters WHERE id = $spin}),
	'2/2', 'after its two attempts, each recorded');
ok( eval {
		$node->wait_for_log(
			qr/LOG:\s+throttle_jobs: ended the process running job $spin of queue "loop_q": its handler went on 1000 ms after it was cancelled/,
			$offset);
	},
	'its executor was ended 1 s after the cancel at its deadline, and said why');
is(sql(q{SELECT count(*) FROM throttle_jobs.archived_jobs WHERE queue = 'loop_q'}), '0',
	'the spinning job never completed');

# SIGTERM (pg_terminate_backend) ends an executor that holds the spinning
# job within shutdown_grace (1 s) + 1 s.
my $long = sql(q{SELECT throttle_jobs.enqueue('loop_long_q', '{}')});
my $victim = executor_of($long);
ok(defined $victim, 'the long spinning job runs in an executor');
$victim //= 0;
my $t0 = time();
sql("SELECT pg_terminate_backend($victim)");
ok( $node->poll_query_until('postgres', qq{
		SELECT count(*) = 0 FROM pg_stat_activity WHERE pid = $victim}),
	'pg_terminate_backend ends the executor');
my $took = time() - $t0;
note(sprintf('the executor ended %.1f s after pg_terminate_backend', $took));
cmp_ok($took, '<', 5, 'within shutdown_grace + 1 s (and some slack)');

# The job comes back (its attempt counted) and spins again: a fast shutdown
# still ends within seconds, and after the restart the job is dead.
ok( $node->poll_query_until('postgres', qq{
		SELECT count(*) = 1 FROM throttle_jobs.jobs
		WHERE id = $long AND state = 'running' AND attempt = 2}),
	'the long spinning job runs again, at its second attempt');
$ENV{PGCTLTIMEOUT} = 30;
$t0 = time();
my $stopped = $node->stop('fast', fail_ok => 1);
ok($stopped, 'pg_ctl stop -m fast succeeds');
$took = time() - $t0;
note(sprintf('the fast shutdown took %.1f s', $took));
cmp_ok($took, '<', 8, 'within shutdown_grace + 1 s (and some slack)');
$node->stop('immediate') unless $stopped;
$node->start;
like(outcome($long), qr/^dead: worker throttle_jobs\/executor\/\d+ exited while the job ran/,
	'after the restart the long spinning job is dead, its executor having exited with it');
is(sql(qq{SELECT attempt FROM throttle_jobs.dead_letters WHERE id = $long}), '2',
	'after its max_attempts (2)');
my $after = sql(q{SELECT throttle_jobs.enqueue('bob_q', '{}')});
is(outcome($after), 'completed', 'handler jobs still run');

# ---------------------------------------------------------------- 2. (checked)
is(sql(q{SELECT count(*) FROM calls WHERE what LIKE 'operator%' AND who <> 'mallory'}), '0',
	'no worker ever called an operator planted in public');
note('calls of planted operators by mallory herself: '
	  . sql(q{SELECT count(*) FROM calls WHERE what LIKE 'operator%'}));

# ---------------------------------------------------------------- 6. a database's settings
# The database's owner (mallory, here) sets what would make every
# maintenance pass or job fail: a 1 ms statement_timeout, read-only
# transactions, serializable isolation, and a DateStyle and TimeZone that
# a timestamp written as text would not survive.  The workers pin their own
# values right after connecting, so after they restart with these settings
# leases are still reaped and handler jobs still run.  (Our own sessions
# here override them with connection options.)
sql('ALTER DATABASE postgres OWNER TO mallory');
as_role('mallory', q{
	ALTER DATABASE postgres SET statement_timeout = '1ms';
	ALTER DATABASE postgres SET lock_timeout = '1ms';
	ALTER DATABASE postgres SET default_transaction_read_only = on;
	ALTER DATABASE postgres SET default_transaction_isolation = 'serializable';
	ALTER DATABASE postgres SET DateStyle = 'SQL, DMY';
	ALTER DATABASE postgres SET TimeZone = 'FOO+3';
});
$ENV{PGOPTIONS} = '-c statement_timeout=0 -c lock_timeout=0 -c default_transaction_read_only=off'
  . ' -c default_transaction_isolation=read\\ committed';
sql(q{SELECT pg_terminate_backend(pid) FROM pg_stat_activity
	  WHERE backend_type IN ('throttle_jobs maintenance', 'throttle_jobs executor')});
ok( $node->poll_query_until('postgres', q{
		SELECT count(*) >= 1 FROM pg_stat_activity WHERE backend_type = 'throttle_jobs maintenance'
		   AND backend_start > now() - interval '1 minute'}),
	'a new maintenance worker connects under the database\'s settings');
sql(q{SELECT throttle_jobs.create_queue('lease_q', lease => '1 s', backoff_base => '1 hour')});
my $leased = sql(q{SELECT throttle_jobs.enqueue('lease_q', '{}')});
sql(q{SELECT count(*) FROM throttle_jobs.reserve('lease_q', 'gone-worker')});
ok( $node->poll_query_until('postgres', qq{
		SELECT count(*) = 1 FROM throttle_jobs.jobs
		WHERE id = $leased AND state <> 'running' AND last_error = 'lease expired'}),
	'the maintenance worker still reaps an expired lease');
is(outcome(sql(q{SELECT throttle_jobs.enqueue('bob_q', '{}')})), 'completed',
	'an executor still runs handler jobs');
as_role('mallory', 'ALTER DATABASE postgres RESET ALL');
sql('ALTER DATABASE postgres OWNER TO ' . $su);
delete $ENV{PGOPTIONS};

# ---------------------------------------------------------------- 5. database removed
ok( $node->poll_query_until('postgres', q{
		SELECT count(*) >= 1 FROM pg_stat_activity WHERE backend_type = 'throttle_jobs executor'}),
	'executors run');
$offset = -s $node->logfile;
sql(q{
	ALTER SYSTEM SET throttle_jobs.databases = '';
	SELECT pg_reload_conf();
});
ok( $node->poll_query_until('postgres', q{
		SELECT count(*) = 0 FROM pg_stat_activity
		WHERE backend_type IN ('throttle_jobs executor', 'throttle_jobs maintenance')}),
	'once the database is out of throttle_jobs.databases, its maintenance worker and executors exit');
ok( eval {
		$node->wait_for_log(
			qr/LOG:\s+throttle_jobs executor exiting: database no longer in throttle_jobs.databases/,
			$offset);
	},
	'the executors say why');

# ---------------------------------------------------------------- run_jobs and temporary tables
# In a database without workers (run_jobs is the only way its handler jobs
# run): alice's handler writes to "outbox" with its own search_path (alice),
# so pg_temp comes first for it.  wendy's temporary outbox, with a trigger
# that grants wendy alice's secret, would take its place under run_jobs.
sql('CREATE DATABASE noworkers');
$node->safe_psql('noworkers', q{
	CREATE EXTENSION throttle_jobs;
	CREATE SCHEMA alice AUTHORIZATION alice;
	CREATE TABLE alice.secret (s text);
	ALTER TABLE alice.secret OWNER TO alice;
});
$node->safe_psql('noworkers', q{
	CREATE TABLE alice.outbox (p jsonb);
	CREATE FUNCTION alice.send(p jsonb) RETURNS void LANGUAGE plpgsql SET search_path = alice AS $$
	BEGIN
		INSERT INTO outbox VALUES (p);
	END $$;
	SELECT throttle_jobs.create_queue('outbox_q', handler => 'alice.send(jsonb)');
}, extra_params => [ '-U', 'alice' ]);
my $mail = $node->safe_psql('noworkers', q{SELECT throttle_jobs.enqueue('outbox_q', '{"to": "bob"}')});
my ($ret, $stdout, $stderr) = $node->psql('noworkers', q{
	\set VERBOSITY verbose
	CREATE TEMP TABLE outbox (p jsonb);
	GRANT INSERT ON outbox TO PUBLIC;
	CREATE FUNCTION pg_temp.grab() RETURNS trigger LANGUAGE plpgsql AS $$
	BEGIN
		EXECUTE 'GRANT SELECT ON alice.secret TO wendy';
		RETURN NULL;
	END $$;
	CREATE TRIGGER grab AFTER INSERT ON outbox FOR EACH ROW EXECUTE FUNCTION pg_temp.grab();
	SELECT throttle_jobs.run_jobs('outbox_q');
}, extra_params => [ '-U', 'wendy' ]);
like($stderr,
	qr/ERROR:\s+55000: run_jobs cannot run handlers in a session that has temporary objects/,
	'run_jobs refuses a session with temporary objects (55000)');
is($node->safe_psql('noworkers', qq{SELECT state || '/' || attempt FROM throttle_jobs.jobs WHERE id = $mail}),
	'available/0', 'the job was not touched');
note('its errors: ' . $node->safe_psql('noworkers', qq{SELECT errors FROM throttle_jobs.jobs WHERE id = $mail}));
is($node->safe_psql('noworkers', q{SELECT has_table_privilege('wendy', 'alice.secret', 'SELECT')}), 'f',
	'wendy did not get SELECT on alice\'s secret');
($ret, $stdout, $stderr) = $node->psql('noworkers', q{SELECT throttle_jobs.run_jobs('outbox_q')},
	extra_params => [ '-U', 'wendy' ]);
is($stdout, '1', 'from a session of its own, wendy runs it');
is($node->safe_psql('noworkers', q{SELECT p ->> 'to' FROM alice.outbox}), 'bob', 'into alice\'s outbox');

# ---------------------------------------------------------------- nobody gained anything
is(sql(q{SELECT string_agg(rolname, ',') FROM pg_roles WHERE rolsuper}), $su,
	'the bootstrap superuser is still the only superuser');
is(sql(q{SELECT count(*) FROM calls WHERE who <> 'mallory'}), '0',
	'nothing mallory planted ever ran as another role');

$node->stop;
done_testing();
