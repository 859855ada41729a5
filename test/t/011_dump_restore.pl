# Dumps and restores.  Database "app" of cluster "src" holds queues (one of
# them paused, one a handler queue owned by a role that is not a superuser),
# limits (a cap, a spent token bucket), jobs in every state (available,
# scheduled, running, retrying, throttled, dead, completed, cancelled) and
# archive day partitions over four days.  It is dumped with pg_dump and
# restored into a new cluster "dst" whose maintenance workers run in every
# database restored into (throttle_jobs.databases, a pass every 100 ms):
#
# - a slow restore (plain dump by sections in one psql session, which waits
#   for several maintenance passes after the schema and after the data):
#   no error, no archive row lost, nothing done by maintenance meanwhile,
#   and the first pass afterwards recounts the depth gauges;
# - pg_restore --single-transaction --exit-on-error, --exit-on-error alone,
#   and -j 2: each restores everything without one error;
# - the restored database works: ids continue from the sequence, limits and
#   the spent token bucket are in place, the handler queue runs its jobs as
#   its owner, a restored lease completes, new jobs enqueue and complete.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

# Every wait normally ends within seconds (10 s of them the restore grace).
$PostgreSQL::Test::Utils::timeout_default = 60
  unless $ENV{PG_TEST_TIMEOUT_DEFAULT};

my $src = PostgreSQL::Test::Cluster->new('src');
$src->init;
# Preloaded, but no worker in "app": nothing but this test changes its data.
$src->append_conf('postgresql.conf', "shared_preload_libraries = 'throttle_jobs'");
$src->start;

my @dbs = qw(r_slow r_single r_exit r_par);
my $dst = PostgreSQL::Test::Cluster->new('dst');
$dst->init;
$dst->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'throttle_jobs'
throttle_jobs.databases = '@{[ join(', ', @dbs) ]}'
throttle_jobs.maintenance_interval = 100
throttle_jobs.executor_workers = 0
track_functions = 'all'
max_worker_processes = 16
});
$dst->start;

# ---------------------------------------------------------------- the data

$src->safe_psql('postgres', 'CREATE DATABASE app');
$src->safe_psql('app', q{
	SET client_min_messages = warning;
	CREATE EXTENSION throttle_jobs;
	CREATE ROLE app_owner NOLOGIN;
	GRANT throttle_jobs_admin TO app_owner;
	CREATE TABLE public.seen (payload jsonb, who name);
	GRANT INSERT ON public.seen TO app_owner;
	CREATE FUNCTION public.h(payload jsonb) RETURNS jsonb
	LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
	BEGIN
		INSERT INTO public.seen VALUES (payload, current_user);
		RETURN NULL;
	END
	$$;
	REVOKE ALL ON FUNCTION public.h(jsonb) FROM PUBLIC;
	GRANT EXECUTE ON FUNCTION public.h(jsonb) TO app_owner;

	SELECT throttle_jobs.create_queue('q_main', max_attempts => 3, lease => '1 hour',
	                                  backoff_base => '1 hour', backoff_jitter => 0,
	                                  retain_completed => '7 days');
	SELECT throttle_jobs.create_queue('q_paused');
	SET ROLE app_owner;
	SELECT throttle_jobs.create_queue('q_h', handler => 'public.h(jsonb)');
	RESET ROLE;
	SELECT throttle_jobs.set_concurrency_limit('cap', 1);
	SELECT throttle_jobs.set_rate_limit('tb', 5, '1 day', burst => 5);
	-- the bucket spent: nothing more for hours
	SELECT throttle_jobs.try_acquire('tb', 5);

	-- day partitions for the last four days and the next two
	SELECT throttle_jobs._maintain_archive(now() - d * interval '1 day') FROM generate_series(3, 1, -1) d;
	SELECT throttle_jobs.maintain();
});

