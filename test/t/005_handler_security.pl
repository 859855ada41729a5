# Handlers run with their queue owner's rights, never more: a handler runs
# as the owner (not as the superuser the executor connects as), cannot
# climb back to the superuser (SET ROLE, SET SESSION AUTHORIZATION) nor use
# rights its owner lacks, and an owner can only give its queue a handler it
# may execute itself.  The owner's right is checked again at every run, a
# superuser-owned queue runs only with throttle_jobs.allow_superuser_handlers
# on, and nothing a handler SETs reaches the next job.  An idle executor
# picks a job up as soon as its enqueue commits, not at its next poll.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

# Every wait here normally ends within seconds: give up on one after 30 s
# (not the default 180 s), so that a failure leaves time for the other
# checks within test/run's limit per file.
$PostgreSQL::Test::Utils::timeout_default = 30
  unless $ENV{PG_TEST_TIMEOUT_DEFAULT};

# One executor, so that consecutive jobs run in the same process (a SET
# leaking from one job to the next would show there), and a 10 s
# maintenance interval, so that an idle executor polls only every 10 s and
# a quick pickup can only come from the wakeup at commit.
my $node = PostgreSQL::Test::Cluster->new('handler_security');
$node->init;
$node->append_conf('postgresql.conf', q{
shared_preload_libraries = 'throttle_jobs'
throttle_jobs.databases = 'postgres'
throttle_jobs.maintenance_interval = 10000
throttle_jobs.executor_workers = 1
});
$node->start;

my $su = $node->safe_psql('postgres', 'SELECT current_user');

# public.probe records who runs it and with which settings; with "set" in
# its payload it first changes search_path and work_mem for the session.
# public.revocable only records its tag, public.forbidden does nothing.
# All three belong to the superuser; alice may execute probe and revocable.
$node->safe_psql('postgres', q{
	CREATE EXTENSION throttle_jobs;
	CREATE ROLE alice NOLOGIN;
	CREATE ROLE bob NOLOGIN;
	GRANT throttle_jobs_admin TO alice, bob;
	CREATE SCHEMA alice AUTHORIZATION alice;

	CREATE TABLE public.seen (tag text, cur_user name, sess_user name,
	                          search_path text, work_mem text, pid int);
	CREATE TABLE public.side (attack text, what text, who name);
	CREATE TABLE public.secret (secret text);
	INSERT INTO public.secret VALUES ('the crown jewels');
	REVOKE ALL ON public.secret FROM PUBLIC;
	GRANT INSERT ON public.seen, public.side TO alice;

	CREATE FUNCTION public.probe(p jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
	BEGIN
		IF p ? 'set' THEN
			SET search_path = public, pg_catalog;
			PERFORM set_config('work_mem', '77MB', false);
		END IF;
		INSERT INTO public.seen
		VALUES (p->>'tag', current_user, session_user, current_setting('search_path'),
		        current_setting('work_mem'), pg_backend_pid());
		RETURN jsonb_build_object('current_user', current_user);
	END
	$$;
	CREATE FUNCTION public.revocable(p jsonb) RETURNS void LANGUAGE plpgsql AS $$
	BEGIN
		INSERT INTO public.seen (tag, cur_user, sess_user, pid)
		VALUES (p->>'tag', current_user, session_user, pg_backend_pid());
	END
	$$;
	CREATE FUNCTION public.forbidden(p jsonb) RETURNS void LANGUAGE sql AS 'SELECT';
	REVOKE ALL ON FUNCTION public.probe(jsonb), public.revocable(jsonb),
	                       public.forbidden(jsonb) FROM PUBLIC;
	GRANT EXECUTE ON FUNCTION public.probe(jsonb), public.revocable(jsonb) TO alice;
});

# Polls until job $id is archived; returns "state/attempt/worker" (or '').
sub archived
{
	my ($id) = @_;
	$node->poll_query_until('postgres',
		"SELECT count(*) = 1 FROM throttle_jobs.archived_jobs WHERE id = $id")
	  or return '';
	return $node->safe_psql('postgres',
		"SELECT state || '/' || attempt || '/' || worker FROM throttle_jobs.archived_jobs WHERE id = $id");
}

# Polls until job $id is in the dead letters; returns its last error (or '').
sub dead_error
{
	my ($id) = @_;
	$node->poll_query_until('postgres',
		"SELECT count(*) = 1 FROM throttle_jobs.dead_letters WHERE id = $id")
	  or return '';
	return $node->safe_psql('postgres',
		"SELECT last_error FROM throttle_jobs.dead_letters WHERE id = $id");
}

sub enqueue
{
	my ($queue, $payload) = @_;
	return $node->safe_psql('postgres',
		"SELECT throttle_jobs.enqueue('$queue', '$payload')");
}

# ---------------------------------------------------------------- runs as the owner
$node->safe_psql('postgres', q{
	SET ROLE alice;
	SELECT throttle_jobs.create_queue('alice_q', handler => 'public.probe(jsonb)');
	RESET ROLE;
});
is($node->safe_psql('postgres', q{SELECT owner FROM throttle_jobs.queues WHERE name = 'alice_q'}),
	'alice', 'alice owns the queue she created');
# The first enqueue wakes the maintenance worker (no executor runs yet),
# which starts one.
my $who = enqueue('alice_q', '{"tag": "who"}');
ok( $node->poll_query_until('postgres', q{
		SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'throttle_jobs executor'}),
	'an executor runs for the handler queue');
my $executor = $node->safe_psql('postgres',
	q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'throttle_jobs executor'});
