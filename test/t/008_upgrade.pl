# The upgrade from the released 0.1.0 (throttle_jobs--0.1.0.sql, frozen)
# to the current version.  Database up_a is made with 0.1.0 and holds data
# in every state: queues (paused, round_robin, a handler queue owned by a
# role that is not a superuser), limits (a cap, a template, each rate
# algorithm, an adaptive rate), available, scheduled, retrying, throttled
# and running jobs (their lease tokens kept), dead letters, archived jobs in
# a day partition that maintain() made, unique keys.  It is then updated
# with ALTER EXTENSION throttle_jobs UPDATE; database up_b gets a fresh
# CREATE EXTENSION of the current version.
#
# Then: both are at the control file's default_version; their schemas are
# equal: pg_dump --schema-only (plain and --binary-upgrade, which writes
# out every member of the extension, its ACL and its initial privileges)
# restricted to the extension's schema, the list of member objects, the
# ACLs and pg_init_privs, and the configuration tables; only the day
# partitions made by maintain() and OIDs are left out.  Nothing here names
# an object of the schema to compare: whatever the install and upgrade
# scripts produce is compared.  And up_a's data survived the update row for
# row, and works: the running jobs complete with their old lease tokens,
# the caps still hold, dead letters retry, the unique key still holds, the
# paused queue stays paused, the handler queue's job runs as its owner.
# The handler column (a regprocedure in 0.1.0, which pg_upgrade refuses)
# becomes the function's qualified signature, with its owner beside it; a
# queue whose handler was dropped under 0.1.0 keeps a handler that fails
# its jobs with SQLSTATE 42883.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('upgrade');
$node->init;
# Preloaded (shared memory statistics on) but with no background worker in
# these databases, so that nothing but this test changes their data.
$node->append_conf('postgresql.conf', "shared_preload_libraries = 'throttle_jobs'");
$node->start;

my $current = $node->safe_psql('postgres',
	"SELECT default_version FROM pg_available_extensions WHERE name = 'throttle_jobs'");
isnt($current, '0.1.0', "the current version ($current) is not the released 0.1.0");

$node->safe_psql('postgres', 'CREATE DATABASE up_a');
$node->safe_psql('postgres', 'CREATE DATABASE up_b');

# ---------------------------------------------------------------- 0.1.0 and its data

$node->safe_psql('up_a', q{
	SET client_min_messages = warning;
	CREATE EXTENSION throttle_jobs VERSION '0.1.0';
	CREATE ROLE up_owner NOLOGIN;
	GRANT throttle_jobs_admin TO up_owner;
	CREATE TABLE public.up_seen (payload jsonb, who name);
	GRANT INSERT ON public.up_seen TO up_owner;
	CREATE FUNCTION public.up_handler(payload jsonb) RETURNS jsonb
	LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
	BEGIN
		INSERT INTO public.up_seen VALUES (payload, current_user);
		RETURN pg_catalog.jsonb_build_object('handled', payload);
	END
	$$;
	REVOKE ALL ON FUNCTION public.up_handler(jsonb) FROM PUBLIC;
	GRANT EXECUTE ON FUNCTION public.up_handler(jsonb) TO up_owner;
});
is($node->safe_psql('up_a', "SELECT extversion FROM pg_extension WHERE extname = 'throttle_jobs'"),
	'0.1.0', 'up_a starts at 0.1.0');

# Queues and limits.
$node->safe_psql('up_a', q{
	SELECT throttle_jobs.create_queue('up_main', max_size => 1000);
	SELECT throttle_jobs.create_queue('up_work', max_attempts => 3, backoff_base => '1 hour',
	                                  backoff_jitter => 0, lease => '1 hour',
	                                  retain_completed => '7 days', retain_dead => '30 days');
	SELECT throttle_jobs.create_queue('up_rr', fairness => 'round_robin');
	SELECT throttle_jobs.create_queue('up_paused', on_full => 'drop', max_size => 10);
	SET ROLE up_owner;
	SELECT throttle_jobs.create_queue('up_h', handler => 'public.up_handler(jsonb)');
	RESET ROLE;
	CREATE FUNCTION public.up_gone(payload jsonb) RETURNS void
	LANGUAGE sql SET search_path = pg_catalog, pg_temp AS 'SELECT';
	SELECT throttle_jobs.create_queue('up_gone', handler => 'public.up_gone(jsonb)');
	DROP FUNCTION public.up_gone(jsonb);
	SELECT throttle_jobs.set_concurrency_limit('up:cap', 1);
	SELECT throttle_jobs.set_concurrency_limit('up:t*', 2);
	SELECT throttle_jobs.set_rate_limit('up:tb', 5, '1 hour', burst => 5);
	SELECT throttle_jobs.set_rate_limit('up:sw', 5, '1 hour', algorithm => 'sliding_window');
	SELECT throttle_jobs.set_rate_limit('up:fw', 5, '1 hour', algorithm => 'fixed_window');
	SELECT throttle_jobs.set_rate_limit('up:ad', 100, '1 minute', adaptive => true,
	                                    error_threshold => 0.2);
	-- the archive's day partitions, before anything is archived
	SELECT throttle_jobs.maintain();
});