# Jobs in every state, taken there one reservation at a time.
$src->safe_psql('app', q{
	SELECT throttle_jobs.enqueue('q_main', jsonb_build_object('k', k), priority => p,
	                             concurrency_key => ck)
	FROM (VALUES ('run', 50, 'cap'), ('retry', 40, NULL), ('dead', 30, NULL),
	             ('done', 20, NULL), ('wait', 0, 'cap'), ('avail', -1, NULL)) v(k, p, ck)
	ORDER BY p DESC;
	SELECT throttle_jobs.enqueue('q_main', '{"k": "sched"}', run_at => now() + interval '2 days');
	SELECT throttle_jobs.enqueue('q_main', '{"k": "cancel"}', priority => -5);
	SELECT throttle_jobs.cancel(id) FROM throttle_jobs.jobs WHERE payload->>'k' = 'cancel';
	SELECT throttle_jobs.enqueue('q_paused', '{"k": "p"}');
	SELECT throttle_jobs.pause_queue('q_paused');
	SELECT throttle_jobs.enqueue('q_h', jsonb_build_object('k', 'h' || n)) FROM generate_series(1, 2) n;
});
my ($run_id, $run_token) = split /\|/, $src->safe_psql('app',
	"SELECT id, lease_token FROM throttle_jobs.reserve('q_main', 'w1')");
my ($id, $token) = split /\|/, $src->safe_psql('app',
	"SELECT id, lease_token FROM throttle_jobs.reserve('q_main', 'w1')");
$src->safe_psql('app', "SELECT throttle_jobs.fail($id, '$token', 'try again')");
($id, $token) = split /\|/, $src->safe_psql('app',
	"SELECT id, lease_token FROM throttle_jobs.reserve('q_main', 'w1')");
$src->safe_psql('app', "SELECT throttle_jobs.fail($id, '$token', 'no', retryable => false)");
($id, $token) = split /\|/, $src->safe_psql('app',
	"SELECT id, lease_token FROM throttle_jobs.reserve('q_main', 'w1')");
$src->safe_psql('app', "SELECT throttle_jobs.complete($id, '$token')");

# The archive over four days: 500 rows a day, in their day partitions.
$src->safe_psql('app', q{
	INSERT INTO throttle_jobs.job_archive (id, queue_id, state, priority, run_at, attempt,
	       cost, enqueued_at, finished_at, errors, payload)
	SELECT nextval('throttle_jobs.job_id_seq'), q.id, 'completed', 0, t, 1, 1, t, t, '[]',
	       jsonb_build_object('n', n)
	FROM throttle_jobs.queue q,
	     generate_series(0, 3) d, generate_series(1, 500) n,
	     LATERAL (SELECT now() - d * interval '1 day' - n * interval '1 second' AS t) x
	WHERE q.name = 'q_main';
});

# What the restores must reproduce.
my %q = (
	states => q{SELECT string_agg(queue || ':' || (payload->>'k') || ':' || state || ':' || attempt,
	                              ',' ORDER BY id)
	            FROM throttle_jobs.jobs WHERE queue <> 'q_h'},
	dead => q{SELECT string_agg(queue || ':' || (payload->>'k') || ':' || reason, ',' ORDER BY id)
	          FROM throttle_jobs.dead_letters},
	archive => q{SELECT string_agg(day || '=' || n, ',' ORDER BY day) FROM (
	               SELECT tableoid::regclass::text AS day, count(*) AS n
	               FROM throttle_jobs.job_archive
	               WHERE queue_id = (SELECT id FROM throttle_jobs.queue WHERE name = 'q_main')
	               GROUP BY 1) x},
	limits => q{SELECT string_agg(format('%s %s %s %s %s', key, max_running, max_per_period,
	                                     period, burst), ',' ORDER BY key)
	            FROM throttle_jobs.key_limit},
	queues => q{SELECT string_agg(format('%s %s %s %s %s', name, paused, handler, owner,
	                                     retain_completed), ',' ORDER BY name)
	            FROM throttle_jobs.queue},
	partitions => q{SELECT string_agg(c.relname || ':' || (SELECT count(*) FROM pg_index x
	                                                        WHERE x.indrelid = c.oid), ',' ORDER BY c.relname)
	                FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
	                WHERE i.inhparent = 'throttle_jobs.job_archive'::regclass},
	max_id => q{SELECT greatest((SELECT max(id) FROM throttle_jobs.job),
	                            (SELECT max(id) FROM throttle_jobs.job_dead),
	                            (SELECT max(id) FROM throttle_jobs.job_archive))},
);
my %want = map { $_ => $src->safe_psql('app', $q{$_}) } keys %q;
note("$_: $want{$_}") for sort keys %want;
like($want{states}, qr/^(?=.*:run:running:1)(?=.*:retry:scheduled:1)(?=.*:avail:available:0)(?=.*:sched:scheduled:0)(?=.*q_paused:p:available)/,
	'src: jobs running, retrying (after a failed attempt), available, scheduled, and in a paused queue');