is(archived($who), "completed/1/throttle_jobs/executor/$executor",
	'the executor completes the job');
my ($cur, $sess) = split /\|/, $node->safe_psql('postgres',
	q{SELECT cur_user, sess_user FROM seen WHERE tag = 'who'});
is($cur, 'alice', 'the handler runs with current_user = the queue owner alice');
note("session_user in the executor: $sess");
isnt($cur, $su, 'the handler does not run as the superuser');
is($node->safe_psql('postgres', "SELECT result ->> 'current_user' FROM throttle_jobs.archived_jobs WHERE id = $who"),
	'alice', 'the jsonb result of the handler is stored with the job');

# ---------------------------------------------------------------- immediate pickup
# Each job is enqueued right after the previous one was seen archived, that
# is right after the executor went idle: its next poll is ~10 s away, so a
# pickup within 5 s was the wakeup at commit.
my @latencies;
for my $round (1 .. 3)
{
	my $id = enqueue('alice_q', qq({"tag": "quick$round"}));
	archived($id);
	push @latencies, $node->safe_psql('postgres', qq{
		SELECT round(extract(epoch FROM finished_at - enqueued_at)::numeric, 3)
		FROM throttle_jobs.archived_jobs WHERE id = $id});
}
note('pickup latencies (s): ' . join(', ', @latencies));
is(scalar(grep { length($_) && $_ < 5 } @latencies),
	3, 'an idle executor picks each job up right after its enqueue commits (< 5 s, interval 10 s)');

# ---------------------------------------------------------------- SETs do not leak
archived(enqueue('alice_q', '{"tag": "setter", "set": true}'));
archived(enqueue('alice_q', '{"tag": "after"}'));
is($node->safe_psql('postgres', q{
		SELECT search_path || ' / ' || work_mem FROM seen WHERE tag = 'setter'}),
	'public, pg_catalog / 77MB', 'a handler can SET search_path and work_mem for itself');
is($node->safe_psql('postgres', q{
		SELECT search_path || ' / ' || work_mem FROM seen WHERE tag = 'after'}),
	$node->safe_psql('postgres', q{
		SELECT search_path || ' / ' || work_mem FROM seen WHERE tag = 'who'}),
	'the next job\'s handler sees the default settings again');
is($node->safe_psql('postgres', q{
		SELECT count(DISTINCT pid) FROM seen WHERE tag IN ('who', 'setter', 'after')}),
	'1', 'all these jobs ran in the same executor process');