# Available, scheduled and unique jobs; a paused queue; handler jobs.
$node->safe_psql('up_a', q{
	SELECT throttle_jobs.enqueue_batch('up_main',
		'[{"payload": {"k": "a1"}}, {"payload": {"k": "a2"}, "priority": 3},
		  {"payload": {"k": "a3"}, "concurrency_key": "up:t1"}]');
	SELECT throttle_jobs.enqueue('up_main', '{"k": "u1"}', unique_key => 'up-u1');
	SELECT throttle_jobs.enqueue('up_main', jsonb_build_object('k', 's' || n),
	                             run_at => now() + interval '2 days')
	FROM generate_series(1, 2) n;
	SELECT throttle_jobs.enqueue('up_paused', '{"k": "p1"}');
	SELECT throttle_jobs.pause_queue('up_paused');
	SELECT throttle_jobs.enqueue('up_h', jsonb_build_object('k', 'h' || n)) FROM generate_series(1, 2) n;
	SELECT throttle_jobs.enqueue('up_gone', '{"k": "g1"}');
});
is($node->safe_psql('up_a', "SELECT throttle_jobs.run_jobs('up_h', max_jobs => 1)"),
	'1', 'a handler job ran under 0.1.0');

# up_work: jobs reserved one at a time, best first, and taken to their
# states.  Returns "key|id|lease_token" of the job reserved.
$node->safe_psql('up_a', q{
	SELECT throttle_jobs.enqueue('up_work', jsonb_build_object('k', k), priority => p,
	                             max_attempts => m, concurrency_key => ck, rate_limit_key => rk)
	FROM (VALUES ('d1', 50, NULL, NULL, NULL), ('d2', 49, 1, NULL, 'up:ad'),
	             ('f1', 45, NULL, NULL, NULL), ('c1', 40, NULL, NULL, NULL),
	             ('c2', 39, NULL, NULL, 'up:sw'), ('c3', 38, NULL, NULL, 'up:fw'),
	             ('r1', 20, NULL, 'up:cap', NULL), ('r2', 19, NULL, 'up:t2', 'up:tb'),
	             ('x1', 0, NULL, NULL, NULL)) v(k, p, m, ck, rk)
	ORDER BY p DESC;
});
sub reserve_one
{
	my ($queue) = @_;
	return $node->safe_psql('up_a', qq{
		SELECT r.payload->>'k', r.id, r.lease_token
		FROM throttle_jobs.reserve('$queue', 'up-worker', 1) r});
}
my %job;
for my $want (qw(d1 d2 f1 c1 c2 c3))
{
	my ($k, $id, $token) = split /\|/, reserve_one('up_work');
	is($k, $want, "reserved $want");
	$job{$k} = { id => $id, token => $token };
}
$node->safe_psql('up_a', qq{
	SELECT throttle_jobs.fail($job{d1}{id}, '$job{d1}{token}', 'no retry', retryable => false);
	SELECT throttle_jobs.fail($job{d2}{id}, '$job{d2}{token}', 'out of attempts');
	SELECT throttle_jobs.fail($job{f1}{id}, '$job{f1}{token}', 'try again later');
	SELECT throttle_jobs.complete($job{c1}{id}, '$job{c1}{token}', '{"result": 1}');
	SELECT throttle_jobs.complete($job{c2}{id}, '$job{c2}{token}');
});
# c3 completes and r1 is reserved in one call.
my ($k, $id, $token) = split /\|/, $node->safe_psql('up_a', qq{
	SELECT r.payload->>'k', r.id, r.lease_token
	FROM throttle_jobs.complete_and_reserve('up_work', 'up-worker', ARRAY[$job{c3}{id}]::bigint[],
	                                        ARRAY['$job{c3}{token}']::uuid[], 1) r});
