# shellcheck shell=bash
# shellcheck disable=SC2034  # TJ_* variables are for the scripts sourcing this
# test/lib.sh -- shared shell helpers for test/run (and examples/demo, test/bench).
#
# Source it from bash; it only defines functions and TJ_* variables and runs
# nothing by itself.  Typical use:
#
#   . "$(dirname "$0")/lib.sh"
#   tj_install_deps && tj_pg_env && tj_pick_user || exit 1
#   tj_make_scratch                      # -> $TJ_SCRATCH
#   trap tj_cleanup EXIT
#   tj_copy_repo "$TJ_ROOT" "$TJ_SCRATCH/src"
#   tj_build_install "$TJ_SCRATCH/src" || exit 1
#   tj_start_cluster "$TJ_SCRATCH/cluster" || exit 1   # -> $TJ_PGHOST/$TJ_PGPORT
#   tj_psql -c 'CREATE EXTENSION throttle_jobs'
#   tj_stop_cluster
#
# When run as root, everything that starts or talks to a server runs as the
# unprivileged $TJ_PGUSER ("postgres", created by the Debian package);
# otherwise everything runs as the current user and apt is never used.

# Repository root (the directory above this file).
TJ_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# Major PostgreSQL version this extension targets.
TJ_PG_MAJOR=${TJ_PG_MAJOR:-15}
# Debian packages needed to build and test (checked with dpkg-query); bison,
# flex and zlib1g-dev build the servers of other majors (tj_pg_build).
TJ_APT_PACKAGES=("postgresql-$TJ_PG_MAJOR" "postgresql-server-dev-$TJ_PG_MAJOR"
                 "postgresql-$TJ_PG_MAJOR-cron" libipc-run-perl perl
                 build-essential make gcc bison flex zlib1g-dev python3-psycopg)
# Where tj_pg_build keeps the PostgreSQL servers it builds, outside the
# checkout, one directory per Debian source version (README, "Two commands").
# As root it must be readable by the server user, so not under /root.
if [ -z "${TJ_PG_CACHE:-}" ]; then
    if [ "$(id -u)" -eq 0 ]; then
        TJ_PG_CACHE=/var/cache/throttle_jobs/postgresql
    else
        TJ_PG_CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/throttle_jobs/postgresql
    fi
fi
# Debian suites searched for the source packages postgresql-MAJOR and pg-cron
# (the archive's address is this machine's own, from its apt configuration).
TJ_PG_SUITES=${TJ_PG_SUITES:-"trixie trixie-updates forky"}
TJ_PG_SECURITY_SUITES=${TJ_PG_SECURITY_SUITES:-"trixie-security"}
# Data directories of the clusters started by tj_start_cluster.
TJ_CLUSTERS=()

# tj_log MSG...: print a "==> MSG" progress line on stdout.
tj_log() { printf '==> %s\n' "$*"; }

# tj_warn MSG...: print a warning on stderr.
tj_warn() { printf 'WARNING: %s\n' "$*" >&2; }

# tj_is_root: succeed when running as uid 0.
tj_is_root() { [ "$(id -u)" -eq 0 ]; }