# ---------------------------------------------------------------- no escalation
# alice writes her own handler, which tries to become the superuser or to
# use rights alice lacks.  Each attempt fails, its job ends dead with the
# error, and the row it wrote before the attempt is rolled back.
$node->safe_psql('postgres', q{
	SET ROLE alice;
	CREATE FUNCTION alice.evil(p jsonb) RETURNS void LANGUAGE plpgsql AS $$
	BEGIN
		INSERT INTO public.side VALUES (p->>'attack', 'before', current_user);
		CASE p->>'attack'
			WHEN 'set_role' THEN
				EXECUTE format('SET ROLE %I', p->>'target');
			WHEN 'set_session_authorization' THEN
				EXECUTE format('SET SESSION AUTHORIZATION %I', p->>'target');
			WHEN 'read_secret' THEN
				INSERT INTO public.side SELECT 'read_secret', s.secret, current_user FROM public.secret s;
			WHEN 'read_file' THEN
				INSERT INTO public.side VALUES ('read_file', pg_read_file('postgresql.conf'), current_user);
			WHEN 'set_guc' THEN
				PERFORM set_config('throttle_jobs.allow_superuser_handlers', 'on', false);
		END CASE;
		INSERT INTO public.side VALUES (p->>'attack', 'after', current_user);
	END
	$$;
	SELECT throttle_jobs.create_queue('evil_q', handler => 'alice.evil(jsonb)', max_attempts => 1);
	RESET ROLE;
});
my %attacks = (
	set_role => qr/cannot set parameter "role" within security-definer function|permission denied to set role/,
	set_session_authorization =>
	  qr/cannot set parameter "session_authorization" within security-definer function|permission denied to set session authorization/,
	read_secret => qr/permission denied for table secret/,
	read_file => qr/permission denied for function pg_read_file/,
	set_guc => qr/permission denied to set parameter "throttle_jobs.allow_superuser_handlers"/);
my %evil_id;
$evil_id{$_} = enqueue('evil_q', qq({"attack": "$_", "target": "$su"})) for sort keys %attacks;
for my $attack (sort keys %attacks)
{
	like(dead_error($evil_id{$attack}), $attacks{$attack},
		"handler attack $attack fails, its job dead with the permission error");
}
is($node->safe_psql('postgres', q{
		SELECT count(*) FROM throttle_jobs.dead_letters d, jsonb_array_elements(d.errors) e
		WHERE d.queue = 'evil_q' AND d.attempt = 1}),
	'5', 'each attack job ran once and has one error recorded');
is($node->safe_psql('postgres', 'SELECT count(*) FROM side'),
	'0', 'no attack left a side effect (their writes were rolled back)');
is($node->safe_psql('postgres', 'SHOW throttle_jobs.allow_superuser_handlers'),
	'off', 'allow_superuser_handlers is still off');

# ---------------------------------------------------------------- choosing a handler
my ($ret, $stdout, $stderr) = $node->psql('postgres', q{
	\set VERBOSITY verbose
	SET ROLE alice;
	SELECT throttle_jobs.create_queue('forbidden_q', handler => 'public.forbidden(jsonb)');
});
like($stderr, qr/ERROR:\s+42501: role "alice" may not execute handler (public\.)?forbidden\(jsonb\)/,
	'create_queue refuses a handler its owner may not execute (insufficient_privilege)');
is($node->safe_psql('postgres', q{SELECT count(*) FROM throttle_jobs.queues WHERE name = 'forbidden_q'}),
	'0', 'that queue was not created');

($ret, $stdout, $stderr) = $node->psql('postgres', q{
	\set VERBOSITY verbose
	SET ROLE alice;
	SELECT throttle_jobs.alter_queue('alice_q', handler => 'public.forbidden(jsonb)');
});
like($stderr, qr/ERROR:\s+42501: role "alice" may not execute handler (public\.)?forbidden\(jsonb\)/,
	'nor will alter_queue give her own queue such a handler');
is($node->safe_psql('postgres', q{SELECT handler FROM throttle_jobs.queues WHERE name = 'alice_q'}),
	'public.probe(pg_catalog.jsonb)', 'alice_q keeps its handler');

$node->safe_psql('postgres', q{
	SET ROLE bob;
	SELECT throttle_jobs.create_queue('bob_q');
	RESET ROLE;
});
($ret, $stdout, $stderr) = $node->psql('postgres', q{
	\set VERBOSITY verbose
	SET ROLE alice;
	SELECT throttle_jobs.alter_queue('bob_q', handler => 'alice.evil(jsonb)');
});
like($stderr, qr/ERROR:\s+42501: only the owner of queue "bob_q" may set its handler/,
	'alice cannot set the handler of bob\'s queue (insufficient_privilege)');