is($k, 'r1', 'complete_and_reserve reserved r1');
$job{r1} = { id => $id, token => $token };
($k, $id, $token) = split /\|/, reserve_one('up_work');
is($k, 'r2', 'reserved r2');
$job{r2} = { id => $id, token => $token };
$job{x1}{id} = $node->safe_psql('up_a',
	"SELECT id FROM throttle_jobs.jobs WHERE queue = 'up_work' AND payload->>'k' = 'x1'");
$job{u1}{id} = $node->safe_psql('up_a',
	"SELECT id FROM throttle_jobs.jobs WHERE queue = 'up_main' AND payload->>'k' = 'u1'");
is($node->safe_psql('up_a', "SELECT throttle_jobs.cancel($job{x1}{id})"), 't', 'x1 cancelled');

# Throttled jobs: up:cap is held by r1, up:tb's tokens are spent; a
# reservation of up_rr parks all three and takes none.
is( $node->safe_psql('up_a', q{
		SELECT throttle_jobs.try_acquire('up:tb', 4), throttle_jobs.acquire('up:sw', 1, '1 second')}),
	't|t', 'the rest of up:tb\'s tokens spent, one of up:sw\'s');
$node->safe_psql('up_a', q{
	SELECT throttle_jobs.enqueue('up_rr', '{"k": "t1"}', concurrency_key => 'up:cap');
	SELECT throttle_jobs.enqueue('up_rr', '{"k": "t2"}', concurrency_key => 'up:cap');
	SELECT throttle_jobs.enqueue('up_rr', '{"k": "t3"}', rate_limit_key => 'up:tb');
});
is($node->safe_psql('up_a', q{SELECT count(*) FROM throttle_jobs.reserve('up_rr', 'up-worker', 3)}),
	'0', 'the jobs of up_rr are throttled');

# Every state is there: the jobs by queue and state, as the views show them.
my $states_sql = q{
	SELECT string_agg(format('%s %s %s', queue, state, n), ', ' ORDER BY queue, state)
	FROM (SELECT queue, state, count(*) AS n FROM throttle_jobs.jobs GROUP BY 1, 2
	      UNION ALL SELECT queue, 'dead', count(*) FROM throttle_jobs.dead_letters GROUP BY 1
	      UNION ALL SELECT queue, 'archived ' || state, count(*) FROM throttle_jobs.archived_jobs GROUP BY 1, 2) s};
my $states_expected = 'up_gone available 1, up_h archived completed 1, up_h available 1, up_main available 4, '
  . 'up_main scheduled 2, up_paused available 1, up_rr throttled 3, '
  . 'up_work archived cancelled 1, up_work archived completed 3, up_work dead 2, '
  . 'up_work running 2, up_work scheduled 1';
my $states_before = $node->safe_psql('up_a', $states_sql);
is($states_before, $states_expected, 'up_a holds jobs in every state');
is( $node->safe_psql('up_a', q{
		SELECT count(*) FILTER (WHERE tableoid::regclass::text ~ '^throttle_jobs\.job_archive_p[0-9]{8}$'),
		       count(*)
		FROM throttle_jobs.job_archive}),
	'5|5', 'the archived jobs are in a day partition that maintain() made');
my $limits_sql = q{SELECT string_agg(l::text, E'\n' ORDER BY l.key) FROM throttle_jobs.limits l};
my $limits_before = $node->safe_psql('up_a', $limits_sql);

# Every table of the schema (partitions included) with its columns as of
# 0.1.0, and every sequence: their contents now, to compare after the update.
my %tables = map { split /\|/, $_, 2 } split /\n/, $node->safe_psql('up_a', q{
	SELECT c.oid::regclass,
	       CASE c.relkind WHEN 'S' THEN 'last_value, is_called'
	            ELSE string_agg(quote_ident(a.attname), ', ' ORDER BY a.attnum) END
	FROM pg_class c
	LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
	WHERE c.relnamespace = 'throttle_jobs'::regnamespace AND c.relkind IN ('r', 'S')
	GROUP BY c.oid, c.relkind});