# tj_install_deps: as root, apt-get install whatever of TJ_APT_PACKAGES (and prometheus, for promtool; chromium, nodejs, npm, for the dashboard) is missing (apt-get update once, only if needed); as non-root, only check.
tj_install_deps() {
    local p missing=()
    for p in "${TJ_APT_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' ||
            missing+=("$p")
    done
    # promtool (test/run checks metrics() with it) ships in Debian's prometheus.
    command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
    # The dashboard's browser tests: Debian's chromium.
    command -v chromium >/dev/null 2>&1 || missing+=(chromium)
    # test/clients and the dashboard: node and npm (NodeSource's nodejs bundles npm and conflicts with Debian's).
    command -v node >/dev/null 2>&1 || missing+=(nodejs)
    command -v npm >/dev/null 2>&1 || missing+=(npm)
    if [ ${#missing[@]} -eq 0 ]; then
        return 0
    fi
    if ! tj_is_root; then
        if command -v dpkg-query >/dev/null 2>&1; then
            tj_warn "not root, not installing missing packages: ${missing[*]}"
        fi
        return 0
    fi
    tj_log "installing missing packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q </dev/null || return 1
    apt-get install -y -q -o Dpkg::Options::=--force-confdef \
        -o Dpkg::Options::=--force-confold "${missing[@]}" </dev/null || return 1
}

# tj_pg_env: find pg_config and set PG_CONFIG, TJ_BINDIR, TJ_PKGLIBDIR, TJ_PGXS_TEST, TJ_PG_REGRESS, TJ_PG_ISOLATION_REGRESS; put the pg bindir first in PATH.
tj_pg_env() {
    if [ -z "${PG_CONFIG:-}" ]; then
        if [ -x "/usr/lib/postgresql/$TJ_PG_MAJOR/bin/pg_config" ]; then
            PG_CONFIG=/usr/lib/postgresql/$TJ_PG_MAJOR/bin/pg_config
        else
            PG_CONFIG=$(command -v pg_config) ||
                { echo "pg_config not found" >&2; return 1; }
        fi
    fi
    export PG_CONFIG
    TJ_BINDIR=$("$PG_CONFIG" --bindir) || return 1
    TJ_PKGLIBDIR=$("$PG_CONFIG" --pkglibdir) || return 1
    TJ_PGXS_TEST=$TJ_PKGLIBDIR/pgxs/src/test
    TJ_PG_REGRESS=$TJ_PGXS_TEST/regress/pg_regress
    TJ_PG_ISOLATION_REGRESS=$TJ_PGXS_TEST/isolation/pg_isolation_regress
    # Never trust PATH order (stray initdb/pg_ctl/postgres may live elsewhere).
    case ":$PATH:" in
        ":$TJ_BINDIR:"*) ;;
        *) PATH=$TJ_BINDIR:$PATH ;;
    esac
    export PATH
}

# tj_pg_select MAJOR: choose the PostgreSQL MAJOR server tree (then tj_pg_env): the caller's
# PG_CONFIG when it is of that major (TJ_CALLER_PG_CONFIG), Debian's package when installed,
# else a build from Debian's source package in $TJ_PG_CACHE (tj_pg_build, made when missing).
# Sets TJ_PG_CRON=1 when the tree has pg_cron.  Status 2: MAJOR cannot be had here.
tj_pg_select() {
    local major=$1 pgc rc
    TJ_PG_MAJOR=$major
    pgc=${TJ_CALLER_PG_CONFIG:-}
    if [ -n "$pgc" ] && [ "$("$pgc" --version 2>/dev/null | sed -nE 's/^PostgreSQL ([0-9]+).*/\1/p')" = "$major" ]; then
        PG_CONFIG=$pgc
    elif [ -x "/usr/lib/postgresql/$major/bin/pg_config" ] &&
        [ -d "/usr/lib/postgresql/$major/lib/pgxs/src/test/regress" ]; then
        PG_CONFIG=/usr/lib/postgresql/$major/bin/pg_config
    else
        pgc=$(tj_pg_build "$major")
        rc=$?
        [ "$rc" -eq 0 ] || return "$rc"
        PG_CONFIG=$pgc
    fi
    export PG_CONFIG
    tj_pg_env || return 1
    TJ_PG_CRON=0
    [ -e "$TJ_PKGLIBDIR/pg_cron.so" ] && TJ_PG_CRON=1
    return 0
}

# tj_apt_archives: print "URI SUITE" for each Debian suite of TJ_PG_SUITES and TJ_PG_SECURITY_SUITES,
# at the addresses of this machine's own apt configuration (its Debian and Debian-Security archives).
tj_apt_archives() {
    local main sec s
    # shellcheck disable=SC2016  # apt-get's own $(FIELD) syntax
    main=$(apt-get indextargets --format '$(REPO_URI) $(LABEL) $(RELEASE)' 2>/dev/null |
           awk '$2 == "Debian" && $3 !~ /-/ { print $1; exit }')
    # shellcheck disable=SC2016
    sec=$(apt-get indextargets --format '$(REPO_URI) $(LABEL)' 2>/dev/null |
          awk '$2 == "Debian-Security" { print $1; exit }')
    [ -n "$main" ] || { echo "no Debian archive in this machine's apt configuration" >&2; return 1; }
    for s in $TJ_PG_SUITES; do echo "$main $s"; done
    if [ -n "$sec" ]; then
        for s in $TJ_PG_SECURITY_SUITES; do echo "$sec $s"; done
    fi
}