like($src->safe_psql('app', q{
		SELECT throttle_jobs.explain_job(id)::text FROM throttle_jobs.jobs WHERE payload->>'k' = 'wait'}),
	qr/cap/, 'src: a job held back by its key\'s cap');
like($want{dead}, qr/q_main:dead:/, 'src: a dead letter');
is($src->safe_psql('app', q{
		SELECT count(*) FILTER (WHERE state = 'completed') || '/' || count(*) FILTER (WHERE state = 'cancelled')
		FROM throttle_jobs.archived_jobs WHERE (payload->>'k') IN ('done', 'cancel')}),
	'1/1', 'src: a completed and a cancelled job in the archive');
is(scalar(() = $want{archive} =~ /job_archive_p\d{8}=\d+/g), 4,
	'src: the archive spans four day partitions');
is($src->safe_psql('app', "SELECT throttle_jobs.try_acquire('tb')"), 'f',
	'src: the token bucket is spent');

# ---------------------------------------------------------------- the dumps

my $tmp = PostgreSQL::Test::Utils::tempdir;
$src->command_ok([ 'pg_dump', '-Fc', '-f', "$tmp/app.dump", '-d', $src->connstr('app') ],
	'pg_dump -Fc of the whole database');
for my $section (qw(pre-data data post-data))
{
	$src->command_ok([ 'pg_dump', "--section=$section", '-f', "$tmp/$section.sql",
		'-d', $src->connstr('app') ], "pg_dump --section=$section (plain)");
}
# roles and memberships, as pg_dumpall --globals-only gives them
my $globals = $src->safe_psql('postgres', q{
	SELECT string_agg(format('CREATE ROLE %I NOLOGIN;', rolname), E'\n')
	FROM pg_roles WHERE rolname IN ('app_owner', 'throttle_jobs_producer',
	                                'throttle_jobs_worker', 'throttle_jobs_admin')});
$dst->safe_psql('postgres', $globals);
$dst->safe_psql('postgres', q{
	GRANT throttle_jobs_producer, throttle_jobs_worker TO throttle_jobs_admin;
	GRANT throttle_jobs_admin TO app_owner;
});

# Waits until the maintenance worker of $db runs.
sub worker_up
{
	my ($db) = @_;
	return $dst->poll_query_until('postgres', qq{
		SELECT count(*) = 1 FROM pg_stat_activity
		WHERE backend_type = 'throttle_jobs maintenance' AND datname = '$db'});
}

# ---------------------------------------------------------------- a slow restore

$dst->safe_psql('postgres', 'CREATE DATABASE r_slow');
ok(worker_up('r_slow'), 'the maintenance worker of r_slow runs before the restore');