sub table_contents
{
	my ($db) = @_;
	my %rows;
	for my $t (sort keys %tables)
	{
		$rows{$t} = $node->safe_psql($db,
			"SELECT count(*) || E'\\n' || coalesce(string_agg(r::text, E'\\n' ORDER BY r::text), '')"
			  . " FROM (SELECT $tables{$t} FROM $t) r");
	}
	return \%rows;
}
# queue.handler becomes text (a qualified signature): compared as the
# function it names (a dropped one: its number, either way)
$tables{'throttle_jobs.queue'} =~
  s/\bhandler\b/CASE WHEN handler::text ~ '^[0-9]+\$' THEN handler::text
    ELSE to_regprocedure(handler::text)::oid::text END AS handler/
  or die 'throttle_jobs.queue has no handler column';
my $contents_before = table_contents('up_a');
ok(keys %tables >= 15, 'the tables and sequences of 0.1.0 are listed (' . scalar(keys %tables) . ')');

# ---------------------------------------------------------------- the update

my ($ret, $stdout, $stderr) = $node->psql('up_a', 'ALTER EXTENSION throttle_jobs UPDATE');
is($ret, 0, 'ALTER EXTENSION throttle_jobs UPDATE succeeds') or diag($stderr);
$node->safe_psql('up_b', 'SET client_min_messages = warning; CREATE EXTENSION throttle_jobs');
for my $db ('up_a', 'up_b')
{
	is($node->safe_psql($db, "SELECT extversion FROM pg_extension WHERE extname = 'throttle_jobs'"),
		$current, "$db is at $current");
}

# ---------------------------------------------------------------- the schemas

# Writes both texts to files and returns their unified diff ('' if equal).
my $tmp = PostgreSQL::Test::Utils::tempdir;
sub difference
{
	my ($name, $in_a, $in_b) = @_;
	PostgreSQL::Test::Utils::append_to_file("$tmp/$name.up_a", $in_a);
	PostgreSQL::Test::Utils::append_to_file("$tmp/$name.up_b", $in_b);
	my ($out, $err) = run_command([ 'diff', '-u', "$tmp/$name.up_a", "$tmp/$name.up_b" ]);
	return $out;
}
sub same
{
	my ($name, $in_a, $in_b, $what) = @_;
	my $diff = difference($name, $in_a, $in_b);
	ok($diff eq '', $what) or diag(substr($diff, 0, 8000));
}