# tj_apt_source PKG DIR: download Debian's source package PKG (its newest version in the suites of
# tj_apt_archives, checked against the signed indexes) into DIR, with a private apt state under
# $TJ_PG_CACHE/apt that leaves the machine's own sources and lists alone.
tj_apt_source() {
    local pkg=$1 dir=$2 apt=$TJ_PG_CACHE/apt uri suite opts
    mkdir -p "$apt/lists/partial" "$apt/cache/archives/partial" "$dir" || return 1
    if [ ! -s "$apt/sources.list" ] || [ -z "$(find "$apt/sources.list" -mmin -60 2>/dev/null)" ]; then
        tj_apt_archives | while read -r uri suite; do
            echo "deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $uri $suite main"
        done >"$apt/sources.list.new" || return 1
        [ -s "$apt/sources.list.new" ] || return 1
        mv "$apt/sources.list.new" "$apt/sources.list"
        rm -f "$apt/updated"
    fi
    opts=(-q -o "Dir::Etc::SourceList=$apt/sources.list" -o Dir::Etc::SourceParts=/dev/null
          -o "Dir::State::Lists=$apt/lists" -o "Dir::Cache=$apt/cache"
          -o "APT::Sandbox::User=$(id -un)")
    (
        flock 8 || exit 1
        if [ ! -e "$apt/updated" ]; then
            apt-get "${opts[@]}" update </dev/null || exit 1
            : >"$apt/updated"
        fi
        cd "$dir" && apt-get "${opts[@]}" source --download-only "$pkg" </dev/null
    ) 8>"$apt/.lock"
}