# Between the sections the restoring session waits for three maintenance
# passes (each asks _restore_state() once: calls counted by
# track_functions), and reports what it
# saw: the marker of the restore, and no partition beyond the dump's.
my $pause = q{
DO $pause$
DECLARE
	c0 bigint;
	c bigint;
BEGIN
	PERFORM pg_catalog.set_config('stats_fetch_consistency', 'none', false);
	SELECT coalesce(pg_catalog.sum(f.calls), 0) INTO c0 FROM pg_catalog.pg_stat_user_functions f
	WHERE f.schemaname OPERATOR(pg_catalog.=) 'throttle_jobs' AND f.funcname OPERATOR(pg_catalog.=) '_restore_state';
	FOR i IN 1..600 LOOP
		SELECT coalesce(pg_catalog.sum(f.calls), 0) INTO c FROM pg_catalog.pg_stat_user_functions f
		WHERE f.schemaname OPERATOR(pg_catalog.=) 'throttle_jobs' AND f.funcname OPERATOR(pg_catalog.=) '_restore_state';
		EXIT WHEN c OPERATOR(pg_catalog.>=) (c0 OPERATOR(pg_catalog.+) 3);
		PERFORM pg_catalog.pg_sleep(0.1);
	END LOOP;
	RAISE WARNING 'pause: % passes, % markers, % partitions', c OPERATOR(pg_catalog.-) c0,
		(SELECT pg_catalog.count(*) FROM throttle_jobs.restore_marker),
		(SELECT pg_catalog.count(*) FROM pg_catalog.pg_inherits i
		 WHERE i.inhparent OPERATOR(pg_catalog.=) 'throttle_jobs.job_archive'::pg_catalog.regclass);
END
$pause$;
};
my ($stdout, $stderr);
my $rc = $dst->psql('r_slow', '',
	extra_params => [ '-v', 'ON_ERROR_STOP=1', '-f', "$tmp/pre-data.sql", '-c', $pause,
		'-f', "$tmp/data.sql", '-c', $pause, '-f', "$tmp/post-data.sql" ],
	stdout => \$stdout, stderr => \$stderr);
is($rc, 0, 'the slow restore ran without an error');
my @pauses = $stderr =~ /pause: (\d+) passes, (\d+) markers, (\d+) partitions/g;
is(scalar(@pauses), 6, 'both pauses reported') or diag($stderr);
my $parts = scalar(split /,/, $want{partitions});
is(join(' ', @pauses[1, 2, 4, 5]), "1 $parts 1 $parts",
	'during the restore: its marker, and only the dumped partitions (maintenance made none)');
cmp_ok($pauses[0], '>=', 3, 'three maintenance passes ran after the schema was restored');
cmp_ok($pauses[3], '>=', 3, 'and three after the data was');
unlike($stderr, qr/ERROR/, 'no error at all');

# Once the restoring session is gone (and 10 s more), a pass works again.
ok($dst->poll_query_until('r_slow', 'SELECT count(*) = 0 FROM throttle_jobs.restore_marker'),
	'the marker goes once the restore ended');
for my $k (qw(archive dead limits queues partitions max_id))
{
	is($dst->safe_psql('r_slow', $q{$k}), $want{$k}, "slow restore: $k as in the dump");
}
# The gauges were recounted after the restore, not from half the rows.
my $depth = q{
	SELECT string_agg(format('%s %s/%s/%s', s.queue, s.available + s.scheduled + s.retrying,
	                         s.running, s.dead), ',' ORDER BY s.queue)
	FROM throttle_jobs.queue_stats s WHERE s.queue <> 'q_h'};
my $real = q{
	SELECT string_agg(format('%s %s/%s/%s', q.name,
	         (SELECT count(*) FROM throttle_jobs.job j WHERE j.queue_id = q.id AND j.state <> 'running'),
	         (SELECT count(*) FROM throttle_jobs.job j WHERE j.queue_id = q.id AND j.state = 'running'),
	         (SELECT count(*) FROM throttle_jobs.job_dead d WHERE d.queue_id = q.id)), ',' ORDER BY q.name)
	FROM throttle_jobs.queue q WHERE q.name <> 'q_h'};