# pg_dump of one database, cut down to the entries of the extension's
# schema, of the schema itself and of the extension.  (pg_dump --schema
# would make that cut, but the pg_dump of PostgreSQL 15.20 dies of a
# segmentation fault with --schema=throttle_jobs, on a fresh install too;
# leaving out job_archive* avoids it.)  OIDs, relfrozenxid, the random
# \restrict key and the sequences' values (data, compared below) are
# dropped, and so are the day partitions that maintain() made in up_a.
sub schema_dump
{
	my ($db, @options) = @_;
	my ($out, $err) = run_command([ 'pg_dump', '--schema-only', @options, $node->connstr($db) ]);
	die "pg_dump of $db failed: $err" if $err ne '' || $out eq '';
	$out =~ s/^--\n-- PostgreSQL database dump complete\n--\n?//m;
	my @kept;
	for my $entry (split /^--\n-- (?=(?:Data for )?Name: )/m, $out)
	{
		next unless $entry =~ /^(?:Data for )?Name: (.*?); Type: (.*?); Schema: (.*?); Owner: /;
		my ($name, $type, $schema) = ($1, $2, $3);
		next
		  unless $schema eq 'throttle_jobs'
		  || ($schema eq '-' && $name =~ /^(?:(?:SCHEMA |EXTENSION )?throttle_jobs)$/);
		next if $name =~ /\bjob_archive_p[0-9]{8}/;
		# (sequence values: data, compared with the tables below)
		next if $type eq 'SEQUENCE SET';
		$entry =~ s/^\\(?:un)?restrict .*\n//mg;
		$entry =~ s/^-- For binary upgrade.*\n//mg;
		$entry =~ s/^SELECT pg_catalog\.binary_upgrade_set_next_.*\n//mg;
		$entry =~ s/^UPDATE pg_catalog\.pg_class\nSET relfrozenxid = .*\nWHERE oid = .*\n//mg;
		$entry =~ s/^(SELECT pg_catalog\.binary_upgrade_create_empty_extension\(.*?, )'\{[0-9,]*\}'/$1'{oids}'/mg;
		$entry =~ s/\n{3,}/\n\n/g;
		push @kept, "-- $entry";
	}
	return join('', @kept);
}
my $plain_a = schema_dump('up_a');
my $plain_b = schema_dump('up_b');
like($plain_b, qr/CREATE EXTENSION IF NOT EXISTS throttle_jobs WITH SCHEMA throttle_jobs;/,
	'the plain dump of up_b holds the extension');
same('plain', $plain_a, $plain_b, 'pg_dump --schema-only: the updated and the fresh schema are equal');

my $full_a = schema_dump('up_a', '--binary-upgrade');
my $full_b = schema_dump('up_b', '--binary-upgrade');
my $members = () = $full_b =~ /^ALTER EXTENSION throttle_jobs ADD /mg;
ok($members > 50, "the --binary-upgrade dump of up_b writes out every member ($members)");
same('binary_upgrade', $full_a, $full_b,
	'pg_dump --schema-only --binary-upgrade: every member, its definition, ACL and initial privileges are equal');

# The same from the catalogs.
my %catalog = (
	members => q{
		SELECT string_agg(o, E'\n' ORDER BY o)
		FROM (SELECT pg_describe_object(d.classid, d.objid, d.objsubid) AS o
		FROM pg_depend d JOIN pg_extension e ON e.oid = d.refobjid
		WHERE d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e'
		  AND e.extname = 'throttle_jobs') m},
	acls => q{
		SELECT string_agg(format('%s: %s', o, acl), E'\n' ORDER BY o, acl)
		FROM (SELECT pg_describe_object('pg_class'::regclass, c.oid, 0) AS o, c.relacl::text AS acl
		      FROM pg_class c WHERE c.relnamespace = 'throttle_jobs'::regnamespace
		        AND c.relname !~ '^job_archive_p[0-9]{8}'
		      UNION ALL
		      SELECT pg_describe_object('pg_class'::regclass, a.attrelid, a.attnum), a.attacl::text
		      FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
		      WHERE c.relnamespace = 'throttle_jobs'::regnamespace AND a.attacl IS NOT NULL
		      UNION ALL
		      SELECT pg_describe_object('pg_proc'::regclass, p.oid, 0), p.proacl::text
		      FROM pg_proc p WHERE p.pronamespace = 'throttle_jobs'::regnamespace
		      UNION ALL
		      SELECT pg_describe_object('pg_type'::regclass, t.oid, 0), t.typacl::text
		      FROM pg_type t WHERE t.typnamespace = 'throttle_jobs'::regnamespace
		        AND t.typname !~ '^_?job_archive_p[0-9]{8}'
		      UNION ALL
		      SELECT 'schema throttle_jobs', n.nspacl::text
		      FROM pg_namespace n WHERE n.nspname = 'throttle_jobs') x},
	init_privs => q{
		SELECT string_agg(p, E'\n' ORDER BY p)
		FROM (SELECT format('%s (%s): %s', pg_describe_object(i.classoid, i.objoid, i.objsubid),
		                    i.privtype, i.initprivs) AS p
		FROM pg_init_privs i
		WHERE EXISTS (SELECT FROM pg_depend d JOIN pg_extension e ON e.oid = d.refobjid
		              WHERE e.extname = 'throttle_jobs' AND d.deptype = 'e'
		                AND d.classid = i.classoid AND d.objid = i.objoid)) x},
	extension => q{
		SELECT format('%s %s relocatable=%s owner=%s', e.extname, e.extversion, e.extrelocatable,
		              e.extowner::regrole)
		       || E'\n' || coalesce((SELECT string_agg(format('%s %L', c::regclass, w), E'\n' ORDER BY c::regclass::text)
		                             FROM unnest(e.extconfig, e.extcondition) u(c, w)), '')
		FROM pg_extension e WHERE e.extname = 'throttle_jobs'},
);
for my $what (sort keys %catalog)
{
	my $in_a = $node->safe_psql('up_a', $catalog{$what});
	my $in_b = $node->safe_psql('up_b', $catalog{$what});
	isnt($in_b, '', "the fresh install has $what");
	same($what, $in_a, $in_b, "$what: equal after the update and in a fresh install");
}

# ---------------------------------------------------------------- the data

my $contents_after = table_contents('up_a');
for my $t (sort keys %tables)
{
	same("data_$t", $contents_before->{$t}, $contents_after->{$t},
		"$t: every row (0.1.0 columns) survived the update");
}
is($node->safe_psql('up_a', $states_sql), $states_expected, 'the views show the same jobs in the same states');
is($node->safe_psql('up_a', $limits_sql), $limits_before, 'the limits are in place');
my $su = $node->safe_psql('up_a', 'SELECT current_user');
is( $node->safe_psql('up_a', q{
		SELECT string_agg(format('%s paused=%s fairness=%s owner=%s handler=%s', q.name, q.paused,
		                         q.fairness, q.owner, CASE WHEN q.handler ~ '^[0-9]+$' THEN 'number' ELSE coalesce(q.handler, '-') END
		                         || coalesce(' of ' || h.handler_owner, '')),
		                  E'\n' ORDER BY q.name)
		FROM throttle_jobs.queues q JOIN throttle_jobs.queue h USING (name)}),
	"up_gone paused=f fairness=fifo owner=$su handler=number\n"
	  . "up_h paused=f fairness=fifo owner=up_owner handler=public.up_handler(pg_catalog.jsonb) of $su\n"
	  . "up_main paused=f fairness=fifo owner=$su handler=-\n"
	  . "up_paused paused=t fairness=fifo owner=$su handler=-\n"
	  . "up_rr paused=f fairness=round_robin owner=$su handler=-\n"
	  . "up_work paused=f fairness=fifo owner=$su handler=-",
	'the queues keep their settings and owners');

# ... and works.  The running jobs complete with the lease tokens they got
# under 0.1.0 (and only once).
is( $node->safe_psql('up_a', qq{
		SELECT throttle_jobs.complete($job{r1}{id}, '$job{r1}{token}', '{"after": "update"}'),
		       throttle_jobs.complete($job{r2}{id}, '$job{r2}{token}'),
		       throttle_jobs.complete($job{r1}{id}, '$job{r1}{token}')}),
	't|t|f', 'the running jobs complete with their 0.1.0 lease tokens; a second time is stale');
# r1 freed up:cap's one slot: one of the two jobs parked on it runs now, not both.
is( $node->safe_psql('up_a', q{
		SELECT string_agg(r.concurrency_key, ',')
		FROM throttle_jobs.reserve('up_rr', 'up-worker', 3) r}),
	'up:cap', 'the cap still holds: one up:cap job of up_rr is reserved, the other waits');
is( $node->safe_psql('up_a', qq{
		SELECT throttle_jobs.retry_dead($job{d1}{id}), throttle_jobs.retry_dead('up_work');
		SELECT count(*) FROM throttle_jobs.dead_letters;
		SELECT count(*) FROM throttle_jobs.jobs WHERE payload->>'k' IN ('d1', 'd2') AND state = 'available'}),
	"t|1\n0\n2", 'the dead letters retry: both are live again');
is( $node->safe_psql('up_a', qq{
		SELECT throttle_jobs.enqueue('up_main', '{"k": "u1 again"}', unique_key => 'up-u1')}),
	$job{u1}{id}, 'the unique key still holds');
is($node->safe_psql('up_a', q{SELECT count(*) FROM throttle_jobs.reserve('up_paused', 'up-worker')}),
	'0', 'the paused queue stays paused');
is($node->safe_psql('up_a', "SELECT throttle_jobs.run_jobs('up_h')"), '1',
	'the remaining handler job runs after the update');
is( $node->safe_psql('up_a', q{SELECT string_agg(format('%s %s', payload->>'k', who), ', ' ORDER BY payload->>'k') FROM public.up_seen}),
	'h1 up_owner, h2 up_owner', 'both handler jobs ran as the queue owner');
is( $node->safe_psql('up_a', q{
		SELECT throttle_jobs.run_jobs('up_gone');
		SELECT attempt, last_error ~ '^handler [0-9]+ of queue "up_gone" does not exist \(SQLSTATE 42883\)'
		FROM throttle_jobs.jobs WHERE queue = 'up_gone'}),
	"1\n1|t", 'the handler dropped under 0.1.0 fails its job with SQLSTATE 42883');
isnt($node->safe_psql('up_a', 'SELECT throttle_jobs.maintain()'), '', 'maintain() runs after the update');

$node->stop;
done_testing();