# tj_pg_build MAJOR: print the pg_config of a build of PostgreSQL MAJOR in $TJ_PG_CACHE, building it
# when there is none: the newest complete build is reused without asking the archive unless
# TJ_PG_REFRESH=1.  The build: the upstream tarball of Debian's source package postgresql-MAJOR
# (without Debian's packaging patches), configured with the TAP tests and without docs, ICU or
# readline, make -j2 under nice; installed with pg_regress, the isolation tester, the TAP modules,
# dblink and pgstattuple, and pg_cron from Debian's source package pg-cron when the archive has
# it.  Status 2: the archive does not have the source; 1: the build failed (log in the cache).
tj_pg_build() {
    local major=$1 cache=$TJ_PG_CACHE dir key tmp pfx log dsc orig rc=0
    mkdir -p "$cache" || return 1
    chmod a+rx "$cache" 2>/dev/null
    exec 9>"$cache/.lock-$major"
    flock 9 || return 1
    dir=$(find "$cache" -mindepth 2 -maxdepth 2 -path "$cache/postgresql-${major}_*/.complete" \
          2>/dev/null | LC_ALL=C sort -V | tail -n 1)
    dir=${dir%/.complete}
    if [ -n "$dir" ] && [ "${TJ_PG_REFRESH:-0}" != 1 ]; then
        exec 9>&-
        echo "$dir/bin/pg_config"
        return 0
    fi
    tmp=$cache/tmp-$major
    rm -rf "$tmp"
    mkdir -p "$tmp/src" || { exec 9>&-; return 1; }
    log=$cache/build-$major.log
    tj_log "PostgreSQL $major: fetching Debian's source package postgresql-$major, to build into $cache (log: $log)" >&2
    if ! tj_apt_source "postgresql-$major" "$tmp/src" >"$log" 2>&1; then
        echo "PostgreSQL $major: the archive did not give the source package postgresql-$major:" >&2
        grep -E '^(E|W|Err):' "$log" | head -n 5 >&2
        rm -rf "$tmp"
        exec 9>&-
        if [ -n "$dir" ]; then   # TJ_PG_REFRESH=1 without the archive: keep the build we have
            echo "$dir/bin/pg_config"
            return 0
        fi
        return 2
    fi
    dsc=$(find "$tmp/src" -maxdepth 1 -name "postgresql-${major}_*.dsc" | head -n 1)
    orig=$(find "$tmp/src" -maxdepth 1 -name "postgresql-${major}_*.orig.tar.*" | head -n 1)
    key=$(basename "$dsc" .dsc)
    pfx=$cache/$key
    if [ -z "$dsc" ] || [ -z "$orig" ]; then
        echo "PostgreSQL $major: no .dsc or upstream tarball in the download" >&2
        rc=1
    elif [ -e "$pfx/.complete" ]; then
        tj_log "PostgreSQL $major: $key is the newest, already built" >&2
    else
        rm -rf "$pfx"
        (
            mkdir -p "$tmp/build" && tar -C "$tmp/build" -xf "$orig" &&
            cd "$tmp/build"/postgresql-* &&
            nice -n 15 ./configure --prefix="$pfx" --enable-tap-tests --without-icu \
                --without-readline --without-llvm &&
            nice -n 15 make -j2 &&
            make install &&
            for d in src/test/isolation src/test/perl contrib/dblink contrib/pgstattuple; do
                nice -n 15 make -C "$d" install || exit 1
            done
        ) >>"$log" 2>&1 </dev/null || rc=1
        if [ "$rc" -ne 0 ]; then
            echo "PostgreSQL $major: the build failed; last lines of $log:" >&2
            tail -n 30 "$log" >&2
            rm -rf "$pfx"
        elif tj_apt_source pg-cron "$tmp/cron" >>"$log" 2>&1 &&
            orig=$(find "$tmp/cron" -maxdepth 1 -name 'pg-cron_*.orig.tar.*' | head -n 1) &&
            [ -n "$orig" ] && mkdir -p "$tmp/cron/build" && tar -C "$tmp/cron/build" -xf "$orig" &&
            (cd "$tmp/cron/build"/* && nice -n 15 make PG_CONFIG="$pfx/bin/pg_config" install) \
                >>"$log" 2>&1 </dev/null; then
            tj_log "PostgreSQL $major: pg_cron built from $(basename "$orig")" >&2
        else
            tj_warn "PostgreSQL $major: no pg_cron (the archive did not give pg-cron, or it did not build; see $log)"
        fi
        if [ "$rc" -eq 0 ]; then
            cp "$log" "$pfx/build.log"
            chmod -R a+rX "$pfx"
            echo "$key $(date -u +%FT%TZ)" >"$pfx/.complete"
        fi
    fi
    rm -rf "$tmp"
    exec 9>&-
    [ "$rc" -eq 0 ] || return "$rc"
    echo "$pfx/bin/pg_config"
}

# tj_pick_user: set TJ_PGUSER, the account that runs servers ("postgres" when root, else the current user).
tj_pick_user() {
    if tj_is_root; then
        TJ_PGUSER=${TJ_PGUSER:-postgres}
        if ! id "$TJ_PGUSER" >/dev/null 2>&1; then
            echo "user '$TJ_PGUSER' does not exist (is postgresql-$TJ_PG_MAJOR installed?)" >&2
            return 1
        fi
        # The server user needs a usable TMPDIR too (TAP tests put sockets there).
        if [ -n "${TMPDIR:-}" ] && ! runuser -u "$TJ_PGUSER" -- test -w "$TMPDIR" 2>/dev/null; then
            unset TMPDIR
        fi
    else
        TJ_PGUSER=$(id -un)
    fi
}

# tj_as_pguser CMD...: run CMD as $TJ_PGUSER (directly when not root), keeping PATH and the environment.
tj_as_pguser() {
    if tj_is_root && [ "$TJ_PGUSER" != root ]; then
        runuser -u "$TJ_PGUSER" -- env "PATH=$PATH" "$@"
    else
        "$@"
    fi
}

# tj_give DIR...: hand DIR (recursively) to $TJ_PGUSER when root; no-op otherwise.
tj_give() {
    if tj_is_root; then chown -R "$TJ_PGUSER:" "$@"; fi
}

# tj_make_scratch: create a scratch dir with mktemp -d owned by $TJ_PGUSER and set TJ_SCRATCH.
tj_make_scratch() {
    TJ_SCRATCH=$(mktemp -d "${TMPDIR:-/tmp}/throttle_jobs.XXXXXX") || return 1
    chmod 755 "$TJ_SCRATCH"
    tj_give "$TJ_SCRATCH"
}

# tj_copy_repo SRC DEST: copy the working tree SRC (without .git and build/test leftovers) into DEST.
tj_copy_repo() {
    local src=$1 dest=$2
    mkdir -p "$dest" || return 1
    tar -C "$src" --exclude=./.git --exclude='*.o' --exclude='*.so' \
        --exclude='*.bc' --exclude=./results --exclude=./regression.diffs \
        --exclude=./regression.out --exclude=tmp_check --exclude=./log \
        -cf - . | tar -C "$dest" -xf - || return 1
    tj_give "$dest"
}

# tj_make_var VAR [DIR]: print the value of Makefile variable VAR of the extension in DIR (default $TJ_ROOT).
tj_make_var() {
    local var=$1 dir=${2:-$TJ_ROOT}
    make -s --no-print-directory -C "$dir" PG_CONFIG="$PG_CONFIG" \
        -f Makefile -f - tj-print-var <<<"tj-print-var: ; @echo \$($var)"
}

# tj_build_install [DIR]: make clean all the extension in DIR (default $TJ_ROOT), then install it
# into a private copy of the PostgreSQL server tree under $TJ_SCRATCH/pg (when TJ_SCRATCH is set)
# and point TJ_BINDIR, TJ_PKGLIBDIR, TJ_PG_REGRESS, ... and PATH at that copy; without TJ_SCRATCH,
# make install into the system tree.  PostgreSQL finds its lib and share directories relative to
# its own executable, so a copied tree is self-contained: concurrent runs from other working trees
# cannot replace the library or the install script under a running test.  Output on stdout/stderr.
tj_build_install() {
    local dir=${1:-$TJ_ROOT} sudo=() priv sysbin syslib sysshare
    make -C "$dir" PG_CONFIG="$PG_CONFIG" clean all </dev/null || return 1
    if [ -n "${TJ_SCRATCH:-}" ]; then
        priv=$TJ_SCRATCH/pg
        sysbin=$("$PG_CONFIG" --bindir) || return 1
        syslib=$("$PG_CONFIG" --pkglibdir) || return 1
        sysshare=$("$PG_CONFIG" --sharedir) || return 1
        rm -rf "$priv"
        mkdir -p "$priv$sysbin" "$priv$syslib" "$priv$sysshare" || return 1
        cp -a "$sysbin/." "$priv$sysbin/" && cp -a "$syslib/." "$priv$syslib/" &&
            cp -a "$sysshare/." "$priv$sysshare/" || return 1
        # The system copy of our own files must not shadow the fresh build.
        rm -f "$priv$syslib/throttle_jobs.so" "$priv$sysshare"/extension/throttle_jobs*
        make -C "$dir" PG_CONFIG="$PG_CONFIG" DESTDIR="$priv" install </dev/null || return 1
        chmod -R a+rX "$priv"
        TJ_BINDIR=$priv$sysbin
        TJ_PKGLIBDIR=$priv$syslib
        TJ_PGXS_TEST=$TJ_PKGLIBDIR/pgxs/src/test
        TJ_PG_REGRESS=$TJ_PGXS_TEST/regress/pg_regress
        TJ_PG_ISOLATION_REGRESS=$TJ_PGXS_TEST/isolation/pg_isolation_regress
        PATH=$TJ_BINDIR:$PATH
        export PATH
        tj_give "$dir"
        return 0
    fi
    if ! tj_is_root && [ ! -w "$("$PG_CONFIG" --pkglibdir)" ]; then
        if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
            sudo=(sudo -n)
        else
            echo "cannot write $("$PG_CONFIG" --pkglibdir): run as root or allow sudo -n" >&2
            return 1
        fi
    fi
    "${sudo[@]}" make -C "$dir" PG_CONFIG="$PG_CONFIG" install </dev/null || return 1
    tj_give "$dir"
}

# tj_built_stamp [DIR]: print the build stamp of the library just built in DIR (default $TJ_ROOT), read from src/build_stamp.h; fails unless the library file holds that stamp.
tj_built_stamp() {
    local dir=${1:-$TJ_ROOT} stamp
    stamp=$(sed -n 's/^#define TJ_BUILD_STAMP "\(.*\)"$/\1/p' "$dir/src/build_stamp.h" 2>/dev/null)
    if [ -z "$stamp" ] || ! grep -qaF "$stamp" "$dir/throttle_jobs.so" 2>/dev/null; then
        echo "no build stamp in $dir/src/build_stamp.h, or not the one in $dir/throttle_jobs.so" >&2
        return 1
    fi
    echo "$stamp"
}

# tj_check_stamp STAMP [PSQL-ARGS...]: succeed if the current cluster's throttle_jobs.build_stamp is STAMP (the library just built); else say which library was loaded instead and fail.
tj_check_stamp() {
    local want=$1 got
    shift
    got=$(tj_psql -Atq -d postgres "$@" -c 'SHOW throttle_jobs.build_stamp' 2>&1)
    if [ "$got" = "$want" ]; then
        return 0
    fi
    echo "the server loaded a throttle_jobs library other than the one just built:" >&2
    echo "  expected build stamp: $want" >&2
    echo "  the server shows:     $got" >&2
    echo "  (servers started from $TJ_BINDIR)" >&2
    return 1
}

# tj_test_conf DEST: write test/throttle_jobs.conf (of $TJ_ROOT) to DEST, without pg_cron when the server tree has none (TJ_PG_CRON=0); print DEST.
tj_test_conf() {
    if [ "${TJ_PG_CRON:-1}" = 1 ]; then
        cp "$TJ_ROOT/test/throttle_jobs.conf" "$1" || return 1
    else
        sed -e '/^shared_preload_libraries/s/, *pg_cron//' -e '/^cron\./d' \
            "$TJ_ROOT/test/throttle_jobs.conf" >"$1" || return 1
    fi
    echo "$1"
}

# tj_port_free PORT: succeed if nothing listens on (and nothing has bound) 127.0.0.1:PORT.
tj_port_free() {
    perl -MIO::Socket::INET -e '
        my $s = IO::Socket::INET->new(LocalAddr => "127.0.0.1", LocalPort => $ARGV[0],
                                      Proto => "tcp", Listen => 1, ReuseAddr => 1)
            or exit 1;
        close $s; exit 0' "$1"
}

# tj_free_port [START]: print the first free TCP port on 127.0.0.1 from START (default 54321) upward.
tj_free_port() {
    local p=${1:-54321} last
    last=$((p + 1000))
    while [ "$p" -le "$last" ]; do
        if tj_port_free "$p"; then echo "$p"; return 0; fi
        p=$((p + 1))
    done
    echo "no free port in ${1:-54321}..$last" >&2
    return 1
}

# tj_write_conf FILE CONF...: append the throwaway-cluster settings and the CONF files to postgresql.conf FILE.
tj_write_conf() {
    local file=$1 sockdir f
    shift
    sockdir=$(dirname "$(dirname "$file")")
    {
        echo
        echo "# added by test/lib.sh"
        echo "listen_addresses = '127.0.0.1'"
        echo "unix_socket_directories = '$sockdir'"
        echo "fsync = off"
        for f in "$@"; do
            echo "# from $(basename "$f")"
            cat "$f" || return 1
        done
    } >>"$file"
}

# tj_start_cluster DIR [PORT [CONF...]]: initdb DIR/data, append settings and CONF files (default test/throttle_jobs.conf), start; sets TJ_PGDATA, TJ_PGHOST, TJ_PGPORT, TJ_SOCKDIR, TJ_PGLOG.
tj_start_cluster() {
    local dir=$1 port=${2:-} confs=("${@:3}") tries=0
    [ ${#confs[@]} -gt 0 ] || confs=("$TJ_ROOT/test/throttle_jobs.conf")
    mkdir -p "$dir" || return 1
    tj_give "$dir"
    dir=$(cd "$dir" && pwd)
    TJ_PGDATA=$dir/data
    TJ_SOCKDIR=$dir
    TJ_PGLOG=$dir/server.log
    TJ_PGHOST=127.0.0.1
    if [ -f "$TJ_PGDATA/PG_VERSION" ]; then
        tj_log "reusing existing cluster in $TJ_PGDATA"
    else
        tj_as_pguser initdb -D "$TJ_PGDATA" -U postgres --auth=trust --no-locale \
            --encoding=UTF8 --no-sync >"$dir/initdb.log" 2>&1 </dev/null ||
            { cat "$dir/initdb.log"; return 1; }
        tj_write_conf "$TJ_PGDATA/postgresql.conf" "${confs[@]}" || return 1
    fi
    TJ_CLUSTERS+=("$TJ_PGDATA")
    while :; do
        TJ_PGPORT=${port:-$(tj_free_port 54321)} || return 1
        if tj_as_pguser pg_ctl -D "$TJ_PGDATA" -l "$TJ_PGLOG" -o "-p $TJ_PGPORT" \
                -w -t 120 start >/dev/null </dev/null; then
            return 0
        fi
        # An auto-picked port may have been taken meanwhile: retry a few times.
        tries=$((tries + 1))
        if [ -n "$port" ] || [ $tries -ge 3 ] || tj_port_free "$TJ_PGPORT"; then
            echo "could not start the cluster in $TJ_PGDATA; server log:" >&2
            tail -n 50 "$TJ_PGLOG" >&2
            return 1
        fi
    done
}

# tj_stop_cluster [DATADIR]: stop the cluster in DATADIR (default: the last one tj_start_cluster started).
tj_stop_cluster() {
    local d=${1:-${TJ_PGDATA:-}}
    [ -n "$d" ] && [ -f "$d/postmaster.pid" ] || return 0
    tj_as_pguser pg_ctl -D "$d" -m fast -w -t 60 stop >/dev/null 2>&1 </dev/null ||
        tj_as_pguser pg_ctl -D "$d" -m immediate -w -t 30 stop >/dev/null 2>&1 </dev/null
}

# tj_pgenv: print PGHOST/PGPORT/PGUSER/PGDATABASE assignments for the current cluster (for use with env).
tj_pgenv() {
    echo "PGHOST=$TJ_PGHOST" "PGPORT=$TJ_PGPORT" "PGUSER=postgres" \
         "PGDATABASE=${PGDATABASE:-postgres}"
}

# tj_psql ARGS...: run psql (no psqlrc, stop on error) as $TJ_PGUSER against the current cluster.
tj_psql() {
    # shellcheck disable=SC2046
    tj_as_pguser env $(tj_pgenv) psql -X -v ON_ERROR_STOP=1 "$@"
}

# tj_run_limited SECS LOG CMD...: run CMD (a command or shell function) in its own process group, output shown and saved to LOG; the group is killed after SECS seconds (status 124).
tj_run_limited() {
    local secs=$1 log=$2 rc
    shift 2
    rm -f "$log.timeout"
    set -m   # background jobs get their own process group
    ( "$@" 2>&1 | tee "$log"; exit "${PIPESTATUS[0]}" ) &
    TJ_CHILD=$!
    ( trap - INT TERM
      sleep "$secs"
      : >"$log.timeout"
      kill -TERM -- "-$TJ_CHILD"
      sleep 10
      kill -KILL -- "-$TJ_CHILD" ) >/dev/null 2>&1 &
    TJ_WATCHDOG=$!
    set +m
    wait "$TJ_CHILD"
    rc=$?
    kill -- "-$TJ_WATCHDOG" 2>/dev/null
    wait "$TJ_WATCHDOG" 2>/dev/null
    TJ_CHILD='' TJ_WATCHDOG=''
    if [ -e "$log.timeout" ]; then
        rm -f "$log.timeout"
        echo "timed out after ${secs}s"
        rc=124
    fi
    return "$rc"
}

# tj_kill_children: kill the process groups of a tj_run_limited still running (for signal handlers).
tj_kill_children() {
    local g
    for g in ${TJ_CHILD:-} ${TJ_WATCHDOG:-}; do
        kill -TERM -- "-$g" 2>/dev/null
    done
    TJ_CHILD='' TJ_WATCHDOG=''
}

# tj_cleanup: stop every cluster started here (and stray ones left under TJ_SCRATCH), then remove TJ_SCRATCH unless KEEP=1; quiet and idempotent.
tj_cleanup() {
    local d pid
    tj_kill_children
    for d in "${TJ_CLUSTERS[@]}"; do tj_stop_cluster "$d"; done
    TJ_CLUSTERS=()
    if [ -n "${TJ_SCRATCH:-}" ] && [ -d "$TJ_SCRATCH" ]; then
        # TAP nodes survive if their perl process was killed.
        while IFS= read -r pid; do
            d=$(dirname "$pid")
            tj_as_pguser pg_ctl -D "$d" -m immediate -w -t 30 stop >/dev/null 2>&1 </dev/null
        done < <(find "$TJ_SCRATCH" -name postmaster.pid 2>/dev/null)
        if [ "${KEEP:-0}" = 1 ]; then
            echo "kept scratch dir $TJ_SCRATCH" >&2
        else
            rm -rf "$TJ_SCRATCH"
        fi
    fi
    TJ_SCRATCH=
}
