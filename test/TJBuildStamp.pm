# test/TJBuildStamp.pm -- loaded into every TAP test by test/run (through
# PERL5OPT): each time a PostgreSQL::Test::Cluster node starts or restarts
# with the throttle_jobs library loaded, its throttle_jobs.build_stamp must
# be $ENV{TJ_BUILD_STAMP}, the stamp of the build test/run just made; else
# the test bails out naming both stamps.  A node that does not load the
# library, or that refuses the connection, is not checked.
package TJBuildStamp;

use strict;
use warnings;

sub check
{
	my ($node) = @_;
	my ($out, $err) = ('', '');
	my $rc = $node->psql('postgres', 'SHOW throttle_jobs.build_stamp',
		stdout => \$out, stderr => \$err);
	return if $rc != 0 || $out eq '' || $out eq $ENV{TJ_BUILD_STAMP};
	Test::More::BAIL_OUT('node ' . $node->name
		  . ' loaded a throttle_jobs library other than the one just built:'
		  . " build stamp $out, expected $ENV{TJ_BUILD_STAMP}");
}

INIT
{
	if ($ENV{TJ_BUILD_STAMP} && $INC{'PostgreSQL/Test/Cluster.pm'})
	{
		no strict 'refs';
		no warnings 'redefine';
		for my $method ('start', 'restart')
		{
			my $orig = \&{"PostgreSQL::Test::Cluster::$method"};
			*{"PostgreSQL::Test::Cluster::$method"} = sub {
				# start returns 0 when it failed with fail_ok; restart
				# returns nothing in PostgreSQL 15.
				my $ret = $orig->(@_);
				check($_[0]) if !defined $ret || $ret;
				return $ret;
			};
		}
	}
}

1;