($ret, $stdout, $stderr) = $node->psql('postgres', q{
	\set VERBOSITY verbose
	SET ROLE alice;
	SELECT throttle_jobs.alter_queue('bob_q', handler => 'public.probe(jsonb)');
});
like($stderr, qr/ERROR:\s+42501: only the owner of queue "bob_q" may set its handler/,
	'not even a handler that both may execute');
is($node->safe_psql('postgres', q{
		SELECT coalesce(handler::text, 'none') || '/' || owner FROM throttle_jobs.queues WHERE name = 'bob_q'}),
	'none/bob', 'bob\'s queue still has no handler');

# ---------------------------------------------------------------- re-checked at run time
$node->safe_psql('postgres', q{
	SET ROLE alice;
	SELECT throttle_jobs.create_queue('revoke_q', handler => 'public.revocable(jsonb)', max_attempts => 1);
	RESET ROLE;
});
my $first = enqueue('revoke_q', '{"tag": "revoke-1"}');
like(archived($first), qr{^completed/1/}, 'the revocable handler runs while alice may execute it');
$node->safe_psql('postgres', 'REVOKE EXECUTE ON FUNCTION public.revocable(jsonb) FROM alice');
my $seen_before = $node->safe_psql('postgres', 'SELECT count(*) FROM seen');
my $offset = -s $node->logfile;
my $second = enqueue('revoke_q', '{"tag": "revoke-2"}');
ok( eval {
		$node->wait_for_log(
			qr/WARNING:\s+throttle_jobs: job $second not run: role "alice" may not execute handler (public\.)?revocable\(jsonb\) of queue "revoke_q"/,
			$offset);
	},
	'after the REVOKE the job is not run: a WARNING names the role and the handler');
like(dead_error($second), qr/role "alice" may not execute handler (public\.)?revocable\(jsonb\)/,
	'the job fails with that message');
is($node->safe_psql('postgres', 'SELECT count(*) FROM seen'),
	$seen_before, 'the handler did not run (nothing recorded)');

# ---------------------------------------------------------------- superuser owner
$node->safe_psql('postgres', q{
	SELECT throttle_jobs.create_queue('su_q', handler => 'public.revocable(jsonb)', max_attempts => 1)});
is($node->safe_psql('postgres', q{SELECT owner FROM throttle_jobs.queues WHERE name = 'su_q'}),
	$su, 'the superuser owns su_q');
$offset = -s $node->logfile;
my $su1 = enqueue('su_q', '{"tag": "su-1"}');
ok( eval {
		$node->wait_for_log(
			qr/WARNING:\s+throttle_jobs: job $su1 not run: queue "su_q" is owned by superuser "$su", and throttle_jobs.allow_superuser_handlers is off/,
			$offset);
	},
	'a superuser-owned handler queue does not run while allow_superuser_handlers is off');
like(dead_error($su1), qr/throttle_jobs\.allow_superuser_handlers is off/,
	'its job fails with a message naming the setting');
is($node->safe_psql('postgres', q{SELECT count(*) FROM seen WHERE tag = 'su-1'}),
	'0', 'the handler did not run');

$node->safe_psql('postgres', q{
	ALTER SYSTEM SET throttle_jobs.allow_superuser_handlers = on;
	SELECT pg_reload_conf();
});
# A new connection sees the setting once the postmaster has reloaded, and
# by then it has signalled the executor, which reloads before its next job.
ok($node->poll_query_until('postgres', 'SHOW throttle_jobs.allow_superuser_handlers', 'on'),
	'allow_superuser_handlers is on after a reload');
my $su2 = enqueue('su_q', '{"tag": "su-2"}');
like(archived($su2), qr{^completed/1/throttle_jobs/executor/}, 'then the superuser-owned queue runs');
is($node->safe_psql('postgres', q{SELECT cur_user FROM seen WHERE tag = 'su-2'}),
	$su, 'as its owner, the superuser');

$node->stop;
done_testing();