my $real_depth = $dst->safe_psql('r_slow', $real);
is($real_depth, 'q_main 4/1/1,q_paused 1/0/0', 'slow restore: the live and dead jobs are all there');
ok($dst->poll_query_until('r_slow', $depth, $real_depth),
	'queue_stats counts them (recounted after the restore)');
is($dst->safe_psql('r_slow', $q{states}), $want{states}, 'slow restore: every job in its state');

# ---------------------------------------------------------------- strict pg_restore

for my $case ([ 'r_single', [ '--single-transaction', '--exit-on-error' ] ],
	[ 'r_exit', [ '--exit-on-error' ] ], [ 'r_par', [ '-j', '2' ] ])
{
	my ($db, $flags) = @$case;
	$dst->safe_psql('postgres', "CREATE DATABASE $db");
	ok(worker_up($db), "the maintenance worker of $db runs");
	my ($out, $err) = ('', '');
	my $ok = IPC::Run::run([ 'pg_restore', @$flags, '-d', $dst->connstr($db), "$tmp/app.dump" ],
		'>', \$out, '2>', \$err);
	ok($ok, "pg_restore @$flags succeeds") or diag($err);
	is($err, '', "pg_restore @$flags: not one error or warning");
	for my $k (qw(archive dead limits queues partitions max_id states))
	{
		is($dst->safe_psql($db, $q{$k}), $want{$k}, "pg_restore @$flags: $k as in the dump");
	}
}

# ---------------------------------------------------------------- the restored queue works

my $db = 'r_single';
ok($dst->poll_query_until($db, 'SELECT count(*) = 0 FROM throttle_jobs.restore_marker'),
	"$db: maintenance works again after the restore");
# The spent token bucket came with the dump.
is($dst->safe_psql($db, "SELECT throttle_jobs.try_acquire('tb')"), 'f',
	'the spent token bucket is still spent after the restore (key_rate_state is dumped)');
# Ids continue from the sequence.
my $new_id = $dst->safe_psql($db, q{SELECT throttle_jobs.enqueue('q_main', '{"k": "new"}', priority => 100)});
cmp_ok($new_id, '>', $want{max_id}, 'a new job gets an id above every dumped one');
# The restored lease completes with its token; the cap it held passes on.
is($dst->safe_psql($db, "SELECT throttle_jobs.complete($run_id, '$run_token')"), 't',
	'the running job completes with the lease token it had before the dump');
is($dst->safe_psql($db, q{
		CREATE TEMP TABLE r AS SELECT * FROM throttle_jobs.reserve('q_main', 'w2', max_jobs => 10);
		SELECT string_agg(payload->>'k', ',' ORDER BY priority DESC) FROM r;
		SELECT bool_and(throttle_jobs.complete(id, lease_token)) FROM r}),
	"new,wait,avail\nt", 'new, released (its cap freed) and available jobs reserve, best first, and complete');
is($dst->safe_psql($db, q{SELECT count(*) FROM throttle_jobs.reserve('q_paused', 'w2')}),
	'0', 'the paused queue stays paused');
# The handler queue runs its jobs as its owner, the dumped ones and a new one
# (no executors here: run_jobs() runs them, as pg_cron would).
$dst->safe_psql($db, q{SELECT throttle_jobs.enqueue('q_h', '{"k": "h3"}')});
$dst->safe_psql($db, q{SELECT throttle_jobs.run_jobs('q_h')});
ok($dst->poll_query_until($db, q{
		SELECT string_agg(payload->>'k' || ':' || who, ',' ORDER BY payload->>'k') FROM public.seen},
		'h1:app_owner,h2:app_owner,h3:app_owner'),
	'the handler ran the dumped and the new handler jobs as the queue owner');

$dst->stop;
$src->stop;
done_testing();
